package process

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Deploy results, for edge_upstream_deploys_total.
const (
	DeploySucceeded = "succeeded"
	DeployFailed    = "failed"
)

// DeployResults are every result, in the order metrics list them.
var DeployResults = []string{DeploySucceeded, DeployFailed}

// ErrDeploying is returned while another deploy of the upstream runs.
var ErrDeploying = errors.New("a deploy of this upstream is already running")

// DeployOptions pace a rolling deploy.
type DeployOptions struct {
	// Timeout is how long a new instance has to pass its health check
	// before the rollout stops and it is stopped.
	Timeout time.Duration
	// Grace is how long a replaced instance's requests and WebSockets
	// have to finish before it is sent SIGTERM.
	Grace time.Duration
	// Surge is how many instances are replaced at once.
	Surge int
}

// Deployed is what a finished deploy did.
type Deployed struct {
	Version  int // the version the deploy started
	Replaced int // instances now running it
}

// Change is what a reload asks of a group: a deploy of Spec (its run
// settings changed), new slots (its number of instances changed), or
// both.
type Change struct {
	Spec    Spec
	Options DeployOptions
	Deploy  bool
	// Slots, from Plan, are the slots to have; nil or the running ones
	// keep them.
	Slots []*Slot
}

// Applied says what Apply did with a change.
type Applied int

const (
	// AppliedNothing: the change asks for what the group has and will
	// have.
	AppliedNothing Applied = iota
	// AppliedNow: the change started at once.
	AppliedNow
	// AppliedLater: the change waits for the running rollout.
	AppliedLater
)

// Apply makes the change in the background, for a reload that must not
// wait for a rollout; its outcome is logged and counted. While a rollout
// runs the change waits, merged with any change already waiting (the
// newest spec and slots win, also when the newest slots are the running
// ones: a reload that undoes a waiting change of instances cancels it; a
// deploy asked for stays asked for), and is made once the rollout ends.
func (g *Group) Apply(c Change) (Applied, error) {
	g.mu.Lock()
	if g.stopping {
		g.mu.Unlock()
		return AppliedNothing, errStopping
	}
	p := g.pending
	if c.Slots != nil && slices.Equal(c.Slots, g.slots) && (p == nil || p.Slots == nil) {
		c.Slots = nil
	}
	if !c.Deploy && c.Slots == nil {
		g.mu.Unlock()
		return AppliedNothing, nil
	}
	if p == nil {
		p = &Change{}
	}
	p.Spec, p.Options = c.Spec, c.Options
	p.Deploy = p.Deploy || c.Deploy
	if c.Slots != nil {
		p.Slots = c.Slots
	}
	g.pending = p
	g.mu.Unlock()
	if g.startPending() {
		return AppliedNow, nil
	}
	return AppliedLater, nil
}

// startPending makes the waiting change, if any, unless a rollout runs:
// every rollout calls it when it ends, so a waiting one is never left
// behind. Slots go first, then the deploy, then slots come: a deploy
// never replaces an instance about to be removed, and a new slot starts
// the version the deploy leaves serving.
func (g *Group) startPending() bool {
	if !g.deploying.TryLock() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.pending
	g.pending = nil
	if p == nil || g.stopping {
		g.deploying.Unlock()
		return false
	}
	g.wg.Go(func() {
		if p.Slots != nil {
			g.shrink(p.Slots, p.Options.Grace)
		}
		if p.Deploy {
			_, _ = g.rollout(p.Spec, p.Options)
		}
		if p.Slots != nil {
			g.grow(p.Slots)
		}
		g.deploying.Unlock()
		g.startPending()
	})
	return true
}

// Deploy replaces the group's instances with instances of spec, Surge
// slots at a time: each new instance starts on its slot's free port, gets
// traffic once it passes the health check, and only then is the old one
// taken out, drained and stopped. A new instance that is not healthy
// within Timeout ends the rollout: it is stopped and every slot not yet
// replaced keeps its old instance. The error is ErrDeploying if a deploy
// is running; spec.Instances is ignored (a reload changes the slots, see
// Resize).
func (g *Group) Deploy(spec Spec, o DeployOptions) (Deployed, error) {
	if !g.deploying.TryLock() {
		return Deployed{}, ErrDeploying
	}
	d, err := g.rollout(spec, o)
	g.deploying.Unlock()
	g.startPending()
	return d, err
}

// rollout is a deploy; the caller holds g.deploying.
func (g *Group) rollout(spec Spec, o DeployOptions) (Deployed, error) {
	select {
	case <-g.deploysOff:
		return Deployed{}, errStopping
	default:
	}
	g.mu.Lock()
	g.version++
	v := g.version
	g.mu.Unlock()
	d := Deployed{Version: v}
	log := g.log.With("version", v)
	slots := g.Slots()
	log.Info("deploy started", "instances", len(slots), "surge", o.Surge)
	surge := max(o.Surge, 1)
	for first := 0; first < len(slots); first += surge {
		batch := slots[first:min(first+surge, len(slots))]
		if err := g.replace(batch, spec, v, o); err != nil {
			g.events.Deployed(g.upstream, DeployFailed)
			log.Error("deploy failed; the instances not yet replaced keep serving", "replaced", d.Replaced, "error", err.Error())
			return d, err
		}
		d.Replaced += len(batch)
	}
	g.events.Deployed(g.upstream, DeploySucceeded)
	log.Info("deploy done", "instances", d.Replaced)
	return d, nil
}

// replace moves each slot of batch to a new instance of spec.
func (g *Group) replace(batch []*Slot, spec Spec, version int, o DeployOptions) error {
	var news []*Instance
	for _, sl := range batch {
		spare := sl.Ports[0]
		if sl.cur.Load().port == spare {
			spare = sl.Ports[1]
		}
		in, err := g.launch(sl, spare, spec, version)
		if err != nil {
			for _, in := range news {
				g.end(in)
			}
			return err
		}
		news = append(news, in)
	}
	if err := g.awaitReady(news, o.Timeout); err != nil {
		for _, in := range news {
			g.end(in)
		}
		return err
	}
	olds := make([]*Instance, len(batch))
	for i, sl := range batch {
		olds[i] = sl.cur.Swap(news[i])
		// Out of rotation: the proxy sends it nothing new from here on.
		olds[i].draining.Store(true)
	}
	for _, old := range olds {
		old.log.Info("instance replaced; draining", "grace", o.Grace.String())
	}
	g.drain(olds, o.Grace)
	for _, old := range olds {
		g.end(old)
	}
	return nil
}

// awaitReady waits until every instance passes its health check.
func (g *Group) awaitReady(ins []*Instance, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ready := 0
		for _, in := range ins {
			if in.Open() {
				ready++
			}
		}
		if ready == len(ins) {
			return nil
		}
		select {
		case <-g.deploysOff:
			return errStopping
		case <-deadline.C:
			for _, in := range ins {
				if !in.Open() {
					msg := fmt.Sprintf("instance %d of version %d did not pass its health check within %s (state %s)", in.ID, in.Version, timeout, in.State())
					if e := in.lastErr.Load().(string); e != "" {
						msg += "; last exit: " + e
					}
					return errors.New(msg)
				}
			}
		case <-tick.C:
		}
	}
}

// drainSettle is how long a drained instance is left alone before its
// load is first read: a request the balancer picked just before the
// instance left rotation has started by then.
const drainSettle = 100 * time.Millisecond

// drain waits until the instances' ports have no request or WebSocket in
// flight, or grace has passed.
func (g *Group) drain(ins []*Instance, grace time.Duration) {
	deadline := time.Now().Add(grace)
	time.Sleep(min(drainSettle, grace))
	for time.Now().Before(deadline) {
		var busy int64
		for _, in := range ins {
			busy += in.port.inFlight()
		}
		if busy == 0 || g.ctx.Err() != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, in := range ins {
		if n := in.port.inFlight(); n > 0 {
			in.log.Warn("deploy grace is over; stopping the instance with requests in flight", "in_flight", n)
		}
	}
}
