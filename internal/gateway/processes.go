package gateway

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"edge/internal/admin"
	"edge/internal/config"
	"edge/internal/metrics"
	"edge/internal/process"
	"edge/internal/proxy"
)

var (
	_ process.Events = (*metrics.Process)(nil)
	_ proxy.Gate     = (*process.Port)(nil)
	_ process.Load   = (*proxy.Target)(nil)
)

// startProcesses starts the instances of every upstream that has a
// [upstreams.run], once: they outlive snapshots, and a reload keeps them
// (config.KeepRun).
func startProcesses(cfg *config.Config, m *metrics.Metrics, log *slog.Logger) (map[string]*process.Group, error) {
	groups := make(map[string]*process.Group)
	for _, uc := range cfg.Upstreams {
		if uc.Run == nil {
			continue
		}
		m.Process.Start(uc.Name, []string{process.ReasonExit, process.ReasonMemory}, process.DeployResults)
		g, err := process.Start(processSpec(uc), log, m.Process)
		if err != nil {
			stopProcesses(groups)
			return nil, err
		}
		groups[uc.Name] = g
	}
	return groups, nil
}

func processSpec(uc config.Upstream) process.Spec {
	r, hc := uc.Run, uc.HealthCheck
	expect := func(code int) bool { return code >= 200 && code < 400 }
	if len(hc.ExpectStatus) > 0 {
		expect = func(code int) bool { return slices.Contains(hc.ExpectStatus, code) }
	}
	return process.Spec{
		Upstream:  uc.Name,
		Command:   r.Command,
		Args:      r.Args,
		Dir:       r.Dir,
		Env:       r.RunEnv(),
		Instances: r.Instances,
		PortEnv:   r.PortEnv,
		SocketEnv: r.SocketEnv,
		LogEdge:   r.LogEdge,
		StopGrace: r.StopGrace.Std(),
		MaxMemory: int64(r.MaxMemory),
		LogFile:   r.LogFile,
		Health: process.Health{
			Path:               hc.Path,
			Interval:           hc.Interval.Std(),
			Timeout:            hc.Timeout.Std(),
			Expect:             expect,
			HealthyThreshold:   hc.HealthyThreshold,
			UnhealthyThreshold: hc.UnhealthyThreshold,
		},
		Policy: process.DefaultPolicy,
	}
}

// stopDeploys ends the rollouts waiting for new instances: edge is
// shutting down.
func (g *Gateway) stopDeploys() {
	for _, group := range g.lasting.procs {
		group.StopDeploys()
	}
}

// stopProcesses stops every group at once: each waits out its own
// stop_grace, so the longest one bounds the whole.
func stopProcesses(groups map[string]*process.Group) {
	done := make(chan struct{}, len(groups))
	for _, g := range groups {
		go func() { g.Stop(); done <- struct{}{} }()
	}
	for range groups {
		<-done
	}
}

func deployOptions(r *config.Run) process.DeployOptions {
	return process.DeployOptions{Timeout: r.DeployTimeout.Std(), Grace: r.DeployGrace.Std(), Surge: r.MaxSurge}
}

// planInstances are the slots of every upstream edge runs under cfg: the
// running ones, fewer, or more with new addresses (process.Group.Plan),
// so that a change of instances is in the targets the config compiles.
func (g *Gateway) planInstances(cfg *config.Config) (map[string][]*process.Slot, error) {
	plans := make(map[string][]*process.Slot)
	for _, uc := range cfg.Upstreams {
		group := g.lasting.procs[uc.Name]
		if group == nil || uc.Run == nil {
			continue
		}
		slots, err := group.Plan(uc.Run.Instances)
		if err != nil {
			return nil, err
		}
		plans[uc.Name] = slots
	}
	return plans, nil
}

// instanceTargets are the targets of an upstream's instance addresses,
// both of every slot, each gated by its port: out of service unless the
// instance on it answers its health check and is not being replaced. A
// deploy moves traffic between a slot's two ports by their gates, so the
// snapshot's targets never change with it.
func instanceTargets(name string, slots []*process.Slot, stage *proxy.Stage, to proxy.TransportOptions) []*proxy.Target {
	var ts []*proxy.Target
	for _, sl := range slots {
		for _, p := range sl.Ports {
			t := stage.Target(name, p.Addr, to)
			t.SetGate(p)
			p.Track(t)
			ts = append(ts, t)
		}
	}
	return ts
}

// Deploy replaces an upstream's instances, one rollout at a time, with
// instances of the running config's [upstreams.run] (POST
// /upstreams/NAME/deploy, edge deploy): new code in place, same settings.
func (g *Gateway) Deploy(name string) (process.Deployed, error) {
	group := g.lasting.procs[name]
	if group == nil {
		return process.Deployed{}, admin.ErrNotRun
	}
	for _, uc := range g.snap.Load().cfg.Upstreams {
		if uc.Name == name && uc.Run != nil {
			return group.Deploy(processSpec(uc), deployOptions(uc.Run))
		}
	}
	return process.Deployed{}, admin.ErrNotRun
}

// changeInstances starts, without waiting for them, the changes a reload
// makes to the instances of each upstream edge runs: a rolling deploy
// where the run settings changed (redeploy names those), and the slots
// the applied config was compiled with.
func (g *Gateway) changeInstances(cfg *config.Config, redeploy []string, slots map[string][]*process.Slot) {
	for _, uc := range cfg.Upstreams {
		group := g.lasting.procs[uc.Name]
		if group == nil || uc.Run == nil {
			continue
		}
		deploy := slices.Contains(redeploy, uc.Name)
		what, them := "run settings changed; deploying", " them"
		if !deploy {
			what, them = "instances changed; starting or stopping instances", ""
		}
		applied, err := group.Apply(process.Change{Spec: processSpec(uc), Options: deployOptions(uc.Run), Deploy: deploy, Slots: slots[uc.Name]})
		switch {
		case err != nil:
			g.log.Warn(what+" cannot start", "upstream", uc.Name, "error", err.Error())
		case applied == process.AppliedNow:
			g.log.Info(what, "upstream", uc.Name, "instances", uc.Run.Instances)
		case applied == process.AppliedLater:
			g.log.Info(what+them+" once the running deploy ends", "upstream", uc.Name, "instances", uc.Run.Instances)
		}
	}
}

// Upstreams is every upstream edge runs, by name, with its instances.
func (g *Gateway) Upstreams() []admin.Upstream {
	out := []admin.Upstream{}
	for _, name := range g.processNames() {
		group := g.lasting.procs[name]
		out = append(out, admin.Upstream{Name: name, Deploying: group.Deploying(), Instances: group.Status()})
	}
	return out
}

// instanceCounts feeds edge_upstream_instances: every state of every group,
// zeros included, so a state that empties drops to 0 rather than vanishing.
func (g *Gateway) instanceCounts() []metrics.InstanceCount {
	var out []metrics.InstanceCount
	for _, name := range g.processNames() {
		n := make(map[string]int)
		for _, in := range g.lasting.procs[name].Instances() {
			n[in.State()]++
		}
		for _, st := range process.States {
			out = append(out, metrics.InstanceCount{Upstream: name, State: st, N: n[st]})
		}
	}
	return out
}

// instanceUsage feeds the per-instance memory and CPU metrics and the
// ready instances by version.
func (g *Gateway) instanceUsage() []metrics.InstanceUsage {
	var out []metrics.InstanceUsage
	for _, name := range g.processNames() {
		for _, st := range g.lasting.procs[name].Status() {
			out = append(out, metrics.InstanceUsage{Upstream: name, Instance: st.Instance, Version: st.Version,
				Ready: st.State == process.StateReady, Running: st.PID != 0, RSSBytes: st.RSS, CPUSeconds: st.CPU})
		}
	}
	return out
}

func (g *Gateway) processNames() []string {
	names := make([]string, 0, len(g.lasting.procs))
	for name := range g.lasting.procs {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// processReadiness is /readyz's view of the instances: one line per
// upstream edge runs; ok is false when one of them has no instance ready,
// since this edge cannot serve that upstream at all.
func (g *Gateway) processReadiness() (ok bool, detail []string) {
	ok = true
	for _, name := range g.processNames() {
		ready := 0
		var states []string
		for _, in := range g.lasting.procs[name].Instances() {
			st := in.State()
			if st == process.StateReady {
				ready++
			}
			states = append(states, fmt.Sprintf("%d=%s", in.ID, st))
		}
		if ready == 0 {
			ok = false
		}
		detail = append(detail, fmt.Sprintf("upstream %s: %d/%d instances ready (%s)", name, ready, len(states), strings.Join(states, " ")))
	}
	return ok, detail
}
