package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Cluster counts what replicas tell each other over Redis pub/sub, by the
// message kind (a word fixed by edge's code: ban, unban, revoke), and the
// republishing after Redis came back empty, and whether the bus is live.
// One per process.
type Cluster struct {
	received    *prometheus.CounterVec
	republished prometheus.Counter
	live        prometheus.Gauge
}

// NewCluster creates the cluster collectors and registers them with reg.
func NewCluster(reg prometheus.Registerer) (*Cluster, error) {
	m := &Cluster{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_cluster_events_received_total",
			Help: "Messages from the other replicas applied here over Redis pub/sub, by kind (ban, unban, revoke).",
		}, []string{"kind"}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_cluster_republished_total",
			Help: "Times this replica found Redis without its data (the marker key gone) and wrote back the bans and revocations it holds.",
		}),
		live: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_cluster_bus_live",
			Help: "1 while this replica's pub/sub subscription hears its own heartbeat and has loaded the revocation list since it subscribed (token revocations are then checked in its copy), 0 while they are checked in Redis per request.",
		}),
	}
	for _, c := range []prometheus.Collector{m.received, m.republished, m.live} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering cluster metrics: %w", err)
		}
	}
	return m, nil
}

// Received is the counter of one message kind.
func (m *Cluster) Received(kind string) prometheus.Counter { return m.received.WithLabelValues(kind) }

// Republished counts one republishing.
func (m *Cluster) Republished() prometheus.Counter { return m.republished }

// Live is the gauge of the bus's liveness.
func (m *Cluster) Live() prometheus.Gauge { return m.live }
