package limits

import (
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/testpeer"
)

// discard is a ResponseWriter that keeps nothing, so a benchmark measures
// the limiter rather than a recorder.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

func benchConfig(b *testing.B) *config.Config {
	return cfgWith(config.LimitSections{
		Limits: []config.LimitRule{
			{Name: "per_user", Key: "openid+route", Rate: parseRate(b, "1000000/s")},
			{Name: "per_ip", Key: "ip", Rate: parseRate(b, "1000000/s")},
		},
		Bans: config.Bans{Threshold: 10, Count: config.ViolationKinds},
	})
}

// BenchmarkDecisionMemory is one decision of two rules for a known key:
// it must not allocate.
func BenchmarkDecisionMemory(b *testing.B) {
	h := newHarness(b, benchConfig(b), harnessOpt{realClock: true})
	p := h.e.snap.Load().plan("api")
	r := newRequest(client{ip: "192.0.2.1", openid: "oABCDEFGHIJKLMNOPQRSTUVWXYZ0"})
	info := reqInfo(r)
	var buf [8]verdict
	now := h.e.now()
	b.ReportAllocs()
	for b.Loop() {
		// One microsecond a decision is exactly the rules' rate, so every
		// decision is an allowed one.
		now += int64(time.Microsecond)
		if d := h.e.decideMemory(p, info, r, now, buf[:0], false, false); d.result != resAllowed {
			b.Fatal("refused")
		}
	}
}

// BenchmarkLimitMiddleware is the whole per-request path of Guard and
// Admit (access lists, bans, in-flight, two rules) for a known key. The
// name predates Admit; it stays so results compare across commits.
func BenchmarkLimitMiddleware(b *testing.B) {
	cfg := benchConfig(b)
	cfg.Access = config.Access{IPDeny: prefixes(b, "203.0.113.0/24", "2001:db8::/32"), MaxInflightPerOpenID: 8}
	h := newHarness(b, cfg, harnessOpt{realClock: true})
	handler := h.e.Handler("api", okHandler)
	r := newRequest(client{ip: "192.0.2.1", openid: "oABCDEFGHIJKLMNOPQRSTUVWXYZ0"})
	w := &discard{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		handler.ServeHTTP(w, r)
	}
}

// BenchmarkDecisionMemoryParallel spreads distinct keys over all CPUs to
// show the shards keep the lock out of the way.
func BenchmarkDecisionMemoryParallel(b *testing.B) {
	h := newHarness(b, benchConfig(b), harnessOpt{realClock: true})
	p := h.e.snap.Load().plan("api")
	b.ReportAllocs()
	var next atomic.Int32
	b.RunParallel(func(pb *testing.PB) {
		id := next.Add(1)
		r := newRequest(client{ip: netip.AddrFrom4([4]byte{10, 0, 0, byte(id)}).String(), openid: "o" + strconv.Itoa(int(id))})
		info := reqInfo(r)
		var buf [8]verdict
		for pb.Next() {
			h.e.decideMemory(p, info, r, h.e.now(), buf[:0], false, false)
		}
	})
}

// BenchmarkDecisionRedis is one decision of two rules through the Lua
// script on a real redis-server over loopback.
func BenchmarkDecisionRedis(b *testing.B) {
	h, s, p := redisBench(b)
	r := newRequest(client{ip: "192.0.2.1", openid: "oABCDEFGHIJKLMNOPQRSTUVWXYZ0"})
	info := reqInfo(r)
	var buf [8]verdict
	b.ReportAllocs()
	for b.Loop() {
		d, _, err := h.e.decideRedis(r.Context(), s, p, info, r, h.e.now(), buf[:0])
		if err != nil || d.result != resAllowed {
			b.Fatalf("result %d, err %v", d.result, err)
		}
	}
}

// BenchmarkDecisionRedisLeased is BenchmarkDecisionRedis with leases on:
// one busy key, so nearly every decision is served from the replica's
// lease and only one in a few thousand asks Redis.
func BenchmarkDecisionRedisLeased(b *testing.B) {
	srv := testpeer.Redis(b)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	b.Cleanup(func() { _ = rc.Close() })
	calls := &evalCount{}
	rc.AddHook(calls)
	cfg := benchConfig(b)
	cfg.LimitSections.Limiter.Leases = true
	// One decision per microsecond is the fastest rate a rule can have,
	// and this loop runs faster: a burst that lasts the whole run keeps
	// the leases full-sized instead of bounded by the refill.
	for i := range cfg.LimitSections.Limits {
		cfg.LimitSections.Limits[i].Burst = 100_000_000
	}
	h := newHarness(b, cfg, harnessOpt{redis: rc, realClock: true})
	s := h.e.snap.Load()
	p := s.plan("api")
	r := newRequest(client{ip: "192.0.2.1", openid: "oABCDEFGHIJKLMNOPQRSTUVWXYZ0"})
	info := reqInfo(r)
	var buf [8]verdict
	b.ReportAllocs()
	for b.Loop() {
		d, _, err := h.e.decideRedis(r.Context(), s, p, info, r, h.e.now(), buf[:0])
		if err != nil || d.result != resAllowed {
			b.Fatalf("result %d, err %v", d.result, err)
		}
	}
	b.ReportMetric(float64(calls.n.Load())/float64(b.N), "redis-calls/op")
}

// BenchmarkDecisionRedisParallel is decisions of two rules through Redis
// from 16 goroutines per CPU at once, each with its own client key, as
// concurrent requests make them: ns/op is the cost per decision when
// they overlap, which is what bounds a replica's throughput.
func BenchmarkDecisionRedisParallel(b *testing.B) {
	h, s, p := redisBench(b)
	var next atomic.Int32
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		id := next.Add(1)
		r := newRequest(client{ip: netip.AddrFrom4([4]byte{10, 0, byte(id >> 8), byte(id)}).String(), openid: "o" + strconv.Itoa(int(id))})
		info := reqInfo(r)
		var buf [8]verdict
		for pb.Next() {
			d, _, err := h.e.decideRedis(r.Context(), s, p, info, r, h.e.now(), buf[:0])
			if err != nil || d.result != resAllowed {
				b.Errorf("result %d, err %v", d.result, err)
				return
			}
		}
	})
}

// redisBench is an engine on a private redis-server, with its snapshot
// and the plan of route api.
func redisBench(b *testing.B) (*harness, *snapshot, *plan) {
	srv := testpeer.Redis(b)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	b.Cleanup(func() { _ = rc.Close() })
	h := newHarness(b, benchConfig(b), harnessOpt{redis: rc, realClock: true})
	s := h.e.snap.Load()
	return h, s, s.plan("api")
}
