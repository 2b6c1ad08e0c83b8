package limits

import (
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"edge/internal/config"
)

func prefixes(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		p, err := config.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = p
	}
	return out
}

func TestIPSet(t *testing.T) {
	s := newIPSet(prefixes(t, "10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::ffff:198.51.100.0/120"))
	cases := []struct {
		ip   string
		want bool
	}{
		{"10.1.2.3", true},
		{"11.0.0.1", false},
		{"192.0.2.7", true},
		{"192.0.2.8", false},
		{"2001:db8:1::5", true},
		{"2001:db9::1", false},
		{"198.51.100.42", true},
		{"fe80::1%eth0", false},
	}
	for _, tc := range cases {
		if got := s.contains(netip.MustParseAddr(tc.ip).Unmap()); got != tc.want {
			t.Errorf("contains(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
	var empty ipSet
	if empty.contains(netip.MustParseAddr("10.0.0.1")) {
		t.Error("empty set contains an address")
	}
}

func TestAccessRules(t *testing.T) {
	dir := t.TempDir()
	denyFile := filepath.Join(dir, "deny.txt")
	if err := os.WriteFile(denyFile, []byte("# scrapers\n203.0.113.0/24  # hosting range\n\n2001:db8:bad::/48\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := cfgWith(config.LimitSections{Access: config.Access{
		IPDeny:        prefixes(t, "198.51.100.0/24"),
		IPDenyFiles:   []string{"deny.txt"},
		UserAgentDeny: []string{`(?i)python-requests`, `^$`},
	}})
	cfg.Path = filepath.Join(dir, "edge.toml")
	cfg.Routes[1].RouteAccess = config.RouteAccess{IPAllow: prefixes(t, "192.0.2.0/24"), IPDeny: prefixes(t, "192.0.2.66")}
	h := newHarness(t, cfg, harnessOpt{})
	const ua = "Mozilla/5.0 MicroMessenger"
	cases := []struct {
		route, ip, ua string
		code          int
		reason        string
	}{
		{"api", "192.0.2.1", ua, 200, ""},
		{"api", "198.51.100.3", ua, 403, "ip_denied"},
		{"api", "203.0.113.9", ua, 403, "ip_denied"},
		{"api", "2001:db8:bad::1", ua, 403, "ip_denied"},
		{"api", "::ffff:203.0.113.9", ua, 403, "ip_denied"},
		{"api", "2001:db8:600d::1", ua, 200, ""},
		{"api", "192.0.2.1", "python-requests/2.31", 403, "user_agent"},
		{"api", "192.0.2.1", "", 403, "user_agent"},
		{"login", "192.0.2.1", ua, 200, ""},
		{"login", "192.0.2.66", ua, 403, "ip_denied"},
		{"login", "10.9.9.9", ua, 403, "ip_not_allowed"},
	}
	for _, tc := range cases {
		r := newRequest(client{ip: tc.ip})
		r.Header.Set("User-Agent", tc.ua)
		w := httptest.NewRecorder()
		h.e.Handler(tc.route, okHandler).ServeHTTP(w, r)
		if w.Code != tc.code {
			t.Errorf("%s from %s (%q): status %d, want %d", tc.route, tc.ip, tc.ua, w.Code, tc.code)
		}
		if tc.code == 403 {
			var body struct{ Code int }
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Code != 40301 {
				t.Errorf("%s from %s: body %q, want code 40301", tc.route, tc.ip, w.Body)
			}
		}
	}
	if got := counterValue(h.m.Rejection("login", "ip_not_allowed")); got != 1 {
		t.Errorf("login ip_not_allowed = %v", got)
	}

	// The file is read again on reload.
	if err := os.WriteFile(denyFile, []byte("192.0.2.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.e.Update(cfg); err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]int{"192.0.2.1": 403, "203.0.113.9": 200} {
		r := newRequest(client{ip: ip})
		r.Header.Set("User-Agent", ua)
		w := httptest.NewRecorder()
		h.e.Handler("api", okHandler).ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("after reload, %s: status %d, want %d", ip, w.Code, want)
		}
	}
}

func TestBansInMemory(t *testing.T) {
	h := newHarness(t, cfgWith(config.LimitSections{
		Limits: []config.LimitRule{{Name: "r", Key: "openid", Rate: parseRate(t, "1/m")}},
		Bans: config.Bans{Threshold: 3, Window: config.Duration(time.Minute), Duration: config.Duration(10 * time.Minute),
			Count: config.ViolationKinds, BanIP: true, MaxBans: 100, SyncInterval: config.Duration(time.Second)},
	}), harnessOpt{})
	anon := client{ip: "192.0.2.1"}
	alice := client{ip: "192.0.2.1", openid: "o-alice"}

	// Rate-limit refusals: one allowed, three refused, then banned. The
	// anonymous client is counted under its IP.
	codes := []int{200, 429, 429, 429, 403}
	for i, want := range codes {
		if got := h.serve("api", anon).Code; got != want {
			t.Fatalf("anonymous request %d: status %d, want %d", i, got, want)
		}
	}
	if got := counterValue(h.m.BanIssued("ip")); got != 1 {
		t.Fatalf("ip bans issued = %v", got)
	}

	// Signature failures reported by the identity middleware ban the openid.
	bob := client{ip: "198.51.100.1", openid: "o-bob"}
	for range 2 {
		h.e.ReportViolation(newRequest(bob), config.ViolationSignature)
	}
	if got := h.serve("api", bob).Code; got != 200 {
		t.Fatalf("bob before the threshold: %d", got)
	}
	h.e.ReportViolation(newRequest(bob), config.ViolationSignature)
	if got := h.serve("api", bob).Code; got != 403 {
		t.Fatalf("bob after 3 bad signatures: %d, want 403", got)
	}
	h.e.ReportViolation(newRequest(alice), "not_a_kind")

	// The admin handler lists and lifts.
	admin := h.e.AdminHandler()
	w := httptest.NewRecorder()
	admin.ServeHTTP(w, httptest.NewRequest("GET", "/bans", nil))
	var list struct {
		Bans []BanView `json:"bans"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Bans) != 2 || list.Bans[0].Kind != "ip" || list.Bans[0].Key != "192.0.2.1" ||
		list.Bans[1].Kind != "openid" || list.Bans[1].Key != "o-bob" || list.Bans[1].Reason != "signature" {
		t.Fatalf("GET /bans = %s", w.Body)
	}
	if want := h.clock.Now().Add(10 * time.Minute).UTC(); !list.Bans[1].Expires.Equal(want) {
		t.Fatalf("expires %v, want %v", list.Bans[1].Expires, want)
	}
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/bans/openid/o-bob", 200},
		{"/bans/openid/o-bob", 404},
		{"/bans/ip/not-an-ip", 400},
		{"/bans/cookie/x", 400},
		{"/bans/ip/::ffff:192.0.2.1", 200},
	} {
		w := httptest.NewRecorder()
		admin.ServeHTTP(w, httptest.NewRequest("DELETE", tc.path, nil))
		if w.Code != tc.code {
			t.Errorf("DELETE %s: %d %s, want %d", tc.path, w.Code, w.Body, tc.code)
		}
	}
	h.clock.Advance(time.Minute) // bob spent his 1/m before the ban
	if got := h.serve("api", bob).Code; got != 200 {
		t.Fatalf("bob after lift: %d", got)
	}
	if got := counterValue(h.m.BansActive("openid")); got != 0 {
		t.Fatalf("active openid bans = %v", got)
	}

	// Bans expire by themselves.
	for range 3 {
		h.e.ReportViolation(newRequest(bob), config.ViolationToken)
	}
	h.clock.Advance(10*time.Minute + time.Second)
	if got := h.serve("api", anon).Code; got != 200 {
		t.Fatalf("anonymous client after its lifted ban: %d", got)
	}
	if got := h.serve("api", bob).Code; got != 200 {
		t.Fatalf("bob after the ban ran out: %d", got)
	}
	h.e.sweep()
	if h.e.bans.n.Load() != 0 {
		t.Fatalf("%d bans left after sweep", h.e.bans.n.Load())
	}
}

func TestViolationWindow(t *testing.T) {
	v := newViolations()
	const window = int64(time.Minute)
	cases := []struct {
		at   time.Duration
		want bool
	}{
		{0, false}, {30 * time.Second, false}, {61 * time.Second, false}, {62 * time.Second, false}, {63 * time.Second, true},
	}
	for i, tc := range cases {
		if got := v.add("ip:192.0.2.1", int64(tc.at), window, 3, 10); got != tc.want {
			t.Fatalf("violation %d at %s: ban %v, want %v", i, tc.at, got, tc.want)
		}
	}
	for i := range 50 {
		v.add("ip:10.0.0."+strconv.Itoa(i), 0, window, 3, 10)
	}
	if len(v.m) > 10 {
		t.Fatalf("%d subjects tracked, cap is 10", len(v.m))
	}
}

// TestMemoryStaysUnderTheCap sends a million distinct keys through one
// rule with the default cap and reads the limiter's own size.
func TestMemoryStaysUnderTheCap(t *testing.T) {
	if testing.Short() {
		t.Skip("a million keys")
	}
	const maxKeys = 250000
	h := newHarness(t, cfgWith(config.LimitSections{
		Limits:  []config.LimitRule{{Name: "r", Key: "ip", Rate: parseRate(t, "1/h")}},
		Limiter: config.Limiter{MaxKeys: maxKeys},
	}), harnessOpt{})
	p := h.e.snap.Load().plan("api")
	r := newRequest(client{ip: "10.0.0.0"})
	info := reqInfo(r)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var buf [8]verdict
	for i := range 1000000 {
		info.ClientIP = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if d := h.e.decideMemory(p, info, r, h.e.now(), buf[:0], false, false); d.result != resAllowed {
			t.Fatalf("key %d refused: a new key must start with a full bucket", i)
		}
		if i%100000 == 0 {
			h.clock.Advance(time.Millisecond)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := h.e.Size(); n > maxKeys || n < maxKeys*9/10 {
		t.Fatalf("Size = %d after a million keys, want at most %d and close to it", n, maxKeys)
	}
	perKey := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / maxKeys
	t.Logf("%d keys held, about %.0f bytes each", h.e.Size(), perKey)
	if perKey > 200 {
		t.Fatalf("%.0f bytes per key; the documented figure is about 180", perKey)
	}
	if got := counterValue(h.m.Evictions()); got < 1000000-maxKeys {
		t.Fatalf("evictions = %v", got)
	}

	// An hour later every bucket is full again; sweeping frees them all.
	h.clock.Advance(time.Hour)
	h.e.sweep()
	if n := h.e.Size(); n != 0 {
		t.Fatalf("Size = %d after the sweep", n)
	}
}
