package limits

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzAppendKey checks that bucket keys built from client input cannot
// collide across different inputs and stay bounded in size, whatever the
// header carries.
func FuzzAppendKey(f *testing.F) {
	f.Add("o1", "dev|o2:x", "o1|", "dev")
	f.Add("", "", "", "")
	f.Add("a", "2:ab", "a2", ":ab")
	f.Fuzz(func(t *testing.T, openid1, header1, openid2, header2 string) {
		parts, err := parseParts("openid+header:X-Device+route")
		if err != nil {
			t.Fatal(err)
		}
		build := func(openid, header string) ([]byte, bool) {
			r := newRequest(client{ip: "192.0.2.1", openid: openid, header: map[string]string{"X-Device": header}})
			return appendKey(nil, parts, true, reqInfo(r), r, "api")
		}
		k1, ok1 := build(openid1, header1)
		k2, ok2 := build(openid2, header2)
		if !ok1 || !ok2 {
			t.Fatal("a key with an IP to fall back on must always be made")
		}
		if max(len(k1), len(k2)) > 2*(maxPartLen+8)+len("i=192.0.2.1|r3:api|")+8 {
			t.Fatalf("key of %d bytes", max(len(k1), len(k2)))
		}
		// Header values are trimmed by net/http's Set, so compare what was stored.
		same := openid1 == openid2 && header1 == header2
		if !same && bytes.Equal(k1, k2) && openid1 != "" && openid2 != "" && header1 != "" && header2 != "" {
			t.Fatalf("(%q,%q) and (%q,%q) share key %q", openid1, header1, openid2, header2, k1)
		}
	})
}

func TestAppendKeyAllocatesNothing(t *testing.T) {
	parts, err := parseParts("openid+ip+route+header:X-Device")
	if err != nil {
		t.Fatal(err)
	}
	r := newRequest(client{ip: "2001:db8::1", openid: "oABCDEFGHIJKLMNOPQRSTUVWXYZ0", header: map[string]string{"X-Device": "d-123"}})
	info := reqInfo(r)
	info.ClientIP = netip.MustParseAddr("2001:db8::1")
	var kb [keyBufSize]byte
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := appendKey(kb[:0], parts, true, info, r, "api"); !ok {
			t.Fatal("no key")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per key", n)
	}
}
