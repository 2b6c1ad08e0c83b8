package metrics

import "github.com/prometheus/client_golang/prometheus"

// Process counts what happens to the app instances edge runs
// ([upstreams.run]).
type Process struct {
	restarts *prometheus.CounterVec
	deploys  *prometheus.CounterVec
}

func newProcess(reg *prometheus.Registry) *Process {
	p := &Process{restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_upstream_instance_restarts_total",
		Help: "Ends of instances of an upstream edge runs, each followed by a restart (after a backoff, or after 5 minutes once the instance is failed), by reason: exit (the process ended or could not start) or memory (stopped above max_memory).",
	}, []string{"upstream", "reason"}),
		deploys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_upstream_deploys_total",
			Help: "Rolling deploys of an upstream edge runs, by result: succeeded (every instance replaced) or failed (a new instance did not pass its health check in time; the instances not yet replaced keep serving).",
		}, []string{"upstream", "result"})}
	reg.MustRegister(p.restarts, p.deploys)
	return p
}

// Deployed counts one finished deploy.
func (p *Process) Deployed(upstream, result string) {
	p.deploys.WithLabelValues(upstream, result).Inc()
}

// Restarted counts one restart.
func (p *Process) Restarted(upstream, reason string) {
	p.restarts.WithLabelValues(upstream, reason).Inc()
}

// Start makes the series of an upstream's restarts and deploys exist at
// 0, so a rate or an alert sees the first one.
func (p *Process) Start(upstream string, reasons, results []string) {
	for _, r := range reasons {
		p.restarts.WithLabelValues(upstream, r)
	}
	for _, r := range results {
		p.deploys.WithLabelValues(upstream, r)
	}
}

// InstanceCount is how many instances of an upstream are in one state.
type InstanceCount struct {
	Upstream, State string
	N               int
}

// RegisterInstances exports edge_upstream_instances, read at scrape time.
func (m *Metrics) RegisterInstances(list func() []InstanceCount) {
	m.Registry.MustRegister(&gaugeList[InstanceCount]{list: list, desc: prometheus.NewDesc(
		"edge_upstream_instances",
		"Instances of an upstream edge runs, by state: starting, ready (gets traffic), unhealthy, backoff (waiting to restart), failed (crash loop; retried every 5 minutes), draining (replaced by a deploy, finishing its requests), stopped.",
		[]string{"upstream", "state"}, nil),
		point: func(n InstanceCount) (float64, []string) { return float64(n.N), []string{n.Upstream, n.State} }})
}
