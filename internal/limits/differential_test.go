package limits

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/testpeer"
)

// The in-memory limiter (x/time/rate token buckets) and the Redis script
// (GCRA) must answer alike request by request: a replica that falls back
// to memory while Redis is away, or one without Redis, limits as Redis
// would.

// diffBase is where the differential tests' clock starts. It is handed to
// the Redis script as its time, and the script's keys expire on it, so it
// must stay ahead of Redis' own clock.
var diffBase = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

type diffCase struct {
	name  string
	rules []config.LimitRule
}

func diffCases(t testing.TB) []diffCase {
	return []diffCase{
		{"10/s burst 5", []config.LimitRule{{Name: "r", Key: "ip", Rate: parseRate(t, "10/s"), Burst: 5}}},
		{"3/s, an interval of no whole microseconds", []config.LimitRule{{Name: "r", Key: "ip", Rate: parseRate(t, "3/s")}}},
		{"7/m burst 2 by openid", []config.LimitRule{{Name: "r", Key: "openid", Rate: parseRate(t, "7/m"), Burst: 2}}},
		{"100/d burst 3 per route", []config.LimitRule{{Name: "r", Key: "route", Rate: parseRate(t, "100/d"), Burst: 3}}},
		{"three rules with refunds", []config.LimitRule{
			{Name: "per_ip", Key: "ip", Rate: parseRate(t, "5/s"), Burst: 5},
			{Name: "per_user", Key: "openid", Rate: parseRate(t, "2/s"), Burst: 3},
			{Name: "login", Key: "ip", Rate: parseRate(t, "1/s"), Burst: 1, Routes: []string{"login"}},
		}},
		{"quota behind fast rules", []config.LimitRule{
			{Name: "global", Key: "route", Rate: parseRate(t, "20/s"), Burst: 10},
			{Name: "per_user", Key: "openid+route", Rate: parseRate(t, "3/s"), Burst: 2},
			{Name: "daily", Key: "ip", Rate: parseRate(t, "7/m"), Burst: 3},
		}},
	}
}

// arrival is one request of a sequence: after gap, route from c.
type arrival struct {
	gap   time.Duration
	route string
	c     client
}

// arrivals draws n requests from a few clients on two routes, with gaps
// that land on the rules' own intervals (the ties a limiter may decide
// either way), within them, on sub-microsecond jitter, and long enough for
// buckets to refill.
func arrivals(rng *rand.Rand, rules []config.LimitRule, n int) []arrival {
	clients := []client{
		{ip: "192.0.2.1", openid: "o-alice"}, {ip: "192.0.2.1", openid: "o-bob"},
		{ip: "192.0.2.2", openid: "o-alice"}, {ip: "192.0.2.2"},
	}
	routes := []string{"api", "api", "login"}
	out := make([]arrival, n)
	for i := range out {
		lr := rules[rng.IntN(len(rules))]
		iv := lr.Rate.Interval().Truncate(time.Microsecond)
		var gap time.Duration
		switch rng.IntN(8) {
		case 0, 1:
		case 2:
			gap = iv
		case 3:
			gap = iv / 2
		case 4, 5:
			gap = time.Duration(rng.Int64N(int64(2*iv/time.Microsecond))) * time.Microsecond
		case 6:
			gap = time.Duration(rng.Int64N(int64(time.Millisecond)))
		case 7:
			gap = time.Duration(max(lr.Burst, 1)) * iv
		}
		out[i] = arrival{gap: gap, route: routes[rng.IntN(len(routes))], c: clients[rng.IntN(len(clients))]}
	}
	return out
}

// answer is what a client sees of a limiter's decision.
func answer(w *httptest.ResponseRecorder) string {
	h := w.Header()
	return fmt.Sprintf("%d Retry-After=%q RateLimit=%q Policy=%q", w.Code, h.Get("Retry-After"), h.Get("RateLimit"), h.Get("RateLimit-Policy"))
}

// TestMemoryMatchesRedis sends one random sequence of arrivals, on one
// injected clock, to three engines: one deciding through a real Redis (the
// script given the clock's time instead of TIME), one in memory, and one
// whose Redis is dead and that decides by the local fallback with one
// replica. Every answer (status, Retry-After, RateLimit headers on refusals
// and on allowed responses) must be the same on all three.
func TestMemoryMatchesRedis(t *testing.T) {
	srv := testpeer.Redis(t)
	rc := redisClient(t, srv)
	dead := redis.NewClient(&redis.Options{Addr: testpeer.DeadAddr(t), DialerRetries: 1})
	t.Cleanup(func() { _ = dead.Close() })
	for _, tc := range diffCases(t) {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("%s/seed %d", tc.name, seed), func(t *testing.T) {
				if err := rc.FlushAll(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
				clock := testpeer.NewClock(diffBase)
				ls := config.LimitSections{Limits: tc.rules, Limiter: config.Limiter{
					AlwaysSendHeaders: true, RedisTimeout: patientRedis,
				}}
				mem := newHarness(t, cfgWith(ls), harnessOpt{clock: clock})
				red := newHarness(t, cfgWith(ls), harnessOpt{clock: clock, redis: rc})
				red.e.scriptClock = clock.Now
				// Only the first request tries the dead Redis; every one is
				// decided by the fallback.
				ls.Limiter.OnRedisFailure, ls.Limiter.Replicas = config.RedisFailLocal, 1
				ls.Limiter.ProbeInterval = config.Duration(100 * 365 * 24 * time.Hour)
				local := newHarness(t, cfgWith(ls), harnessOpt{clock: clock, redis: dead})

				seq := arrivals(rand.New(rand.NewPCG(seed, 0x5eed)), tc.rules, 400)
				var elapsed time.Duration
				codes := map[int]int{}
				for i, a := range seq {
					clock.Advance(a.gap)
					elapsed += a.gap
					wr := red.serve(a.route, a.c)
					want := answer(wr)
					codes[wr.Code]++
					for _, other := range []struct {
						name string
						h    *harness
					}{{"memory", mem}, {"local fallback", local}} {
						if got := answer(other.h.serve(a.route, a.c)); got != want {
							t.Fatalf("request %d (+%s, %s %+v): %s answered\n\t%s\nRedis answered\n\t%s",
								i, elapsed, a.route, a.c, other.name, got, want)
						}
					}
				}
				if codes[200] == 0 || codes[429] == 0 {
					t.Fatalf("answers %v: the sequence must see both allowed and limited requests", codes)
				}
				if n := counterValue(red.m.BackendError("limit")); n != 0 {
					t.Fatalf("%v Redis errors; every decision of the Redis engine must come from Redis", n)
				}
				if n := counterValue(local.m.BackendError("limit")); n == 0 {
					t.Fatal("the fallback engine never tried its dead Redis")
				}
			})
		}
	}
}

// gcraModel is the limit script's arithmetic in Go, the reference the
// in-memory limiter is fuzzed against: one TAT per key, all of a route's
// rules or none.
type gcraModel map[string]int64

// decide answers like the script: allowed, or the first refusing rule, and
// each rule's TAT ahead of now (up to the refusing one).
func (m gcraModel) decide(keys []string, intervals, tolerances []int64, now int64) (ok bool, refused int, ahead []int64) {
	tats := make([]int64, len(keys))
	for i, k := range keys {
		tat := max(m[k], now)
		if tat+intervals[i]-now > tolerances[i] {
			return false, i, append(ahead, tat-now)
		}
		tats[i] = tat + intervals[i]
		ahead = append(ahead, tats[i]-now)
	}
	for i, k := range keys {
		m[k] = tats[i]
	}
	return true, -1, ahead
}

// FuzzBucketMatchesGCRA drives the in-memory limiter of a two-rule route
// and the script's arithmetic with one sequence of arrivals, and wants the
// same decision, refusing rule and bucket state after every request. The
// seeds are long random sequences, so a plain test run checks thousands
// of decisions; -fuzz looks further.
func FuzzBucketMatchesGCRA(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 11))
	for range 16 {
		seed := make([]byte, 1500)
		for i := range seed {
			seed[i] = byte(rng.Uint32())
		}
		f.Add(seed)
	}
	pairs := [][2]config.LimitRule{
		{{Name: "a", Key: "ip", Rate: parseRate(f, "10/s"), Burst: 3}, {Name: "b", Key: "route", Rate: parseRate(f, "3/s"), Burst: 5}},
		{{Name: "a", Key: "route", Rate: parseRate(f, "7/m"), Burst: 2}, {Name: "b", Key: "ip", Rate: parseRate(f, "100/d")}},
		{{Name: "a", Key: "ip", Rate: parseRate(f, "1000000/s"), Burst: 1000000}, {Name: "b", Key: "ip", Rate: parseRate(f, "1/h"), Burst: 2400}},
		{{Name: "a", Key: "ip", Rate: parseRate(f, "1/d"), Burst: 1}, {Name: "b", Key: "route", Rate: parseRate(f, "49/s"), Burst: 49}},
		{{Name: "a", Key: "ip", Rate: parseRate(f, "1/d"), Burst: 3650}, {Name: "b", Key: "route", Rate: parseRate(f, "1/h"), Burst: 87600}},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		pair := pairs[int(data[0])%len(pairs)]
		h := newHarness(t, cfgWith(config.LimitSections{Limits: pair[:]}), harnessOpt{})
		p := h.e.snap.Load().plan("api")
		var intervals, tolerances []int64
		for _, slot := range p.rules {
			intervals = append(intervals, slot.interval)
			tolerances = append(tolerances, slot.tolerance)
		}
		model := gcraModel{}
		ips := []string{"192.0.2.1", "192.0.2.2"}
		var buf [8]verdict
		for i, b := range data[1:] {
			// Low bit: the client; the next two: the kind of gap; the
			// rest: its size.
			ip, mag := ips[b&1], int64(b>>3)
			iv := intervals[mag%2]
			var gap int64
			switch (b >> 1) & 3 {
			case 1:
				gap = iv * mag / 8 / 1000 * 1000
			case 2:
				gap = mag * 997
			case 3:
				// Up to twice the tolerance, or two months: a sequence
				// stays within the engine clock's 292 years.
				gap = min(tolerances[mag%2], int64(30*24*time.Hour)) / 16 * mag
			}
			h.clock.Advance(time.Duration(gap))
			now := h.e.now()
			r := newRequest(client{ip: ip})
			d := h.e.decideMemory(p, reqInfo(r), r, now, buf[:0], false, true)
			keys := []string{"a" + ip, "b" + ip}
			for j, lr := range pair {
				if lr.Key == "route" {
					keys[j] = lr.Name
				}
			}
			ok, refused, ahead := model.decide(keys, intervals, tolerances, now/1000*1000)
			if (d.result == resAllowed) != ok || (!ok && d.rule != refused) {
				t.Fatalf("request %d at %dns: memory result %d rule %d, GCRA allowed %v refused %d", i, now, d.result, d.rule, ok, refused)
			}
			for j, a := range ahead {
				if ok || j == refused {
					if got := d.verdicts[j].ahead; got != a {
						t.Fatalf("request %d at %dns, rule %d: memory's bucket is %dns from full, GCRA's %dns", i, now, j, got, a)
					}
				}
			}
		}
	})
}
