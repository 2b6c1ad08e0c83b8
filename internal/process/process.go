// Package process owns supervised app processes: the instances an upstream
// runs instead of (or beside) listing addresses. It starts each instance on
// its own loopback port, opens it to traffic only once it answers the
// upstream's health check, restarts it with backoff when it exits or grows
// past its memory limit, gives up on one that crashes in a loop (and tries
// it again slowly), replaces instances by rolling deploys (deploy.go), and
// stops every instance's whole process group on shutdown.
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"
)

// Spec is one upstream's [upstreams.run], compiled.
type Spec struct {
	Upstream  string
	Command   string
	Args      []string
	Dir       string
	Env       []string // "NAME=value", after edge's own environment
	Instances int
	PortEnv   string
	// SocketEnv, when set, gives each instance a Unix socket path in this
	// variable instead of a port in PortEnv.
	SocketEnv string
	StopGrace time.Duration
	MaxMemory int64 // bytes of resident memory; 0: no limit
	// LogFile receives the instances' output instead of edge's log when
	// set; "{instance}" in it is the slot's number.
	LogFile string
	// LogEdge sends the output to edge's log as well when LogFile is set.
	LogEdge bool
	Health  Health
	Policy  Policy
}

// Health is the check an instance must pass before it gets traffic, and
// keeps passing while it has it.
type Health struct {
	Path               string
	Interval           time.Duration
	Timeout            time.Duration
	Expect             func(status int) bool
	HealthyThreshold   int
	UnhealthyThreshold int
}

// Instance states, as /readyz and edge_upstream_instances name them.
const (
	StateStarting  = "starting"  // running, not yet healthy
	StateReady     = "ready"     // healthy: gets traffic
	StateUnhealthy = "unhealthy" // running, failing its health check
	StateBackoff   = "backoff"   // exited; waiting to restart
	StateFailed    = "failed"    // crash-looping; waiting for the slow retry
	StateDraining  = "draining"  // replaced by a deploy; finishing its requests
	StateStopped   = "stopped"   // being stopped
)

// States are every state, in the order metrics list them.
var States = []string{StateStarting, StateReady, StateUnhealthy, StateBackoff, StateFailed, StateDraining, StateStopped}

// Restart reasons, for edge_upstream_instance_restarts_total.
const (
	ReasonExit   = "exit"   // the process ended by itself
	ReasonMemory = "memory" // edge stopped it above max_memory
)

// Events receive what happens to instances; the gateway counts them.
type Events interface {
	Restarted(upstream, reason string)
	Deployed(upstream, result string)
}

// Group is one upstream's instances. Each slot has two ports, chosen once:
// an instance comes back at the address the proxy already knows, and a
// deploy starts the slot's next version on the other port while the
// current one still serves.
type Group struct {
	upstream string
	log      *slog.Logger
	events   Events
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// deploying is held for a whole rollout: one at a time per upstream.
	deploying sync.Mutex
	// deploysOff, closed by StopDeploys, ends a rollout's wait for new
	// instances: edge is shutting down, and they would never serve.
	deploysOff chan struct{}
	offDeploys sync.Once

	mu sync.Mutex
	// slots change only with a rollout's lock held (resize); readers
	// outside it take a copy (Slots).
	slots    []*Slot
	stopping bool        // no instance or deploy starts any more
	version  int         // of the newest deploy started
	live     []*Instance // every instance running or draining, in start order
	pending  *Change     // waits for the running rollout

	spec    Spec   // as started: the slots' log files and addresses follow it
	sockDir string // the instances' sockets, with SocketEnv; removed on Stop
	sockSeq int    // names each socket once
}

// Slot is one of the upstream's instances (EDGE_INSTANCE), whatever
// process serves it now.
type Slot struct {
	ID    int
	Ports [2]*Port
	cur   atomic.Pointer[Instance]
	// out is the slot's log file, or nil for edge's log. One per slot,
	// not per instance: a deploy's two versions write the same file, and
	// two writers rotating one file would lose lines.
	out *lumberjack.Logger
}

// Port is one of a slot's two addresses; as the proxy's gate for that
// address it is open while the instance on it is ready and not draining.
type Port struct {
	Addr string
	inst atomic.Pointer[Instance]
	load atomic.Pointer[loadRef]
}

// Load is what a deploy asks of the proxy's target for a port: how many
// requests and WebSockets it is answering, so draining can end early.
type Load interface{ InFlight() int64 }

type loadRef struct{ Load }

// Open reports whether the port may receive requests.
func (p *Port) Open() bool {
	in := p.inst.Load()
	return in != nil && in.Open()
}

// Track gives the port the proxy's view of its load; the gateway calls it
// for every snapshot it compiles.
func (p *Port) Track(l Load) {
	if r := p.load.Load(); r == nil || r.Load != l {
		p.load.Store(&loadRef{l})
	}
}

func (p *Port) inFlight() int64 {
	if r := p.load.Load(); r != nil {
		return r.InFlight()
	}
	return 0
}

// Instance is one version of a slot: a port, the settings it was started
// with, and whatever process currently runs them there.
type Instance struct {
	ID      int // the slot's
	Addr    string
	Version int

	spec     Spec
	port     *Port
	out      *lumberjack.Logger // nil: output goes to log
	log      *slog.Logger
	events   Events
	open     atomic.Bool
	draining atomic.Bool
	state    atomic.Value // string
	pid      atomic.Int64
	started  atomic.Int64 // unix nanos of the running process's start; 0: none
	restarts atomic.Int64
	lastErr  atomic.Value // string: why the last process ended
	cancel   context.CancelFunc
	done     chan struct{}
}

// Open reports whether the instance may receive requests: its process is
// running, passes the health check, and is not being drained by a deploy.
func (in *Instance) Open() bool { return in.open.Load() && !in.draining.Load() }

// State is what the instance is doing now (one of States).
func (in *Instance) State() string {
	s := in.state.Load().(string)
	if in.draining.Load() && s != StateStopped {
		return StateDraining
	}
	return s
}

// Start chooses two addresses per instance (free loopback ports, or Unix
// socket paths in a directory of edge's own) and starts supervising them;
// it returns at once, before any instance is healthy.
func Start(spec Spec, log *slog.Logger, ev Events) (*Group, error) {
	g := &Group{upstream: spec.Upstream, log: log.With("upstream", spec.Upstream), events: ev, version: 1,
		deploysOff: make(chan struct{}), spec: spec}
	if spec.SocketEnv != "" {
		// Only edge's user may enter it: the instances behind it are
		// reachable by nothing on the machine but edge.
		dir, err := os.MkdirTemp("", "edge-"+spec.Upstream+"-")
		if err != nil {
			return nil, fmt.Errorf("upstream %q: making the directory of its sockets: %w", spec.Upstream, err)
		}
		g.sockDir = dir
	}
	slots, err := g.newSlots(0, spec.Instances)
	if err != nil {
		g.removeSockDir()
		return nil, err
	}
	g.slots = slots
	g.ctx, g.cancel = context.WithCancel(context.Background())
	for _, sl := range g.slots {
		// Nothing can have stopped a group not yet returned.
		in, _ := g.launch(sl, sl.Ports[0], spec, 1)
		sl.cur.Store(in)
	}
	return g, nil
}

// newSlots makes slots first, first+1, ... first+n-1 with their two
// addresses each, not yet running anything.
func (g *Group) newSlots(first, n int) ([]*Slot, error) {
	// Ports are held until all are chosen, so no two are one.
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	var slots []*Slot
	for i := first; i < first+n; i++ {
		sl := &Slot{ID: i}
		for k := range sl.Ports {
			addr, ln, err := g.newAddr()
			if err != nil {
				return nil, fmt.Errorf("upstream %q: choosing an address for instance %d: %w", g.upstream, i, err)
			}
			if ln != nil {
				held = append(held, ln)
			}
			sl.Ports[k] = &Port{Addr: addr}
		}
		if g.spec.LogFile != "" {
			sl.out = &lumberjack.Logger{
				Filename:   strings.ReplaceAll(g.spec.LogFile, "{instance}", strconv.Itoa(i)),
				MaxSize:    logMaxMB,
				MaxBackups: logBackups,
			}
		}
		slots = append(slots, sl)
	}
	return slots, nil
}

// newAddr chooses an address for an instance: a free loopback port (the
// listener holding it is returned, to be closed once all are chosen), or
// a socket path no other slot of the group has had.
func (g *Group) newAddr() (string, net.Listener, error) {
	if g.sockDir == "" {
		ln, err := listenFree()
		if err != nil {
			return "", nil, err
		}
		return ln.Addr().String(), ln, nil
	}
	g.mu.Lock()
	g.sockSeq++
	n := g.sockSeq
	g.mu.Unlock()
	path := filepath.Join(g.sockDir, strconv.Itoa(n)+".sock")
	// sun_path holds 108 bytes with its terminating NUL (104 on BSDs).
	if len(path) > 103 {
		return "", nil, fmt.Errorf("the socket path %q is longer than a Unix socket path can be; set TMPDIR to a shorter directory", path)
	}
	return UnixPrefix + path, nil, nil
}

// UnixPrefix marks an address as a Unix socket path, as nginx's
// "server unix:/path" does.
const UnixPrefix = "unix:"

func (g *Group) removeSockDir() {
	if g.sockDir != "" {
		_ = os.RemoveAll(g.sockDir)
	}
}

var errStopping = errors.New("edge is stopping")

// launch starts supervising a new instance of slot sl on port p.
func (g *Group) launch(sl *Slot, p *Port, spec Spec, version int) (*Instance, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping {
		return nil, errStopping
	}
	ctx, cancel := context.WithCancel(g.ctx)
	in := &Instance{ID: sl.ID, Addr: p.Addr, Version: version, spec: spec, port: p, out: sl.out, events: g.events,
		cancel: cancel, done: make(chan struct{}),
		log: g.log.With("instance", sl.ID, "version", version)}
	in.state.Store(StateStarting)
	in.lastErr.Store("")
	p.inst.Store(in)
	g.live = append(g.live, in)
	g.wg.Go(func() {
		defer close(in.done)
		in.supervise(ctx)
	})
	return in, nil
}

// end stops the instance (SIGTERM to its group, SIGKILL after stop_grace)
// and forgets it.
func (g *Group) end(in *Instance) {
	in.cancel()
	<-in.done
	in.port.inst.CompareAndSwap(in, nil)
	g.mu.Lock()
	g.live = slices.DeleteFunc(g.live, func(x *Instance) bool { return x == in })
	g.mu.Unlock()
}

// Slots are the group's slots, in order; a slot's two addresses are
// targets of the upstream for the slot's whole life.
func (g *Group) Slots() []*Slot {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.slots)
}

// Instances are the instances running now, by slot: one per slot, and
// during a deploy also the next version starting or the previous one
// draining.
func (g *Group) Instances() []*Instance {
	g.mu.Lock()
	out := slices.Clone(g.live)
	g.mu.Unlock()
	slices.SortStableFunc(out, func(a, b *Instance) int { return a.ID - b.ID })
	return out
}

// StopDeploys makes a running rollout give up waiting for its new
// instances (and stop them), so a shutdown does not wait out
// deploy_timeout; an old instance already draining finishes its drain, as
// the shutdown's own drain would have it.
func (g *Group) StopDeploys() { g.offDeploys.Do(func() { close(g.deploysOff) }) }

// Stop stops every instance (SIGTERM to its process group, SIGKILL after
// stop_grace), all at once, and returns when they are gone; a deploy in
// progress ends with them.
func (g *Group) Stop() {
	g.StopDeploys()
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
	for _, sl := range g.Slots() {
		sl.closeLog()
	}
	g.removeSockDir()
}

func (sl *Slot) closeLog() {
	if sl.out != nil {
		_ = sl.out.Close()
	}
}

// listenFree binds a loopback port below the kernel's ephemeral range.
// A port from that range (what port 0 would give) could be taken by any
// outgoing connection, edge's own to its upstreams included, while the
// instance is down between two runs; below it only listeners compete.
// The caller closes the listener just before the instance binds the port.
func listenFree() (net.Listener, error) {
	low := ephemeralLow()
	for range 200 {
		port := minPort + rand.IntN(low-minPort)
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			return ln, nil
		}
	}
	return nil, fmt.Errorf("no free loopback port between %d and %d", minPort, low)
}

// minPort keeps instances off the low ports well-known services use.
const minPort = 10000

// ephemeralLow is where the kernel's range for outgoing connections
// starts (Linux's default when it cannot be read).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	return max(low, minPort+1000)
}

func (in *Instance) setState(s string) {
	if old := in.state.Swap(s); old != s {
		in.log.Info("instance state", "state", s, "pid", in.pid.Load())
	}
}

// supervise runs the instance until ctx ends: start, wait for it to end
// (by itself, or stopped above its memory limit), wait the backoff, again.
func (in *Instance) supervise(ctx context.Context) {
	p := in.spec.Policy
	var c crashes
	for {
		in.setState(StateStarting)
		started := time.Now()
		// Pdeathsig fires when the thread that started the child ends,
		// not the process: a thread some other goroutine later locked and
		// left would take the instance with it. Held for the child's life,
		// this thread is no one else's.
		runtime.LockOSThread()
		reason, err := in.runOnce(ctx)
		runtime.UnlockOSThread()
		in.open.Store(false)
		in.pid.Store(0)
		in.started.Store(0)
		in.lastErr.Store(errString(err))
		if ctx.Err() != nil {
			in.setState(StateStopped)
			return
		}
		wait, failed := p.exited(&c, started, time.Now())
		in.events.Restarted(in.spec.Upstream, reason)
		in.restarts.Add(1)
		if failed {
			in.setState(StateFailed)
			in.log.Error("instance is crashing in a loop; marked failed, other instances keep serving",
				"exits", p.MaxShortRuns, "within", p.ShortRun.String(), "retry_in", wait.String(), "last_error", errString(err))
		} else {
			in.setState(StateBackoff)
			in.log.Warn("instance ended; restarting after backoff", "reason", reason, "error", errString(err), "wait", wait.String())
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			in.setState(StateStopped)
			return
		case <-t.C:
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// watch follows a running instance: its health (opening and closing it to
// traffic) and its memory, until the process ends (exited closes) or must
// be restarted (the reason is returned).
func (in *Instance) watch(ctx context.Context, pid int, exited <-chan struct{}) string {
	h := in.spec.Health
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	url := "http://" + in.Addr + h.Path
	if path, ok := strings.CutPrefix(in.Addr, UnixPrefix); ok {
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "unix", path) }
		// The Host an app behind a socket sees, as nginx sends it there.
		url = "http://localhost" + h.Path
	}
	client := &http.Client{
		Timeout:       h.Timeout,
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	// Until the first pass the instance is probed often, so it gets
	// traffic soon after it listens; then at the check's interval.
	const startProbe = 100 * time.Millisecond
	memEvery := memoryInterval
	nextMem := time.Now().Add(memEvery)
	ok, bad := 0, 0
	everReady := false
	for {
		wait := h.Interval
		if !everReady {
			wait = startProbe
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ""
		case <-exited:
			t.Stop()
			return ReasonExit
		case <-t.C:
		}
		if max := in.spec.MaxMemory; max > 0 && !time.Now().Before(nextMem) {
			nextMem = time.Now().Add(memEvery)
			if rss, err := residentBytes(pid); err == nil && rss > max {
				in.log.Warn("instance above max_memory; restarting it", "rss_bytes", rss, "max_memory_bytes", max)
				return ReasonMemory
			}
		}
		if probe(ctx, client, url, h.Expect) {
			ok, bad = ok+1, 0
		} else {
			ok, bad = 0, bad+1
		}
		switch {
		case !everReady && ok >= 1:
			// The first pass opens it: nothing served it before, so there
			// is no earlier failure to outweigh.
			everReady = true
			in.open.Store(true)
			in.setState(StateReady)
		case everReady && in.open.Load() && bad >= h.UnhealthyThreshold:
			in.open.Store(false)
			in.setState(StateUnhealthy)
		case everReady && !in.open.Load() && ok >= h.HealthyThreshold:
			in.open.Store(true)
			in.setState(StateReady)
		}
	}
}

// memoryInterval is how often an instance's resident memory is read.
const memoryInterval = 3 * time.Second

func probe(ctx context.Context, c *http.Client, url string, expect func(int) bool) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "edge-health-check")
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return expect(resp.StatusCode)
}

// addrEnv is the variable that gives an instance its port, or its
// socket's path.
func (in *Instance) addrEnv() string {
	if path, ok := strings.CutPrefix(in.Addr, UnixPrefix); ok {
		return in.spec.SocketEnv + "=" + path
	}
	_, port, _ := net.SplitHostPort(in.Addr)
	return in.spec.PortEnv + "=" + port
}

// instanceEnv names the instance to itself, as pm2's NODE_APP_INSTANCE.
func (in *Instance) instanceEnv() string {
	return "EDGE_INSTANCE=" + strconv.Itoa(in.ID)
}
