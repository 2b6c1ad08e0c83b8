package limits

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/metrics"
	"edge/internal/reqctx"
	"edge/internal/testpeer"
)

func newClock() *testpeer.Clock {
	return testpeer.NewClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
}

type harness struct {
	e     *Engine
	clock *testpeer.Clock
	m     *metrics.Limits
	log   *testpeer.SyncBuffer
}

type harnessOpt struct {
	redis redis.Scripter
	clock *testpeer.Clock
	// realClock runs the engine on time.Now (benchmarks).
	realClock bool
}

func newHarness(t testing.TB, cfg *config.Config, o harnessOpt) *harness {
	t.Helper()
	m, err := metrics.NewLimits(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if o.clock == nil {
		o.clock = newClock()
	}
	now := o.clock.Now
	if o.realClock {
		now = time.Now
	}
	logs := &testpeer.SyncBuffer{}
	e, err := New(cfg, Options{
		Redis:   o.redis,
		Metrics: m,
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
		Now:     now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return &harness{e: e, clock: o.clock, m: m, log: logs}
}

// cfgWith returns a config with routes "api" and "login" and the given
// limit sections.
func cfgWith(ls config.LimitSections) *config.Config {
	return &config.Config{
		Routes:        []config.Route{{Name: "api", Path: "/api/"}, {Name: "login", Path: "/login"}},
		LimitSections: ls,
	}
}

func parseRate(t testing.TB, s string) config.Rate {
	t.Helper()
	r, err := config.ParseRate(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// client describes who sends a request.
type client struct {
	ip     string
	openid string
	header map[string]string
}

func newRequest(c client) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/api/x", nil)
	info := reqctx.New(time.Now())
	info.RequestID = "req-1"
	if c.ip != "" {
		info.ClientIP = netip.MustParseAddr(c.ip)
	}
	info.OpenID = c.openid
	for k, v := range c.header {
		r.Header.Set(k, v)
	}
	return r.WithContext(reqctx.With(r.Context(), info))
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

func (h *harness) serve(route string, c client) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.e.Handler(route, okHandler).ServeHTTP(w, newRequest(c))
	return w
}

// allowed sends n requests and counts the 200s.
func (h *harness) allowed(route string, c client, n int) int {
	ok := 0
	for range n {
		if h.serve(route, c).Code == http.StatusOK {
			ok++
		}
	}
	return ok
}

// counterValue reads a counter or gauge.
func counterValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func reqInfo(r *http.Request) *reqctx.Info { return reqctx.FromRequest(r) }

// waitFor polls cond for what happens on its own schedule (connections
// being accepted), for at most within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// route is the limits of the named route under the engine's current
// config, read per request, so a handler made once follows Update, as the
// tests' reloads need. The gateway binds each route's limits when it
// compiles the route instead (Prepared.Route).
func (e *Engine) route(name string) Route {
	s := e.snap.Load()
	return Route{e: e, s: s, p: s.plan(name)}
}

// Handler serves next behind the route's Guard and Admit, in the gateway's
// order.
func (e *Engine) Handler(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, info := e.route(route), reqctx.FromRequest(r)
		if rt.Guard(w, r, info) {
			serveAdmitted(rt, w, r, info, next)
		}
	})
}

// AdmitHandler is Handler without the identity-free checks.
func (e *Engine) AdmitHandler(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveAdmitted(e.route(route), w, r, reqctx.FromRequest(r), next)
	})
}

// serveAdmitted serves next if the route admits the request, holding the
// admission until next returns, as the gateway does.
func serveAdmitted(rt Route, w http.ResponseWriter, r *http.Request, info *reqctx.Info, next http.Handler) {
	a, ok := rt.Admit(w, r, info)
	if !ok {
		return
	}
	defer a.Release()
	next.ServeHTTP(w, r)
}
