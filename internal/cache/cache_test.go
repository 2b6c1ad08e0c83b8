package cache

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// newClock is the injected clock: it moves only when a test moves it.
func newClock() *testpeer.Clock { return testpeer.NewClock(time.Unix(1_700_000_000, 0)) }

// origin stands for the route's upstream exchange: it counts its
// requests and answers with what the test sets.
type origin struct {
	mu     sync.Mutex
	n      int
	last   http.Header
	answer func(w http.ResponseWriter, r *http.Request, n int)
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.n++
	n := o.n
	o.last = r.Header.Clone()
	answer := o.answer
	o.mu.Unlock()
	answer(w, r, n)
}

// waitOrigin waits, for 10 s at most, until the origin was asked n times.
func waitOrigin(t *testing.T, o *origin, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for o.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the origin was asked %d times in 10 s, want %d", o.count(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (o *origin) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

func fixed(h http.Header, status int) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "answer %d", n)
	}
}

func newPolicy(c *testpeer.Clock, o Options) *Policy {
	if o.Store == nil {
		o.Store = NewStore(StoreOptions{MaxSize: 1 << 20})
	}
	o.Route, o.Now = "r", c.Now
	if o.LockTimeout == 0 {
		o.LockTimeout = 5 * time.Second
	}
	if o.MaxEntry == 0 {
		o.MaxEntry = 1 << 16
	}
	return New(o)
}

type result struct {
	status int
	xcache string
	body   string
	header http.Header
}

func get(p *Policy, next http.Handler, method, target string, h http.Header) result {
	r := httptest.NewRequest(method, target, nil)
	for k, v := range h {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	p.Serve(w, r, next, p.Identified(r))
	return result{w.Code, w.Header().Get("X-Cache"), w.Body.String(), w.Header()}
}

// TestFreshness: which answers a shared cache may store, and for how
// long, from their header, status and the route's ttl.
func TestFreshness(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	date := now.Format(http.TimeFormat)
	tests := []struct {
		name   string
		status int
		h      http.Header
		ttl    time.Duration
		life   time.Duration // 0: not stored
		stale  bool
	}{
		{"max-age", 200, http.Header{"Cache-Control": {"max-age=60"}}, 0, time.Minute, true},
		{"s-maxage wins", 200, http.Header{"Cache-Control": {"max-age=60, s-maxage=5"}}, 0, 5 * time.Second, true},
		{"max-age over expires", 200, http.Header{"Cache-Control": {"max-age=60"}, "Expires": {"0"}}, 0, time.Minute, true},
		{"expires", 200, http.Header{"Date": {date}, "Expires": {now.Add(time.Hour).Format(http.TimeFormat)}}, 0, time.Hour, true},
		{"bad expires", 200, http.Header{"Expires": {"0"}}, time.Minute, 0, false},
		{"past expires", 200, http.Header{"Date": {date}, "Expires": {now.Add(-time.Hour).Format(http.TimeFormat)}}, 0, 0, false},
		{"age counts", 200, http.Header{"Cache-Control": {"max-age=60"}, "Age": {"50"}}, 0, time.Minute, true},
		{"older than its life", 200, http.Header{"Cache-Control": {"max-age=60"}, "Age": {"60"}}, 0, 0, false},
		{"no-store", 200, http.Header{"Cache-Control": {"max-age=60, no-store"}}, time.Minute, 0, false},
		{"private", 200, http.Header{"Cache-Control": {"Private, max-age=60"}}, time.Minute, 0, false},
		{"no-cache", 200, http.Header{"Cache-Control": {`no-cache="Set-Cookie", max-age=60`}}, 0, 0, false},
		{"must-revalidate", 200, http.Header{"Cache-Control": {"max-age=60, must-revalidate"}}, 0, time.Minute, false},
		{"proxy-revalidate", 200, http.Header{"Cache-Control": {"max-age=60, proxy-revalidate"}}, 0, time.Minute, false},
		{"max-age twice", 200, http.Header{"Cache-Control": {"max-age=60", "max-age=600"}}, 0, 0, false},
		{"max-age not a number", 200, http.Header{"Cache-Control": {"max-age=6o"}}, time.Minute, 0, false},
		{"quoted max-age", 200, http.Header{"Cache-Control": {`max-age="60"`}}, 0, time.Minute, true},
		{"set-cookie", 200, http.Header{"Cache-Control": {"max-age=60"}, "Set-Cookie": {"a=b"}}, 0, 0, false},
		{"vary star", 200, http.Header{"Cache-Control": {"max-age=60"}, "Vary": {"Accept, *"}}, 0, 0, false},
		{"trailers", 200, http.Header{"Cache-Control": {"max-age=60"}, "Trailer": {"X-Sum"}}, 0, 0, false},
		{"silent without ttl", 200, http.Header{}, 0, 0, false},
		{"ttl", 200, http.Header{}, time.Minute, time.Minute, true},
		{"ttl 404", 404, http.Header{}, time.Minute, time.Minute, true},
		{"ttl not for 410", 410, http.Header{}, time.Minute, 0, false},
		{"explicit 410", 410, http.Header{"Cache-Control": {"max-age=9"}}, 0, 9 * time.Second, true},
		{"500", 500, http.Header{"Cache-Control": {"max-age=60"}}, time.Minute, 0, false},
		{"302", 302, http.Header{"Cache-Control": {"max-age=60"}}, time.Minute, 0, false},
		{"206", 206, http.Header{"Cache-Control": {"max-age=60"}}, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Policy{ttl: tt.ttl}
			f, ok := p.freshness(tt.status, tt.h, now)
			if ok != (tt.life > 0) || ok && (f.life != tt.life || f.mayStale != tt.stale) {
				t.Fatalf("stored %v life %v mayStale %v; want life %v (0: not stored), mayStale %v", ok, f.life, f.mayStale, tt.life, tt.stale)
			}
			if age := tt.h.Get("Age"); ok && age != "" && !f.base.Equal(now.Add(-50*time.Second)) {
				t.Errorf("base %v, want now less the Age", f.base)
			}
		})
	}
}

// TestExpiry: a stored answer is fresh for its life on the injected
// clock, then fetched again; with validators it is revalidated, and a 304
// keeps its body.
func TestExpiry(t *testing.T) {
	c := newClock()
	o := &origin{}
	o.answer = func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("Etag", `"e1"`)
		if r.Header.Get("If-None-Match") == `"e1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprintf(w, "answer %d", n)
	}
	p := newPolicy(c, Options{})
	steps := []struct {
		advance time.Duration
		xcache  string
		age     string
		fetches int
	}{
		{0, "MISS", "0", 1},
		{9 * time.Second, "HIT", "9", 1},
		{time.Second, "REVALIDATED", "0", 2},
		{9 * time.Second, "HIT", "9", 2},
		{2 * time.Second, "REVALIDATED", "0", 3},
	}
	for i, s := range steps {
		c.Advance(s.advance)
		r := get(p, o, "GET", "/x", nil)
		if r.xcache != s.xcache || r.body != "answer 1" || r.header.Get("Age") != s.age || o.count() != s.fetches {
			t.Fatalf("step %d: %s %q Age %q after %d fetches; want %s Age %s after %d", i, r.xcache, r.body, r.header.Get("Age"), o.count(), s.xcache, s.age, s.fetches)
		}
	}
	if got := o.last.Get("If-None-Match"); got != `"e1"` {
		t.Errorf("revalidation sent If-None-Match %q", got)
	}
}

// TestConditional: the client's validators are answered from the store;
// they never reach the upstream, which is asked for the whole answer.
func TestConditional(t *testing.T) {
	c := newClock()
	lm := time.Unix(1_600_000_000, 0).UTC()
	o := &origin{answer: fixed(http.Header{"Cache-Control": {"max-age=60"}, "Etag": {`W/"v"`},
		"Last-Modified": {lm.Format(http.TimeFormat)}, "Content-Type": {"text/plain"}}, 200)}
	p := newPolicy(c, Options{})
	tests := []struct {
		name   string
		h      http.Header
		status int
	}{
		{"etag", http.Header{"If-None-Match": {`"v"`}}, 304},
		{"one of several", http.Header{"If-None-Match": {`"a", W/"v"`}}, 304},
		{"star", http.Header{"If-None-Match": {"*"}}, 304},
		{"other etag", http.Header{"If-None-Match": {`"w"`}}, 200},
		{"etag decides over date", http.Header{"If-None-Match": {`"w"`}, "If-Modified-Since": {lm.Format(http.TimeFormat)}}, 200},
		{"not modified since", http.Header{"If-Modified-Since": {lm.Format(http.TimeFormat)}}, 304},
		{"modified since", http.Header{"If-Modified-Since": {lm.Add(-time.Second).Format(http.TimeFormat)}}, 200},
		{"bad date", http.Header{"If-Modified-Since": {"yesterday"}}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(p, o, "GET", "/c", tt.h)
			if r.status != tt.status || (tt.status == 304) != (r.body == "") {
				t.Fatalf("%d %q, want %d", r.status, r.body, tt.status)
			}
			if tt.status == 304 && (r.header.Get("Content-Type") != "" || r.header.Get("Etag") != `W/"v"`) {
				t.Errorf("304 header %v: want the validators and no Content-Type", r.header)
			}
			if o.last.Get("If-None-Match") != "" || o.last.Get("If-Modified-Since") != "" {
				t.Errorf("the upstream got the client's conditions: %v", o.last)
			}
		})
	}
	if o.count() != 1 {
		t.Errorf("%d fetches, want 1", o.count())
	}
}

// TestStaleIfError: a stale answer stands in for 5xx answers, broken
// exchanges and nothing else, within stale_if_error and only when the
// upstream allows stale answers.
func TestStaleIfError(t *testing.T) {
	tests := []struct {
		name    string
		control string
		fail    func(http.ResponseWriter, *http.Request, int)
		after   time.Duration
		status  int
		xcache  string
	}{
		{"503", "max-age=10", fixed(nil, 503), 20 * time.Second, 200, "STALE"},
		{"500", "max-age=10", fixed(nil, 500), 20 * time.Second, 200, "STALE"},
		{"broke off", "max-age=10", func(http.ResponseWriter, *http.Request, int) { panic(http.ErrAbortHandler) }, 20 * time.Second, 200, "STALE"},
		{"past the window", "max-age=10", fixed(nil, 503), 71 * time.Second, 503, "MISS"},
		{"404 is an answer", "max-age=10", fixed(nil, 404), 20 * time.Second, 404, "MISS"},
		{"must-revalidate", "max-age=10, must-revalidate", fixed(nil, 503), 20 * time.Second, 503, "MISS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			o := &origin{answer: fixed(http.Header{"Cache-Control": {tt.control}}, 200)}
			p := newPolicy(c, Options{StaleIfError: time.Minute})
			get(p, o, "GET", "/s", nil)
			c.Advance(tt.after)
			o.answer = tt.fail
			r := get(p, o, "GET", "/s", nil)
			if r.status != tt.status || r.xcache != tt.xcache || tt.xcache == "STALE" && r.body != "answer 1" {
				t.Fatalf("%d %s %q, want %d %s", r.status, r.xcache, r.body, tt.status, tt.xcache)
			}
		})
	}
}

// TestIdentityBypass: requests carrying an identity go to the upstream
// and their answers are not stored, unless the route is public.
func TestIdentityBypass(t *testing.T) {
	tests := []struct {
		target string
		h      http.Header
	}{
		{"/i", http.Header{"Authorization": {"Bearer t"}}},
		{"/i", http.Header{"Cookie": {"a=b"}}},
		{"/i", http.Header{"X-Edge-Signature": {"ab"}}},
		{"/i", http.Header{"X-Edge-Nonce": {"ab"}}},
		// The token headers mini-program backends read themselves.
		{"/i", http.Header{"Token": {"t"}}},
		{"/i", http.Header{"X-Token": {"t"}}},
		{"/i", http.Header{"Access-Token": {"t"}}},
		{"/i", http.Header{"X-Access-Token": {"t"}}},
		{"/i", http.Header{"X-Auth-Token": {"t"}}},
		{"/i", http.Header{"X-Session-Id": {"t"}}},
		{"/i", http.Header{"X-Session-Token": {"t"}}},
		{"/i", http.Header{"X-User-Token": {"t"}}},
		{"/i", http.Header{"Satoken": {"t"}}},
		{"/i", http.Header{"X-Wx-Skey": {"t"}}},
		{"/i?access_token=x", nil},
		{"/i?a=1&msg_signature=x", nil},
		{"/i?%73ign=x", nil},
		{"/i?SESSION_KEY=x", nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.target, tt.h), func(t *testing.T) {
			c := newClock()
			o := &origin{answer: fixed(http.Header{"Cache-Control": {"max-age=60"}}, 200)}
			p := newPolicy(c, Options{})
			if r := get(p, o, "GET", tt.target, tt.h); r.xcache != "BYPASS" {
				t.Fatalf("X-Cache %s, want BYPASS", r.xcache)
			}
			if r := get(p, o, "GET", tt.target, nil); r.xcache == "HIT" {
				t.Fatal("an identified request's answer was stored")
			}
			pub := newPolicy(c, Options{Public: true})
			get(pub, o, "GET", tt.target, tt.h)
			if r := get(pub, o, "GET", tt.target, tt.h); r.xcache != "HIT" {
				t.Fatalf("public route: X-Cache %s, want HIT", r.xcache)
			}
		})
	}
}

// TestIdentityHeadersOption: the app's own token header, named in any
// case, counts as an identity on top of the built-in ones.
func TestIdentityHeadersOption(t *testing.T) {
	c := newClock()
	o := &origin{answer: fixed(http.Header{"Cache-Control": {"max-age=60"}}, 200)}
	p := newPolicy(c, Options{IdentityHeaders: []string{"x-shop-token", "TOKEN"}})
	for _, h := range []http.Header{{"X-Shop-Token": {"a"}}, {"Token": {"a"}}, {"Authorization": {"Bearer a"}}} {
		if r := get(p, o, "GET", "/i", h); r.xcache != "BYPASS" {
			t.Errorf("%v: X-Cache %s, want BYPASS", h, r.xcache)
		}
	}
	if r := get(p, o, "GET", "/i", http.Header{"X-Other-Token": {"a"}}); r.xcache != "MISS" {
		t.Errorf("a header no list names: X-Cache %s, want MISS", r.xcache)
	}
	if n := len(p.identityHeaders); n != len(identityHeaders)+1 {
		t.Errorf("%d identity headers, want the built-in ones and X-Shop-Token once: %q", n, p.identityHeaders)
	}
}

// TestRetain: a route's answers are keyed by the generation of its
// settings; Retain keeps those of the current generations only, and an
// answer fetched under an older one after Retain is not stored.
func TestRetain(t *testing.T) {
	c := newClock()
	store := NewStore(StoreOptions{MaxSize: 1 << 20})
	hold := make(chan struct{})
	o := &origin{answer: func(w http.ResponseWriter, r *http.Request, n int) {
		if r.URL.Path == "/late" {
			<-hold
		}
		fixed(http.Header{"Cache-Control": {"max-age=60"}}, 200)(w, r, n)
	}}
	v1 := newPolicy(c, Options{Store: store, Generation: "1"})
	v2 := newPolicy(c, Options{Store: store, Generation: "2"})
	get(v1, o, "GET", "/a", nil)
	if n := store.Retain(map[string]string{"r": "1"}); n != 0 {
		t.Errorf("Retain of the current generation removed %d answers", n)
	}
	if r := get(v1, o, "GET", "/a", nil); r.xcache != "HIT" {
		t.Fatalf("after Retain of its generation: X-Cache %s, want HIT", r.xcache)
	}
	// The new settings never see the old answer, Retain or not.
	if r := get(v2, o, "GET", "/a", nil); r.xcache != "MISS" || r.body != "answer 2" {
		t.Fatalf("another generation: %s %q, want a MISS from the origin", r.xcache, r.body)
	}
	// A fetch under the old settings, in flight across the change.
	done := make(chan result)
	go func() { done <- get(v1, o, "GET", "/late", nil) }()
	waitOrigin(t, o, 3)
	if n := store.Retain(map[string]string{"r": "2"}); n != 1 {
		t.Errorf("Retain of a new generation removed %d answers, want the old one", n)
	}
	close(hold)
	<-done
	if _, n := store.size(); n != 0 {
		t.Errorf("%d answers stored, want none: the late one is of the old settings", n)
	}
	get(v2, o, "GET", "/a", nil)
	if r := get(v2, o, "GET", "/a", nil); r.xcache != "HIT" {
		t.Errorf("the current generation's answer: X-Cache %s, want HIT", r.xcache)
	}
	// A route no longer cached keeps nothing.
	if n := store.Retain(map[string]string{}); n != 1 {
		t.Errorf("Retain without the route removed %d answers, want 1", n)
	}
}

// TestLockTimeout: a request that waits longer than lock_timeout for
// another's fetch asks the upstream itself, uncached.
func TestLockTimeout(t *testing.T) {
	c := newClock()
	hold := make(chan struct{})
	o := &origin{}
	o.answer = func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			<-hold
		}
		fixed(http.Header{"Cache-Control": {"max-age=60"}}, 200)(w, r, n)
	}
	p := newPolicy(c, Options{LockTimeout: time.Millisecond})
	first := make(chan result)
	go func() { first <- get(p, o, "GET", "/l", nil) }()
	waitOrigin(t, o, 1)
	r := get(p, o, "GET", "/l", nil)
	close(hold)
	if r.xcache != "MISS" || r.body != "answer 2" {
		t.Errorf("past the lock timeout: %s %q, want its own MISS", r.xcache, r.body)
	}
	if f := <-first; f.xcache != "MISS" || f.body != "answer 1" {
		t.Errorf("the fetch: %s %q", f.xcache, f.body)
	}
	if r := get(p, o, "GET", "/l", nil); r.body != "answer 1" || r.xcache != "HIT" {
		t.Errorf("after: %s %q, want the first fetch's answer stored", r.xcache, r.body)
	}
}

// TestLargeAnswer: an answer over max_entry_size is passed on whole and
// not stored.
func TestLargeAnswer(t *testing.T) {
	c := newClock()
	big := strings.Repeat("x", 100)
	for _, length := range []bool{false, true} {
		o := &origin{answer: func(w http.ResponseWriter, r *http.Request, n int) {
			w.Header().Set("Cache-Control", "max-age=60")
			if length {
				w.Header().Set("Content-Length", "100")
			}
			for range 10 {
				_, _ = w.Write([]byte(big[:10]))
			}
		}}
		p := newPolicy(c, Options{MaxEntry: 64})
		for range 2 {
			if r := get(p, o, "GET", "/big", nil); r.body != big || r.xcache != "MISS" {
				t.Fatalf("Content-Length %v: %s %d bytes, want a MISS of 100", length, r.xcache, len(r.body))
			}
		}
	}
}

// TestStoreBound: the store keeps to its size, evicting the least
// recently used first, and shrinks at once when resized.
func TestStoreBound(t *testing.T) {
	c := newClock()
	o := &origin{answer: fixed(http.Header{"Cache-Control": {"max-age=60"}}, 200)}
	// Room for four of this test's entries (each about 580 bytes: the
	// bookkeeping, key, URL, header and body), not five.
	const room = 4 * (entryOverhead + 96)
	store := NewStore(StoreOptions{MaxSize: room})
	p := newPolicy(c, Options{Store: store})
	for _, path := range []string{"/1", "/2", "/3", "/4"} {
		get(p, o, "GET", path, nil)
	}
	get(p, o, "GET", "/1", nil) // now the most recently used
	get(p, o, "GET", "/5", nil)
	bytes, n := store.size()
	if n != 4 || bytes > room {
		t.Fatalf("%d entries of %d bytes, want 4 within the bound", n, bytes)
	}
	for path, want := range map[string]string{"/1": "HIT", "/2": "MISS"} {
		if r := get(p, o, "GET", path, nil); r.xcache != want {
			t.Errorf("%s: %s, want %s", path, r.xcache, want)
		}
	}
	store.Resize(room / 4)
	if _, n := store.size(); n != 1 {
		t.Errorf("%d entries after resizing to one's size", n)
	}
	store.Resize(1 << 20)
	get(p, o, "GET", "/a?x=1", nil)
	get(p, o, "GET", "/b", nil)
	if n := store.Purge(func(route, url string) bool { return url == "example.com/a?x=1" && route == "r" }); n != 1 {
		t.Errorf("purged %d, want the one URL", n)
	}
	if n := store.Purge(func(string, string) bool { return true }); n != 2 {
		t.Errorf("purged %d, want the 2 left", n)
	}
	if bytes, n := store.size(); bytes != 0 || n != 0 {
		t.Errorf("after purging everything: %d bytes, %d entries", bytes, n)
	}
}

// TestVariants: answers that vary on a header are kept per value, up to
// maxVariants, and the upstream's Vary is merged with the client's.
func TestVariants(t *testing.T) {
	c := newClock()
	o := &origin{answer: func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		fmt.Fprintf(w, "%s %d", r.Header.Get("Accept-Language"), n)
	}}
	p := newPolicy(c, Options{})
	for i := range maxVariants + 1 {
		get(p, o, "GET", "/v", http.Header{"Accept-Language": {fmt.Sprint("l", i)}})
	}
	if r := get(p, o, "GET", "/v", http.Header{"Accept-Language": {"l0"}}); r.xcache != "MISS" {
		t.Errorf("the oldest of %d variants: %s, want it evicted", maxVariants+1, r.xcache)
	}
	if r := get(p, o, "GET", "/v", http.Header{"Accept-Language": {"l5"}}); r.xcache != "HIT" || r.body != "l5 6" {
		t.Errorf("variant l5: %s %q", r.xcache, r.body)
	}
}

func FuzzParseControl(f *testing.F) {
	for _, s := range []string{"max-age=60", `no-cache="a,b", s-maxage=3`, "private, max-age=99999999999999999999",
		`max-age="1`, "must-revalidate,,", "max-age=1, max-age=2", `x="\",max-age=5"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := parseControl([]string{s})
		if d.maxAge < -1 || d.maxAge > maxDelta || d.sMaxAge < -1 || d.sMaxAge > maxDelta {
			t.Fatalf("%q: ages %d %d out of range", s, d.maxAge, d.sMaxAge)
		}
		// Split over two header lines at a comma outside quotes, the
		// value means the same.
		if i := strings.IndexByte(s, ','); i >= 0 && !strings.ContainsAny(s, `"\`) {
			if d2 := parseControl([]string{s[:i], s[i+1:]}); d2 != d {
				t.Fatalf("%q: one line %+v, two lines %+v", s, d, d2)
			}
		}
	})
}

// TestPassedOn: answers that are not stored reach the client as they
// come: an event stream flushed as it is written, trailers after the body.
func TestPassedOn(t *testing.T) {
	c := newClock()
	flushed := make(chan bool, 1)
	o := &origin{answer: func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Path {
		case "/events":
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte("data: 1\n\n"))
			w.(http.Flusher).Flush()
			flushed <- w.(interface{ Unwrap() http.ResponseWriter }).Unwrap().(*httptest.ResponseRecorder).Flushed
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			_, _ = w.Write([]byte("body"))
			w.Header().Set("X-Sum", "42")
		}
	}}
	p := newPolicy(c, Options{})
	for range 2 {
		if r := get(p, o, "GET", "/events", nil); r.xcache != "MISS" || !<-flushed {
			t.Fatalf("event stream: %s, flushed before its end: false", r.xcache)
		}
	}
	r := httptest.NewRequest("GET", "/trailer", nil)
	w := httptest.NewRecorder()
	p.Serve(w, r, o, false)
	if got := w.Result().Trailer.Get("X-Sum"); got != "42" || w.Body.String() != "body" {
		t.Errorf("trailer X-Sum %q, body %q", got, w.Body.String())
	}
}

func TestNormalQuery(t *testing.T) {
	for q, want := range map[string]string{
		"": "", "a=1": "a=1", "a=1&b=2": "a=1&b=2", "b=2&a=1": "a=1&b=2", "a=1&&b=2": "a=1&b=2",
		"&": "", "b&a=": "a=&b",
		// A repeated name keeps the order of its values: first-wins and
		// last-wins frameworks answer "id=1&id=2" and "id=2&id=1"
		// differently, so they must not share an answer.
		"a=1&a=0": "a=1&a=0", "a=%41&a=A": "a=%41&a=A", "id=2&id=1": "id=2&id=1",
		"b=2&a=1&b=1": "a=1&b=2&b=1", "b=1&a&b=0&a=": "a&a=&b=1&b=0",
		// Names are compared as sent, before any '=': "a" sorts before "a1".
		"a1=0&a=9": "a=9&a1=0",
	} {
		if got := NormalQuery(q); got != want {
			t.Errorf("NormalQuery(%q) = %q, want %q", q, got, want)
		}
	}
}

func FuzzNormalQuery(f *testing.F) {
	for _, s := range []string{"", "a=1&b=2", "b=2&a=1", "&&a", "x=%20&x=+", "id=2&id=1", "b=1&a=2&b=0", "a=1&a&a=0&=&="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		n := NormalQuery(q)
		if NormalQuery(n) != n {
			t.Fatalf("%q: normal form %q is not stable", q, n)
		}
		// The pairs, ordered by name alone: a stable sort keeps each
		// name's values in the order they were sent.
		var want []string
		for p := range strings.SplitSeq(q, "&") {
			if p != "" {
				want = append(want, p)
			}
		}
		name := func(p string) string { n, _, _ := strings.Cut(p, "="); return n }
		slices.SortStableFunc(want, func(a, b string) int { return strings.Compare(name(a), name(b)) })
		if n != strings.Join(want, "&") {
			t.Fatalf("%q: %q, want %q: a pair lost, changed or reordered within its name", q, n, strings.Join(want, "&"))
		}
	})
}

// TestConcurrentUse: lookups, fetches, revalidations, evictions and
// purges at once, for the race detector; every answer is one the origin
// gave for that path.
func TestConcurrentUse(t *testing.T) {
	c := newClock()
	o := &origin{answer: func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Cache-Control", "max-age=0")
		w.Header().Set("Etag", `"x"`)
		if r.Header.Get("If-None-Match") == `"x"` && n%2 == 0 {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Cache-Control", "max-age=1")
		fmt.Fprintf(w, "%s", r.URL.Path)
	}}
	store := NewStore(StoreOptions{MaxSize: 3 * (entryOverhead + 64)})
	p := newPolicy(c, Options{Store: store, StaleIfError: time.Minute})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				path := fmt.Sprintf("/k%d", (g+i)%5)
				method := "GET"
				if i%7 == 0 {
					method = "HEAD"
				}
				r := get(p, o, method, path, nil)
				if r.status != 200 || method == "GET" && r.body != path {
					t.Errorf("%s %s: %d %q", method, path, r.status, r.body)
					return
				}
				if i%50 == 0 {
					store.Purge(func(string, string) bool { return true })
				}
				if i%10 == 0 {
					c.Advance(time.Second)
				}
			}
		})
	}
	wg.Wait()
	if bytes, _ := store.size(); bytes > 3*(entryOverhead+64) {
		t.Errorf("%d bytes stored, over the bound", bytes)
	}
}
