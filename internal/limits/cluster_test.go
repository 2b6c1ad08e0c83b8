package limits

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/redisconn"
	"edge/internal/testpeer"
)

// topologyClient connects to url as edge run does.
func topologyClient(t testing.TB, url string) redis.UniversalClient {
	t.Helper()
	target, err := redisconn.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redisconn.NewClient(target, nil)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestKeySlot(t *testing.T) {
	for _, tc := range []struct {
		key  string
		slot uint16
	}{
		{"123456789", 0x31C3}, // the CRC16/XMODEM check value
		{"foo", 12182},
		{"{user1000}.following", 1},
		{"{user1000}.followers", 1},
		{"foo{}{bar}", 0},
		{"foo{{bar}}zap", 0},
		{"foo{bar}{zap}", 0},
	} {
		want := tc.slot
		switch tc.key {
		case "{user1000}.following", "{user1000}.followers":
			want = keySlot("user1000")
		case "foo{}{bar}":
			want = crc16("foo{}{bar}") % 16384
		case "foo{{bar}}zap":
			want = keySlot("{bar")
		case "foo{bar}{zap}":
			want = keySlot("bar")
		}
		if got := keySlot(tc.key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", tc.key, got, want)
		}
	}
}

// TestClusterKeySlotsAgreeWithRedis asks a real cluster for the slot of
// keys edge makes, the rule a decision's grouping rests on.
func TestClusterKeySlotsAgreeWithRedis(t *testing.T) {
	c := testpeer.RedisCluster(t)
	rc := redis.NewClient(&redis.Options{Addr: c.Addrs[0]})
	defer rc.Close()
	for _, k := range []string{"edge:rl:0a1b2c3d4e5f:{i=192.0.2.1|}", "edge:rl:0a1b2c3d4e5f:{r3:api|}", "edge:{bans}:ver",
		"edge:rl:x:{h2:}}|}", "edge:rl:x:{}", "plain"} {
		want, err := rc.ClusterKeySlot(context.Background(), k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := keySlot(k); int64(got) != want {
			t.Errorf("keySlot(%q) = %d, Redis says %d", k, got, want)
		}
	}
}

func TestClusterTwoEnginesShareOneLimit(t *testing.T) {
	c := testpeer.RedisCluster(t)
	shareOneLimit(t, func() redis.Scripter { return topologyClient(t, c.URL()) })
}

func TestSentinelTwoEnginesShareOneLimit(t *testing.T) {
	s := testpeer.RedisSentinel(t)
	shareOneLimit(t, func() redis.Scripter { return topologyClient(t, s.URL()) })
}

func TestClusterBansShared(t *testing.T) {
	c := testpeer.RedisCluster(t)
	bansShared(t, func() redis.Scripter { return topologyClient(t, c.URL()) })
}

// TestClusterRulesInSeveralSlots runs a route whose two rules count by
// different things, so their keys live in different slots and the
// decision takes one script call per slot: a request the second rule
// refuses must leave the first rule's bucket as it was.
func TestClusterRulesInSeveralSlots(t *testing.T) {
	c := testpeer.RedisCluster(t)
	if keySlot("{i=192.0.2.2|}") == keySlot("{r3:api|}") {
		t.Fatal("the test's premise fails: the per-IP and the route key share a slot")
	}
	cfg := cfgWith(config.LimitSections{
		Limits: []config.LimitRule{
			{Name: "per-ip", Key: "ip", Rate: parseRate(t, "1/h"), Burst: 5, Routes: []string{"api", "login"}},
			{Name: "global", Key: "route", Rate: parseRate(t, "1/h"), Burst: 8, Routes: []string{"api"}},
		},
		Limiter: config.Limiter{RedisTimeout: patientRedis},
	})
	h := newHarness(t, cfg, harnessOpt{redis: topologyClient(t, c.URL())})
	a, b := client{ip: "192.0.2.1"}, client{ip: "192.0.2.2"}
	if got := h.allowed("api", a, 10); got != 5 {
		t.Errorf("client a: %d of 10 allowed, want its per-IP 5", got)
	}
	if got := h.allowed("api", b, 10); got != 3 {
		t.Errorf("client b: %d of 10 allowed, want the 3 left of the global 8", got)
	}
	// b's 7 refusals by the global rule were charged to its per-IP bucket
	// first, and refunded: 2 of its 5 remain, which login (per-IP only)
	// gives it.
	if got := h.allowed("login", b, 5); got != 2 {
		t.Errorf("client b on login: %d of 5 allowed, want 2 (5 less the 3 allowed on api)", got)
	}
	if got := h.allowed("login", a, 5); got != 0 {
		t.Errorf("client a on login: %d of 5 allowed, want 0", got)
	}
	if n := counterValue(h.m.BackendError("limit")) + counterValue(h.m.BackendError("refund")); n != 0 {
		t.Errorf("%v Redis errors", n)
	}
}

// TestSentinelFailoverUnderLoad makes the replica master (SENTINEL
// FAILOVER) while four workers send requests through a Sentinel client:
// every request is answered, meanwhile by the failure policy (fail_closed
// here), and afterwards decisions come from the new master, which holds
// the charges replicated before the failover. The rate never refills, so
// the count is exact up to the requests decided while the master changed:
// at least the burst is allowed in all (nothing charged is lost but a
// write the old master took after the switch), and at most the burst
// plus the requests sent during the failover.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	// Large enough that the load does not empty the bucket before the
	// failover is over: the decisions of the window are real ones.
	const burst = 20000
	s := testpeer.RedisSentinel(t)
	rc := topologyClient(t, s.URL())
	h := newHarness(t, cfgWith(config.LimitSections{
		Limits: []config.LimitRule{{Name: "global", Key: "route", Rate: parseRate(t, "1/h"), Burst: burst}},
		Limiter: config.Limiter{OnRedisFailure: config.RedisFailClosed, RedisTimeout: patientRedis,
			ProbeInterval: config.Duration(100 * time.Millisecond)},
	}), harnessOpt{redis: rc})
	handler := h.e.AdmitHandler("api", okHandler)
	var sent, allowed, limited, failClosed, other atomic.Int64
	send := func() {
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, newRequest(client{ip: "192.0.2.1"}))
		sent.Add(1)
		switch {
		case w.Code == http.StatusOK:
			allowed.Add(1)
		case w.Code == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "1":
			failClosed.Add(1)
		case w.Code == http.StatusTooManyRequests:
			limited.Add(1)
		default:
			other.Add(1)
		}
	}
	for range 100 {
		send()
	}
	if allowed.Load() != 100 {
		t.Fatalf("before the failover: %d of 100 allowed", allowed.Load())
	}
	// The charges so far reach the replica before it is promoted, as they
	// would in the seconds before a real failure.
	if err := redis.NewClient(&redis.Options{Addr: s.Master()}).Do(context.Background(), "WAIT", 1, 5000).Err(); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					send()
					// A steady load, not a flood: the failover takes
					// seconds, and the bucket must last through it.
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	before := sent.Load()
	s.Failover()
	during := sent.Load() - before
	// Load goes on until the engine has decided through the new master.
	waitFor(t, 30*time.Second, "decisions through the new master", func() bool {
		return counterValue(h.m.BackendUp()) == 1 && sent.Load() > before+during+50
	})
	close(stop)
	wg.Wait()
	windowEnd := sent.Load()

	// Then until the shared bucket is empty: twenty refusals in a row
	// from Redis itself.
	for run, n := 0, 0; run < 20; n++ {
		if n > 3*burst {
			t.Fatalf("the bucket never ran dry: %d allowed", allowed.Load())
		}
		l := limited.Load()
		send()
		if limited.Load() > l {
			run++
		} else {
			run = 0
		}
	}
	span := windowEnd - before
	t.Logf("sent %d (%d during the failover window), allowed %d, limited %d, fail_closed %d", sent.Load(), span, allowed.Load(), limited.Load(), failClosed.Load())
	if other.Load() != 0 {
		t.Errorf("%d answers neither 200 nor 429", other.Load())
	}
	if a := allowed.Load(); a < burst || a > burst+span {
		t.Errorf("%d allowed in all, want at least the burst %d and at most %d (the burst and the %d requests of the failover window)", a, burst, burst+span, span)
	}
	if counterValue(h.m.BackendUp()) != 1 {
		t.Error("the engine does not report Redis up after the failover")
	}
}
