package gateway

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"edge/internal/testpeer"
)

// countingBackend answers "<path> #n", n counting its requests of that
// path, with the headers set per path by headers.
type countingBackend struct {
	*backend
	mu    sync.Mutex
	n     map[string]int
	cond  map[string]string // the last If-None-Match per path
	reply func(w http.ResponseWriter, r *http.Request) bool
}

func startCountingBackend(t *testing.T, headers func(path string) http.Header) *countingBackend {
	t.Helper()
	cb := &countingBackend{n: map[string]int{}, cond: map[string]string{}}
	cb.backend = startBackend(t, "app", func(w http.ResponseWriter, r *http.Request) {
		cb.mu.Lock()
		cb.n[r.URL.Path]++
		n := cb.n[r.URL.Path]
		cb.cond[r.URL.Path] = r.Header.Get("If-None-Match")
		reply := cb.reply
		cb.mu.Unlock()
		if reply != nil && reply(w, r) {
			return
		}
		for k, v := range headers(r.URL.Path) {
			w.Header()[k] = v
		}
		status := http.StatusOK
		if s := w.Header().Get("X-Status"); s != "" {
			status, _ = strconv.Atoi(s)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "%s #%d", r.URL.Path, n)
	})
	return cb
}

func (cb *countingBackend) hits(path string) int {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return cb.n[path]
}

func (cb *countingBackend) ifNoneMatch(path string) string {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return cb.cond[path]
}

func (cb *countingBackend) setReply(f func(w http.ResponseWriter, r *http.Request) bool) {
	cb.mu.Lock()
	cb.reply = f
	cb.mu.Unlock()
}

const cacheRoutes = `
[[upstreams]]
name = "app"
targets = [%q]
retries = 0
passive_health = { max_fails = 0 }

[[routes]]
name = "c"
path = "/c/"
upstream = "app"
[routes.cache]
stale_if_error = "1m"

[[routes]]
name = "ttl"
path = "/ttl/"
upstream = "app"
[routes.cache]
ttl = "1m"

[[routes]]
name = "pub"
path = "/pub/"
upstream = "app"
[routes.cache]
public = true

[[routes]]
name = "plain"
path = "/plain/"
upstream = "app"

[[routes]]
name = "gz"
path = "/gz/"
upstream = "app"
compress = ["gzip"]
[routes.cache]
`

func maxAge60(string) http.Header { return http.Header{"Cache-Control": {"max-age=60"}} }

type cacheStep struct {
	method string
	path   string
	header http.Header
	// want is the X-Cache header, body the answer's body.
	want, body string
}

func (e *edgeUnderTest) cacheSteps(t *testing.T, c *http.Client, steps []cacheStep) {
	t.Helper()
	for i, s := range steps {
		method := s.method
		if method == "" {
			method = http.MethodGet
		}
		resp, body := send(t, c, method, e.url("api.example.com", s.path), s.header)
		if got := resp.Header.Get("X-Cache"); got != s.want || string(body) != s.body {
			t.Fatalf("step %d, %s %s %v: X-Cache %q, body %q; want %q, %q", i, method, s.path, s.header, got, body, s.want, s.body)
		}
	}
}

// TestCacheHitAndMiss: an answer the upstream marks fresh is fetched once
// and then served from memory over both protocols, with its Age counted
// on the cache's clock, whatever the order of the query's pairs; a HEAD
// is answered from it; the request id stays each request's own.
func TestCacheHitAndMiss(t *testing.T) {
	be := startCountingBackend(t, maxAge60)
	clk := testpeer.NewClock(time.Now())
	e := startEdgeClock(t, "", "", fmt.Sprintf(cacheRoutes, be.addr), clk.Now)
	e.cacheSteps(t, e.client, []cacheStep{
		{path: "/c/a", want: "MISS", body: "/c/a #1"},
		{path: "/c/a", want: "HIT", body: "/c/a #1"},
		{path: "/c/q?b=2&a=1", want: "MISS", body: "/c/q #1"},
		{path: "/c/q?a=1&b=2", want: "HIT", body: "/c/q #1"},
		{path: "/c/q?a=1&b=3", want: "MISS", body: "/c/q #2"},
		{method: "HEAD", path: "/c/a", want: "HIT", body: ""},
		{method: "HEAD", path: "/c/h", want: "MISS", body: ""},
		{method: "HEAD", path: "/c/h", want: "HIT", body: ""},
		// A HEAD answer has no body to give a GET.
		{path: "/c/h", want: "MISS", body: "/c/h #2"},
		{method: "POST", path: "/c/a", want: "BYPASS", body: "/c/a #2"},
	})
	clk.Advance(10 * time.Second)
	resp, body := send(t, e.h2, "GET", e.url("api.example.com", "/c/a"), nil)
	if resp.Header.Get("X-Cache") != "HIT" || string(body) != "/c/a #1" || resp.Header.Get("Age") != "10" {
		t.Errorf("h2 after 10s: X-Cache %q Age %q body %q, want a HIT of age 10", resp.Header.Get("X-Cache"), resp.Header.Get("Age"), body)
	}
	r1, _ := send(t, e.client, "GET", e.url("api.example.com", "/c/a"), nil)
	if id := r1.Header.Get("X-Request-Id"); id == "" || id == resp.Header.Get("X-Request-Id") || len(r1.Header.Values("X-Request-Id")) != 1 {
		t.Errorf("request ids %q and %q: a stored answer must carry each request's own, once", resp.Header.Values("X-Request-Id"), r1.Header.Values("X-Request-Id"))
	}
	// A route without [routes.cache] is untouched.
	e.cacheSteps(t, e.client, []cacheStep{
		{path: "/plain/a", want: "", body: "/plain/a #1"},
		{path: "/plain/a", want: "", body: "/plain/a #2"},
	})
	if n := be.hits("/c/a"); n != 2 {
		t.Errorf("the upstream saw /c/a %d times, want 2 (the first GET and the POST)", n)
	}
	for _, want := range []string{`edge_cache_requests_total{result="hit",route="c"} 6`, `edge_cache_requests_total{result="miss",route="c"} 5`,
		`edge_cache_requests_total{result="bypass",route="c"} 1`, `edge_cache_entries 4`} {
		if m := e.metric(t, "edge_cache_"); !strings.Contains(m, want) {
			t.Errorf("no %s in\n%s", want, m)
		}
	}
	if m := e.metric(t, "edge_cache_bytes "); m == "" || m == "edge_cache_bytes 0" {
		t.Errorf("edge_cache_bytes: %q", m)
	}
	// The access log says what the cache did (nginx's
	// $upstream_cache_status), on cached routes only.
	e.stop()
	var lines []string
	for l := range strings.Lines(e.stdout.String()) {
		var line struct{ Route, Path, Cache string }
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("access log line %q: %v", l, err)
		}
		lines = append(lines, line.Route+" "+line.Path+" "+line.Cache)
	}
	for _, want := range []string{"c /c/a MISS", "c /c/a HIT", "plain /plain/a "} {
		if !slices.Contains(lines, want) {
			t.Errorf("no access log line %q in %q", want, lines)
		}
	}
}

// TestCacheRepeatedNames: the order of the pairs of different names does
// not matter to the key, but the order of a repeated name's values does:
// a first-wins framework reads "?id=1&id=2" as id 1 and a last-wins one
// as id 2, so the two must not share a stored answer.
func TestCacheRepeatedNames(t *testing.T) {
	be := startCountingBackend(t, maxAge60)
	e := startEdge(t, fmt.Sprintf(cacheRoutes, be.addr))
	e.cacheSteps(t, e.client, []cacheStep{
		{path: "/c/q?id=1&id=2", want: "MISS", body: "/c/q #1"},
		{path: "/c/q?id=2&id=1", want: "MISS", body: "/c/q #2"},
		{path: "/c/q?id=1&id=2", want: "HIT", body: "/c/q #1"},
		{path: "/c/q?id=2&x=0&id=1", want: "MISS", body: "/c/q #3"},
		{path: "/c/q?x=0&id=2&id=1", want: "HIT", body: "/c/q #3"},
		{path: "/c/q?id=1&x=0&id=2", want: "MISS", body: "/c/q #4"},
	})
}

// TestCacheStorable: what the upstream says of an answer, and the route's
// ttl, decide whether it is stored.
func TestCacheStorable(t *testing.T) {
	headers := map[string]http.Header{
		"/c/no-store":  {"Cache-Control": {"no-store, max-age=60"}},
		"/c/private":   {"Cache-Control": {"private, max-age=60"}},
		"/c/no-cache":  {"Cache-Control": {"no-cache, max-age=60"}},
		"/c/cookie":    {"Cache-Control": {"max-age=60"}, "Set-Cookie": {"s=1"}},
		"/c/silent":    {},
		"/c/s-maxage":  {"Cache-Control": {"max-age=0, s-maxage=60"}},
		"/c/zero":      {"Cache-Control": {"s-maxage=0, max-age=60"}},
		"/c/expires":   {"Expires": {time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}},
		"/c/expired":   {"Expires": {"0"}},
		"/c/vary-star": {"Cache-Control": {"max-age=60"}, "Vary": {"*"}},
		"/c/error":     {"Cache-Control": {"max-age=60"}, "X-Status": {"500"}},
		"/c/gone":      {"Cache-Control": {"max-age=60"}, "X-Status": {"410"}},
		"/ttl/silent":  {},
		"/ttl/404":     {"X-Status": {"404"}},
		"/ttl/503":     {"X-Status": {"503"}},
		"/ttl/private": {"Cache-Control": {"private"}},
	}
	be := startCountingBackend(t, func(p string) http.Header { return headers[p] })
	e := startEdge(t, fmt.Sprintf(cacheRoutes, be.addr))
	tests := []struct {
		path   string
		stored bool
	}{
		{"/c/no-store", false}, {"/c/private", false}, {"/c/no-cache", false}, {"/c/cookie", false},
		{"/c/silent", false}, {"/c/s-maxage", true}, {"/c/zero", false}, {"/c/expires", true},
		{"/c/expired", false}, {"/c/vary-star", false}, {"/c/error", false}, {"/c/gone", true},
		{"/ttl/silent", true}, {"/ttl/404", true}, {"/ttl/503", false}, {"/ttl/private", false},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.path, "/"), func(t *testing.T) {
			second := "MISS"
			want := tt.path + " #2"
			if tt.stored {
				second, want = "HIT", tt.path+" #1"
			}
			e.cacheSteps(t, e.client, []cacheStep{
				{path: tt.path, want: "MISS", body: tt.path + " #1"},
				{path: tt.path, want: second, body: want},
			})
		})
	}
}

// TestCacheIdentity: a request that carries an identity gets its own
// answer from the upstream, which is never stored nor served to another
// client, unless the route says its answers are public; and a stored
// answer never reaches a request the route's checks refuse.
func TestCacheIdentity(t *testing.T) {
	be := startCountingBackend(t, maxAge60)
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(users, []byte("ops:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, fmt.Sprintf(cacheRoutes, be.addr)+fmt.Sprintf(`
[[routes]]
name = "guarded"
path = "/guarded/"
upstream = "app"
auth_basic = { user_file = %q }
[routes.cache]
public = true
`, users))
	token := http.Header{"Authorization": {"Bearer user-a"}}
	e.cacheSteps(t, e.client, []cacheStep{
		{path: "/c/me", header: token, want: "BYPASS", body: "/c/me #1"},
		// The token's answer was not stored for the next client.
		{path: "/c/me", want: "MISS", body: "/c/me #2"},
		// Nor is the stored answer given to a request with a token.
		{path: "/c/me", header: token, want: "BYPASS", body: "/c/me #3"},
		{path: "/c/me", header: http.Header{"Cookie": {"sid=1"}}, want: "BYPASS", body: "/c/me #4"},
		{path: "/c/me?token=abc", want: "BYPASS", body: "/c/me #5"},
		{path: "/c/me?Sign=abc", want: "BYPASS", body: "/c/me #6"},
		{path: "/c/me", header: http.Header{"X-Edge-Signature": {"00"}}, want: "BYPASS", body: "/c/me #7"},
		{path: "/c/me", want: "HIT", body: "/c/me #2"},
		// A public route shares one answer between everyone.
		{path: "/pub/x", header: token, want: "MISS", body: "/pub/x #1"},
		{path: "/pub/x", want: "HIT", body: "/pub/x #1"},
		{path: "/pub/x", header: http.Header{"Authorization": {"Bearer user-b"}}, want: "HIT", body: "/pub/x #1"},
	})
	ok := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("ops:pw"))}}
	e.cacheSteps(t, e.client, []cacheStep{
		{path: "/guarded/x", header: ok, want: "MISS", body: "/guarded/x #1"},
		{path: "/guarded/x", header: ok, want: "HIT", body: "/guarded/x #1"},
	})
	for _, h := range []http.Header{nil, {"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("ops:wrong"))}}} {
		resp, body := send(t, e.client, "GET", e.url("api.example.com", "/guarded/x"), h)
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), "#1") {
			t.Errorf("refused request %v: %d %q; the stored answer must not reach it", h, resp.StatusCode, body)
		}
	}
}

// TestCacheIdentityHeaders: on a route with auth = "none" whose upstream
// reads a token header itself, a request with that header gets its own
// answer, never stored by the route's ttl for the next client nor
// answered with another's: the common token headers and those listed in
// cache.identity_headers count as an identity, as Authorization does.
func TestCacheIdentityHeaders(t *testing.T) {
	be := startCountingBackend(t, func(string) http.Header { return nil })
	e := startEdge(t, fmt.Sprintf(cacheRoutes, be.addr)+"\n[cache]\nidentity_headers = [\"X-Shop-Token\"]\n")
	e.cacheSteps(t, e.client, []cacheStep{
		{path: "/ttl/me", header: http.Header{"Token": {"user-a"}}, want: "BYPASS", body: "/ttl/me #1"},
		// User A's answer was not stored for the next client.
		{path: "/ttl/me", want: "MISS", body: "/ttl/me #2"},
		// Nor is the stored answer given to a user.
		{path: "/ttl/me", header: http.Header{"X-Token": {"user-b"}}, want: "BYPASS", body: "/ttl/me #3"},
		{path: "/ttl/me", header: http.Header{"X-Access-Token": {"user-c"}}, want: "BYPASS", body: "/ttl/me #4"},
		{path: "/ttl/me", header: http.Header{"X-Shop-Token": {"user-d"}}, want: "BYPASS", body: "/ttl/me #5"},
		{path: "/ttl/me", want: "HIT", body: "/ttl/me #2"},
	})
}

// TestCacheLock: concurrent requests for one answer make one upstream
// request; the others wait for it and are answered from the store.
func TestCacheLock(t *testing.T) {
	release := make(chan struct{})
	be := startCountingBackend(t, maxAge60)
	be.setReply(func(w http.ResponseWriter, r *http.Request) bool {
		<-release
		return false
	})
	e := startEdge(t, fmt.Sprintf(cacheRoutes, be.addr))
	const n = 20
	var wg sync.WaitGroup
	results := make(chan string, n)
	for range n {
		wg.Go(func() {
			resp, body := send(t, e.client, "GET", e.url("api.example.com", "/c/slow"), nil)
			results <- resp.Header.Get("X-Cache") + " " + string(body)
		})
	}
	// Every request is inside edge before the upstream may answer.
	eventually(t, 10*time.Second, func() bool {
		return strings.Contains(e.metric(t, "edge_http_requests_in_flight"), "edge_http_requests_in_flight "+strconv.Itoa(n))
	}, "every request in flight")
	close(release)
	wg.Wait()
	close(results)
	misses := 0
	for r := range results {
		switch r {
		case "MISS /c/slow #1":
			misses++
		case "HIT /c/slow #1":
		default:
			t.Errorf("answer %q, want the one fetched answer", r)
		}
	}
	if misses != 1 || be.hits("/c/slow") != 1 {
		t.Errorf("%d misses, %d upstream requests; want 1 and 1", misses, be.hits("/c/slow"))
	}
}

// TestCacheRevalidateAndStale: a stale answer with an ETag is
// revalidated and refreshed by a 304; the client's own conditional
// request is answered 304 from the store; when the upstream fails, the
// stale answer stands in for stale_if_error and no longer.
func TestCacheRevalidateAndStale(t *testing.T) {
	be := startCountingBackend(t, func(string) http.Header {
		return http.Header{"Cache-Control": {"max-age=10"}, "Etag": {`"v1"`}}
	})
	be.setReply(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("If-None-Match") != `"v1"` {
			return false
		}
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("Etag", `"v1"`)
		w.WriteHeader(http.StatusNotModified)
		return true
	})
	clk := testpeer.NewClock(time.Now())
	e := startEdgeClock(t, "", "", fmt.Sprintf(cacheRoutes, be.addr), clk.Now)
	e.cacheSteps(t, e.client, []cacheStep{{path: "/c/r", want: "MISS", body: "/c/r #1"}})
	if got := be.ifNoneMatch("/c/r"); got != "" {
		t.Fatalf("first fetch carried If-None-Match %q", got)
	}
	clk.Advance(11 * time.Second)
	e.cacheSteps(t, e.client, []cacheStep{
		{path: "/c/r", want: "REVALIDATED", body: "/c/r #1"},
		{path: "/c/r", want: "HIT", body: "/c/r #1"},
	})
	if got := be.ifNoneMatch("/c/r"); got != `"v1"` || be.hits("/c/r") != 2 {
		t.Fatalf("revalidation sent If-None-Match %q in %d requests", got, be.hits("/c/r"))
	}
	resp, body := send(t, e.client, "GET", e.url("api.example.com", "/c/r"), http.Header{"If-None-Match": {`W/"v1"`}})
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 || resp.Header.Get("Etag") != `"v1"` || be.hits("/c/r") != 2 {
		t.Errorf("client's If-None-Match: %d %q Etag %q, %d upstream requests; want a 304 from the store", resp.StatusCode, body, resp.Header.Get("Etag"), be.hits("/c/r"))
	}

	tests := []struct {
		name  string
		fail  func()
		after time.Duration
		want  int
		cache string
	}{
		{"503 within stale_if_error", func() { be.setReply(status503) }, 11 * time.Second, 200, "STALE"},
		{"503 past stale_if_error", nil, 60 * time.Second, 503, "MISS"},
	}
	for _, tt := range tests {
		if tt.fail != nil {
			tt.fail()
		}
		clk.Advance(tt.after)
		resp, body := send(t, e.client, "GET", e.url("api.example.com", "/c/r"), nil)
		if resp.StatusCode != tt.want || resp.Header.Get("X-Cache") != tt.cache {
			t.Errorf("%s: %d X-Cache %q %q, want %d %s", tt.name, resp.StatusCode, resp.Header.Get("X-Cache"), body, tt.want, tt.cache)
		}
	}
}

func status503(w http.ResponseWriter, r *http.Request) bool {
	w.WriteHeader(http.StatusServiceUnavailable)
	return true
}

// TestCacheStaleWhenUpstreamDown: an upstream that refuses connections
// gets the stale answer served in its place.
func TestCacheStaleWhenUpstreamDown(t *testing.T) {
	be := startCountingBackend(t, maxAge60)
	clk := testpeer.NewClock(time.Now())
	e := startEdgeClock(t, "", "", fmt.Sprintf(cacheRoutes, be.addr), clk.Now)
	e.cacheSteps(t, e.client, []cacheStep{{path: "/c/d", want: "MISS", body: "/c/d #1"}})
	be.kill()
	clk.Advance(90 * time.Second)
	e.cacheSteps(t, e.client, []cacheStep{{path: "/c/d", want: "STALE", body: "/c/d #1"}})
	clk.Advance(time.Minute)
	resp, _ := send(t, e.client, "GET", e.url("api.example.com", "/c/d"), nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("past stale_if_error: %d, want the 502", resp.StatusCode)
	}
}

// TestCacheVary: an answer that varies on a header is stored once per
// value of it.
func TestCacheVary(t *testing.T) {
	be := startCountingBackend(t, func(string) http.Header {
		return http.Header{"Cache-Control": {"max-age=60"}, "Vary": {"X-Lang"}}
	})
	e := startEdge(t, fmt.Sprintf(cacheRoutes, be.addr))
	en, zh := http.Header{"X-Lang": {"en"}}, http.Header{"X-Lang": {"zh"}}
	e.cacheSteps(t, e.client, []cacheStep{
		{path: "/c/v", header: en, want: "MISS", body: "/c/v #1"},
		{path: "/c/v", header: zh, want: "MISS", body: "/c/v #2"},
		{path: "/c/v", header: en, want: "HIT", body: "/c/v #1"},
		{path: "/c/v", header: zh, want: "HIT", body: "/c/v #2"},
		{path: "/c/v", want: "MISS", body: "/c/v #3"},
		{path: "/c/v", want: "HIT", body: "/c/v #3"},
	})
}

// TestCacheCompressed: on a route that compresses, each coding the
// clients accept is stored as its own variant, compressed once.
func TestCacheCompressed(t *testing.T) {
	be := startCountingBackend(t, func(string) http.Header {
		return http.Header{"Cache-Control": {"max-age=60"}, "Content-Type": {"application/json"}}
	})
	be.setReply(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"n":%d,"pad":%q}`, be.hits(r.URL.Path), strings.Repeat("x", 2000))
		return true
	})
	e := startEdge(t, fmt.Sprintf(cacheRoutes, be.addr))
	for i, tt := range []struct{ accept, coding, xcache string }{
		{"gzip", "gzip", "MISS"}, {"gzip", "gzip", "HIT"}, {"identity", "", "MISS"}, {"identity", "", "HIT"}, {"gzip", "gzip", "HIT"},
	} {
		resp, body := send(t, e.client, "GET", e.url("api.example.com", "/gz/list"), http.Header{"Accept-Encoding": {tt.accept}})
		if resp.Header.Get("X-Cache") != tt.xcache || resp.Header.Get("Content-Encoding") != tt.coding || !hasVary(resp.Header, "Accept-Encoding") {
			t.Fatalf("step %d: X-Cache %q Content-Encoding %q Vary %q; want %s %q", i, resp.Header.Get("X-Cache"), resp.Header.Get("Content-Encoding"), resp.Header.Values("Vary"), tt.xcache, tt.coding)
		}
		if tt.coding == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		if !strings.HasPrefix(string(body), `{"n":1,`) && !strings.HasPrefix(string(body), `{"n":2,`) || len(body) < 2000 {
			t.Fatalf("step %d: body %.40q", i, body)
		}
	}
	if n := be.hits("/gz/list"); n != 2 {
		t.Errorf("%d upstream requests, want one per coding", n)
	}
}

// TestCachePurgeAndReload: the admin API purges one URL, a prefix, a
// route or everything; what is stored survives a reload.
func TestCachePurgeAndReload(t *testing.T) {
	be := startCountingBackend(t, maxAge60)
	cfg := fmt.Sprintf(cacheRoutes, be.addr)
	e := startEdge(t, cfg)
	fill := func(paths ...string) {
		t.Helper()
		for _, p := range paths {
			resp, _ := send(t, e.client, "GET", e.url("api.example.com", p), nil)
			if resp.Header.Get("X-Cache") == "BYPASS" {
				t.Fatalf("%s bypassed the cache", p)
			}
		}
	}
	xcache := func(p string) string {
		t.Helper()
		resp, _ := send(t, e.client, "GET", e.url("api.example.com", p), nil)
		return resp.Header.Get("X-Cache")
	}
	fill("/c/a?y=2&x=1", "/c/b", "/c/sub/1", "/c/sub/2", "/ttl/a", "/pub/a")

	e.writeConfig(cfg + "\n[cache]\nmax_size = \"32MB\"\n")
	if res, err := e.srv.Reload(TriggerAdmin); res != ReloadApplied || err != nil {
		t.Fatalf("reload: %s %v", res, err)
	}
	if got := xcache("/c/b"); got != "HIT" {
		t.Fatalf("after a reload: X-Cache %q, want the stored answer", got)
	}
	tests := []struct {
		body   string
		status int
		purged int
		gone   []string
		kept   []string
	}{
		{`{"url": "https://API.example.com:8443/c/a?x=1&y=2"}`, 200, 1, []string{"/c/a?y=2&x=1"}, []string{"/c/b"}},
		{`{"prefix": "api.example.com/c/sub/"}`, 200, 2, []string{"/c/sub/1", "/c/sub/2"}, []string{"/c/b"}},
		{`{"all": true, "route": "ttl"}`, 200, 1, []string{"/ttl/a"}, []string{"/pub/a"}},
		{`{"all": true}`, 200, 0, []string{"/c/b", "/pub/a"}, nil},
		{`{"url": "/no/host"}`, 400, 0, nil, nil},
		{`{"url": "https://a.example.com/", "all": true}`, 400, 0, nil, nil},
		{`{}`, 400, 0, nil, nil},
		{`{"everything": true}`, 400, 0, nil, nil},
	}
	for _, tt := range tests {
		resp, err := http.Post("http://"+e.addrs.Admin+"/cache/purge", "application/json", strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.body, resp.StatusCode, b, tt.status)
			continue
		}
		if tt.status != 200 {
			if jsonCode(t, b) == 0 {
				t.Errorf("%s: %s is not the JSON error", tt.body, b)
			}
			continue
		}
		// The last purge counts what the earlier steps stored again.
		if want := fmt.Sprintf(`{"purged":%d}`, tt.purged); tt.body != `{"all": true}` && strings.TrimSpace(string(b)) != want {
			t.Errorf("%s: %s, want %s", tt.body, b, want)
		}
		for _, p := range tt.gone {
			if got := xcache(p); got != "MISS" {
				t.Errorf("%s: %s is %s after the purge, want MISS", tt.body, p, got)
			}
		}
		for _, p := range tt.kept {
			if got := xcache(p); got != "HIT" {
				t.Errorf("%s: %s is %s after the purge, want HIT", tt.body, p, got)
			}
		}
	}
}

// TestCacheReloadChangedRoute: a reload that changes what shapes a route's
// answers (its cache policy, upstream, the upstream's targets, the
// request headers, path rewriting, [cache] identity_headers) drops the
// route's stored answers; one that changes nothing of the route (nor of
// who may reach it: ip lists, waf) keeps them. The case that matters: a
// route made public by mistake stored one user's answer; the reload
// that fixes it must not leave that answer to be served to everyone.
func TestCacheReloadChangedRoute(t *testing.T) {
	be := startCountingBackend(t, maxAge60)
	other := startCountingBackend(t, maxAge60)
	config := func(upstream, routeKeys, cacheKeys, more, otherTarget string) string {
		if otherTarget == "" {
			otherTarget = other.addr
		}
		return fmt.Sprintf(cacheRoutes, be.addr) + fmt.Sprintf(`
[[upstreams]]
name = "other"
targets = [%q]

[[routes]]
name = "x"
path = "/x/"
upstream = %q
%s
[routes.cache]
%s
`, otherTarget, upstream, routeKeys, cacheKeys) + more
	}
	e := startEdge(t, config("app", "", "public = true", "", ""))
	e.cacheSteps(t, e.client, []cacheStep{
		{path: "/x/me", header: http.Header{"Authorization": {"Bearer user-a"}}, want: "MISS", body: "/x/me #1"},
		// User A's answer, public by mistake, served to everyone.
		{path: "/x/me", want: "HIT", body: "/x/me #1"},
		{path: "/c/keep", want: "MISS", body: "/c/keep #1"},
	})
	tests := []struct {
		name                                              string
		upstream, routeKeys, cacheKeys, more, otherTarget string
		dropped                                           bool
		// everyRoute: the change is of every cached route.
		everyRoute bool
	}{
		{"public removed", "app", "", "", "", "", true, false},
		{"other routes and the store changed", "app", "", "", "\n[cache]\nmax_size = \"32MB\"\n", "", false, false},
		{"who may reach it changed", "app", "ip_deny = [\"192.0.2.0/24\"]\nwaf = \"detect\"", "lock_timeout = \"2s\"", "", "", false, false},
		{"another upstream", "other", "", "", "", "", true, false},
		{"request headers", "other", "set_request_headers = { X-Tenant = \"b\" }", "", "", "", true, false},
		{"strip_prefix", "other", "strip_prefix = true", "", "", "", true, false},
		{"rewrite", "other", "rewrite = { from = \"^/x/(.*)$\", to = \"/y/$1\" }", "", "", "", true, false},
		{"ttl", "other", "rewrite = { from = \"^/x/(.*)$\", to = \"/y/$1\" }", "ttl = \"1m\"", "", "", true, false},
		{"identity headers", "other", "rewrite = { from = \"^/x/(.*)$\", to = \"/y/$1\" }", "ttl = \"1m\"", "\n[cache]\nidentity_headers = [\"X-Shop-Token\"]\n", "", true, true},
		{"the upstream's targets", "other", "rewrite = { from = \"^/x/(.*)$\", to = \"/y/$1\" }", "ttl = \"1m\"", "\n[cache]\nidentity_headers = [\"X-Shop-Token\"]\n", be.addr, true, false},
	}
	for _, tt := range tests {
		e.writeConfig(config(tt.upstream, tt.routeKeys, tt.cacheKeys, tt.more, tt.otherTarget))
		if res, err := e.srv.Reload(TriggerAdmin); res != ReloadApplied || err != nil {
			t.Fatalf("%s: reload: %s %v", tt.name, res, err)
		}
		resp, _ := send(t, e.client, "GET", e.url("api.example.com", "/x/me"), nil)
		want := "HIT"
		if tt.dropped {
			want = "MISS"
		}
		if got := resp.Header.Get("X-Cache"); got != want {
			t.Errorf("%s: /x/me is %s after the reload, want %s", tt.name, got, want)
		}
		if resp, _ := send(t, e.client, "GET", e.url("api.example.com", "/x/me"), nil); resp.Header.Get("X-Cache") != "HIT" {
			t.Errorf("%s: /x/me is %s on the second request, want HIT", tt.name, resp.Header.Get("X-Cache"))
		}
		// Another route's answers outlive every change of this one.
		want = "HIT"
		if tt.everyRoute {
			want = "MISS"
		}
		if resp, _ := send(t, e.client, "GET", e.url("api.example.com", "/c/keep"), nil); resp.Header.Get("X-Cache") != want {
			t.Errorf("%s: /c/keep is %s, want %s", tt.name, resp.Header.Get("X-Cache"), want)
		}
	}
	if other.hits("/x/me") == 0 {
		t.Error("the route's new upstream was never asked")
	}
}
