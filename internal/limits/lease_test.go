package limits

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/reqctx"
	"edge/internal/testpeer"
)

// evalCount counts the script calls Redis ran, alone or in pipelines (a
// call refused with NOSCRIPT, sent again in full, counts once).
type evalCount struct{ n atomic.Int64 }

func (h *evalCount) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *evalCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); err == nil && (name == "evalsha" || name == "eval") {
			h.n.Add(1)
		}
		return err
	}
}

func (h *evalCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if c.Err() == nil {
				h.n.Add(1)
			}
		}
		return err
	}
}

func countedClient(t *testing.T, srv *testpeer.RedisServer) (*redis.Client, *evalCount) {
	rc := redisClient(t, srv)
	c := &evalCount{}
	rc.AddHook(c)
	return rc, c
}

// leaseCfg is one rule on route "api" of rate per hour and burst, through
// Redis, leasing or not.
func leaseCfg(t *testing.T, perHour string, burst int, leases bool) *config.Config {
	return cfgWith(config.LimitSections{
		Limits:  []config.LimitRule{{Name: "global", Key: "route", Rate: parseRate(t, perHour), Burst: burst, Routes: []string{"api"}}},
		Limiter: config.Limiter{RedisTimeout: patientRedis, Leases: leases, AlwaysSendHeaders: true},
	})
}

// TestLimitScriptLeases runs the script's lease arithmetic on a real
// Redis, on a clock of its own: a lease takes what every rule has room for
// and no more, charged to all of them; a refusal names the rule without
// room; requests given back are room again.
func TestLimitScriptLeases(t *testing.T) {
	srv := testpeer.Redis(t)
	rc := redisClient(t, srv)
	ctx := context.Background()
	now := time.Now().UnixMicro()
	sec := int64(time.Second / time.Microsecond)
	run := func(keys []string, n, back int64, rules ...int64) []int64 {
		t.Helper()
		var args []any
		for _, burst := range rules {
			args = append(args, sec, burst*sec)
		}
		args = append(args, n, back, now)
		res, err := limitScript.Run(ctx, rc, keys, args...).Result()
		if err != nil {
			t.Fatal(err)
		}
		out, err := limitAnswer(res, len(keys))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	one, two := []string{"edge:test:lease:{a}"}, []string{"edge:test:lease:{b}", "edge:test:lease:{b}:2"}
	for _, step := range []struct {
		name       string
		keys       []string
		n, back    int64
		rules      []int64
		want       []int64
		wantAheadS int64 // of the first rule, in seconds
	}{
		{"four of ten", one, 4, 0, []int64{10}, []int64{4, 0}, 4},
		{"asks ten, six have room", one, 10, 0, []int64{10}, []int64{6, 0}, 10},
		{"none left", one, 1, 0, []int64{10}, []int64{0, 1}, 10},
		{"three given back, two taken", one, 2, 3, []int64{10}, []int64{2, 0}, 9},
		{"the smaller rule bounds the lease", two, 8, 0, []int64{20, 5}, []int64{5, 0}, 5},
		{"the second rule refuses, the first is not charged", two, 1, 0, []int64{20, 5}, []int64{0, 2}, 5},
		{"nothing given back refuses as before", two, 3, 0, []int64{20, 5}, []int64{0, 2}, 5},
	} {
		out := run(step.keys, step.n, step.back, step.rules...)
		if out[0] != step.want[0] || out[1] != step.want[1] || out[2] != step.wantAheadS*sec {
			t.Fatalf("%s: answer %v, want %v with the first rule %d s ahead", step.name, out, step.want, step.wantAheadS)
		}
	}
	// The first rule of two holds the five the lease took, not more.
	if tat, err := rc.Get(ctx, two[0]).Int64(); err != nil || tat != now+5*sec {
		t.Fatalf("first rule's TAT %d (%v), want now + 5 s", tat, err)
	}
}

// TestLeasesCutRoundTripsNotLimits: one engine serving a hot key asks
// Redis far less often than once a request, and allows exactly what one
// request at a time would: nothing more. What it still holds when it
// stops goes back to Redis, so another replica gets the rest of the
// burst to the request.
func TestLeasesCutRoundTripsNotLimits(t *testing.T) {
	const burst, served = 1000, 500
	srv := testpeer.Redis(t)
	rc, calls := countedClient(t, srv)
	h := newHarness(t, leaseCfg(t, "1/h", burst, true), harnessOpt{redis: rc})
	if got := h.allowed("api", client{ip: "192.0.2.1"}, served); got != served {
		t.Fatalf("%d of %d allowed, want all", got, served)
	}
	// Leases of 1, 2, 4 … up to burst ÷ 20 = 50 while the clock stands
	// still: 6 calls for the first 63, then one per 50.
	if n := calls.n.Load(); n > 20 {
		t.Fatalf("%d script calls for %d requests: the leases did not grow", n, served)
	}
	if err := h.e.Close(); err != nil {
		t.Fatal(err)
	}
	exact := newHarness(t, leaseCfg(t, "1/h", burst, false), harnessOpt{redis: redisClient(t, srv)})
	if got := exact.allowed("api", client{ip: "192.0.2.2"}, burst); got != burst-served {
		t.Fatalf("after the leasing engine stopped, another allowed %d, want the %d it did not serve", got, burst-served)
	}
}

// TestLeasesMatchOneAtATimeHeaders: requests served from a lease carry the
// RateLimit numbers one request at a time would: the requests the lease
// still holds count as room.
func TestLeasesMatchOneAtATimeHeaders(t *testing.T) {
	srv := testpeer.Redis(t)
	clock := newClock()
	leased := newHarness(t, leaseCfg(t, "100/h", 100, true), harnessOpt{redis: redisClient(t, srv), clock: clock})
	mem := newHarness(t, leaseCfg(t, "100/h", 100, false), harnessOpt{clock: clock})
	for i := range 30 {
		a, b := leased.serve("api", client{ip: "192.0.2.1"}), mem.serve("api", client{ip: "192.0.2.1"})
		if a.Code != http.StatusOK || a.Header().Get("Ratelimit") != b.Header().Get("Ratelimit") {
			t.Fatalf("request %d: %d %q from a lease, %d %q one at a time", i, a.Code, a.Header().Get("Ratelimit"), b.Code, b.Header().Get("Ratelimit"))
		}
	}
}

// TestLeaseKeepsARefusalBriefly: once Redis has refused a key, its next
// requests are refused without asking again, for at most leaseHorizon:
// then Redis is asked, and a bucket with room (here: emptied Redis) is
// heeded.
func TestLeaseKeepsARefusalBriefly(t *testing.T) {
	const burst = 40
	srv := testpeer.Redis(t)
	rc, calls := countedClient(t, srv)
	h := newHarness(t, leaseCfg(t, "1/h", burst, true), harnessOpt{redis: rc})
	c := client{ip: "192.0.2.1"}
	if got := h.allowed("api", c, burst+1); got != burst {
		t.Fatalf("%d allowed, want the burst, %d", got, burst)
	}
	before := calls.n.Load()
	if got := h.allowed("api", c, 10); got != 0 {
		t.Fatalf("%d allowed after the burst", got)
	}
	if n := calls.n.Load() - before; n != 0 {
		t.Fatalf("%d script calls for refusals within %v of Redis' own", n, time.Duration(leaseHorizon))
	}
	if err := rc.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Duration(leaseHorizon))
	if got := h.allowed("api", c, 1); got != 1 {
		t.Fatal("a refusal outlived leaseHorizon: the emptied bucket was not asked")
	}
}

// TestLeaseGivenBack: a lease not used for leaseTTL, and every lease of
// a config a reload replaced, go back to Redis at the next sweep; another
// replica then has the whole rest of the burst.
func TestLeaseGivenBack(t *testing.T) {
	const burst = 200
	for _, tc := range []struct {
		name  string
		after func(h *harness, cfg *config.Config)
	}{
		{"idle", func(h *harness, _ *config.Config) { h.clock.Advance(time.Duration(leaseTTL)) }},
		{"reload", func(h *harness, cfg *config.Config) {
			if err := h.e.Update(cfg); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testpeer.Redis(t)
			cfg := leaseCfg(t, "1/h", burst, true)
			a := newHarness(t, cfg, harnessOpt{redis: redisClient(t, srv)})
			// Leases of 1, 2, 4, 8 and 10: 25 taken, 5 held.
			got := a.allowed("api", client{ip: "192.0.2.1"}, 20)
			b := newHarness(t, leaseCfg(t, "1/h", burst, false), harnessOpt{redis: redisClient(t, srv)})
			tc.after(a, cfg)
			a.e.giveBackLeases(false)
			if rest := b.allowed("api", client{ip: "192.0.2.2"}, burst); got+rest != burst {
				t.Fatalf("%d served by the leasing replica, then %d by the other: want the burst, %d, in all", got, rest, burst)
			}
		})
	}
}

// TestLeasesOffAndSmallBurstsAskEveryTime: leases = false, and a rule
// whose burst cannot spare a twentieth of itself, ask Redis for every
// request.
func TestLeasesOffAndSmallBurstsAskEveryTime(t *testing.T) {
	srv := testpeer.Redis(t)
	for _, tc := range []struct {
		name   string
		burst  int
		leases bool
	}{{"leases off", 1000, false}, {"burst under 40", 39, true}} {
		t.Run(tc.name, func(t *testing.T) {
			rc, calls := countedClient(t, srv)
			h := newHarness(t, leaseCfg(t, "1/h", tc.burst, tc.leases), harnessOpt{redis: rc})
			h.allowed("api", client{ip: "192.0.2.1", openid: tc.name}, 30)
			if n := calls.n.Load(); n != 30 {
				t.Fatalf("%d script calls for 30 requests, want one each", n)
			}
		})
	}
}

// TestLeaseGivenBackIsNotServed: a request that waited for a lease and
// wakes after a reload (or shutdown) gave that lease back does not serve
// from it: the requests went back to Redis, and serving one of them too
// would allow a request Redis no longer counts. It decides on its own
// instead. Each round replays the moment between the answer's arrival
// and the waiter taking the lock again.
func TestLeaseGivenBackIsNotServed(t *testing.T) {
	srv := testpeer.Redis(t)
	h := newHarness(t, leaseCfg(t, "1/h", 1000, true), harnessOpt{redis: redisClient(t, srv)})
	h.serve("api", client{ip: "192.0.2.1"})
	s := h.e.snap.Load()
	p := s.plan("api")
	var l *lease
	var sh *leaseShard
	for i := range p.leases.shards {
		for _, x := range p.leases.shards[i].m {
			l, sh = x, &p.leases.shards[i]
		}
	}
	if l == nil {
		t.Fatal("the first request left no lease")
	}
	for round := range 50 {
		now := h.e.now()
		f := &leaseFetch{done: make(chan struct{})}
		sh.mu.Lock()
		l.fetch, l.left, l.dead = f, 0, false
		sh.m[l.keys[0]] = l
		sh.mu.Unlock()
		p.leases.retired.Store(false)
		served := make(chan bool, 1)
		go func() {
			r := newRequest(client{ip: "192.0.2.1"})
			_, _, handled, _ := h.e.decideLeased(context.Background(), s, p, reqctx.FromRequest(r), r, now, nil)
			served <- handled
		}()
		deadline := time.Now().Add(10 * time.Second)
		for waiting := int64(0); waiting == 0; {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the request did not wait for the lease within 10 s", round)
			}
			sh.mu.Lock()
			waiting = l.waiting
			sh.mu.Unlock()
		}
		// The answer arrives: one request for the asker, one left.
		sh.mu.Lock()
		l.fetch, l.left, l.at, l.used, l.answered = nil, 1, now, now, true
		close(f.done)
		sh.mu.Unlock()
		back := p.leases.expire(now, true)
		if <-served && len(back) == 1 {
			t.Fatalf("round %d: the lease's last request was given back and served", round)
		}
	}
}

// TestLeasesThroughReloadsAllowExactlyTheBurst: requests on a busy key
// while the config is reloaded again and again, each reload retiring the
// leases of the last, allow exactly the burst of a bucket that does not
// refill: no request Redis granted is lost in a retired table, and none
// given back is served as well.
func TestLeasesThroughReloadsAllowExactlyTheBurst(t *testing.T) {
	const burst, workers = 2000, 8
	srv := testpeer.Redis(t)
	cfg := leaseCfg(t, "1/h", burst, true)
	h := newHarness(t, cfg, harnessOpt{redis: redisClient(t, srv)})
	var allowed, refused atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if h.serve("api", client{ip: "192.0.2.1"}).Code == http.StatusOK {
					allowed.Add(1)
				} else {
					refused.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := h.e.Update(cfg); err != nil {
				t.Error(err)
				return
			}
			h.e.giveBackLeases(false)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for refused.Load() < burst && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	// What the last reload retired goes back; the refusals kept on the
	// engine's clock lapse; then one client takes whatever is left.
	h.e.giveBackLeases(false)
	h.clock.Advance(time.Duration(leaseHorizon))
	for h.serve("api", client{ip: "192.0.2.1"}).Code == http.StatusOK {
		allowed.Add(1)
	}
	if allowed.Load() != burst {
		t.Fatalf("%d allowed through the reloads, want exactly the burst, %d", allowed.Load(), burst)
	}
}

// replyCutter relays connections to Redis and, once armed, forwards the
// next script call but drops Redis' answer and closes the connection: the
// call ran, and go-redis, seeing the connection break, sends it again.
type replyCutter struct {
	ln    net.Listener
	redis string
	armed atomic.Bool
	cuts  atomic.Int32
}

func newReplyCutter(t *testing.T, redisAddr string) *replyCutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &replyCutter{ln: ln, redis: redisAddr}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go c.relay(conn)
		}
	}()
	return c
}

func (c *replyCutter) relay(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", c.redis)
	if err != nil {
		return
	}
	defer server.Close()
	var cut atomic.Bool
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if lower := bytes.ToLower(buf[:n]); bytes.Contains(lower, []byte("eval")) && c.armed.CompareAndSwap(true, false) {
					cut.Store(true)
				}
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 && cut.Load() {
			c.cuts.Add(1)
			return
		}
		if n > 0 {
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestLeaseGiveBackAppliedOnce: requests given back go back once, even
// when the connection breaks after Redis ran the give-back and go-redis
// sends it again: twice would put back requests nobody gave up, and allow
// them to the other replicas over the limit. Given back at the sweep
// (refundScript) and with the next lease (limitScript), whose requests
// are taken once too.
func TestLeaseGiveBackAppliedOnce(t *testing.T) {
	const burst = 200
	for _, tc := range []struct {
		name   string
		script *redis.Script
		// giveBack makes the replica give back its 5 unused requests, and
		// returns how many it served meanwhile.
		giveBack func(h *harness) int
	}{
		{"at the sweep", refundScript, func(h *harness) int { h.e.giveBackLeases(false); return 0 }},
		{"with the next lease", limitScript, func(h *harness) int { return h.allowed("api", client{ip: "192.0.2.1"}, 1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testpeer.Redis(t)
			cutter := newReplyCutter(t, srv.Addr)
			// go-redis' default retries: a call on a broken connection is
			// sent again.
			rc := redis.NewClient(&redis.Options{Addr: cutter.ln.Addr().String()})
			t.Cleanup(func() { _ = rc.Close() })
			a := newHarness(t, leaseCfg(t, "1/h", burst, true), harnessOpt{redis: rc})
			// Leases of 1, 2, 4, 8 and 10: 25 taken, 5 held.
			got := a.allowed("api", client{ip: "192.0.2.1"}, 20)
			a.clock.Advance(time.Duration(leaseTTL))
			// Loaded, so that the call whose answer is cut is the one that
			// runs (not a NOSCRIPT that go-redis follows with EVAL).
			if err := tc.script.Load(context.Background(), rc).Err(); err != nil {
				t.Fatal(err)
			}
			cutter.armed.Store(true)
			got += tc.giveBack(a)
			if cutter.cuts.Load() != 1 {
				t.Fatalf("%d answers cut, want the give-back's", cutter.cuts.Load())
			}
			if err := a.e.Close(); err != nil {
				t.Fatal(err)
			}
			b := newHarness(t, leaseCfg(t, "1/h", burst, false), harnessOpt{redis: redisClient(t, srv)})
			if rest := b.allowed("api", client{ip: "192.0.2.2"}, burst); got+rest != burst {
				t.Fatalf("%d served by the leasing replica, then %d by the other: want the burst, %d, in all", got, rest, burst)
			}
		})
	}
}
