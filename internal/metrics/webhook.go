package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Webhook counts platform callbacks by route (a name from the config), kind
// (wechat_push, wechatpay_v3, alipay) and, for rejections, a reason word
// fixed by edge's code. It outlives config reloads: one per process.
type Webhook struct {
	verified *prometheus.CounterVec
	rejected *prometheus.CounterVec
}

// NewWebhook creates the callback collectors and registers them with reg.
func NewWebhook(reg prometheus.Registerer) (*Webhook, error) {
	m := &Webhook{
		verified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_callbacks_verified_total",
			Help: "Platform callbacks whose signature verified and that were passed on (or answered, for URL checks).",
		}, []string{"route", "kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_callbacks_rejected_total",
			Help: "Platform callbacks rejected before reaching the upstream, by reason.",
		}, []string{"route", "kind", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.verified, m.rejected} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering callback metrics: %w", err)
		}
	}
	return m, nil
}

// Verified returns the counter of verified callbacks for a route, resolved
// once when the route is compiled so the request path does no label lookup.
func (m *Webhook) Verified(route, kind string) prometheus.Counter {
	return m.verified.WithLabelValues(route, kind)
}

// Rejected returns the counter of rejections of a route for one reason.
func (m *Webhook) Rejected(route, kind, reason string) prometheus.Counter {
	return m.rejected.WithLabelValues(route, kind, reason)
}
