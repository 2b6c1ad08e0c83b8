package limits

import (
	"net/netip"
	"testing"

	"edge/internal/reqctx"
)

// TestLimitedTally: refusals counted by openid, else IP; bounded, the
// subject refused longest ago giving up its place.
func TestLimitedTally(t *testing.T) {
	e := &Engine{}
	bob := &reqctx.Info{OpenID: "o-bob", ClientIP: netip.MustParseAddr("192.0.2.1")}
	for now := range int64(3) {
		e.limited.add(bob, now)
	}
	e.limited.add(&reqctx.Info{ClientIP: netip.MustParseAddr("::ffff:192.0.2.9")}, 3)
	e.limited.add(&reqctx.Info{}, 4) // nothing to name it by
	top := e.TopLimited(10)
	if len(top) != 2 || top[0] != (LimitedKey{Kind: "openid", Key: "o-bob", Count: 3}) || top[1] != (LimitedKey{Kind: "ip", Key: "192.0.2.9", Count: 1}) {
		t.Fatalf("top: %+v", top)
	}
	if got := e.TopLimited(1); len(got) != 1 || got[0].Key != "o-bob" {
		t.Fatalf("top 1: %+v", got)
	}

	for i := range maxLimited + 50 {
		ip := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		e.limited.add(&reqctx.Info{ClientIP: ip}, int64(100+i))
	}
	if n := len(e.limited.m); n != maxLimited {
		t.Fatalf("tally holds %d subjects, cap %d", n, maxLimited)
	}
}
