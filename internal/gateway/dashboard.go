package gateway

import (
	"slices"
	"strconv"
	"time"

	"edge/internal/admin"
	"edge/internal/config"
	"edge/internal/live"
	edgetls "edge/internal/tls"
)

// dashboard is the Server as the admin dashboard's API sees it.
type dashboard struct{ s *Server }

var _ admin.Dashboard = dashboard{}

// setLastReload records a config load for the dashboard's overview.
func (s *Server) setLastReload(trigger, result string, err error, at time.Time) {
	r := &admin.Reload{At: at.UTC(), Trigger: trigger, Result: result}
	if err != nil {
		r.Problems = problemLines(err)
	}
	s.lastReload.Store(r)
}

func (d dashboard) Overview() admin.Overview {
	s := d.s
	snap := s.gw.snap.Load()
	now := time.Now()
	o := admin.Overview{
		Version:       s.opts.Version,
		Started:       s.started.UTC().Truncate(time.Second),
		UptimeSeconds: int64(now.Sub(s.started) / time.Second),
		Config:        s.opts.ConfigPath,
		Traffic:       s.gw.live.Traffic().LastMinute,
		Routes:        len(snap.cfg.Routes),
		Upstreams:     len(snap.upstreamList),
		Bans:          len(s.gw.lasting.limits.Bans()),
	}
	if r := s.lastReload.Load(); r != nil {
		o.LastReload = *r
	}
	for _, u := range snap.upstreamList {
		for _, t := range u.Targets() {
			o.Targets++
			if t.Available(now) {
				o.TargetsUp++
			}
		}
	}
	return o
}

func (d dashboard) Routes() []admin.RouteView {
	cfg := d.s.gw.snap.Load().cfg
	names := make([]string, len(cfg.Routes))
	for i := range cfg.Routes {
		names[i] = cfg.Routes[i].Name
	}
	traffic := d.s.gw.live.Routes(names)
	out := make([]admin.RouteView, 0, len(cfg.Routes))
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		v := admin.RouteView{
			Name:    rc.Name,
			Hosts:   nonNil(rc.Hosts),
			Match:   routeMatch(rc),
			Methods: nonNil(rc.Methods),
			Auth:    rc.Auth,
			Limits:  []string{},
			Answer:  routeAnswer(rc),
			Live:    traffic[rc.Name],
		}
		if v.Auth == "" {
			v.Auth = "none"
		}
		for _, l := range cfg.Limits {
			if len(l.Routes) == 0 || slices.Contains(l.Routes, rc.Name) {
				v.Limits = append(v.Limits, l.Name)
			}
		}
		out = append(out, v)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// routeMatch says how a route matches paths, in nginx's location words.
func routeMatch(rc *config.Route) string {
	switch {
	case rc.Exact != "":
		return "= " + rc.Exact
	case rc.Regex != "" && rc.RegexIgnoreCase:
		return "~* " + rc.Regex
	case rc.Regex != "":
		return "~ " + rc.Regex
	}
	return rc.Path
}

// routeAnswer says what answers a route's requests; never a header value
// or a body, which may hold what the config's author keeps to the route.
func routeAnswer(rc *config.Route) string {
	switch {
	case rc.Upstream != "" && rc.Release != nil:
		return "upstream " + rc.Upstream + ", release to " + rc.Release.Upstream
	case rc.Upstream != "":
		return "upstream " + rc.Upstream
	case rc.Static != "":
		return "static " + rc.Static
	case rc.Respond != nil:
		status := rc.Respond.Status
		if status == 0 {
			status = 200
		}
		return "respond " + strconv.Itoa(status)
	case rc.Redirect != nil:
		return "redirect"
	}
	return ""
}

func (d dashboard) UpstreamViews() []admin.UpstreamView {
	g := d.s.gw
	snap := g.snap.Load()
	now := time.Now()
	out := make([]admin.UpstreamView, 0, len(snap.upstreamList))
	for _, u := range snap.upstreamList {
		v := admin.UpstreamView{Name: u.Name(), Targets: []admin.TargetView{}}
		for _, t := range u.Targets() {
			v.Targets = append(v.Targets, admin.TargetView{
				Addr:      t.Addr,
				Healthy:   t.Available(now),
				InFlight:  t.InFlight(),
				LatencyMs: float64(t.Latency().Microseconds()) / 1000,
				Failures:  t.Failures(),
			})
		}
		if group := g.lasting.procs[u.Name()]; group != nil {
			v.Deploying, v.Instances = group.Deploying(), group.Status()
		}
		out = append(out, v)
	}
	return out
}

func (d dashboard) Security() admin.Security {
	g := d.s.gw
	return admin.Security{
		Bans:           g.lasting.limits.Bans(),
		TopLimited:     g.lasting.limits.TopLimited(10),
		AuthRejections: g.metrics.Identity.RejectionsByCode(),
	}
}

func (d dashboard) Certificates() edgetls.Status { return d.s.tlsm.Status() }

func (d dashboard) Traffic() live.Traffic { return d.s.gw.live.Traffic() }
