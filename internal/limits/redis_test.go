package limits

import (
	"context"
	"encoding/json"
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
	// One dial per call: a stopped Redis then fails a call at once, where
	// the default retries would spend a second of it dialling again.
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, DialerRetries: 1})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// patientRedis is a redis_timeout no call to a live Redis reaches, even on
// a loaded machine, for tests whose subject is not the timeout: a stopped
// Redis refuses connections at once, so it costs them no time.
const patientRedis = config.Duration(5 * time.Second)

// TestRedisTwoEnginesShareOneLimit runs two engines against one real Redis
// as two replicas would, four goroutines each, and checks that together
// they let through exactly what one global limit allows. The script reads
// Redis' own clock, so the rate is one an hour: nothing refills during the
// run and the count is exact. Calls racing on one bucket from two engines
// would over-admit if the script did not read and write it atomically.
func TestRedisTwoEnginesShareOneLimit(t *testing.T) {
	srv := testpeer.Redis(t)
	shareOneLimit(t, func() redis.Scripter { return redisClient(t, srv) })
}

// shareOneLimit is TestRedisTwoEnginesShareOneLimit on the Redis that
// newClient connects each engine to.
func shareOneLimit(t *testing.T, newClient func() redis.Scripter) {
	const burst, engines, workers, each = 100, 2, 4, 40
	cfg := cfgWith(config.LimitSections{
		Limits:  []config.LimitRule{{Name: "global", Key: "route", Rate: parseRate(t, "1/h"), Burst: burst}},
		Limiter: config.Limiter{RedisTimeout: patientRedis},
	})
	var allowed, limited atomic.Int64
	var hs []*harness
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range engines {
		h := newHarness(t, cfg, harnessOpt{redis: newClient()})
		hs = append(hs, h)
		handler := h.e.AdmitHandler("api", okHandler)
		for range workers {
			wg.Go(func() {
				<-start
				for range each {
					w := httptest.NewRecorder()
					handler.ServeHTTP(w, newRequest(client{ip: "192.0.2.1"}))
					switch w.Code {
					case http.StatusOK:
						allowed.Add(1)
					case http.StatusTooManyRequests:
						limited.Add(1)
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	// An engine of its own (in memory, or on the local fallback with one
	// replica) would allow the burst by itself: 200 in all.
	const sent = engines * workers * each
	if allowed.Load() != burst || limited.Load() != sent-burst {
		t.Fatalf("%d allowed and %d limited of %d across two engines, want exactly %d allowed and the rest limited",
			allowed.Load(), limited.Load(), sent, burst)
	}
	for i, h := range hs {
		if n := counterValue(h.m.BackendError("limit")); n != 0 {
			t.Fatalf("engine %d: %v Redis errors; every decision must come from Redis", i, n)
		}
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
				Limits: []config.LimitRule{{Name: "r", Key: "ip", Rate: parseRate(t, "10/m"), Burst: 4}},
				Limiter: config.Limiter{OnRedisFailure: tc.policy, Replicas: 2,
					RedisTimeout: patientRedis, ProbeInterval: config.Duration(time.Second)},
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
	bansShared(t, func() redis.Scripter { return redisClient(t, srv) })
}

// bansShared is TestRedisBansShared on the Redis that newClient connects
// each engine to.
func bansShared(t *testing.T, newClient func() redis.Scripter) {
	cfg := cfgWith(config.LimitSections{Bans: config.Bans{
		Threshold: 3, Window: config.Duration(time.Minute), Duration: config.Duration(time.Hour),
		Count: []string{config.ViolationSignature}, BanIP: true, MaxBans: 1000, SyncInterval: config.Duration(time.Hour),
	}})
	a := newHarness(t, cfg, harnessOpt{redis: newClient()})
	b := newHarness(t, cfg, harnessOpt{redis: newClient()})
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
	var list struct{ Bans []BanView }
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
	// A stale copy of the lifted ban (a message from before the lift, say)
	// is not written back: the lift's tombstone turns it away, on a
	// Cluster too (every key of the script in the {bans} slot).
	b.e.HandleBanEvent("3600000 signature openid:o-mallory")
	if err := b.e.Republish(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.e.syncBans(a.e.snap.Load())
	if a.serve("api", mallory).Code != 200 || b.serve("api", mallory).Code != 200 {
		t.Fatal("a lifted ban came back through a republish")
	}
}

// TestRedisAdminLiftOutwaitsRedisTimeout lifts bans while no call to Redis
// can complete within redis_timeout: the one connection the client may
// open is held elsewhere, as every connection of a busy edge can be. The
// request path gives up after redis_timeout and applies the policy; an
// admin lift waits, and asks Redis even while the request path has it
// marked down, so the ban is lifted for every replica.
func TestRedisAdminLiftOutwaitsRedisTimeout(t *testing.T) {
	srv := testpeer.Redis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 1})
	t.Cleanup(func() { _ = rc.Close() })
	peek := redisClient(t, srv)
	h := newHarness(t, cfgWith(config.LimitSections{
		Limits: []config.LimitRule{{Name: "r", Key: "ip", Rate: parseRate(t, "1/h"), Burst: 100}},
		Limiter: config.Limiter{OnRedisFailure: config.RedisFailClosed,
			RedisTimeout: config.Duration(50 * time.Millisecond), ProbeInterval: config.Duration(time.Second)},
		Bans: config.Bans{Threshold: 1, Window: config.Duration(time.Minute), Duration: config.Duration(time.Hour),
			Count: []string{config.ViolationSignature}, MaxBans: 1000, SyncInterval: config.Duration(time.Hour)},
	}), harnessOpt{redis: rc})
	ctx := context.Background()
	banned := func(openid string) bool {
		err := peek.ZScore(ctx, redisBansKey, banKindOpenID+":"+openid).Err()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		return err == nil
	}
	for _, openid := range []string{"o-mallory", "o-trudy", "o-victor"} {
		h.e.ReportViolation(newRequest(client{ip: "192.0.2.1", openid: openid}), config.ViolationSignature)
		if !banned(openid) {
			t.Fatalf("%s not banned in Redis", openid)
		}
	}
	lift := func(openid string) <-chan *httptest.ResponseRecorder {
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() {
			w := httptest.NewRecorder()
			h.e.AdminHandler().ServeHTTP(w, httptest.NewRequest("DELETE", "/bans/openid/"+openid, nil))
			done <- w
		}()
		return done
	}
	wantLifted := func(openid string, w *httptest.ResponseRecorder) {
		t.Helper()
		if w.Code != 200 || !strings.Contains(w.Body.String(), `"shared":true`) {
			t.Fatalf("DELETE %s: %d %s; the lift must reach Redis", openid, w.Code, strings.TrimSpace(w.Body.String()))
		}
		if banned(openid) {
			t.Fatalf("%s still banned in Redis after the lift", openid)
		}
	}
	// hotPathGivesUp sends a request, which gives up on the held
	// connection after redis_timeout and is answered by the policy.
	hotPathGivesUp := func(errors float64) {
		t.Helper()
		if w := h.serve("api", client{ip: "192.0.2.9"}); w.Code != 429 || w.Header().Get("Retry-After") != "1" {
			t.Fatalf("request while Redis is out of reach: %d Retry-After %q, want fail_closed's 429", w.Code, w.Header().Get("Retry-After"))
		}
		if got := counterValue(h.m.BackendError("limit")); got != errors {
			t.Fatalf("backend errors = %v, want %v", got, errors)
		}
	}

	hold := rc.Conn()
	if err := hold.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	done := lift("o-mallory")
	// Wait for the lift to queue for the connection: the request below
	// then gives up its redis_timeout after the lift began to wait, so the
	// lift has waited longer than redis_timeout when the connection frees.
	queueBy := time.Now().Add(10 * time.Second)
	for rc.PoolStats().PendingRequests == 0 {
		if time.Now().After(queueBy) {
			t.Fatal("the lift did not queue for the Redis connection within 10 s")
		}
		select {
		case w := <-done:
			t.Fatalf("the lift returned while Redis was out of reach: %d %s", w.Code, strings.TrimSpace(w.Body.String()))
		case <-time.After(10 * time.Millisecond):
		}
	}
	hotPathGivesUp(1)
	if err := hold.Close(); err != nil {
		t.Fatal(err)
	}
	wantLifted("o-mallory", <-done)

	// The request path marks Redis down; no probe is due on the engine's
	// clock, yet the lift still goes to Redis.
	hold = rc.Conn()
	if err := hold.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	hotPathGivesUp(2)
	if got := counterValue(h.m.BackendUp()); got != 0 {
		t.Fatalf("backend up = %v after the request path gave up", got)
	}
	if err := hold.Close(); err != nil {
		t.Fatal(err)
	}
	wantLifted("o-trudy", <-lift("o-trudy"))

	// A lift that got its answer only after longer than redis_timeout (on
	// the engine's clock) does not tell the request path that Redis is fit
	// again: that is left to the probe.
	hold = rc.Conn()
	if err := hold.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	hotPathGivesUp(3)
	// The request's own call, given up, leaves the pool's queue (it may
	// linger there a moment after its answer): the call waitPending sees
	// next is the lift's.
	waitNotPending(t, rc)
	done = lift("o-victor")
	waitPending(t, rc)
	h.clock.Advance(time.Second)
	if err := hold.Close(); err != nil {
		t.Fatal(err)
	}
	wantLifted("o-victor", <-done)
	if got := counterValue(h.m.BackendUp()); got != 0 {
		t.Fatalf("backend up = %v after a lift slower than redis_timeout; only a probe may bring Redis back for requests", got)
	}
}

// waitPending waits, with a deadline, until a call queues for a pool
// connection (the lift is blocked behind the held one).
func waitPending(t *testing.T, rc *redis.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for rc.PoolStats().PendingRequests == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no call queued for a Redis connection within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitNotPending waits, with a deadline, until no call queues for a pool
// connection.
func waitNotPending(t *testing.T, rc *redis.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for rc.PoolStats().PendingRequests != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a call still queued for a Redis connection after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
