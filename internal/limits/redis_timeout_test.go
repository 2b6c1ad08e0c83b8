package limits_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// stallTimeout is the redis_timeout of the stall test. A request may take
// it, plus the time a loaded -race edge needs for the rest of the request;
// without the bound it takes go-redis' own read timeout (seconds) or as long
// as Redis sleeps.
const (
	stallTimeout = 300 * time.Millisecond
	stallBound   = 10 * stallTimeout
)

// TestE2ERedisTimeoutBoundsAStalledRedis freezes Redis (connections open,
// nothing answered, as DEBUG SLEEP or a paused VM do) under a running edge:
// the request that meets it waits at most redis_timeout, then gets the
// failure policy's answer; the outage is logged once and edge_limit_backend_up
// says 0; the requests after it do not wait at all; and the edge goes back to
// Redis by itself when it answers again.
func TestE2ERedisTimeoutBoundsAStalledRedis(t *testing.T) {
	r := testpeer.Redis(t)
	u := startUpstream(t)
	e := testpeer.StartEdge(t, "", appConfig(u, fmt.Sprintf(`
[cluster]
redis = %q

[limiter]
on_redis_failure = "fail_closed"
redis_timeout = %q
probe_interval = "500ms"

[[limits]]
name = "per_ip"
key = "ip"
rate = "100/s"
routes = ["api"]
`, r.URL(), stallTimeout)))
	c := e.Client(t, false)
	url := e.URL("api.example.com", "/")
	wantStatuses(t, c, url, nil, 200)
	if up := metric(t, e, "edge_limit_backend_up"); up != 1 {
		t.Fatalf("edge_limit_backend_up %v before the stall", up)
	}

	r.Pause()
	t.Cleanup(r.Resume)
	for i := range 5 {
		start := time.Now()
		a := request(t, c, url, nil)
		took := time.Since(start)
		t.Logf("request %d while Redis is frozen: %d in %s", i+1, a.status, took.Round(time.Millisecond))
		if took > stallBound {
			t.Fatalf("request %d waited %s for a frozen Redis; redis_timeout is %s", i+1, took, stallTimeout)
		}
		wantAPIError(t, a, 429, 42901)
		if a.header.Get("Retry-After") != "1" {
			t.Fatalf("fail_closed answer with Retry-After %q", a.header.Get("Retry-After"))
		}
	}
	if up := metric(t, e, "edge_limit_backend_up"); up != 0 {
		t.Errorf("edge_limit_backend_up %v while Redis is frozen", up)
	}
	if n := metric(t, e, "edge_limit_backend_errors_total", `op="limit"`); n < 1 {
		t.Errorf("edge_limit_backend_errors_total{op=\"limit\"} %v while Redis is frozen", n)
	}
	if n := metric(t, e, "edge_limit_decisions_total", `result="fail_closed"`); n != 5 {
		t.Errorf("%v fail_closed decisions, want 5", n)
	}

	if n := strings.Count(e.Stderr(), "limiter: redis unavailable"); n != 1 {
		t.Errorf("5 requests during the stall logged it %d times, want once", n)
	}

	r.Resume()
	eventually(t, 10*time.Second, "edge back on Redis", func() bool {
		request(t, c, url, nil)
		return metric(t, e, "edge_limit_backend_up") == 1
	})
	wantStatuses(t, c, url, nil, 200)
	// The first calls after the resume reconnect; on a loaded machine one
	// may outlast redis_timeout and open a short episode of its own. Each
	// episode is logged once when it begins and once when it ends.
	log := e.Stderr()
	down, up := strings.Count(log, "limiter: redis unavailable"), strings.Count(log, "limiter: redis answers again")
	if up < 1 || down != up {
		t.Errorf("logged %d outages and %d recoveries; each outage is logged once and ends with one recovery line", down, up)
	}
}
