package limits

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/testpeer"
)

func redisClient(t testing.TB, srv *testpeer.RedisServer) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// TestRedisTwoEnginesShareOneLimit runs two engines against one real Redis
// as two replicas would, and checks that together they let through what
// one global limit allows.
func TestRedisTwoEnginesShareOneLimit(t *testing.T) {
	srv := testpeer.Redis(t)
	cfg := cfgWith(config.LimitSections{Limits: []config.LimitRule{
		{Name: "global", Key: "route", Rate: rate(t, "200/s"), Burst: 20},
	}})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	const run = 1500 * time.Millisecond
	start := time.Now()
	stop := start.Add(run)
	for range 2 {
		h := newHarness(t, cfg, harnessOpt{redis: redisClient(t, srv), realClock: true})
		handler := h.e.Limit("api", okHandler)
		for range 4 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					w := httptest.NewRecorder()
					handler.ServeHTTP(w, newRequest(client{ip: "192.0.2.1"}))
					if w.Code == http.StatusOK {
						allowed.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	want := 20 + 200*elapsed.Seconds()
	got := float64(allowed.Load())
	t.Logf("%v allowed in %s across two engines, limit allows %.0f", got, elapsed, want)
	if math.Abs(got-want) > want/10 {
		t.Fatalf("%v allowed, want %.0f within 10%%", got, want)
	}
}

// TestRedisFailurePolicies kills Redis under each policy and brings it
// back: the policy holds while it is away, failures are counted and logged
// once, and the engine returns to Redis by itself.
func TestRedisFailurePolicies(t *testing.T) {
	cases := []struct {
		policy   string
		whileOut int // of 6 requests from a fresh client while Redis is away
	}{
		{config.RedisFailOpen, 6},
		{config.RedisFailClosed, 0},
		{config.RedisFailLocal, 2}, // burst 4 shared by 2 replicas
	}
	for _, tc := range cases {
		t.Run(tc.policy, func(t *testing.T) {
			srv := testpeer.Redis(t)
			rc := redisClient(t, srv)
			h := newHarness(t, cfgWith(config.LimitSections{
				Limits: []config.LimitRule{{Name: "r", Key: "ip", Rate: rate(t, "10/m"), Burst: 4}},
				Limiter: config.Limiter{OnRedisFailure: tc.policy, Replicas: 2,
					RedisTimeout: config.Duration(300 * time.Millisecond), ProbeInterval: config.Duration(time.Second)},
			}), harnessOpt{redis: rc})
			c := client{ip: "192.0.2.1"}
			if got := h.allowed("api", c, 6); got != 4 {
				t.Fatalf("through redis: %d of 6 allowed, want 4", got)
			}
			if keys := rc.Keys(context.Background(), redisRatePrefix+"*").Val(); len(keys) != 1 {
				t.Fatalf("redis keys %q, want one bucket", keys)
			}

			srv.Stop()
			fresh := client{ip: "192.0.2.2"}
			if got := h.allowed("api", fresh, 6); got != tc.whileOut {
				t.Fatalf("redis away: %d of 6 allowed, want %d", got, tc.whileOut)
			}
			if tc.policy == config.RedisFailClosed {
				if w := h.serve("api", fresh); w.Code != 429 || w.Header().Get("Retry-After") != "1" {
					t.Fatalf("fail_closed answer: %d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
				}
			}
			if got := counterValue(h.m.BackendError("limit")); got != 1 {
				t.Fatalf("backend errors = %v; only the first call may try the dead redis before the probe", got)
			}
			h.clock.Advance(time.Second)
			h.serve("api", fresh)
			if got := counterValue(h.m.BackendError("limit")); got != 2 {
				t.Fatalf("backend errors after one probe = %v, want 2", got)
			}
			if got := counterValue(h.m.BackendUp()); got != 0 {
				t.Fatalf("backend up = %v while redis is away", got)
			}

			srv.Start()
			back := client{ip: "192.0.2.3"}
			for i := 0; counterValue(h.m.BackendUp()) != 1; i++ {
				if i == 10 {
					t.Fatal("the engine did not go back to redis after 10 probes")
				}
				h.clock.Advance(time.Second)
				h.serve("api", back)
			}
			// The probe that found Redis took one of back's 4 in a fresh
			// (restarted, empty) Redis.
			if got := h.allowed("api", back, 6); got != 3 {
				t.Fatalf("redis back: %d of 6 allowed, want 3", got)
			}
			if keys := rc.Keys(context.Background(), redisRatePrefix+"*").Val(); len(keys) != 1 {
				t.Fatalf("redis keys after restart %q, want back's bucket", keys)
			}
			logs := h.log.String()
			if n := strings.Count(logs, "redis unavailable"); n != 1 {
				t.Fatalf("%d 'unavailable' log lines, want one per episode:\n%s", n, logs)
			}
			if n := strings.Count(logs, "redis answers again"); n != 1 {
				t.Fatalf("%d 'answers again' log lines:\n%s", n, logs)
			}
		})
	}
}

// TestRedisBansShared issues a ban on one engine from violations reported
// on both, sees it on the other, and lifts it through the admin handler.
func TestRedisBansShared(t *testing.T) {
	srv := testpeer.Redis(t)
	cfg := cfgWith(config.LimitSections{Bans: config.Bans{
		Threshold: 3, Window: config.Duration(time.Minute), Duration: config.Duration(time.Hour),
		Count: []string{config.ViolationSignature}, BanIP: true, MaxBans: 1000, SyncInterval: config.Duration(time.Hour),
	}})
	a := newHarness(t, cfg, harnessOpt{redis: redisClient(t, srv)})
	b := newHarness(t, cfg, harnessOpt{redis: redisClient(t, srv)})
	mallory := client{ip: "192.0.2.1", openid: "o-mallory"}

	a.e.ReportViolation(newRequest(mallory), config.ViolationSignature)
	b.e.ReportViolation(newRequest(mallory), config.ViolationSignature)
	a.e.ReportViolation(newRequest(mallory), config.ViolationToken) // not counted
	if a.serve("api", mallory).Code != 200 || b.serve("api", mallory).Code != 200 {
		t.Fatal("banned before the threshold")
	}
	b.e.ReportViolation(newRequest(mallory), config.ViolationSignature)
	if got := b.serve("api", mallory).Code; got != 403 {
		t.Fatalf("replica that issued the ban: %d, want 403", got)
	}
	if got := a.serve("api", mallory).Code; got != 200 {
		t.Fatalf("other replica before its sync: %d", got)
	}
	a.e.syncBans(a.e.snap.Load())
	if got := a.serve("api", mallory).Code; got != 403 {
		t.Fatalf("other replica after its sync: %d, want 403", got)
	}
	if got := a.serve("api", client{ip: "192.0.2.1", openid: "o-alice"}).Code; got != 200 {
		t.Fatalf("another user behind the same IP: %d; an openid ban must not take the IP", got)
	}

	w := httptest.NewRecorder()
	a.e.AdminHandler().ServeHTTP(w, httptest.NewRequest("GET", "/bans", nil))
	var list struct{ Bans []banView }
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Bans) != 1 || list.Bans[0].Key != "o-mallory" || !list.Bans[0].Shared {
		t.Fatalf("GET /bans on the other replica: %s", w.Body)
	}
	if exp := list.Bans[0].Expires.Sub(a.clock.Now()); exp < 59*time.Minute || exp > time.Hour {
		t.Fatalf("ban expires in %s, want about an hour", exp)
	}

	w = httptest.NewRecorder()
	a.e.AdminHandler().ServeHTTP(w, httptest.NewRequest("DELETE", "/bans/openid/o-mallory", nil))
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"shared":true`) {
		t.Fatalf("DELETE: %d %s", w.Code, w.Body)
	}
	b.e.syncBans(b.e.snap.Load())
	if got := b.serve("api", mallory).Code; got != 200 {
		t.Fatalf("issuing replica after the lift: %d", got)
	}
	if got := counterValue(b.m.BansActive("openid")); got != 0 {
		t.Fatalf("active bans on b = %v", got)
	}
	if got := counterValue(b.m.BanIssued("openid")); got != 1 {
		t.Fatalf("bans issued by b = %v", got)
	}
}
