package limits_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"edge/internal/testpeer"
)

// The tests in this file run the real edge binary (built with -race) in
// front of real upstreams, and check issue 5's list through it.

// TestMain stops the race runtime of every edge this package starts from
// sleeping a second at exit (its default), which would add a second to
// each of the many stops below.
func TestMain(m *testing.M) {
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	os.Exit(m.Run())
}

func TestE2ELimitedAnswer(t *testing.T) {
	t.Parallel()
	u := startUpstream(t)
	e := testpeer.StartEdge(t, "", appConfig(u, `
[limiter]
always_send_headers = true

[[limits]]
name = "per_ip"
key = "ip"
rate = "1/m"
burst = 3
routes = ["api"]
`))
	c := e.Client(t, false)
	url := e.URL("api.example.com", "/orders")

	for remaining := 2; remaining >= 0; remaining-- {
		a := request(t, c, url, nil)
		if a.status != 200 {
			t.Fatalf("request within the burst: %d %q", a.status, a.body)
		}
		if got := a.header.Get("RateLimit-Policy"); got != `"per_ip";q=1;w=60` {
			t.Errorf("allowed RateLimit-Policy %q", got)
		}
		if got, want := a.header.Get("RateLimit"), `"per_ip";r=`+strconv.Itoa(remaining)+`;t=`; len(got) <= len(want) || got[:len(want)] != want {
			t.Errorf("allowed RateLimit %q, want %s...", got, want)
		}
	}
	for range 2 {
		a := request(t, c, url, nil)
		wantAPIError(t, a, 429, 42901)
		retry, err := strconv.Atoi(a.header.Get("Retry-After"))
		// One request a minute with the bucket just emptied: the next one
		// is a minute away (a second less if a second went by).
		if err != nil || retry < 59 || retry > 60 {
			t.Errorf("Retry-After %q, want whole seconds near 60", a.header.Get("Retry-After"))
		}
		if got := a.header.Get("RateLimit-Policy"); got != `"per_ip";q=1;w=60` {
			t.Errorf("RateLimit-Policy %q", got)
		}
		if got, want := a.header.Get("RateLimit"), `"per_ip";r=0;t=`+a.header.Get("Retry-After"); got != want {
			t.Errorf("RateLimit %q, want %q", got, want)
		}
	}
	if n := u.hits.Load(); n != 3 {
		t.Errorf("upstream saw %d requests, want the 3 allowed only", n)
	}
	if n := metric(t, e, "edge_limit_decisions_total", `route="api"`, `rule="per_ip"`, `result="limited"`); n != 2 {
		t.Errorf("limited decisions counted: %v, want 2", n)
	}
}

func TestE2EForwardedForIsBelievedOnlyFromTrustedProxies(t *testing.T) {
	t.Parallel()
	const rules = `
[[limits]]
name = "per_ip"
key = "ip"
rate = "1/m"
burst = 2
routes = ["api"]
`
	xff := func(v string) map[string]string { return map[string]string{"X-Forwarded-For": v} }

	t.Run("untrusted peer", func(t *testing.T) {
		u := startUpstream(t)
		e := testpeer.StartEdge(t, "", appConfig(u, rules))
		c := e.Client(t, false)
		url := e.URL("api.example.com", "/")
		// Every request counts under the peer 127.0.0.1, whatever it claims.
		wantStatuses(t, c, url, xff("198.51.100.1"), 200)
		wantStatuses(t, c, url, xff("198.51.100.2"), 200)
		wantStatuses(t, c, url, xff("198.51.100.3"), 429)
		wantStatuses(t, c, url, nil, 429)
		if n := u.hits.Load(); n != 2 {
			t.Errorf("upstream saw %d requests, want 2", n)
		}
	})

	t.Run("trusted proxy", func(t *testing.T) {
		u := startUpstream(t)
		e := testpeer.StartEdge(t, `trusted_proxies = ["127.0.0.1/32"]`, appConfig(u, rules))
		c := e.Client(t, false)
		url := e.URL("api.example.com", "/")
		// The key is the rightmost address the trusted proxy did not add:
		// what a client wrote to the left of it changes nothing.
		wantStatuses(t, c, url, xff("203.0.113.9, 198.51.100.1"), 200)
		wantStatuses(t, c, url, xff("203.0.113.10, 198.51.100.1"), 200)
		wantStatuses(t, c, url, xff("198.51.100.1, 127.0.0.1"), 429)
		// Another client behind the proxy has its own bucket, and so has
		// the proxy itself.
		wantStatuses(t, c, url, xff("198.51.100.2"), 200, 200, 429)
		wantStatuses(t, c, url, nil, 200, 200, 429)
	})
}

func TestE2EAccessListsReloadAndUserAgent(t *testing.T) {
	t.Parallel()
	u := startUpstream(t)
	dir := t.TempDir()
	deny := filepath.Join(dir, "deny.txt")
	writeFile(t, deny, "# hosting ranges\n192.0.2.0/24\n")
	e := testpeer.StartEdgeIn(t, dir, "", appConfig(u, `
[access]
ip_deny_files = ["deny.txt"]
user_agent_deny = ['(?i)python-requests|curl/']
`))
	url := e.URL("api.example.com", "/")
	local := e.Client(t, false)
	other := e.ClientFrom(t, "127.0.0.2")

	wantStatuses(t, local, url, nil, 200)
	wantStatuses(t, other, url, nil, 200)
	hits := u.hits.Load()
	a := request(t, local, url, map[string]string{"User-Agent": "python-requests/2.31.0"})
	wantAPIError(t, a, 403, 40301)
	if u.hits.Load() != hits {
		t.Error("a refused User-Agent reached the upstream")
	}
	if n := metric(t, e, "edge_access_rejections_total", `route="api"`, `reason="user_agent"`); n != 1 {
		t.Errorf("user_agent rejections counted: %v, want 1", n)
	}

	// An operator adds 127.0.0.2 to the file and reloads.
	writeFile(t, deny, "# hosting ranges\n192.0.2.0/24\n127.0.0.2\n")
	reload(t, e)

	// The connection 127.0.0.2 kept open is refused per request; a new one
	// is closed at accept.
	wantAPIError(t, request(t, other, url, nil), 403, 40301)
	if a, err := tryRequest(e.ClientFrom(t, "127.0.0.2"), url, nil); err == nil {
		t.Errorf("a new connection from a denied IP was served: %d", a.status)
	}
	if n := metric(t, e, "edge_connections_refused_total", `reason="ip_denied"`); n < 1 {
		t.Errorf("connections refused for ip_denied: %v, want at least 1", n)
	}
	wantStatuses(t, local, url, nil, 200)
	if u.hits.Load() != hits+1 {
		t.Errorf("upstream saw %d requests after the first %d, want only the one allowed", u.hits.Load()-hits, hits)
	}
}

func TestE2EUnchangedRuleKeepsItsStateAcrossReload(t *testing.T) {
	t.Parallel()
	u := startUpstream(t)
	rule := func(rate string) string {
		return `
[[limits]]
name = "per_ip"
key = "ip"
rate = "` + rate + `"
burst = 2
routes = ["api"]
`
	}
	e := testpeer.StartEdge(t, "", appConfig(u, rule("1/m")))
	c := e.Client(t, false)
	url := e.URL("api.example.com", "/")
	wantStatuses(t, c, url, nil, 200, 200, 429)

	// An unrelated change: a new route. Served at once, and the bucket the
	// rule emptied is still empty.
	e.WriteConfig("", appConfig(u, rule("1/m")+`
[[routes]]
name = "ping"
hosts = ["api.example.com"]
path = "/ping"
respond = { body = "pong" }
`))
	reload(t, e)
	wantStatuses(t, c, e.URL("api.example.com", "/ping"), nil, 200)
	wantStatuses(t, c, url, nil, 429)

	// A changed rule starts afresh, which shows the check above can fail.
	e.WriteConfig("", appConfig(u, rule("2/m")))
	reload(t, e)
	wantStatuses(t, c, url, nil, 200, 200, 429)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
