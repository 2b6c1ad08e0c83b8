package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TLS reports the certificates edge manages. The name label is a configured
// domain (tls.domains), never a name taken from a ClientHello; kind and
// result are fixed words. One per process: it outlives reloads.
type TLS struct {
	expiry      *prometheus.GaugeVec
	orders      *prometheus.CounterVec
	lastFailure *prometheus.GaugeVec
}

// NewTLS creates the TLS collectors and registers them with reg.
func NewTLS(reg prometheus.Registerer) (*TLS, error) {
	m := &TLS{
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edge_tls_certificate_expiry_timestamp_seconds",
			Help: "Expiry (NotAfter) of the certificate served for each managed name, as a Unix time.",
		}, []string{"name"}),
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_tls_acme_orders_total",
			Help: "ACME certificate orders by kind (issue, renew) and result (success, failure).",
		}, []string{"kind", "result"}),
		lastFailure: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edge_tls_acme_last_failure_timestamp_seconds",
			Help: "Time of the last failed ACME order or renewal for each managed name, as a Unix time.",
		}, []string{"name"}),
	}
	for _, c := range []prometheus.Collector{m.expiry, m.orders, m.lastFailure} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering TLS metrics: %w", err)
		}
	}
	// Both kinds and results exist from the start so rate() and alerts see
	// a zero rather than no series.
	for _, kind := range []string{"issue", "renew"} {
		for _, result := range []string{"success", "failure"} {
			m.orders.WithLabelValues(kind, result)
		}
	}
	return m, nil
}

// SetExpiry records the NotAfter of the certificate now served for name.
func (m *TLS) SetExpiry(name string, notAfter time.Time) {
	m.expiry.WithLabelValues(name).Set(float64(notAfter.Unix()))
}

// Order counts one finished order; kind is "issue" or "renew", result is
// "success" or "failure".
func (m *TLS) Order(kind, result string) { m.orders.WithLabelValues(kind, result).Inc() }

// Failure records when an order or renewal for name last failed.
func (m *TLS) Failure(name string, at time.Time) {
	m.lastFailure.WithLabelValues(name).Set(float64(at.Unix()))
}

// Forget drops the series of a name no longer configured, so a removed
// domain does not keep firing an expiry alert.
func (m *TLS) Forget(name string) {
	m.expiry.DeleteLabelValues(name)
	m.lastFailure.DeleteLabelValues(name)
}
