package limits_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/testpeer"
)

// One global limit shared through Redis: every request to the route draws
// from one bucket, whichever edge it reaches. The Redis script reads Redis'
// own clock, which a test cannot drive, so the rate is one an hour: nothing
// refills while a test runs, and a fixed number of requests gets an exact
// number of decisions however slowly a loaded machine sends them.
const (
	sharedBurst = 60
	replicas    = 2
	// localShare is what each replica allows on its own under "local":
	// burst ÷ replicas.
	localShare = sharedBurst / replicas
)

func clusterConfig(u *upstream, redisURL, policy string) string {
	// redis_timeout is far above what any call takes even on a loaded
	// machine, so that only the test's own Stop makes Redis fail: a killed
	// Redis refuses connections at once and costs no time.
	return appConfig(u, fmt.Sprintf(`
[cluster]
redis = %q

[limiter]
# Exact decisions, request by request: these tests count each phase.
leases = false
on_redis_failure = %q
replicas = %d
redis_timeout = "5s"
probe_interval = "200ms"

[[limits]]
name = "global"
key = "route"
rate = "1/h"
burst = %d
routes = ["api"]
`, redisURL, policy, replicas, sharedBurst))
}

// twoEdges starts a real Redis and two edges sharing it in front of one
// upstream, with two parallel clients each.
func twoEdges(t *testing.T, policy string) (*testpeer.RedisServer, *upstream, [2]*testpeer.EdgeProcess, [2]*sender) {
	r := testpeer.Redis(t)
	u, edges, senders := twoEdgesOn(t, r.URL(), policy)
	return r, u, edges, senders
}

// twoEdgesOn starts two edges sharing the Redis of redisURL (one node,
// Sentinel or Cluster) in front of one upstream.
func twoEdgesOn(t *testing.T, redisURL, policy string) (*upstream, [2]*testpeer.EdgeProcess, [2]*sender) {
	u := startUpstream(t)
	cfg := clusterConfig(u, redisURL, policy)
	edges := [2]*testpeer.EdgeProcess{testpeer.StartEdge(t, "", cfg), testpeer.StartEdge(t, "", cfg)}
	return u, edges, [2]*sender{newSender(t, edges[0], 2), newSender(t, edges[1], 2)}
}

// noFailures fails the test for any answer but 200 and 429: limits and a
// Redis outage change decisions, never whether a request is answered.
func noFailures(t *testing.T, all tally) {
	t.Helper()
	if len(all.errs) > 0 || len(all.other) > 0 {
		t.Errorf("%d requests failed outright (%v), %d got neither 200 nor 429 (%v)", len(all.errs), all.errs, len(all.other), all.other)
	}
}

func TestE2ETwoEdgesShareOneRedisLimit(t *testing.T) {
	t.Run("single", func(t *testing.T) { shareAcrossEdges(t, testpeer.Redis(t).URL()) })
	t.Run("cluster", func(t *testing.T) { shareAcrossEdges(t, testpeer.RedisCluster(t).URL()) })
	t.Run("sentinel", func(t *testing.T) { shareAcrossEdges(t, testpeer.RedisSentinel(t).URL()) })
}

// shareAcrossEdges runs two edge processes on the Redis of redisURL, as
// edge run reads the URL, and counts their decisions.
func shareAcrossEdges(t *testing.T, redisURL string) {
	u, edges, senders := twoEdgesOn(t, redisURL, "local")

	// Uneven on purpose: a bucket per edge would allow 60 + 20 = 80, each
	// edge's local share 30 + 20 = 50; one bucket in Redis allows exactly
	// the burst, however the two edges interleave.
	sent := [2]int{90, 20}
	got := sendBoth(senders, sent)
	var all tally
	all.add(got[0])
	all.add(got[1])
	if all.ok != sharedBurst || all.limited != sent[0]+sent[1]-sharedBurst {
		t.Errorf("both edges at once: %d allowed, %d limited (edge 0: %d of %d, edge 1: %d of %d), want exactly %d allowed and the rest limited",
			all.ok, all.limited, got[0].ok, sent[0], got[1].ok, sent[1], sharedBurst)
	}
	// The edge that sent 20 would still have room in a bucket of its own.
	for i, s := range senders {
		a := s.send(1)
		all.add(a)
		if a.limited != 1 {
			t.Errorf("edge %d after the burst: %+v, want 429 from the shared, empty bucket", i, a)
		}
	}
	for i, e := range edges {
		if n := metric(t, e, "edge_limit_backend_errors_total"); n != 0 {
			t.Errorf("edge %d: %v Redis errors; every decision must come from Redis", i, n)
		}
	}
	noFailures(t, all)
	if got := u.hits.Load(); got != int64(all.ok) {
		t.Errorf("upstream saw %d requests, edges allowed %d", got, all.ok)
	}
}

func TestE2ERedisOutage(t *testing.T) {
	for _, policy := range []string{"fail_open", "fail_closed", "local"} {
		t.Run(policy, func(t *testing.T) { redisOutage(t, policy) })
	}
}

// redisOutage kills Redis under two edges, checks the failure policy,
// starts Redis again and checks that both edges go back to the shared
// limit by themselves.
func redisOutage(t *testing.T, policy string) {
	r, u, edges, senders := twoEdges(t, policy)
	var all tally

	// Uneven for the reason given in TestE2ETwoEdgesShareOneRedisLimit.
	up := sendBoth(senders, [2]int{50, 20})
	all.add(up[0])
	all.add(up[1])
	if n := up[0].ok + up[1].ok; n != sharedBurst {
		t.Errorf("Redis up, both edges: %d of 70 allowed, want %d", n, sharedBurst)
	}

	r.Stop()
	const perEdge = localShare + 10
	down := sendBoth(senders, [2]int{perEdge, perEdge})
	all.add(down[0])
	all.add(down[1])
	for i, e := range edges {
		if up := metric(t, e, "edge_limit_backend_up"); up != 0 {
			t.Errorf("edge %d: edge_limit_backend_up %v while Redis is down", i, up)
		}
		if n := metric(t, e, "edge_limit_backend_errors_total", `op="limit"`); n < 1 {
			t.Errorf("edge %d: no backend error counted", i)
		}
		d := down[i]
		switch policy {
		case "fail_open":
			if d.ok != perEdge {
				t.Errorf("fail_open, edge %d: %d of %d allowed while Redis was down, want all", i, d.ok, perEdge)
			}
		case "fail_closed":
			// Retry-After 1 (the probe interval, rounded up) tells these
			// apart from 429s of the empty bucket, which say an hour.
			if d.ok != 0 || d.retryAfter["1"] != perEdge {
				t.Errorf("fail_closed, edge %d: %d of %d allowed, Retry-After %v; want every one 429 with Retry-After 1", i, d.ok, perEdge, d.retryAfter)
			}
		case "local":
			if d.ok != localShare {
				t.Errorf("local, edge %d: %d of %d allowed while Redis was down, want its share %d", i, d.ok, perEdge, localShare)
			}
		}
	}

	r.Start()
	// An edge finds Redis again on a request (one per probe interval tries
	// it), so each is sent requests until it reports Redis up.
	for i, e := range edges {
		eventually(t, 30*time.Second, fmt.Sprintf("edge %d back on Redis", i), func() bool {
			all.add(senders[i].send(1))
			return metric(t, e, "edge_limit_backend_up") == 1
		})
	}
	// The requests that found Redis took from the restarted Redis; start
	// the check below from a full bucket.
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	if err := rc.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	// Back on Redis without a restart: one edge alone gets the whole burst,
	// which its local share could not give it, and leaves the other
	// nothing, which a bucket of its own would.
	solo := senders[0].send(sharedBurst + 10)
	rest := senders[1].send(10)
	all.add(solo)
	all.add(rest)
	if solo.ok != sharedBurst || rest.ok != 0 {
		t.Errorf("Redis back: edge 0 alone got %d of %d, then edge 1 %d of 10; want %d, then 0",
			solo.ok, sharedBurst+10, rest.ok, sharedBurst)
	}

	for i, e := range edges {
		want := map[string]string{"fail_open": "fail_open", "fail_closed": "fail_closed", "local": "allowed"}[policy]
		if n := metric(t, e, "edge_limit_decisions_total", `result="`+want+`"`); n < 1 {
			t.Errorf("edge %d: no %s decision counted", i, want)
		}
		// One warning when the episode begins, one line when it ends,
		// however many requests failed in between. The error log reaches
		// the test through a pipe, so the lines are awaited first.
		eventually(t, 10*time.Second, fmt.Sprintf("edge %d to log the recovery", i), func() bool {
			return strings.Contains(e.Stderr(), "limiter: redis answers again")
		})
		log := e.Stderr()
		if n := strings.Count(log, "limiter: redis unavailable"); n != 1 {
			t.Errorf("edge %d logged the outage %d times, want once", i, n)
		}
		if n := strings.Count(log, "limiter: redis answers again"); n != 1 {
			t.Errorf("edge %d logged the recovery %d times, want once", i, n)
		}
	}
	noFailures(t, all)
	if got := u.hits.Load(); got != int64(all.ok) {
		t.Errorf("upstream saw %d requests, edges allowed %d", got, all.ok)
	}
}

// TestE2ELeasesThreeEdgesExact runs three edge processes with leases on
// (the default) against one bucket that does not refill, each edge sending
// more than the whole burst: together they allow exactly the burst. A
// lease never allows what Redis did not grant, and an edge refuses only
// once its lease is used up, so no request granted to one edge is lost.
func TestE2ELeasesThreeEdgesExact(t *testing.T) {
	t.Run("single", func(t *testing.T) { leasesExact(t, testpeer.Redis(t).URL()) })
	t.Run("cluster", func(t *testing.T) { leasesExact(t, testpeer.RedisCluster(t).URL()) })
}

func leasesExact(t *testing.T, redisURL string) {
	const burst, each = 400, 500
	u := startUpstream(t)
	cfg := appConfig(u, fmt.Sprintf(`
[cluster]
redis = %q

[limiter]
redis_timeout = "5s"

[[limits]]
name = "global"
key = "route"
rate = "1/h"
burst = %d
routes = ["api"]
`, redisURL, burst))
	var senders []*sender
	for range 3 {
		senders = append(senders, newSender(t, testpeer.StartEdge(t, "", cfg), 2))
	}
	got := make([]tally, len(senders))
	var wg sync.WaitGroup
	for i, s := range senders {
		wg.Go(func() { got[i] = s.send(each) })
	}
	wg.Wait()
	var all tally
	for _, g := range got {
		all.add(g)
	}
	noFailures(t, all)
	if all.ok != burst {
		t.Errorf("three edges allowed %d (%d, %d, %d), want exactly the burst, %d", all.ok, got[0].ok, got[1].ok, got[2].ok, burst)
	}
	if hits := u.hits.Load(); hits != int64(all.ok) {
		t.Errorf("upstream saw %d requests, edges allowed %d", hits, all.ok)
	}
}
