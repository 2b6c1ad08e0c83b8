package process

import "time"

// Status is one instance as edge status shows it.
type Status struct {
	Instance int       `json:"instance"`
	Version  int       `json:"version"`
	State    string    `json:"state"`
	PID      int       `json:"pid,omitempty"`
	Addr     string    `json:"addr"`
	Started  time.Time `json:"started,omitzero"` // of the running process
	Restarts int64     `json:"restarts"`
	RSS      int64     `json:"rss_bytes,omitempty"`
	CPU      float64   `json:"cpu_seconds,omitempty"` // of the running process, user and system
}

// Status lists the group's instances, by slot, with their process's
// resident memory and CPU time read now.
func (g *Group) Status() []Status {
	var out []Status
	for _, in := range g.Instances() {
		s := Status{Instance: in.ID, Version: in.Version, State: in.State(), PID: int(in.pid.Load()),
			Addr: in.Addr, Restarts: in.restarts.Load()}
		if ns := in.started.Load(); ns != 0 {
			s.Started = time.Unix(0, ns)
		}
		if s.PID != 0 {
			s.RSS, _ = residentBytes(s.PID)
			s.CPU, _ = cpuSeconds(s.PID)
		}
		out = append(out, s)
	}
	return out
}

// Deploying reports whether a deploy of the group is running.
func (g *Group) Deploying() bool {
	if g.deploying.TryLock() {
		g.deploying.Unlock()
		return false
	}
	return true
}
