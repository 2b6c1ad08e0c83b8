package metrics

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Identity counts logins by app (a name from the config) and result (a word
// fixed by edge's code), and requests refused by a route's auth policy by the
// spec's error code. It outlives config reloads: one per process. No label
// ever carries an openid or anything else taken from a request.
type Identity struct {
	logins   *prometheus.CounterVec
	rejected *prometheus.CounterVec
}

// NewIdentity creates the identity collectors and registers them with reg.
func NewIdentity(reg prometheus.Registerer) (*Identity, error) {
	m := &Identity{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_logins_total",
			Help: "Mini-program logins answered by edge, by app and result (ok, code_rejected, platform_error, hook_error, bad_request).",
		}, []string{"app", "result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_auth_rejections_total",
			Help: "Requests refused by a route's identity checks, by route and the error code of the answer (40101, 40102...).",
		}, []string{"route", "code"}),
	}
	for _, c := range []prometheus.Collector{m.logins, m.rejected} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering identity metrics: %w", err)
		}
	}
	return m, nil
}

// Login returns the login counter of one app and result, resolved once when
// the login handler is built so a login does no label lookup.
func (m *Identity) Login(app, result string) prometheus.Counter {
	return m.logins.WithLabelValues(app, result)
}

// Rejected returns the rejection counter of a route for one error code.
func (m *Identity) Rejected(route string, code int) prometheus.Counter {
	return m.rejected.WithLabelValues(route, strconv.Itoa(code))
}

// RejectionsByCode sums the identity rejections over every route, by
// error code, read in process for the admin dashboard; codes never
// answered are left out.
func (m *Identity) RejectionsByCode() map[string]uint64 {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		m.rejected.Collect(ch)
		close(ch)
	}()
	out := map[string]uint64{}
	for mt := range ch {
		var pb dto.Metric
		if mt.Write(&pb) != nil || pb.Counter.GetValue() == 0 {
			continue
		}
		for _, l := range pb.Label {
			if l.GetName() == "code" {
				out[l.GetValue()] += uint64(pb.Counter.GetValue())
			}
		}
	}
	return out
}
