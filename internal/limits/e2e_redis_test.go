package limits_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// One global limit shared through Redis: every request to the route draws
// from one bucket, whichever edge it reaches. The burst (half a second of
// the rate) absorbs the pauses a loaded CI machine imposes on the edges and
// the test's clients: a bucket that refilled during a pause is emptied
// right after it, so the count over a window stays rate × window.
const (
	sharedRate  = 100 // per second
	sharedBurst = 50
)

func clusterConfig(u *upstream, r *testpeer.RedisServer, policy string) string {
	return appConfig(u, fmt.Sprintf(`
[cluster]
redis = %q

[limiter]
on_redis_failure = %q
replicas = 2
probe_interval = "200ms"

[[limits]]
name = "global"
key = "route"
rate = "%d/s"
burst = %d
routes = ["api"]
`, r.URL(), policy, sharedRate, sharedBurst))
}

// twoEdges starts a real Redis and two edges sharing it in front of one
// upstream.
func twoEdges(t *testing.T, policy string) (*testpeer.RedisServer, *upstream, [2]*testpeer.EdgeProcess) {
	r := testpeer.Redis(t)
	u := startUpstream(t)
	cfg := clusterConfig(u, r, policy)
	return r, u, [2]*testpeer.EdgeProcess{testpeer.StartEdge(t, "", cfg), testpeer.StartEdge(t, "", cfg)}
}

// workersPerEdge keeps each edge far above the shared rate (a -race edge
// answers hundreds of requests a second per worker) without starving the
// two CPUs CI runs on.
const workersPerEdge = 2

func TestE2ETwoEdgesShareOneRedisLimit(t *testing.T) {
	_, u, edges := twoEdges(t, "local")
	run := newLoadRun(t)
	stopA := run.drive(edges[0], 0, workersPerEdge)
	stopB := run.drive(edges[1], 1, workersPerEdge)
	time.Sleep(2500 * time.Millisecond)
	stopA()
	stopB()

	// The first half second holds the connection set-up and the burst;
	// after it the bucket is empty and refills at the rate.
	w := window{500 * time.Millisecond, 2500 * time.Millisecond}
	within10(t, "both edges together", run.count(-1, 200, w), sharedRate*w.seconds())
	for i := range edges {
		if run.count(i, 200, w) == 0 || run.count(i, 429, w) == 0 {
			t.Errorf("edge %d: %d allowed and %d limited; each edge must see both", i, run.count(i, 200, w), run.count(i, 429, w))
		}
	}
	all := window{0, run.now()}
	if got, want := u.hits.Load(), int64(run.count(-1, 200, all)); got != want {
		t.Errorf("upstream saw %d requests, edges allowed %d", got, want)
	}
	if run.errs > 0 {
		t.Errorf("%d requests failed outright", run.errs)
	}
}

func TestE2ERedisOutage(t *testing.T) {
	for _, policy := range []string{"fail_open", "fail_closed", "local"} {
		t.Run(policy, func(t *testing.T) { redisOutage(t, policy) })
	}
}

// redisOutage kills Redis in the middle of a load run on two edges, checks
// the failure policy, starts Redis again and checks that both edges go
// back to the shared limit by themselves.
func redisOutage(t *testing.T, policy string) {
	r, _, edges := twoEdges(t, policy)
	run := newLoadRun(t)
	stopA := run.drive(edges[0], 0, workersPerEdge)
	stopB := run.drive(edges[1], 1, workersPerEdge)
	defer stopA()
	defer stopB()

	time.Sleep(1500 * time.Millisecond)
	killed := run.now()
	r.Stop()
	time.Sleep(1500 * time.Millisecond)
	for i, e := range edges {
		if up := metric(t, e, "edge_limit_backend_up"); up != 0 {
			t.Errorf("edge %d: edge_limit_backend_up %v while Redis is down", i, up)
		}
		if n := metric(t, e, "edge_limit_backend_errors_total", `op="limit"`); n < 1 {
			t.Errorf("edge %d: no backend error counted", i)
		}
	}
	restarted := run.now()
	r.Start()
	for i, e := range edges {
		eventually(t, 5*time.Second, fmt.Sprintf("edge %d back on Redis", i), func() bool {
			return metric(t, e, "edge_limit_backend_up") == 1
		})
	}
	back := run.now()
	time.Sleep(1500 * time.Millisecond)
	stopB()
	alone := run.now()
	if policy == "local" {
		time.Sleep(time.Second)
	}
	stopA()
	end := run.now()

	up := window{500 * time.Millisecond, killed}
	within10(t, "Redis up, both edges", run.count(-1, 200, up), sharedRate*up.seconds())

	// The policy holds once the calls in flight when Redis died are over.
	down := window{killed + 300*time.Millisecond, restarted}
	switch policy {
	case "fail_open":
		if n := run.count(-1, 429, down); n != 0 {
			t.Errorf("fail_open: %d requests limited while Redis was down", n)
		}
		if n := run.count(-1, 200, down); float64(n) < 1.5*sharedRate*down.seconds() {
			t.Errorf("fail_open: only %d allowed in %.1fs; the limit still applied", n, down.seconds())
		}
	case "fail_closed":
		if n := run.count(-1, 200, down); n != 0 {
			t.Errorf("fail_closed: %d requests allowed while Redis was down", n)
		}
		run.each(down, func(s sample) {
			if s.status == 429 && s.retryAfter != "1" {
				t.Errorf("fail_closed: Retry-After %q, want 1", s.retryAfter)
			}
		})
	case "local":
		// Each replica allows its share: rate ÷ replicas.
		for i := range edges {
			within10(t, fmt.Sprintf("local, edge %d alone", i), run.count(i, 200, down), sharedRate/2*down.seconds())
		}
	}
	for i, e := range edges {
		want := map[string]string{"fail_open": "fail_open", "fail_closed": "fail_closed", "local": "allowed"}[policy]
		if n := metric(t, e, "edge_limit_decisions_total", `result="`+want+`"`); n < 1 {
			t.Errorf("edge %d: no %s decision counted", i, want)
		}
		// One warning when the episode begins, one line when it ends,
		// however many requests failed in between.
		log := e.Stderr()
		if n := strings.Count(log, "limiter: redis unavailable"); n != 1 {
			t.Errorf("edge %d logged the outage %d times, want once", i, n)
		}
		if n := strings.Count(log, "limiter: redis answers again"); n != 1 {
			t.Errorf("edge %d logged the recovery %d times, want once", i, n)
		}
	}

	if run.errs > 0 {
		t.Errorf("%d requests failed outright; a Redis outage must only change decisions", run.errs)
	}

	// Back on Redis without a restart: one limit across both edges.
	shared := window{back + 300*time.Millisecond, alone}
	within10(t, "Redis back, both edges", run.count(-1, 200, shared), sharedRate*shared.seconds())
	if policy == "local" {
		// Both local shares would add up to the rate as well; one edge
		// alone gets all of it only from Redis.
		solo := window{alone + 200*time.Millisecond, end}
		within10(t, "Redis back, edge 0 alone", run.count(0, 200, solo), sharedRate*solo.seconds())
	}
}
