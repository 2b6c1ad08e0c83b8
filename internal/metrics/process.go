package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

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

// InstanceUsage is one instance edge runs, read at scrape time: its
// resource use when a process of it is running (it may be in backoff).
type InstanceUsage struct {
	Upstream   string
	Instance   int
	Version    int
	Ready      bool
	Running    bool
	RSSBytes   int64
	CPUSeconds float64
}

// RegisterInstanceUsage exports each running instance's memory and CPU and
// the ready instances of each version. Version is a label because during a
// deploy an instance's old and next version run side by side; only
// versions running now have series, so the sets stay as small as the
// instances. The instance's label is edge_instance: Prometheus gives
// "instance" to the scraped target (edge itself).
func (m *Metrics) RegisterInstanceUsage(list func() []InstanceUsage) {
	m.Registry.MustRegister(&instanceUsage{list: list,
		memory: prometheus.NewDesc("edge_upstream_instance_memory_bytes",
			"Resident memory (VmRSS) of each running instance of an upstream edge runs, by instance (edge_instance, as EDGE_INSTANCE) and version.",
			[]string{"upstream", "edge_instance", "version"}, nil),
		cpu: prometheus.NewDesc("edge_upstream_instance_cpu_seconds_total",
			"CPU time (user and system) used by the running process of each instance of an upstream edge runs, by instance and version; it starts over when the instance restarts.",
			[]string{"upstream", "edge_instance", "version"}, nil),
		ready: prometheus.NewDesc("edge_upstream_version_instances_ready",
			"Instances of an upstream edge runs that are ready (get traffic), by version, for every version running now.",
			[]string{"upstream", "version"}, nil)})
}

type instanceUsage struct {
	list               func() []InstanceUsage
	memory, cpu, ready *prometheus.Desc
}

func (c *instanceUsage) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.memory
	ch <- c.cpu
	ch <- c.ready
}

func (c *instanceUsage) Collect(ch chan<- prometheus.Metric) {
	type key struct {
		upstream string
		version  int
	}
	var versions []key
	ready := map[key]int{}
	for _, u := range c.list() {
		if u.Running {
			inst, ver := strconv.Itoa(u.Instance), strconv.Itoa(u.Version)
			ch <- prometheus.MustNewConstMetric(c.memory, prometheus.GaugeValue, float64(u.RSSBytes), u.Upstream, inst, ver)
			ch <- prometheus.MustNewConstMetric(c.cpu, prometheus.CounterValue, u.CPUSeconds, u.Upstream, inst, ver)
		}
		k := key{u.Upstream, u.Version}
		n, seen := ready[k]
		if !seen {
			versions = append(versions, k)
		}
		if u.Ready {
			n++
		}
		ready[k] = n
	}
	for _, k := range versions {
		ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, float64(ready[k]), k.upstream, strconv.Itoa(k.version))
	}
}
