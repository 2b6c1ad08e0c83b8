package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits counts what the rate limiter, the bans and the access rules decide.
// Route and rule labels are names from the config; result, reason, kind and
// op are words fixed by edge's code. No label ever carries an openid or an
// IP. It outlives config reloads: one per process.
type Limits struct {
	decisions     *prometheus.CounterVec
	rejections    *prometheus.CounterVec
	backendErrors *prometheus.CounterVec
	backendUp     prometheus.Gauge
	bansIssued    *prometheus.CounterVec
	bansActive    *prometheus.GaugeVec
	connsRefused  *prometheus.CounterVec
	connsOpen     prometheus.Gauge
	evictions     prometheus.Counter
}

// NewLimits creates the limiter collectors and registers them with reg.
func NewLimits(reg prometheus.Registerer) (*Limits, error) {
	m := &Limits{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_limit_decisions_total",
			Help: "Rate-limit decisions by route, rule and result (allowed, limited, no_key, fail_open, fail_closed).",
		}, []string{"route", "rule", "result"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_access_rejections_total",
			Help: "Requests refused before any rate limit, by route and reason (ip_denied, ip_not_allowed, user_agent, banned, inflight, inflight_per_ip).",
		}, []string{"route", "reason"}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_limit_backend_errors_total",
			Help: "Failed limiter calls to Redis, by operation (limit, violation, ban_sync, ban_lift).",
		}, []string{"op"}),
		backendUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_limit_backend_up",
			Help: "1 while the limiter's Redis answers (or none is configured), 0 while its failure policy applies.",
		}),
		bansIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_bans_issued_total",
			Help: "Bans issued by this replica, by kind (openid, ip).",
		}, []string{"kind"}),
		bansActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edge_bans_active",
			Help: "Bans in force as this replica knows them, by kind (openid, ip).",
		}, []string{"kind"}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_connections_refused_total",
			Help: "Connections closed at accept, by reason (max_conns, max_conns_per_ip, ip_denied, ip_not_allowed).",
		}, []string{"reason"}),
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_listener_connections_open",
			Help: "TCP connections accepted on the HTTPS and HTTP listeners and not yet closed, including those still in the TLS handshake or sending headers.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_limit_evictions_total",
			Help: "In-memory limiter keys dropped while still counting because a rule reached limiter.max_keys; raise it if this grows.",
		}),
	}
	m.backendUp.Set(1)
	for _, c := range []prometheus.Collector{m.decisions, m.rejections, m.backendErrors, m.backendUp,
		m.bansIssued, m.bansActive, m.connsRefused, m.connsOpen, m.evictions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering limits metrics: %w", err)
		}
	}
	return m, nil
}

// Decision returns the counter of one route, rule and result, resolved once
// when a config is compiled so a decision does no label lookup.
func (m *Limits) Decision(route, rule, result string) prometheus.Counter {
	return m.decisions.WithLabelValues(route, rule, result)
}

// Rejection returns the counter of requests a route refused for reason.
func (m *Limits) Rejection(route, reason string) prometheus.Counter {
	return m.rejections.WithLabelValues(route, reason)
}

// BackendError returns the counter of failed Redis calls of one operation.
func (m *Limits) BackendError(op string) prometheus.Counter {
	return m.backendErrors.WithLabelValues(op)
}

// BackendUp is 1 while Redis answers the limiter.
func (m *Limits) BackendUp() prometheus.Gauge { return m.backendUp }

// BanIssued returns the counter of bans issued on kind.
func (m *Limits) BanIssued(kind string) prometheus.Counter { return m.bansIssued.WithLabelValues(kind) }

// BansActive returns the gauge of bans in force on kind.
func (m *Limits) BansActive(kind string) prometheus.Gauge { return m.bansActive.WithLabelValues(kind) }

// ConnRefused returns the counter of connections refused for reason.
func (m *Limits) ConnRefused(reason string) prometheus.Counter {
	return m.connsRefused.WithLabelValues(reason)
}

// ConnsOpen is the number of open connections through limited listeners.
func (m *Limits) ConnsOpen() prometheus.Gauge { return m.connsOpen }

// Evictions counts live in-memory keys dropped at the key cap.
func (m *Limits) Evictions() prometheus.Counter { return m.evictions }
