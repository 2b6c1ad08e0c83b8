package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestRoutingKindsThroughEdge: exact and regex routes win as nginx's
// locations do over a catch-all prefix; a rewrite changes the target the
// upstream receives, byte for byte, over HTTP/1.1, HTTP/2 and the WebSocket
// path alike; a rewrite that would produce an ambiguous path is refused
// before the upstream; a redirect answers with its captures.
func TestRoutingKindsThroughEdge(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	addr := rawUpstream(t, func(head string) {
		mu.Lock()
		lines = append(lines, strings.SplitN(head, "\r\n", 2)[0])
		mu.Unlock()
	})
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(lines) == 0 {
			return ""
		}
		l := lines[len(lines)-1]
		lines = nil
		return l
	}
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "up"
targets = [%q]
[[routes]]
name = "all"
path = "/"
upstream = "up"
[[routes]]
name = "users"
regex = '^/v(\d+)/users/(\d+)$'
upstream = "up"
websocket = true
rewrite = { from = '^/v(\d+)/users/(\d+)$', to = "/api/users/$2?version=$1" }
[[routes]]
name = "files"
path = "/f/"
upstream = "up"
rewrite = { from = '^/f/(.*)$', to = "/files/$1" }
[[routes]]
name = "strip"
path = "/s/"
strip_prefix = true
upstream = "up"
[[routes]]
name = "semi"
exact = "/semi"
upstream = "up"
rewrite = { from = '^/semi$', to = "/q/$args" }
[[routes]]
name = "health"
exact = "/healthz"
respond = { body = "healthy" }
[[routes]]
name = "images"
regex = '\.png$'
regex_ignore_case = true
respond = { body = "image" }
[[routes]]
name = "legacy"
regex = '^/old/(\d+)/(.*)$'
redirect = { to = "https://new.example.com/items/$1/$2", status = 301 }
[[routes]]
name = "moved"
exact = "/moved"
redirect = { to = "https://$host/new$request_uri" }
`, addr))

	for _, c := range []struct{ path, upstream string }{
		{"/v2/users/42?a=1", "GET /api/users/42?version=2 HTTP/1.1"},
		{"/v2/users/42/../43", "GET /api/users/43?version=2 HTTP/1.1"},
		{"/v2/users/me?a=1", "GET /v2/users/me?a=1 HTTP/1.1"}, // no regex match: the catch-all, as sent
		{"/f/a%20b%3F?q=1", "GET /files/a%20b%3F?q=1 HTTP/1.1"},
		{"/s/x%2Fy?q", "GET /x%2Fy?q HTTP/1.1"},
	} {
		for _, client := range []*http.Client{e.client, e.h2} {
			resp, err := client.Get(e.url("api.example.com", c.path))
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if got := last(); resp.StatusCode != 200 || got != c.upstream {
				t.Errorf("%s %s: %d, upstream got %q, want %q", resp.Proto, c.path, resp.StatusCode, got, c.upstream)
			}
		}
	}

	req, _ := http.NewRequest("GET", e.url("api.example.com", "/v1/users/7"), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := last(); got != "GET /api/users/7?version=1 HTTP/1.1" {
		t.Errorf("upgrade: upstream got %q", got)
	}

	for _, c := range []struct{ path, body string }{
		{"/healthz", "healthy"},      // exact beats the catch-all prefix
		{"/healthz/x", "ok"},         // exact is the whole path
		{"/img/A.PNG", "image"},      // case-insensitive regex beats the prefix
		{"/v1/users/1.png", "image"}, // the users regex does not match; the next one does
	} {
		if resp, body := e.get(t, "api.example.com", c.path); resp.StatusCode != 200 || body != c.body {
			t.Errorf("GET %s: %d %q, want 200 %q", c.path, resp.StatusCode, body, c.body)
		}
	}

	last()
	resp, body := e.get(t, "api.example.com", "/semi?a%3Bb")
	assertAPIError(t, resp, body, http.StatusBadRequest, 40001)
	if got := last(); got != "" {
		t.Errorf("a refused rewrite reached the upstream: %q", got)
	}

	noFollow := *e.client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, c := range []struct {
		path     string
		status   int
		location string
	}{
		{"/old/7/a%20b?x=1", 301, "https://new.example.com/items/7/a%20b?x=1"},
		{"/moved?x=1", 302, "https://api.example.com/new/moved?x=1"},
	} {
		resp, err := noFollow.Get(e.url("api.example.com", c.path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Location") != c.location {
			t.Errorf("GET %s: %d %q, want %d %q", c.path, resp.StatusCode, resp.Header.Get("Location"), c.status, c.location)
		}
	}
}
