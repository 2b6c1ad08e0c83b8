package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLimitsCollectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewLimits(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewLimits(reg); err == nil {
		t.Fatal("registering twice must fail")
	}
	m.Decision("api", "per_user", "allowed").Inc()
	m.Rejection("api", "banned").Inc()
	m.BackendError("limit").Inc()
	m.BanIssued("openid").Inc()
	m.BansActive("ip").Set(2)
	m.ConnRefused("max_conns_per_ip").Inc()
	m.ConnsOpen().Inc()
	m.Evictions().Inc()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"edge_limit_decisions_total": true, "edge_access_rejections_total": true, "edge_limit_backend_errors_total": true,
		"edge_limit_backend_up": true, "edge_bans_issued_total": true, "edge_bans_active": true,
		"edge_connections_refused_total": true, "edge_listener_connections_open": true, "edge_limit_evictions_total": true,
	}
	for _, f := range families {
		if !want[f.GetName()] {
			t.Errorf("unexpected family %s", f.GetName())
		}
		delete(want, f.GetName())
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				if n := strings.ToLower(l.GetName()); n == "openid" || n == "ip" || n == "client" || n == "key" {
					t.Errorf("%s has a per-client label %q", f.GetName(), n)
				}
			}
		}
	}
	if len(want) > 0 {
		t.Errorf("families missing: %v", want)
	}
}
