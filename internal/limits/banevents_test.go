package limits

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/testpeer"
)

func banEventHarness(t testing.TB) *harness {
	return newHarness(t, cfgWith(config.LimitSections{
		Bans: config.Bans{Threshold: 3, Window: config.Duration(time.Minute), Duration: config.Duration(10 * time.Minute),
			Count: config.ViolationKinds, BanIP: true, MaxBans: 100, SyncInterval: config.Duration(time.Hour)},
	}), harnessOpt{})
}

// TestBanEvents: a message from another replica bans for the time it
// says, an unban lifts, and malformed messages change nothing.
func TestBanEvents(t *testing.T) {
	h := banEventHarness(t)
	ip := netip.MustParseAddr("192.0.2.7")
	for _, bad := range []string{"", "60000", "60000 signature", "x signature openid:o-1", "-5 signature openid:o-1",
		"99999999999999 signature openid:o-1", "60000 signature user:o-1", "60000 signature openid:"} {
		h.e.HandleBanEvent(bad)
	}
	if n := h.e.bans.n.Load(); n != 0 {
		t.Fatalf("malformed messages left %d bans", n)
	}
	h.e.HandleBanEvent("60000 signature openid:o-1")
	h.e.HandleBanEvent("60000 rate_limit ip:" + ip.String())
	if !h.e.bans.bannedOpenID("o-1", h.e.now()) || !h.e.bans.bannedIP(ip, h.e.now()) {
		t.Fatal("a ban message did not ban")
	}
	h.clock.Advance(61 * time.Second)
	if h.e.bans.bannedOpenID("o-1", h.e.now()) {
		t.Error("a ban outlived the duration of its message")
	}
	h.e.HandleUnbanEvent("ip:" + ip.String())
	if h.e.bans.bannedIP(ip, h.e.now()) {
		t.Error("an unban message did not lift the ban")
	}
}

// FuzzBanEvent: whatever Redis carries, a message never panics and never
// bans for longer than a year.
func FuzzBanEvent(f *testing.F) {
	for _, s := range []string{"60000 signature openid:o-1", "1 token ip:192.0.2.1", "0 x ip:", "9 a b c"} {
		f.Add(s)
	}
	h := banEventHarness(f)
	f.Fuzz(func(t *testing.T, msg string) {
		h.e.HandleBanEvent(msg)
		h.e.HandleUnbanEvent(msg)
		limit := h.e.now() + int64(maxEventBan)
		h.e.bans.mu.RLock()
		defer h.e.bans.mu.RUnlock()
		for k, v := range h.e.bans.m {
			if v.until > limit || !strings.Contains(k, ":") {
				t.Fatalf("message %q left ban %q until %d", msg, k, v.until)
			}
		}
	})
}

// TestRepublishBans: the bans a replica holds go back into an empty Redis
// with the time they have left, a ban Redis holds longer keeps its
// expiry, and the version changes so every replica reads them.
func TestRepublishBans(t *testing.T) {
	srv := testpeer.Redis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	h := newHarness(t, cfgWith(config.LimitSections{
		Bans: config.Bans{Threshold: 3, Window: config.Duration(time.Minute), Duration: config.Duration(10 * time.Minute),
			Count: config.ViolationKinds, BanIP: true, MaxBans: 100, SyncInterval: config.Duration(time.Hour)},
	}), harnessOpt{redis: rc})
	ctx := context.Background()
	h.e.HandleBanEvent("60000 signature openid:o-short")
	h.e.HandleBanEvent("60000 signature openid:o-longer-in-redis")
	ms := func(member string) float64 {
		t.Helper()
		v, err := rc.ZScore(ctx, redisBansKey, member).Result()
		if err != nil {
			t.Fatalf("ZSCORE %s: %v", member, err)
		}
		return v
	}
	if err := rc.ZAdd(ctx, redisBansKey, redis.Z{Score: 1e15, Member: "openid:o-longer-in-redis"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := h.e.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	redisNow, err := rc.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if left := ms("openid:o-short") - float64(redisNow.UnixMilli()); left < 50000 || left > 61000 {
		t.Errorf("republished ban has %.0f ms left in Redis, want about 60000", left)
	}
	if got := ms("openid:o-longer-in-redis"); got != 1e15 {
		t.Errorf("a longer ban in Redis was shortened to %.0f", got)
	}
	if v, err := rc.Get(ctx, redisBansVerKey).Result(); err != nil || v == "" {
		t.Errorf("the bans' version was not moved: %q %v", v, err)
	}
}

// TestResyncReadsWhatTheMessagesMissed: a ban written to Redis while this
// replica was not listening arrives on Resync (the bus calls it after every
// reconnect), with the periodic sync an hour away.
func TestResyncReadsWhatTheMessagesMissed(t *testing.T) {
	srv := testpeer.Redis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	h := newHarness(t, cfgWith(config.LimitSections{
		Bans: config.Bans{Threshold: 3, Window: config.Duration(time.Minute), Duration: config.Duration(10 * time.Minute),
			Count: config.ViolationKinds, BanIP: true, MaxBans: 100, SyncInterval: config.Duration(time.Hour)},
	}), harnessOpt{redis: rc, realClock: true})
	ctx := context.Background()
	redisNow, err := rc.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.ZAdd(ctx, redisBansKey, redis.Z{Score: float64(redisNow.Add(time.Minute).UnixMilli()), Member: "openid:o-missed"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Incr(ctx, redisBansVerKey).Err(); err != nil {
		t.Fatal(err)
	}
	h.e.Resync()
	waitFor(t, 10*time.Second, "the resync to read the ban", func() bool { return h.e.bans.bannedOpenID("o-missed", h.e.now()) })
}
