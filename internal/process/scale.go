package process

import (
	"slices"
	"time"
)

// Plan returns the slots the group has with n instances: its first n, and
// new ones (with addresses chosen, nothing running) beyond those it has.
// It changes nothing; a Change to the plan does, once the plan's
// addresses are targets of the serving config: slots it drops are taken
// out of rotation, drained for the deploy grace and stopped; slots it
// adds start the version the other slots serve. A plan that is never used costs
// nothing but the addresses it chose.
func (g *Group) Plan(n int) ([]*Slot, error) {
	cur := g.Slots()
	if n <= len(cur) {
		return cur[:n], nil
	}
	more, err := g.newSlots(len(cur), n-len(cur))
	if err != nil {
		return nil, err
	}
	return append(cur, more...), nil
}

// newest is the current instance of the highest version (nil without
// slots); the caller holds g.mu.
func (g *Group) newest() *Instance {
	var best *Instance
	for _, sl := range g.slots {
		if in := sl.cur.Load(); in != nil && (best == nil || in.Version > best.Version) {
			best = in
		}
	}
	return best
}

// shrink stops the slots plan does not keep: out of rotation at once,
// then drained up to grace, then stopped, all together. The caller holds
// g.deploying.
func (g *Group) shrink(plan []*Slot, grace time.Duration) {
	var gone []*Slot
	g.mu.Lock()
	g.slots = slices.DeleteFunc(g.slots, func(sl *Slot) bool {
		if slices.Contains(plan, sl) {
			return false
		}
		gone = append(gone, sl)
		return true
	})
	g.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	var olds []*Instance
	for _, sl := range gone {
		in := sl.cur.Load()
		in.draining.Store(true)
		in.log.Info("instance removed by a change of instances; draining", "grace", grace.String())
		olds = append(olds, in)
	}
	g.drain(olds, grace)
	for i, in := range olds {
		g.end(in)
		gone[i].closeLog()
	}
	g.log.Info("instances removed", "instances", len(g.Slots()))
}

// grow starts the slots plan adds, each with the spec and version of the
// newest instance running, after the slots kept. They get
// traffic once they pass their health check, like any new instance. The
// caller holds g.deploying.
func (g *Group) grow(plan []*Slot) {
	g.mu.Lock()
	newest := g.newest()
	var added []*Slot
	for _, sl := range plan {
		if !slices.Contains(g.slots, sl) {
			added = append(added, sl)
		}
	}
	g.mu.Unlock()
	if newest == nil {
		return
	}
	for _, sl := range added {
		in, err := g.launch(sl, sl.Ports[0], newest.spec, newest.Version)
		if err != nil {
			return
		}
		sl.cur.Store(in)
		g.mu.Lock()
		g.slots = append(g.slots, sl)
		g.mu.Unlock()
	}
	if len(added) > 0 {
		g.log.Info("instances added", "instances", len(g.Slots()))
	}
}
