package limits

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
)

// step advances the clock, sends n requests and expects want of them let
// through.
type step struct {
	advance time.Duration
	n, want int
}

func TestRateBurstRefill(t *testing.T) {
	cases := []struct {
		name  string
		rate  string
		burst int
		steps []step
	}{
		{"burst defaults to the rate's count", "10/s", 0, []step{{0, 12, 10}}},
		{"explicit burst", "10/s", 3, []step{{0, 5, 3}}},
		{"refill one interval at a time", "10/s", 5, []step{
			{0, 6, 5}, {100 * time.Millisecond, 2, 1}, {50 * time.Millisecond, 1, 0}, {50 * time.Millisecond, 1, 1},
		}},
		{"refill never exceeds the burst", "10/s", 5, []step{{0, 5, 5}, {time.Hour, 8, 5}}},
		{"per minute", "60/m", 1, []step{{0, 2, 1}, {500 * time.Millisecond, 1, 0}, {500 * time.Millisecond, 1, 1}}},
		{"per hour", "3600/h", 2, []step{{0, 3, 2}, {time.Second, 2, 1}}},
		{"daily quota", "100/d", 0, []step{
			{0, 150, 100}, {time.Hour, 10, 4}, {24 * time.Hour, 120, 100},
		}},
		{"steady rate at the limit is never refused", "2/s", 1, []step{
			{0, 1, 1}, {500 * time.Millisecond, 1, 1}, {500 * time.Millisecond, 1, 1}, {499 * time.Millisecond, 1, 0},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, cfgWith(config.LimitSections{Limits: []config.LimitRule{
				{Name: "r", Key: "ip", Rate: parseRate(t, tc.rate), Burst: tc.burst},
			}}), harnessOpt{})
			for i, s := range tc.steps {
				h.clock.Advance(s.advance)
				if got := h.allowed("api", client{ip: "192.0.2.1"}, s.n); got != s.want {
					t.Fatalf("step %d: %d of %d allowed, want %d", i, got, s.n, s.want)
				}
			}
		})
	}
}

func TestKeys(t *testing.T) {
	alice := client{ip: "192.0.2.1", openid: "o-alice"}
	aliceOtherIP := client{ip: "198.51.100.9", openid: "o-alice"}
	bob := client{ip: "192.0.2.1", openid: "o-bob"}
	anon := client{ip: "192.0.2.1"}
	anon2 := client{ip: "192.0.2.2"}
	noIP := client{}
	type req struct {
		route string
		c     client
		code  int
	}
	cases := []struct {
		name    string
		key     string
		missing string
		reqs    []req
	}{
		{"openid follows the user across IPs", "openid", "", []req{
			{"api", alice, 200}, {"api", aliceOtherIP, 429}, {"api", bob, 200},
		}},
		{"ip is shared by users behind it", "ip", "", []req{
			{"api", alice, 200}, {"api", bob, 429}, {"api", anon2, 200},
		}},
		{"route is one bucket per route", "route", "", []req{
			{"api", alice, 200}, {"api", anon2, 429}, {"login", anon2, 200},
		}},
		{"composite openid+route", "openid+route", "", []req{
			{"api", alice, 200}, {"login", alice, 200}, {"api", aliceOtherIP, 429}, {"api", bob, 200},
		}},
		{"header key", "header:X-Device", "", []req{
			{"api", client{ip: "192.0.2.1", header: map[string]string{"X-Device": "d1"}}, 200},
			{"api", client{ip: "192.0.2.9", header: map[string]string{"X-Device": "d1"}}, 429},
			{"api", client{ip: "192.0.2.1", header: map[string]string{"X-Device": "d2"}}, 200},
		}},
		{"a long header value is hashed, still one bucket", "header:X-Device", "", []req{
			{"api", client{ip: "192.0.2.1", header: map[string]string{"X-Device": strings.Repeat("z", 5000)}}, 200},
			{"api", client{ip: "192.0.2.9", header: map[string]string{"X-Device": strings.Repeat("z", 5000)}}, 429},
		}},
		{"missing openid falls back to the IP, not one shared bucket", "openid", "ip", []req{
			{"api", anon, 200}, {"api", anon, 429}, {"api", anon2, 200}, {"api", alice, 200},
		}},
		{"missing part of a composite falls back to the IP", "openid+route", "ip", []req{
			{"api", anon, 200}, {"login", anon, 200}, {"api", anon, 429},
		}},
		{"missing header falls back to the IP", "header:X-Device", "ip", []req{
			{"api", anon, 200}, {"api", anon, 429}, {"api", anon2, 200},
		}},
		{"missing key rejected", "openid", "reject", []req{
			{"api", anon, 403}, {"api", alice, 200},
		}},
		{"no client IP and no openid is refused, never shared", "openid", "ip", []req{
			{"api", noIP, 403}, {"api", noIP, 403},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, cfgWith(config.LimitSections{Limits: []config.LimitRule{
				{Name: "r", Key: tc.key, Rate: parseRate(t, "1/m"), OnMissingKey: tc.missing},
			}}), harnessOpt{})
			for i, rq := range tc.reqs {
				if got := h.serve(rq.route, rq.c).Code; got != rq.code {
					t.Fatalf("request %d (%s %+v): status %d, want %d", i, rq.route, rq.c, got, rq.code)
				}
			}
		})
	}
}

func TestSeveralRulesOnOneRoute(t *testing.T) {
	h := newHarness(t, cfgWith(config.LimitSections{Limits: []config.LimitRule{
		{Name: "per_ip", Key: "ip", Rate: parseRate(t, "5/m")},
		{Name: "per_user", Key: "openid", Rate: parseRate(t, "2/m"), Routes: []string{"api"}},
		{Name: "login_only", Key: "ip", Rate: parseRate(t, "1/m"), Routes: []string{"login"}},
	}}), harnessOpt{})
	alice := client{ip: "192.0.2.1", openid: "o-alice"}
	if got := h.allowed("api", alice, 5); got != 2 {
		t.Fatalf("alice: %d allowed, want 2 (per_user)", got)
	}
	// per_user refused alice three times; per_ip must not have been charged
	// for those, so bob from the same IP still has 3 of its 5.
	ok := 0
	for _, id := range []string{"u1", "u2", "u3", "u4", "u5"} {
		if h.serve("api", client{ip: "192.0.2.1", openid: id}).Code == 200 {
			ok++
		}
	}
	if ok != 3 {
		t.Fatalf("other users behind the same IP: %d allowed, want 3 (per_ip minus alice's 2)", ok)
	}
	w := h.serve("api", client{ip: "192.0.2.1", openid: "u6"})
	if got := w.Header().Get("RateLimit"); !strings.HasPrefix(got, `"per_ip";r=0;t=`) {
		t.Fatalf("RateLimit = %q, want the refusing rule per_ip", got)
	}
	if got, want := w.Header().Get("RateLimit-Policy"), `"per_ip";q=5;w=60, "per_user";q=2;w=60`; got != want {
		t.Fatalf("RateLimit-Policy = %q, want %q", got, want)
	}
	// login has per_ip (already spent by this IP) and login_only.
	if got := h.allowed("login", client{ip: "192.0.2.7"}, 3); got != 1 {
		t.Fatalf("login: %d allowed, want 1", got)
	}
	if v := counterValue(h.m.Decision("api", "per_user", "limited")); v != 3 {
		t.Fatalf("per_user limited counter = %v, want 3", v)
	}
	if v := counterValue(h.m.Decision("api", "per_ip", "allowed")); v != 5 {
		t.Fatalf("per_ip allowed counter on api = %v, want 5", v)
	}
}

func TestLimitedAnswer(t *testing.T) {
	cases := []struct {
		name       string
		rate       string
		burst      int
		advance    time.Duration
		retryAfter string
		rateLimit  string
		policy     string
	}{
		{"sub-second wait rounds up to 1", "10/s", 2, 0, "1", `"r";r=0;t=1`, `"r";q=10;w=1`},
		{"minute rate", "1/m", 1, 15 * time.Second, "45", `"r";r=0;t=45`, `"r";q=1;w=60`},
		{"partial second rounds up", "1/m", 1, 15*time.Second + 300*time.Millisecond, "45", `"r";r=0;t=45`, `"r";q=1;w=60`},
		{"daily quota", "2/d", 2, time.Hour, "39600", `"r";r=0;t=39600`, `"r";q=2;w=86400`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, cfgWith(config.LimitSections{Limits: []config.LimitRule{
				{Name: "r", Key: "ip", Rate: parseRate(t, tc.rate), Burst: tc.burst},
			}}), harnessOpt{})
			c := client{ip: "2001:db8::1"}
			h.allowed("api", c, tc.burst)
			h.clock.Advance(tc.advance)
			w := h.serve("api", c)
			if w.Code != http.StatusTooManyRequests {
				t.Fatalf("status %d, want 429", w.Code)
			}
			var body struct {
				Code      int    `json:"code"`
				Msg       string `json:"msg"`
				RequestID string `json:"request_id"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if body.Code != 42901 || body.RequestID != "req-1" || body.Msg == "" {
				t.Fatalf("body = %+v", body)
			}
			for k, want := range map[string]string{
				"Retry-After": tc.retryAfter, "RateLimit": tc.rateLimit, "RateLimit-Policy": tc.policy,
				"Content-Type": "application/json; charset=utf-8",
			} {
				if got := w.Header().Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestHeadersOnAllowedResponses(t *testing.T) {
	cases := []struct {
		always bool
		want   []string
	}{
		{false, []string{"", "", ""}},
		{true, []string{`"r";r=2;t=1, "d";r=99;t=864`, `"r";r=1;t=1, "d";r=98;t=1728`, `"r";r=0;t=1, "d";r=97;t=2592`}},
	}
	for _, tc := range cases {
		h := newHarness(t, cfgWith(config.LimitSections{
			Limits: []config.LimitRule{
				{Name: "r", Key: "ip", Rate: parseRate(t, "3/s")},
				{Name: "d", Key: "ip", Rate: parseRate(t, "100/d")},
			},
			Limiter: config.Limiter{AlwaysSendHeaders: tc.always},
		}), harnessOpt{})
		for i, want := range tc.want {
			w := h.serve("api", client{ip: "192.0.2.1"})
			if w.Code != 200 {
				t.Fatalf("always=%v request %d: status %d", tc.always, i, w.Code)
			}
			if got := w.Header().Get("RateLimit"); got != want {
				t.Errorf("always=%v request %d: RateLimit = %q, want %q", tc.always, i, got, want)
			}
			if tc.always && w.Header().Get("RateLimit-Policy") != `"r";q=3;w=1, "d";q=100;w=86400` {
				t.Errorf("RateLimit-Policy = %q", w.Header().Get("RateLimit-Policy"))
			}
		}
	}
}

func TestForwardedForCannotChangeTheKey(t *testing.T) {
	// The gateway computes ClientIP (honouring X-Forwarded-For only from
	// trusted proxies); the limiter must count by it and nothing else.
	h := newHarness(t, cfgWith(config.LimitSections{Limits: []config.LimitRule{
		{Name: "r", Key: "ip", Rate: parseRate(t, "1/m")},
	}}), harnessOpt{})
	for i, xff := range []string{"", "203.0.113.1", "203.0.113.2, 203.0.113.3"} {
		c := client{ip: "192.0.2.1", header: map[string]string{"X-Forwarded-For": xff, "X-Real-IP": xff}}
		want := http.StatusTooManyRequests
		if i == 0 {
			want = http.StatusOK
		}
		if got := h.serve("api", c).Code; got != want {
			t.Fatalf("X-Forwarded-For %q: status %d, want %d", xff, got, want)
		}
	}
}

func TestReloadKeepsUnchangedRules(t *testing.T) {
	base := config.LimitSections{Limits: []config.LimitRule{
		{Name: "keep", Key: "ip", Rate: parseRate(t, "2/m")},
		{Name: "change", Key: "openid", Rate: parseRate(t, "2/m")},
	}}
	h := newHarness(t, cfgWith(base), harnessOpt{})
	c := client{ip: "192.0.2.1", openid: "o1"}
	if got := h.allowed("api", c, 2); got != 2 {
		t.Fatalf("%d allowed, want 2", got)
	}

	next := config.LimitSections{Limits: []config.LimitRule{
		{Name: "keep", Key: "ip", Rate: parseRate(t, "2/m")},
		{Name: "change", Key: "openid", Rate: parseRate(t, "3/m")},
	}}
	if err := h.e.Update(cfgWith(next)); err != nil {
		t.Fatal(err)
	}
	if got := h.serve("api", c); got.Code != 429 || !strings.HasPrefix(got.Header().Get("RateLimit"), `"keep"`) {
		t.Fatalf("after reload: status %d RateLimit %q; the unchanged rule must still be spent",
			got.Code, got.Header().Get("RateLimit"))
	}
	if h.e.Size() != 1 {
		t.Fatalf("Size = %d, want 1: keep's key; change's old state dropped, its new one untouched", h.e.Size())
	}

	// Removing a rule forgets its state.
	if err := h.e.Update(cfgWith(config.LimitSections{})); err != nil {
		t.Fatal(err)
	}
	if h.e.Size() != 0 {
		t.Fatalf("Size = %d after removing every rule", h.e.Size())
	}
}

func TestUpdateRejectsBadConfigAndKeepsTheOld(t *testing.T) {
	h := newHarness(t, cfgWith(config.LimitSections{Limits: []config.LimitRule{
		{Name: "r", Key: "ip", Rate: parseRate(t, "1/m")},
	}}), harnessOpt{})
	bad := []config.LimitSections{
		{Limits: []config.LimitRule{{Name: "x", Key: "cookie", Rate: parseRate(t, "1/s")}}},
		{Limits: []config.LimitRule{{Name: "x", Key: "ip"}}},
		{Access: config.Access{UserAgentDeny: []string{"("}}},
		{Access: config.Access{IPDenyFiles: []string{"/nonexistent/deny.txt"}}},
	}
	for i, ls := range bad {
		if err := h.e.Update(cfgWith(ls)); err == nil {
			t.Errorf("config %d: Update accepted it", i)
		}
	}
	if got := h.allowed("api", client{ip: "192.0.2.1"}, 2); got != 1 {
		t.Fatalf("old rule no longer enforced: %d allowed", got)
	}
}

// blockingAdmitHandler serves "api" behind Admit; a request with X-Block
// signals entered and waits until release is closed.
func blockingAdmitHandler(h *harness) (http.Handler, chan struct{}, chan struct{}) {
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	return h.e.AdmitHandler("api", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Block") != "" {
			entered <- struct{}{}
			<-release
		}
	})), entered, release
}

func TestInflightPerOpenID(t *testing.T) {
	h := newHarness(t, cfgWith(config.LimitSections{Access: config.Access{MaxInflightPerOpenID: 2}}), harnessOpt{})
	handler, entered, release := blockingAdmitHandler(h)
	send := func(c client) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, newRequest(c))
		return w
	}
	blocking := client{ip: "192.0.2.1", openid: "o1", header: map[string]string{"X-Block": "1"}}
	done := make(chan int, 2)
	for range 2 {
		go func() { done <- send(blocking).Code }()
	}
	<-entered
	<-entered
	w := send(client{ip: "192.0.2.1", openid: "o1"})
	if w.Code != 429 || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("third request in flight: status %d Retry-After %q, want 429 and 1", w.Code, w.Header().Get("Retry-After"))
	}
	if got := send(client{ip: "192.0.2.1", openid: "o2"}).Code; got != 200 {
		t.Fatalf("another user: status %d", got)
	}
	close(release)
	for range 2 {
		if code := <-done; code != 200 {
			t.Fatalf("blocked request ended with %d", code)
		}
	}
	if got := send(client{ip: "192.0.2.1", openid: "o1"}).Code; got != 200 {
		t.Fatalf("after the first two ended: status %d", got)
	}
	if got := counterValue(h.m.Rejection("api", "inflight")); got != 1 {
		t.Fatalf("inflight rejections = %v", got)
	}
}

// TestInflightPerIPAcrossReloadAndRefusals: a route's per-IP count lives
// on the engine, so a reload neither forgets the requests in progress nor
// lets the cap be passed; a request the openid cap refuses after it took
// its IP slot gives that slot back.
func TestInflightPerIPAcrossReloadAndRefusals(t *testing.T) {
	cfg := func() *config.Config {
		c := cfgWith(config.LimitSections{Access: config.Access{MaxInflightPerOpenID: 1}})
		c.Routes[0].MaxInflightPerIP = 2
		return c
	}
	h := newHarness(t, cfg(), harnessOpt{})
	handler, entered, release := blockingAdmitHandler(h)
	send := func(c client) int {
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, newRequest(c))
		return w.Code
	}
	done := make(chan int, 2)
	hold := func(openid string) {
		t.Helper()
		go func() {
			done <- send(client{ip: "192.0.2.1", openid: openid, header: map[string]string{"X-Block": "1"}})
		}()
		select {
		case <-entered:
		case code := <-done:
			t.Fatalf("request of %s to hold was answered %d", openid, code)
		}
	}
	hold("o1")
	if got := send(client{ip: "192.0.2.1", openid: "o1"}); got != 429 {
		t.Fatalf("second request of o1: %d, want 429 from the openid cap", got)
	}
	if err := h.e.Update(cfg()); err != nil {
		t.Fatal(err)
	}
	hold("o2")
	if got := send(client{ip: "192.0.2.1", openid: "o3"}); got != 429 {
		t.Fatalf("third request in progress from the address after a reload: %d, want 429", got)
	}
	if got := send(client{ip: "192.0.2.2", openid: "o3"}); got != 200 {
		t.Fatalf("another address: %d", got)
	}
	close(release)
	for range 2 {
		if code := <-done; code != 200 {
			t.Fatalf("held request ended with %d", code)
		}
	}
	if got := send(client{ip: "192.0.2.1", openid: "o3"}); got != 200 {
		t.Fatalf("after the held requests ended: %d", got)
	}
	if got := counterValue(h.m.Rejection("api", "inflight_per_ip")); got != 1 {
		t.Fatalf("inflight_per_ip rejections = %v, want 1", got)
	}
	if got := counterValue(h.m.Rejection("api", "inflight")); got != 1 {
		t.Fatalf("inflight rejections = %v, want 1", got)
	}
}
