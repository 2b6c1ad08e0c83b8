package gateway

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestHealthCountsSurviveFrequentReloads: the consecutive results of the
// active health check belong to the target, not to one snapshot's checker.
// A target that recovers comes back after healthy_threshold good checks even
// when reloads come far more often than interval × healthy_threshold (each
// reload starts a checker, and a checker that forgot the count never got
// there).
func TestHealthCountsSurviveFrequentReloads(t *testing.T) {
	a := startBackend(t, "a", nil)
	var healthy atomic.Bool
	b := startBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/check" && !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	cfg := func(gen int) string {
		return fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q, %q]
retries = 0
[upstreams.health_check]
path = "/check"
interval = "1s"
healthy_threshold = 3
unhealthy_threshold = 1
[upstreams.passive_health]
max_fails = 0
[[routes]]
name = "app"
path = "/"
upstream = "app"
set_request_headers = { "X-Gen" = "%d" }
`, a.addr, b.addr, gen)
	}
	e := startEdge(t, cfg(0))
	up := func(v int) bool {
		return strings.Contains(e.metric(t, "edge_upstream_target_healthy"), fmt.Sprintf(`target=%q,upstream="app"} %d`, b.addr, v))
	}
	eventually(t, 5*time.Second, func() bool { return up(0) }, "b marked down")

	healthy.Store(true)
	reloads := 0
	eventually(t, 10*time.Second, func() bool {
		reloads++
		e.writeConfig(cfg(reloads))
		if res, err := e.srv.Reload(TriggerAdmin); err != nil || res == ReloadFailed {
			t.Fatalf("reload %d: %s %v", reloads, res, err)
		}
		return up(1)
	}, "b back while reloads keep coming")
	t.Logf("b back after %d reloads", reloads)
	fromB := 0
	for range 10 {
		if resp, _ := e.get(t, "api.example.com", "/x"); resp.Header.Get("X-Backend") == "b" {
			fromB++
		}
	}
	if fromB == 0 {
		t.Fatal("b is marked up but gets no traffic")
	}
}

// TestHealthCheckRemovedByReloadLetsTargetsBackIn: a target the active check
// took out is no longer held out once a reload removes the check; nothing
// would ever bring it back otherwise.
func TestHealthCheckRemovedByReloadLetsTargetsBackIn(t *testing.T) {
	a := startBackend(t, "a", nil)
	b := startBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/check" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	cfg := func(check string) string {
		return fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q, %q]
retries = 0
%s
[upstreams.passive_health]
max_fails = 0
[[routes]]
name = "app"
path = "/"
upstream = "app"
`, a.addr, b.addr, check)
	}
	e := startEdge(t, cfg(`[upstreams.health_check]
path = "/check"
interval = "1s"
unhealthy_threshold = 1`))
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(e.metric(t, "edge_upstream_target_healthy"), fmt.Sprintf(`target=%q,upstream="app"} 0`, b.addr))
	}, "b marked down")

	e.writeConfig(cfg(""))
	if res, err := e.srv.Reload(TriggerAdmin); err != nil || res == ReloadFailed {
		t.Fatalf("reload: %s %v", res, err)
	}
	fromB := 0
	for range 10 {
		if resp, _ := e.get(t, "api.example.com", "/x"); resp.Header.Get("X-Backend") == "b" {
			fromB++
		}
	}
	if fromB == 0 {
		t.Fatal("the health check is gone, yet b still gets no traffic")
	}
}

// TestUnixSocketTarget: a target "unix:/path" (nginx's server unix:) gets
// requests and health checks over the socket, the checks with Host
// localhost as nginx sends; a target whose socket stops passing its
// check is marked down.
func TestUnixSocketTarget(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var healthy atomic.Bool
	healthy.Store(true)
	var checkHost atomic.Value
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/check" {
			checkHost.Store(r.Host)
			if !healthy.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		fmt.Fprintf(w, "socket app: %s %s", r.Host, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = ["unix:%s"]
retries = 0
[upstreams.health_check]
path = "/check"
interval = "1s"
unhealthy_threshold = 1
[[routes]]
name = "app"
path = "/"
upstream = "app"
`, sock))
	resp, body := e.get(t, "api.example.com", "/hello")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "socket app: api.example.com:") || !strings.HasSuffix(body, " /hello") {
		t.Fatalf("through the socket: %d %q", resp.StatusCode, body)
	}
	eventually(t, 10*time.Second, func() bool { h, _ := checkHost.Load().(string); return h == "localhost" }, "a health check with Host localhost")
	healthy.Store(false)
	eventually(t, 10*time.Second, func() bool {
		return strings.Contains(e.metric(t, "edge_upstream_target_healthy"), fmt.Sprintf(`target="unix:%s",upstream="app"} 0`, sock))
	}, "the socket target marked down")
}
