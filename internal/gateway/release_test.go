package gateway

import (
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"edge/internal/identity"
	"edge/internal/reqctx"
)

// binomialBounds is where k, the count of n independent draws that each
// hit with probability p, falls but once in millions of runs: within five
// standard deviations of n·p.
func binomialBounds(n int, p float64) (lo, hi int) {
	mean := float64(n) * p
	sd := math.Sqrt(mean * (1 - p))
	return int(math.Ceil(mean - 5*sd)), int(math.Floor(mean + 5*sd))
}

// versionBackends are the current and next upstreams of a release test:
// each answers its name and the openid edge injected.
func versionBackends(t *testing.T) (cur, next *backend) {
	answer := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name+" "+r.Header.Get("X-Wx-Openid"))
		}
	}
	return startBackend(t, "cur", answer("cur")), startBackend(t, "next", answer("next"))
}

// apiRoute is the route of a release test, on the current upstream; its
// release follows.
const apiRoute = `
[[routes]]
name = "api"
path = "/api/"
upstream = "cur"
`

func versionUpstreams(cur, next *backend) string {
	return fmt.Sprintf(`
[[upstreams]]
name = "cur"
targets = [%q]
[[upstreams]]
name = "next"
targets = [%q]
`, cur.addr, next.addr)
}

// version asks edge for path and returns which upstream answered and the
// openid it was given.
func (e *edgeUnderTest) version(t *testing.T, path string, hdr http.Header) (name, openid string) {
	t.Helper()
	resp, body := e.do(t, http.MethodGet, e.url("api.example.com", path), nil, hdr)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	name, openid, _ = strings.Cut(body, " ")
	return name, openid
}

// TestReleaseByRequest: each request draws on its own, so the share sent
// to next is a binomial count around the weight; the access log names the
// upstream that answered.
func TestReleaseByRequest(t *testing.T) {
	cur, next := versionBackends(t)
	e := startEdge(t, versionUpstreams(cur, next)+apiRoute+`[routes.release]
upstream = "next"
weight = 25
`)
	const n = 800
	toNext, nextPath := 0, ""
	for i := range n {
		path := fmt.Sprintf("/api/r/%d", i)
		if v, _ := e.version(t, path, nil); v == "next" {
			toNext++
			nextPath = path
		}
	}
	if lo, hi := binomialBounds(n, 0.25); toNext < lo || toNext > hi {
		t.Fatalf("%d of %d requests went to next; weight 25 allows %d to %d", toNext, n, lo, hi)
	}
	line := e.accessLine(t, nextPath)
	if line["upstream"] != "next" || line["target"] != next.addr {
		t.Errorf("access log of a request next answered: upstream %v target %v, want next %s", line["upstream"], line["target"], next.addr)
	}
	if got := e.metric(t, "edge_route_release_weight"); got != `edge_route_release_weight{route="api"} 25` {
		t.Errorf("metric:\n%s", got)
	}
}

const releaseSecret = "release-session-secret-0123456789abcdef"

// startTokenRelease starts edge with a token route released by openid at
// weight 30, with o-tester in openids, and returns a token minter.
func startTokenRelease(t *testing.T) (*edgeUnderTest, func(openid string) http.Header) {
	cur, next := versionBackends(t)
	e := startEdge(t, versionUpstreams(cur, next)+fmt.Sprintf(`
[[apps]]
name = "shop"
appid = "wxrelease"
secret = "app-secret"
[sessions]
secrets = [%q]
`+apiRoute+`auth = "token"
[routes.release]
upstream = "next"
weight = 30
by = "openid"
openids = ["o-tester"]
`, releaseSecret))
	sealer, err := identity.NewSealer([][]byte{[]byte(releaseSecret)}, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e, func(openid string) http.Header {
		token, _, err := sealer.Issue("wxrelease", openid, "")
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Authorization": {"Bearer " + token}}
	}
}

// TestReleaseByOpenID: a user's version is the documented hash of the
// verified openid, so every request of a user lands on one version, the
// share of users on next is a binomial count around the weight, and a
// tester is on next whatever the hash says.
func TestReleaseByOpenID(t *testing.T) {
	e, asUser := startTokenRelease(t)
	const users = 300
	onNext := 0
	for i := range users {
		openid := fmt.Sprintf("o-user-%d", i)
		hdr := asUser(openid)
		want := "cur"
		if ReleaseBucket("next", "wxrelease", openid) < 30 {
			want = "next"
			onNext++
		}
		for j := range 3 {
			v, seen := e.version(t, fmt.Sprintf("/api/u/%d/%d", i, j), hdr)
			if v != want || seen != openid {
				t.Fatalf("request %d of %s went to %s as %q; its bucket %d says %s",
					j, openid, v, seen, ReleaseBucket("next", "wxrelease", openid), want)
			}
		}
	}
	if lo, hi := binomialBounds(users, 0.30); onNext < lo || onNext > hi {
		t.Fatalf("%d of %d users on next; weight 30 allows %d to %d", onNext, users, lo, hi)
	}
	if b := ReleaseBucket("next", "wxrelease", "o-tester"); b < 30 {
		t.Fatalf("o-tester's bucket %d would send it to next anyway; pick another tester", b)
	}
	for i := range 5 {
		if v, _ := e.version(t, fmt.Sprintf("/api/t/%d", i), asUser("o-tester")); v != "next" {
			t.Fatalf("the tester went to %s", v)
		}
	}
}

// TestReleaseForgedOpenID: the version is chosen from the openid edge
// verified, never from one the client sends; a client without a token
// reaches neither version.
func TestReleaseForgedOpenID(t *testing.T) {
	e, asUser := startTokenRelease(t)
	plain := ""
	for i := 0; plain == ""; i++ {
		if id := fmt.Sprintf("o-plain-%d", i); ReleaseBucket("next", "wxrelease", id) >= 30 {
			plain = id
		}
	}
	hdr := asUser(plain)
	hdr.Set("X-Wx-Openid", "o-tester")
	for i := range 10 {
		if v, seen := e.version(t, fmt.Sprintf("/api/f/%d", i), hdr); v != "cur" || seen != plain {
			t.Fatalf("a forged X-Wx-Openid: went to %s as %q, want cur as %q", v, seen, plain)
		}
	}
	resp, body := e.do(t, http.MethodGet, e.url("api.example.com", "/api/f"), nil, http.Header{"X-Wx-Openid": {"o-tester"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token, forged openid: %d %s", resp.StatusCode, body)
	}
}

// TestReleaseWithoutOpenID: a request that carries no verified openid is
// on the current version, unless the release is promoted.
func TestReleaseWithoutOpenID(t *testing.T) {
	rel := &release{byOpenID: true, salt: "next", testers: map[string]struct{}{"o-tester": {}}}
	for _, tc := range []struct {
		weight int32
		openid string
		want   bool
	}{
		{50, "", false}, {99, "", false}, {100, "", true},
		{0, "o-tester", true}, {0, "", false},
	} {
		rel.weight.Store(tc.weight)
		if got := rel.toNext(&reqctx.Info{OpenID: tc.openid}); got != tc.want {
			t.Errorf("weight %d, openid %q: to next %v, want %v", tc.weight, tc.openid, got, tc.want)
		}
	}
}

// TestReleaseBucket: the bucket is FNV-1a as docs/releases.md says, so an
// operator can compute a user's version; another salt picks other users.
func TestReleaseBucket(t *testing.T) {
	inBoth, inA := 0, 0
	for i := range 2000 {
		openid := fmt.Sprintf("o-%d", i)
		h := fnv.New32a()
		_, _ = io.WriteString(h, "next\x00wxapp\x00"+openid+"\x00")
		if got, want := ReleaseBucket("next", "wxapp", openid), int(h.Sum32()%100); got != want {
			t.Fatalf("bucket of %s: %d, FNV-1a says %d", openid, got, want)
		}
		a, b := ReleaseBucket("a", "wxapp", openid) < 30, ReleaseBucket("b", "wxapp", openid) < 30
		if a {
			inA++
			if b {
				inBoth++
			}
		}
	}
	// Independent picks share 30% of salt a's users; the same pick all.
	if lo, hi := binomialBounds(inA, 0.30); inBoth < lo || inBoth > hi {
		t.Fatalf("salts a and b share %d of %d users; independent picks share %d to %d", inBoth, inA, lo, hi)
	}
}

// TestReleaseLive: promote, a weight and rollback through the admin API
// change the share at once, behind admin_token; the metric follows; a
// reload goes back to the file's weight.
func TestReleaseLive(t *testing.T) {
	cur, next := versionBackends(t)
	const token = "release-admin-token-0123456789"
	e := startEdgeWith(t, `admin_token = "`+token+`"`, "", versionUpstreams(cur, next)+apiRoute+`[routes.release]
upstream = "next"
weight = 0
[[routes]]
name = "plain"
path = "/plain/"
upstream = "cur"
`)
	admin := func(path, body, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+e.addrs.Admin+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	all := func(want string) {
		t.Helper()
		for i := range 20 {
			if v, _ := e.version(t, fmt.Sprintf("/api/%s/%d", want, i), nil); v != want {
				t.Fatalf("request %d went to %s, want every one on %s", i, v, want)
			}
		}
	}
	weight := func(want int) {
		t.Helper()
		if got := e.metric(t, "edge_route_release_weight"); got != fmt.Sprintf(`edge_route_release_weight{route="api"} %d`, want) {
			t.Fatalf("metric:\n%s\nwant weight %d", got, want)
		}
	}
	all("cur")
	weight(0)

	if code, body := admin("/routes/api/release/promote", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("promote without the admin token: %d %s", code, body)
	}
	all("cur")
	code, body := admin("/routes/api/release/promote", "", token)
	if code != http.StatusOK || !strings.Contains(body, `"weight":100,"was":0,"file_weight":0`) {
		t.Fatalf("promote: %d %s", code, body)
	}
	all("next")
	weight(100)

	if code, body := admin("/routes/api/release", `{"weight": 50}`, token); code != http.StatusOK {
		t.Fatalf("weight 50: %d %s", code, body)
	}
	const n = 400
	toNext := 0
	for i := range n {
		if v, _ := e.version(t, fmt.Sprintf("/api/half/%d", i), nil); v == "next" {
			toNext++
		}
	}
	if lo, hi := binomialBounds(n, 0.5); toNext < lo || toNext > hi {
		t.Fatalf("%d of %d to next at weight 50; allowed %d to %d", toNext, n, lo, hi)
	}

	if code, body := admin("/routes/api/release/rollback", "", token); code != http.StatusOK || !strings.Contains(body, `"weight":0,"was":50`) {
		t.Fatalf("rollback: %d %s", code, body)
	}
	all("cur")
	weight(0)

	for _, tc := range []struct {
		path, body string
		code       int
		msg        string
	}{
		{"/routes/nope/release/promote", "", 404, `"code":40401`},
		{"/routes/plain/release/promote", "", 404, "has no [routes.release]"},
		{"/routes/api/release", `{"weight": 101}`, 400, "not a percent"},
		{"/routes/api/release", `{"weight": -1}`, 400, "not a percent"},
		{"/routes/api/release", `{"share": 5}`, 400, `"code":40001`},
		{"/routes/api/release", `{}`, 400, `"code":40001`},
	} {
		if code, body := admin(tc.path, tc.body, token); code != tc.code || !strings.Contains(body, tc.msg) {
			t.Errorf("POST %s %s: %d %s, want %d with %s", tc.path, tc.body, code, body, tc.code, tc.msg)
		}
	}
	weight(0)

	if code, body := admin("/routes/api/release/promote", "", token); code != http.StatusOK {
		t.Fatalf("promote: %d %s", code, body)
	}
	all("next")
	if code, body := admin("/reload", "", token); code != http.StatusOK {
		t.Fatalf("reload: %d %s", code, body)
	}
	all("cur")
	weight(0)
	if log := e.stderr.String(); !strings.Contains(log, "reload put the release weight back to the file's value") {
		t.Errorf("the reset is not logged:\n%s", log)
	}
}

// TestReleaseChoiceAllocates: choosing the version adds no allocation to
// a request.
func TestReleaseChoiceAllocates(t *testing.T) {
	info := &reqctx.Info{AppID: "wxapp", OpenID: "o-user-1"}
	for _, byOpenID := range []bool{false, true} {
		rel := &release{byOpenID: byOpenID, salt: "next", testers: map[string]struct{}{"o-tester": {}}}
		rel.weight.Store(30)
		if n := testing.AllocsPerRun(1000, func() { rel.toNext(info) }); n != 0 {
			t.Errorf("by openid %v: %v allocations per choice", byOpenID, n)
		}
	}
}

// TestReleaseKeepsRouteOptions: the next version is served by the same
// route, so its options (here strip_prefix, header rules and gzip) apply
// to it as to the current one.
func TestReleaseKeepsRouteOptions(t *testing.T) {
	cur := startBackend(t, "cur", nil)
	next := startBackend(t, "next", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"path":"`+r.URL.Path+`","pad":"`+strings.Repeat("x", 2048)+`"}`)
	})
	e := startEdge(t, versionUpstreams(cur, next)+apiRoute+`strip_prefix = true
gzip = true
set_request_headers = { "X-App" = "shop" }
[routes.release]
upstream = "next"
weight = 100
`)
	resp, body := e.do(t, http.MethodGet, e.url("api.example.com", "/api/orders"), nil, http.Header{"Accept-Encoding": {"gzip"}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Backend") != "next" {
		t.Fatalf("answer: %d from %q", resp.StatusCode, resp.Header.Get("X-Backend"))
	}
	if got := resp.Header.Get("Content-Encoding"); got != "gzip" {
		t.Errorf("Content-Encoding %q, want gzip", got)
	}
	if len(body) > 1024 {
		t.Errorf("body of %d bytes came uncompressed", len(body))
	}
	last := next.lastRequest()
	if last.URL.Path != "/orders" || last.Header.Get("X-App") != "shop" {
		t.Errorf("next received %s with X-App %q, want /orders with shop", last.URL.Path, last.Header.Get("X-App"))
	}
}
