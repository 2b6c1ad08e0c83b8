package process

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runOnce starts one process for the instance and returns when it has
// ended: by itself, stopped for its memory, or stopped because ctx ended.
// Whatever the way, its whole process group is gone when runOnce returns,
// so nothing it started holds the port when the next one starts.
func (in *Instance) runOnce(ctx context.Context) (reason string, err error) {
	spec := in.spec
	if err := in.claimAddr(); err != nil {
		return ReasonExit, err
	}
	cmd := exec.Command(spec.Command, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Env = append(cmd.Env, in.addrEnv(), in.instanceEnv())
	cmd.SysProcAttr = sysProcAttr()
	outR, outW, err := os.Pipe()
	if err != nil {
		return ReasonExit, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return ReasonExit, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	// The child has its own copies; ours would keep the readers from ever
	// seeing the end of the output.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return ReasonExit, fmt.Errorf("starting %q: %w", spec.Command, err)
	}
	pid := cmd.Process.Pid
	in.pid.Store(int64(pid))
	in.started.Store(time.Now().UnixNano())
	in.log.Info("instance started", "pid", pid, "addr", in.Addr)
	readers := make(chan struct{}, 2)
	go func() { in.copyLines(outR, "stdout"); readers <- struct{}{} }()
	go func() { in.copyLines(errR, "stderr"); readers <- struct{}{} }()

	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()

	reason = in.watch(ctx, pid, exited)
	in.open.Store(false)
	if reason != ReasonExit {
		// Stopped by edge: a shutdown ("") or the memory limit.
		stopGroup(pid, spec.StopGrace, exited)
	}
	<-exited
	// The leader is gone; anything left in its group would hold the port
	// or the log pipes.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	in.endReaders(readers, outR, errR)
	if reason == "" {
		in.log.Info("instance stopped", "pid", pid)
		return "", nil
	}
	return reason, exitError(waitErr)
}

// claimAddr makes sure the instance's address is free for it. Whatever
// answers there gets the instance's traffic once it passes the health
// check: a port someone else holds must not be mistaken for the instance.
// A socket file left by an earlier run that nothing listens on any more
// is removed, as the app's listen would fail on it.
func (in *Instance) claimAddr() error {
	path, ok := strings.CutPrefix(in.Addr, UnixPrefix)
	if !ok {
		ln, err := net.Listen("tcp", in.Addr)
		if err != nil {
			return fmt.Errorf("port %s is taken by another program: %w", in.Addr, err)
		}
		return ln.Close()
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s is taken by another program", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the old socket %s: %w", path, err)
	}
	return nil
}

// stopGroup sends SIGTERM to the process group, and SIGKILL once grace has
// passed without the leader exiting.
func stopGroup(pid int, grace time.Duration, exited <-chan struct{}) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// endReaders waits for the log readers to reach the end of the output; a
// descendant that left the process group may keep a pipe open, so after a
// second the pipes are closed under it.
func (in *Instance) endReaders(done <-chan struct{}, pipes ...*os.File) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for n := 0; n < len(pipes); n++ {
		select {
		case <-done:
		case <-t.C:
			for _, p := range pipes {
				p.Close()
			}
			<-done
		}
	}
	for _, p := range pipes {
		p.Close()
	}
}

func exitError(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Errorf("killed by signal %s", ws.Signal())
		}
		return fmt.Errorf("exit status %d", ee.ExitCode())
	}
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

// maxLine bounds one log record; a longer line is cut into several.
const maxLine = 16 << 10

// Rotation of log_file: pm2-logrotate's default size, and a few old
// files, so the app's output is bounded on disk.
const (
	logMaxMB   = 100
	logBackups = 5
)

// copyLines makes each line of the instance's output one record of edge's
// log, one line of its log file, or both: a record or line is written whole (one
// Write, which the file's lock serializes), so lines of stdout and stderr,
// or of a deploy's two versions, never mix.
func (in *Instance) copyLines(r io.Reader, stream string) {
	br := bufio.NewReaderSize(r, maxLine)
	var rec []byte
	warned := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			line = bytes.TrimRight(line, "\r\n")
			if in.out == nil || in.spec.LogEdge {
				in.log.LogAttrs(context.Background(), slog.LevelInfo, "instance output",
					slog.String("stream", stream), slog.String("line", string(line)))
			}
			if in.out != nil {
				rec = time.Now().UTC().AppendFormat(rec[:0], time.RFC3339Nano)
				rec = fmt.Appendf(rec, " %s v%d ", stream, in.Version)
				rec = append(append(rec, line...), '\n')
				if _, err := in.out.Write(rec); err != nil && !warned {
					// Once per stream: a full disk would otherwise add a
					// warning per line to the log it could not write.
					warned = true
					in.log.Warn("writing the instance's output to log_file", "error", err.Error())
				}
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// residentBytes is the process's resident memory (VmRSS), as pm2's
// max_memory_restart reads it.
func residentBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, err
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go runs on (the kernel fixes it for userspace ABI),
// so there is no need for sysconf and cgo.
const clockTicks = 100

// cpuSeconds is the CPU time (user and system) the process has used, as
// /proc/PID/stat counts it; its exited children are not included.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself; the fields after its last ')' are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	// After ')': state (field 3) ... utime (14), stime (15).
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	utime, err := strconv.ParseUint(string(f[11]), 10, 64)
	if err != nil {
		return 0, err
	}
	stime, err := strconv.ParseUint(string(f[12]), 10, 64)
	if err != nil {
		return 0, err
	}
	return float64(utime+stime) / clockTicks, nil
}
