package limits

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
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
