package testpeer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// EdgeBinary builds cmd/edge (with -race) once per test process and returns
// its path: bin/edge-race in the repository, shared by every package's test
// process and replaced atomically, so repeated runs leave nothing behind.
func EdgeBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		bin := filepath.Join(RepoRoot(t), "bin")
		if buildErr = os.MkdirAll(bin, 0o755); buildErr != nil {
			return
		}
		tmp := filepath.Join(bin, fmt.Sprintf(".edge-race-%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-race", "-o", tmp, "./cmd/edge")
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/edge: %v\n%s", err, out)
			return
		}
		buildPath = filepath.Join(bin, "edge-race")
		buildErr = os.Rename(tmp, buildPath)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// EdgeProcess is a real edge binary running with a test's config.
type EdgeProcess struct {
	HTTPS, HTTP, Admin string // loopback addresses
	Dir                string // holds edge.toml and the state dir
	ConfigPath         string

	t      testing.TB
	cmd    *exec.Cmd
	stdout *SyncBuffer
	stderr *SyncBuffer
	exited chan struct{}
	err    error
}

// SyncBuffer is a log sink a test reads while another goroutine writes.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *SyncBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is what was written so far.
func (l *SyncBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// EdgeConfigHead is the [server] and [log] part StartEdge writes before the
// test's own TOML: free loopback ports, the state dir inside Dir, a 10 s
// shutdown_grace unless serverExtra sets one, debug logs. Tests must not
// repeat [server]; extra [server] keys go in serverExtra. A body with its own
// [log] table replaces the default one.
func EdgeConfigHead(https, http, admin, stateDir, serverExtra string) string {
	if !strings.Contains(serverExtra, "shutdown_grace") {
		serverExtra = "shutdown_grace = \"10s\"\n" + serverExtra
	}
	return fmt.Sprintf(`[server]
listen_https = %q
listen_http = %q
listen_admin = %q
state_dir = %q
%s
`, https, http, admin, stateDir, serverExtra)
}

const defaultLogTable = "\n[log]\nlevel = \"debug\"\n"

// StartEdge writes the config (EdgeConfigHead + body) into a fresh dir, starts
// the binary, and waits until /readyz answers. The process is stopped
// (SIGTERM) at the end of the test; its logs are printed if the test failed.
func StartEdge(t testing.TB, serverExtra, body string) *EdgeProcess {
	t.Helper()
	dir := t.TempDir()
	return StartEdgeIn(t, dir, serverExtra, body)
}

// StartEdgeIn is StartEdge with a chosen directory (a restart keeps the
// state dir).
func StartEdgeIn(t testing.TB, dir, serverExtra, body string) *EdgeProcess {
	t.Helper()
	ports := FreePorts(t, 3)
	e := &EdgeProcess{HTTPS: ports[0], HTTP: ports[1], Admin: ports[2], Dir: dir, t: t,
		ConfigPath: filepath.Join(dir, "edge.toml")}
	e.WriteConfig(serverExtra, body)
	e.start(true)
	return e
}

// StartEdgeAnswering is StartEdge that waits only until /readyz answers,
// ready or not: for a config whose readiness is what the test looks at
// (an upstream whose app never comes up).
func StartEdgeAnswering(t testing.TB, serverExtra, body string) *EdgeProcess {
	t.Helper()
	dir := t.TempDir()
	ports := FreePorts(t, 3)
	e := &EdgeProcess{HTTPS: ports[0], HTTP: ports[1], Admin: ports[2], Dir: dir, t: t,
		ConfigPath: filepath.Join(dir, "edge.toml")}
	e.WriteConfig(serverExtra, body)
	e.start(false)
	return e
}

// WriteConfig replaces the config file, keeping the listen addresses.
func (e *EdgeProcess) WriteConfig(serverExtra, body string) {
	e.t.Helper()
	cfg := EdgeConfigHead(e.HTTPS, e.HTTP, e.Admin, filepath.Join(e.Dir, "state"), serverExtra)
	if !strings.Contains("\n"+body, "\n[log]") {
		cfg += defaultLogTable
	}
	cfg += body
	if err := os.WriteFile(e.ConfigPath, []byte(cfg), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// start runs the binary and waits until /readyz answers 200, or answers
// at all when ready is false.
func (e *EdgeProcess) start(ready bool) {
	t := e.t
	t.Helper()
	e.stdout, e.stderr = &SyncBuffer{}, &SyncBuffer{}
	e.cmd = exec.Command(EdgeBinary(t), "run", "-config", e.ConfigPath)
	e.cmd.Stdout, e.cmd.Stderr = e.stdout, e.stderr
	// The race-enabled binary otherwise sleeps a second at every exit.
	e.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.exited = make(chan struct{})
	go func() { e.err = e.cmd.Wait(); close(e.exited) }()
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			t.Logf("edge stderr:\n%s\nedge stdout:\n%s", e.stderr.String(), e.stdout.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-e.exited:
			t.Fatalf("edge exited at start: %v\n%s", e.err, e.stderr.String())
		default:
		}
		resp, err := http.Get("http://" + e.Admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 || !ready {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge not ready after 20s\n%s", e.stderr.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Restart stops the process and starts it again with the same config/state.
func (e *EdgeProcess) Restart() {
	e.t.Helper()
	e.Stop()
	e.start(true)
}

// Signal sends sig to the process.
func (e *EdgeProcess) Signal(sig syscall.Signal) {
	if e.cmd != nil && e.cmd.Process != nil {
		_ = e.cmd.Process.Signal(sig)
	}
}

// Wait waits for the process to exit and returns its exit error.
func (e *EdgeProcess) Wait(within time.Duration) error {
	select {
	case <-e.exited:
		return e.err
	case <-time.After(within):
		return fmt.Errorf("edge still running after %s", within)
	}
}

// Stop sends SIGTERM and waits (then SIGKILL after 15 s).
func (e *EdgeProcess) Stop() {
	if e.cmd == nil || e.exited == nil {
		return
	}
	select {
	case <-e.exited:
		return
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(15 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
}

// Stdout is the access log so far; Stderr the error log.
func (e *EdgeProcess) Stdout() string { return e.stdout.String() }

// Stderr is the error log so far.
func (e *EdgeProcess) Stderr() string { return e.stderr.String() }

// Client is an HTTPS client that trusts edge's internal CA and dials edge
// whatever the URL's host (as DNS would), speaking HTTP/1.1 (h2 when h2 is
// true).
func (e *EdgeProcess) Client(t testing.TB, h2 bool) *http.Client {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(e.Dir, "state", "internal", "ca.crt"))
	if err != nil {
		t.Fatalf("reading edge's internal CA (tls.mode must be internal): %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, e.HTTPS)
		},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}
}

// URL is https://host:port/path for the edge's HTTPS listener.
func (e *EdgeProcess) URL(host, path string) string {
	_, port, _ := net.SplitHostPort(e.HTTPS)
	return "https://" + host + ":" + port + path
}

// Metrics returns the lines of the admin /metrics scrape starting with prefix.
func (e *EdgeProcess) Metrics(t testing.TB, prefix string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	var out []string
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
