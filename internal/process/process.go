// Package process owns supervised app processes: the instances an upstream
// runs instead of (or beside) listing addresses. It starts each instance on
// its own loopback port, opens it to traffic only once it answers the
// upstream's health check, restarts it with backoff when it exits or grows
// past its memory limit, gives up on one that crashes in a loop (and tries
// it again slowly), and stops every instance's whole process group on
// shutdown.
package process

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
	StopGrace time.Duration
	MaxMemory int64 // bytes of resident memory; 0: no limit
	Health    Health
	Policy    Policy
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
	StateStopped   = "stopped"   // edge is shutting down
)

// States are every state, in the order metrics list them.
var States = []string{StateStarting, StateReady, StateUnhealthy, StateBackoff, StateFailed, StateStopped}

// Restart reasons, for edge_upstream_instance_restarts_total.
const (
	ReasonExit   = "exit"   // the process ended by itself
	ReasonMemory = "memory" // edge stopped it above max_memory
)

// Events receive what happens to instances; the gateway counts them.
type Events interface {
	Restarted(upstream, reason string)
}

// Group is one upstream's instances. Its ports are chosen once, so an
// instance comes back at the address the proxy already knows.
type Group struct {
	spec      Spec
	instances []*Instance
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// Instance is one supervised process slot: a port and whatever process
// currently serves it.
type Instance struct {
	ID   int
	Addr string

	group  *Group
	log    *slog.Logger
	events Events
	open   atomic.Bool
	state  atomic.Value // string
	pid    atomic.Int64
}

// Open reports whether the instance may receive requests: its process is
// running and passes the health check.
func (in *Instance) Open() bool { return in.open.Load() }

// State is what the instance is doing now (one of States).
func (in *Instance) State() string { return in.state.Load().(string) }

// Start chooses a free loopback port per instance and starts supervising
// them; it returns at once, before any instance is healthy.
func Start(spec Spec, log *slog.Logger, ev Events) (*Group, error) {
	g := &Group{spec: spec}
	// Held until all are chosen, so no two instances get one port.
	var held []net.Listener
	release := func() {
		for _, ln := range held {
			ln.Close()
		}
	}
	for i := range spec.Instances {
		ln, err := listenFree()
		if err != nil {
			release()
			return nil, fmt.Errorf("upstream %q: choosing a port for instance %d: %w", spec.Upstream, i, err)
		}
		held = append(held, ln)
		in := &Instance{ID: i, Addr: ln.Addr().String(), group: g, events: ev,
			log: log.With("upstream", spec.Upstream, "instance", i)}
		in.state.Store(StateStarting)
		g.instances = append(g.instances, in)
	}
	release()
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	for _, in := range g.instances {
		g.wg.Go(func() { in.supervise(ctx) })
	}
	return g, nil
}

// Instances are the group's slots, in order.
func (g *Group) Instances() []*Instance { return g.instances }

// Stop stops every instance (SIGTERM to its process group, SIGKILL after
// stop_grace), all at once, and returns when they are gone.
func (g *Group) Stop() {
	g.cancel()
	g.wg.Wait()
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
	p := in.group.spec.Policy
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
		if ctx.Err() != nil {
			in.setState(StateStopped)
			return
		}
		wait, failed := p.exited(&c, started, time.Now())
		in.events.Restarted(in.group.spec.Upstream, reason)
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
	h := in.group.spec.Health
	client := &http.Client{
		Timeout:       h.Timeout,
		Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	url := "http://" + in.Addr + h.Path
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
		if max := in.group.spec.MaxMemory; max > 0 && !time.Now().Before(nextMem) {
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

// portEnv is the variable that gives an instance its port.
func (in *Instance) portEnv() string {
	_, port, _ := net.SplitHostPort(in.Addr)
	return in.group.spec.PortEnv + "=" + port
}

// instanceEnv names the instance to itself, as pm2's NODE_APP_INSTANCE.
func (in *Instance) instanceEnv() string {
	return "EDGE_INSTANCE=" + strconv.Itoa(in.ID)
}
