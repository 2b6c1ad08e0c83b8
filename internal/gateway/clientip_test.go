package gateway

import (
	"net/http"
	"net/netip"
	"testing"

	"edge/internal/reqctx"
)

func TestClientIP(t *testing.T) {
	s := &snapshot{trustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	cases := []struct {
		name, peer string
		xff        []string
		realIP     string
		want       string
		trusted    bool
	}{
		{"untrusted peer ignores XFF", "203.0.113.9:5000", []string{"1.2.3.4"}, "", "203.0.113.9", false},
		{"trusted peer: rightmost untrusted", "10.0.0.2:5000", []string{"6.6.6.6, 1.2.3.4, 10.0.0.7"}, "", "1.2.3.4", true},
		{"trusted peer: several headers", "10.0.0.2:5000", []string{"6.6.6.6", "1.2.3.4"}, "", "1.2.3.4", true},
		{"trusted peer: all trusted", "10.0.0.2:5000", []string{"10.1.1.1, 10.2.2.2"}, "", "10.1.1.1", true},
		{"trusted peer: garbage stops at the last good", "10.0.0.2:5000", []string{"junk, 10.0.0.9"}, "", "10.0.0.9", true},
		{"trusted peer: X-Real-IP without XFF", "10.0.0.2:5000", nil, " 5.6.7.8 ", "5.6.7.8", true},
		{"IPv6 trusted peer, mapped v4 client", "[::1]:5000", []string{"::ffff:1.2.3.4"}, "", "1.2.3.4", true},
		{"unparsable peer", "pipe", nil, "", "invalid IP", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: c.peer, Header: http.Header{}}
			if c.xff != nil {
				r.Header["X-Forwarded-For"] = c.xff
			}
			if c.realIP != "" {
				r.Header.Set("X-Real-Ip", c.realIP)
			}
			var info reqctx.Info
			s.clientIP(r, &info)
			if got := info.ClientIP.String(); got != c.want || info.PeerTrusted != c.trusted {
				t.Fatalf("got %s trusted=%v, want %s trusted=%v", got, info.PeerTrusted, c.want, c.trusted)
			}
		})
	}
}

// FuzzClientIP: whatever X-Forwarded-For says, an untrusted peer is the
// client, and a trusted peer's answer is an address that appeared in the
// request.
func FuzzClientIP(f *testing.F) {
	s := &snapshot{trustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	for _, seed := range []string{"1.2.3.4", "a, b,,c", " , ", "::1, 10.0.0.1", "1.2.3.4,\t5.6.7.8"} {
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, xff string, trustedPeer bool) {
		peer := "203.0.113.1:1"
		if trustedPeer {
			peer = "10.9.9.9:1"
		}
		r := &http.Request{RemoteAddr: peer, Header: http.Header{"X-Forwarded-For": {xff}}}
		var info reqctx.Info
		s.clientIP(r, &info)
		if !info.ClientIP.IsValid() {
			t.Fatal("no client IP")
		}
		if !trustedPeer && info.ClientIP.String() != "203.0.113.1" {
			t.Fatalf("untrusted peer's X-Forwarded-For %q changed the client to %s", xff, info.ClientIP)
		}
	})
}

func TestWellFormedRequestID(t *testing.T) {
	for id, want := range map[string]bool{
		"abc-123_x.y:z": true, "": false, "a b": false, "<script>": false,
		string(make([]byte, 129)): false, "0123456789abcdef0123456789abcdef": true,
	} {
		if got := wellFormedID(id); got != want {
			t.Errorf("wellFormedID(%q) = %v", id, got)
		}
	}
}
