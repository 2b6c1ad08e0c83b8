package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestRoutingByHostPathAndMethod(t *testing.T) {
	api := startBackend(t, "api", nil)
	wild := startBackend(t, "wild", nil)
	anyHost := startBackend(t, "any", nil)
	posts := startBackend(t, "posts", nil)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "api"
targets = [%q]
[[upstreams]]
name = "wild"
targets = [%q]
[[upstreams]]
name = "any"
targets = [%q]
[[upstreams]]
name = "posts"
targets = [%q]

[[routes]]
name = "any-root"
path = "/"
upstream = "any"
[[routes]]
name = "any-api"
path = "/api/"
upstream = "any"
[[routes]]
name = "wild"
hosts = ["*.example.com"]
path = "/"
upstream = "wild"
[[routes]]
name = "api-host"
hosts = ["api.example.com"]
path = "/"
upstream = "api"
[[routes]]
name = "api-posts"
hosts = ["api.example.com"]
path = "/v1/posts"
methods = ["POST"]
upstream = "posts"
strip_prefix = true
[[routes]]
name = "fixed"
hosts = ["other.test"]
path = "/ping"
respond = { status = 201, body = "pong", content_type = "text/plain" }
`, api.addr, wild.addr, anyHost.addr, posts.addr))

	cases := []struct {
		method, host, path string
		wantStatus         int
		wantBody           string
	}{
		{"GET", "api.example.com", "/x", 200, "api GET /x"},
		{"GET", "API.Example.COM", "/x", 200, "api GET /x"},
		{"GET", "foo.example.com", "/x", 200, "wild GET /x"},
		{"GET", "example.com", "/api/y", 200, "any GET /api/y"},
		{"GET", "example.com", "/apix", 200, "any GET /apix"},
		{"POST", "api.example.com", "/v1/posts/7?q=1", 200, "posts POST /7?q=1"},
		{"POST", "api.example.com", "/v1/posts", 200, "posts POST /"},
		{"GET", "api.example.com", "/v1/posts/7", 200, "api GET /v1/posts/7"},
		{"GET", "other.test", "/ping", 201, "pong"},
		{"GET", "other.test", "/public/../ping", 201, "pong"},
		{"GET", "other.test", "/nothing", 200, "any GET /nothing"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.host+c.path, func(t *testing.T) {
			resp, body := e.do(t, c.method, e.url(c.host, c.path), strings.NewReader(""), nil)
			if resp.StatusCode != c.wantStatus || body != c.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, c.wantStatus, c.wantBody)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id on the response")
			}
		})
	}
}

func TestNotFoundAndBodyLimitAnswers(t *testing.T) {
	b := startBackend(t, "b", nil)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "b"
targets = [%q]
[[routes]]
name = "small"
hosts = ["api.example.com"]
path = "/upload"
upstream = "b"
max_body = "1KB"
`, b.addr))

	resp, body := e.get(t, "other.test", "/upload")
	assertAPIError(t, resp, body, 404, 40401)

	resp, body = e.do(t, "POST", e.url("api.example.com", "/upload"), strings.NewReader(strings.Repeat("x", 2048)), nil)
	assertAPIError(t, resp, body, 413, 41301)

	// A chunked body with no Content-Length is cut off at the limit too.
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(strings.Repeat("y", 4096)))
		pw.Close()
	}()
	resp, body = e.do(t, "POST", e.url("api.example.com", "/upload"), pr, nil)
	assertAPIError(t, resp, body, 413, 41301)

	resp, body = e.do(t, "POST", e.url("api.example.com", "/upload"), strings.NewReader("small"), nil)
	if resp.StatusCode != 200 || body != "b POST /upload" {
		t.Fatalf("small body: %d %q", resp.StatusCode, body)
	}
}

func assertAPIError(t *testing.T, resp *http.Response, body string, status, code int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content type %q", ct)
	}
	var got struct {
		Code      int    `json:"code"`
		Msg       string `json:"msg"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("body %q is not the spec's JSON: %v", body, err)
	}
	if got.Code != code || got.Msg == "" || got.RequestID != resp.Header.Get("X-Request-Id") {
		t.Fatalf("body %+v, want code %d and the response's request id %q", got, code, resp.Header.Get("X-Request-Id"))
	}
}

func TestUpstreamDownAndTimeoutAnswers(t *testing.T) {
	slow := startBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "dead"
targets = [%q]
connect_timeout = "1s"
[[upstreams]]
name = "slow"
targets = [%q]
response_header_timeout = "200ms"
[[routes]]
name = "dead"
path = "/dead"
upstream = "dead"
[[routes]]
name = "slow"
path = "/slow"
upstream = "slow"
`, deadAddr(t), slow.addr))

	resp, body := e.get(t, "api.example.com", "/dead")
	assertAPIError(t, resp, body, 502, 50201)
	resp, body = e.get(t, "api.example.com", "/slow")
	assertAPIError(t, resp, body, 504, 50401)
	if m := e.metric(t, `edge_upstream_requests_total{code="error",route="slow"`); !strings.Contains(m, " 1") {
		t.Errorf("upstream error not counted: %q", m)
	}
}

func TestBalancingSpreadsLoad(t *testing.T) {
	a := startBackend(t, "a", nil)
	b := startBackend(t, "b", nil)
	c := startBackend(t, "c", nil)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "rr"
targets = [{ address = %q, weight = 3 }, { address = %q, weight = 1 }]
[[upstreams]]
name = "hash"
balance = "hash"
hash_key = "header:X-User"
targets = [%q, %q, %q]
[[upstreams]]
name = "lc"
balance = "least_conn"
targets = [%q, %q]
[[routes]]
name = "rr"
path = "/rr"
upstream = "rr"
[[routes]]
name = "hash"
path = "/hash"
upstream = "hash"
[[routes]]
name = "lc"
path = "/lc"
upstream = "lc"
`, a.addr, b.addr, a.addr, b.addr, c.addr, b.addr, c.addr))

	for i := 0; i < 400; i++ {
		e.get(t, "api.example.com", "/rr")
	}
	if na, nb := a.count(), b.count(); na != 300 || nb != 100 {
		t.Fatalf("weighted round robin 3:1 over 400 requests gave %d:%d", na, nb)
	}

	// The same key always lands on the same target; different keys spread.
	seen := map[string]bool{}
	for user := 0; user < 30; user++ {
		first := ""
		for i := 0; i < 5; i++ {
			resp, _ := e.do(t, "GET", e.url("api.example.com", "/hash"), nil, http.Header{"X-User": {fmt.Sprint("user-", user)}})
			got := resp.Header.Get("X-Backend")
			if first == "" {
				first = got
			} else if got != first {
				t.Fatalf("user %d moved from %s to %s", user, first, got)
			}
		}
		seen[first] = true
	}
	if len(seen) < 3 {
		t.Fatalf("30 keys used only %d of 3 targets", len(seen))
	}

	before := b.count() + c.count()
	for i := 0; i < 20; i++ {
		e.get(t, "api.example.com", "/lc")
	}
	if b.count()+c.count()-before != 20 || b.count() == 0 || c.count() == 0 {
		t.Fatalf("least_conn did not use both targets: b=%d c=%d", b.count(), c.count())
	}
}

func TestHealthCheckTakesDeadTargetOutAndBack(t *testing.T) {
	a := startBackend(t, "a", nil)
	b := startBackend(t, "b", nil)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q, %q]
retries = 0
[upstreams.health_check]
path = "/healthz"
interval = "50ms"
timeout = "200ms"
healthy_threshold = 1
unhealthy_threshold = 1
[upstreams.passive_health]
max_fails = 0
[[routes]]
name = "app"
path = "/"
upstream = "app"
`, a.addr, b.addr))

	b.kill()
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(e.metric(t, "edge_upstream_target_healthy"), fmt.Sprintf(`target=%q,upstream="app"} 0`, b.addr))
	}, "the killed target to be marked down")
	for i := 0; i < 20; i++ {
		resp, body := e.get(t, "api.example.com", "/x")
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "a" {
			t.Fatalf("request %d while b is down: %d %q", i, resp.StatusCode, body)
		}
	}
	b.revive(t, nil)
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(e.metric(t, "edge_upstream_target_healthy"), fmt.Sprintf(`target=%q,upstream="app"} 1`, b.addr))
	}, "the revived target to be marked up")
	before := b.count()
	for i := 0; i < 10; i++ {
		e.get(t, "api.example.com", "/x")
	}
	if b.count() == before {
		t.Fatal("revived target gets no traffic")
	}
}

func TestConnectFailureRetriesIdempotentOnly(t *testing.T) {
	alive := startBackend(t, "alive", nil)
	dead := deadAddr(t)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q, %q]
retries = 1
[upstreams.passive_health]
max_fails = 0
[[routes]]
name = "app"
path = "/"
upstream = "app"
`, dead, alive.addr))

	// Round robin alternates, so half of these pick the dead target first.
	for i := 0; i < 10; i++ {
		resp, body := e.get(t, "api.example.com", "/get")
		if resp.StatusCode != 200 {
			t.Fatalf("GET %d: %d %q (a GET must be retried on the live target)", i, resp.StatusCode, body)
		}
	}
	failed := 0
	for i := 0; i < 10; i++ {
		resp, body := e.do(t, "POST", e.url("api.example.com", "/post"), strings.NewReader("x"), nil)
		switch resp.StatusCode {
		case 200:
		case 502:
			assertAPIError(t, resp, body, 502, 50201)
			failed++
		default:
			t.Fatalf("POST: %d %q", resp.StatusCode, body)
		}
	}
	if failed != 5 {
		t.Fatalf("%d of 10 POSTs failed; a POST is never retried, so exactly the 5 sent to the dead target must fail", failed)
	}
}

func TestForwardedHeadersFromUntrustedPeerAreReplaced(t *testing.T) {
	b := startBackend(t, "b", nil)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "b"
targets = [%q]
[[routes]]
name = "b"
path = "/"
upstream = "b"
set_request_headers = { "X-App" = "edge" }
remove_request_headers = ["Cookie"]
set_response_headers = { "X-Frame-Options" = "DENY" }
remove_response_headers = ["X-Backend"]
`, b.addr))

	resp, _ := e.do(t, "GET", e.url("api.example.com", "/"), nil, http.Header{
		"X-Forwarded-For":   {"6.6.6.6"},
		"X-Real-Ip":         {"6.6.6.6"},
		"X-Forwarded-Host":  {"evil.test"},
		"X-Forwarded-Proto": {"http"},
		"Forwarded":         {"for=6.6.6.6"},
		"Cookie":            {"session=1"},
		"X-Request-Id":      {"client-trace-42"},
	})
	got := b.lastRequest()
	for name, want := range map[string]string{
		"X-Forwarded-For":   "127.0.0.1",
		"X-Real-Ip":         "127.0.0.1",
		"X-Forwarded-Proto": "https",
		"X-App":             "edge",
		"X-Request-Id":      "client-trace-42",
	} {
		if v := got.Header.Get(name); v != want {
			t.Errorf("upstream saw %s = %q, want %q", name, v, want)
		}
	}
	if v := got.Header.Get("X-Forwarded-Host"); !strings.HasPrefix(v, "api.example.com") {
		t.Errorf("X-Forwarded-Host = %q", v)
	}
	for _, name := range []string{"Forwarded", "Cookie"} {
		if v := got.Header.Get(name); v != "" {
			t.Errorf("upstream saw %s = %q", name, v)
		}
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("X-Backend") != "" {
		t.Errorf("response header rules not applied: %v", resp.Header)
	}
	if resp.Header.Get("X-Request-Id") != "client-trace-42" {
		t.Errorf("response request id %q", resp.Header.Get("X-Request-Id"))
	}
	// A malformed client id is replaced.
	e.do(t, "GET", e.url("api.example.com", "/"), nil, http.Header{"X-Request-Id": {"bad id\"<script>"}})
	if v := b.lastRequest().Header.Get("X-Request-Id"); v == "" || strings.ContainsAny(v, " \"<") {
		t.Errorf("malformed request id reached the upstream as %q", v)
	}
}

func TestWebSocketOverTLSAndSurvivesReload(t *testing.T) {
	ws := startBackend(t, "ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	})
	cfg := fmt.Sprintf(`
[[upstreams]]
name = "ws"
targets = [%q]
[[routes]]
name = "ws"
path = "/ws"
upstream = "ws"
websocket = true
`, ws.addr)
	e := startEdge(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "wss://api.example.com"+strings.TrimPrefix(e.url("", "/ws"), "https://"), &websocket.DialOptions{HTTPClient: e.client})
	if err != nil {
		t.Fatalf("dialing wss through edge: %v", err)
	}
	defer conn.CloseNow()
	roundTrip := func(msg string) {
		t.Helper()
		if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := conn.Read(ctx)
		if err != nil || string(got) != "echo:"+msg {
			t.Fatalf("got %q, %v", got, err)
		}
	}
	roundTrip("before")
	e.writeConfig(cfg + "\n[[routes]]\nname = \"extra\"\npath = \"/extra\"\nrespond = { body = \"x\" }\n")
	if res, err := e.srv.Reload("test"); err != nil || res != ReloadApplied {
		t.Fatalf("reload: %s %v", res, err)
	}
	roundTrip("after")
	if m := e.metric(t, "edge_websockets_open"); !strings.HasSuffix(m, " 1") {
		t.Errorf("edge_websockets_open with one socket open: %q", m)
	}
	if m := e.metric(t, `edge_tls_handshakes_total{result="ok"}`); strings.HasSuffix(m, " 0") || m == "" {
		t.Errorf("successful handshakes not counted: %q", m)
	}
	// The WebSocket's connection was hijacked and is no longer counted; a
	// keep-alive connection that served a request is.
	e.get(t, "api.example.com", "/extra")
	if m := e.metric(t, `edge_connections_open{listener="https",protocol="h1"}`); !strings.HasSuffix(m, " 1") {
		t.Errorf("open HTTPS connections not counted: %q", m)
	}
	conn.Close(websocket.StatusNormalClosure, "")
	eventually(t, 5*time.Second, func() bool {
		return strings.HasSuffix(e.metric(t, "edge_websockets_open"), " 0")
	}, "edge_websockets_open to drop to 0 after the socket closed")
}

func TestServerSentEventsArriveOneByOne(t *testing.T) {
	next := make(chan struct{})
	sse := startBackend(t, "sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "sse"
targets = [%q]
[[routes]]
name = "sse"
path = "/events"
upstream = "sse"
gzip = true
`, sse.addr))
	for _, client := range []*http.Client{e.client, e.h2} {
		req, _ := http.NewRequest("GET", e.url("api.example.com", "/events"), nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(resp.Body)
		for i := 0; i < 3; i++ {
			// The upstream sends the next event only after we read this
			// one: a proxy that buffers would deadlock here.
			line, err := r.ReadString('\n')
			if err != nil || line != fmt.Sprintf("data: event %d\n", i) {
				t.Fatalf("%s event %d: %q %v", resp.Proto, i, line, err)
			}
			_, _ = r.ReadString('\n')
			next <- struct{}{}
		}
		resp.Body.Close()
	}
}

func TestStaticRouteThroughGateway(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.html"), []byte("<h1>home</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "app.js"), []byte(strings.Repeat("console.log(1);\n", 200)), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(filepath.Dir(root), "secret.txt")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, fmt.Sprintf(`
[[routes]]
name = "site"
path = "/"
static = %q
`, root))
	resp, body := e.get(t, "example.com", "/")
	if resp.StatusCode != 200 || body != "<h1>home</h1>" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("index: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	etag := resp.Header.Get("Etag")
	resp, _ = e.do(t, "GET", e.url("example.com", "/"), nil, http.Header{"If-None-Match": {etag}})
	if resp.StatusCode != 304 {
		t.Fatalf("If-None-Match: %d", resp.StatusCode)
	}
	resp, body = e.do(t, "GET", e.url("example.com", "/app.js"), nil, http.Header{"Range": {"bytes=0-6"}})
	if resp.StatusCode != 206 || body != "console" {
		t.Fatalf("range: %d %q", resp.StatusCode, body)
	}
	for _, p := range []string{"/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/a/..%2f..%2fsecret.txt"} {
		resp, body := e.get(t, "example.com", p)
		if strings.Contains(body, "secret") && !strings.Contains(body, "code") {
			t.Fatalf("%s escaped the root: %d %q", p, resp.StatusCode, body)
		}
	}
}

func TestReloadBadConfigKeepsServingAndGoodOneSwitches(t *testing.T) {
	a := startBackend(t, "a", nil)
	b := startBackend(t, "b", nil)
	cfg := func(addr string) string {
		return fmt.Sprintf("[[upstreams]]\nname = \"app\"\ntargets = [%q]\n[[routes]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\n", addr)
	}
	e := startEdge(t, cfg(a.addr))

	e.writeConfig(cfg(a.addr) + "\n[[routes]]\nname = \"broken\"\nupstream = \"missing\"\nbogus_key = 1\n")
	res, err := e.srv.Reload("test")
	if res != ReloadFailed || err == nil {
		t.Fatalf("bad config: %s %v", res, err)
	}
	if !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), "bogus_key") {
		t.Fatalf("reload problems do not name both keys: %v", err)
	}
	if m := e.metric(t, "edge_config_last_reload_successful"); !strings.HasSuffix(m, " 0") {
		t.Fatalf("metric after a bad reload: %q", m)
	}
	if resp, _ := e.get(t, "api.example.com", "/"); resp.Header.Get("X-Backend") != "a" {
		t.Fatal("old config stopped serving after a bad reload")
	}

	e.writeConfig(cfg(b.addr))
	// The file watcher picks the change up by itself.
	eventually(t, 5*time.Second, func() bool {
		resp, _ := e.get(t, "api.example.com", "/")
		return resp.Header.Get("X-Backend") == "b"
	}, "the file change to be applied")
	if m := e.metric(t, "edge_config_last_reload_successful"); !strings.HasSuffix(m, " 1") {
		t.Fatalf("metric after a good reload: %q", m)
	}
	// The watcher skips a save with identical bytes; the admin endpoint
	// always recompiles (files the config names may have changed).
	if res, err := e.srv.Reload(TriggerFileChange); res != ReloadUnchanged || err != nil {
		t.Fatalf("identical bytes from the watcher: %s %v", res, err)
	}
	resp, err := http.Post("http://"+e.addrs.Admin+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), ReloadApplied) {
		t.Fatalf("POST /reload: %d %s", resp.StatusCode, body)
	}
}

// TestEmptyConfigRefusedAndSavingBackClearsTheAlert: an emptied file is
// refused by the watcher and by POST /reload with the reason, and once the
// running config is saved back, edge_config_last_reload_successful is 1
// again although nothing new is compiled (the alert on it must clear).
func TestEmptyConfigRefusedAndSavingBackClearsTheAlert(t *testing.T) {
	a := startBackend(t, "a", nil)
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"app\"\ntargets = [%q]\n[[routes]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\n", a.addr))
	running, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	reloadOK := func() string { return e.metric(t, "edge_config_last_reload_successful") }

	if err := os.WriteFile(e.cfgPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return strings.HasSuffix(reloadOK(), " 0") }, "the watcher to refuse the empty file")
	if !strings.Contains(e.stderr.String(), "no [[routes]]") {
		t.Errorf("the refusal does not say why:\n%s", e.stderr.String())
	}
	resp, body := e.get(t, "api.example.com", "/")
	if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "a" {
		t.Fatalf("after an emptied file: %d %q; the running config must keep serving", resp.StatusCode, body)
	}
	post, err := http.Post("http://"+e.addrs.Admin+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(post.Body)
	post.Body.Close()
	if post.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(answer), "no [[routes]]") {
		t.Fatalf("POST /reload of an empty file: %d %s", post.StatusCode, answer)
	}

	if err := os.WriteFile(e.cfgPath, running, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return strings.HasSuffix(reloadOK(), " 1") }, "the alert metric to return to 1 once the file holds the running config")
}

// TestReloadsUnderLoadDropNothing rewrites the config 40 times while eight
// clients keep sending requests. Each generation sets X-Gen, which the
// backends echo, so the test sees which config answered: every request must
// succeed, no client may see an older generation after a newer one (nor a
// half-applied file without X-Gen), and the last generation written must be
// the one serving at the end. Half the writes are atomic renames applied by
// POST /reload-style calls; the other half are in-place writes (truncate,
// then write, as `cat > edge.toml` and many editors do) left to the file
// watcher, some with the file empty or half-written for longer than the
// watcher's debounce.
func TestReloadsUnderLoadDropNothing(t *testing.T) {
	echoGen := func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "gen="+r.Header.Get("X-Gen")) }
	a := startBackend(t, "a", echoGen)
	b := startBackend(t, "b", echoGen)
	// X-Gen comes last, so a file cut just before it is a valid config
	// without it: applying a half-written file is visible as gen="".
	cfg := func(i int) string {
		return fmt.Sprintf("[[upstreams]]\nname = \"app\"\ntargets = [%q, %q]\n[[routes]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nset_request_headers = { \"X-Gen\" = \"%d\" }\n", a.addr, b.addr, i)
	}
	e := startEdge(t, cfg(0))
	state := filepath.Join(filepath.Dir(e.cfgPath), "state")

	var ok, failed atomic.Int64
	var lastSeen [8]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range lastSeen {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := e.client.Get(e.url("api.example.com", "/load"))
				if err != nil {
					if failed.Add(1) <= 5 {
						t.Errorf("request error: %v", err)
					}
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				gen, err := strconv.Atoi(strings.TrimPrefix(string(body), "gen="))
				switch {
				case resp.StatusCode != 200:
					if failed.Add(1) <= 5 {
						t.Errorf("status %d: %s", resp.StatusCode, body)
					}
				case err != nil:
					if failed.Add(1) <= 5 {
						t.Errorf("answer %q carries no generation: a half-written config went live", body)
					}
				case int64(gen) < lastSeen[w].Load():
					if failed.Add(1) <= 5 {
						t.Errorf("client %d saw generation %d after %d", w, gen, lastSeen[w].Load())
					}
				default:
					ok.Add(1)
					lastSeen[w].Store(int64(gen))
				}
			}
		})
	}

	const generations = 40
	for i := 1; i <= generations; i++ {
		full := []byte(baseConfig(state) + cfg(i))
		if i%2 == 1 {
			tmp := e.cfgPath + ".tmp"
			if err := os.WriteFile(tmp, full, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, e.cfgPath); err != nil {
				t.Fatal(err)
			}
			if res, err := e.srv.Reload(TriggerAdmin); err != nil || res != ReloadApplied {
				t.Fatalf("reload %d: %s %v", i, res, err)
			}
			continue
		}
		// Every fourth in-place write leaves the file empty for longer
		// than the watcher's debounce; the others write it in two parts,
		// cut just before X-Gen.
		emptyFor := time.Duration(0)
		if i%4 == 0 {
			emptyFor = 400 * time.Millisecond
		}
		cut := bytes.LastIndex(full, []byte("set_request_headers"))
		f, err := os.OpenFile(e.cfgPath, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(emptyFor)
		if _, err := f.Write(full[:cut]); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(full[cut:]); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The watcher applies the last in-place write on its own schedule.
	want := int64(generations)
	eventually(t, 15*time.Second, func() bool {
		resp, body := e.get(t, "api.example.com", "/final")
		return resp.StatusCode == 200 && body == fmt.Sprintf("gen=%d", want)
	}, fmt.Sprintf("generation %d, the last one written, to serve", want))
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d requests failed, %d succeeded during %d rewrites", failed.Load(), ok.Load(), generations)
	}
	if m := e.metric(t, "edge_config_last_reload_successful"); !strings.HasSuffix(m, " 1") {
		t.Errorf("after the last complete write: %q, want 1", m)
	}
	t.Logf("%d requests, 0 failed, during %d rewrites", ok.Load(), generations)
}

func TestHTTPListenerRedirectsWith308(t *testing.T) {
	e := startEdge(t, "[[routes]]\nname = \"r\"\npath = \"/\"\nrespond = { body = \"x\" }\n")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	_, httpsPort, _ := strings.Cut(e.addrs.HTTPS, ":")
	for _, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, "http://"+e.addrs.HTTP+"/a/b?x=1&y=2", strings.NewReader("body"))
		req.Host = "Example.com"
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := "https://example.com:" + httpsPort + "/a/b?x=1&y=2"
		if resp.StatusCode != 308 || resp.Header.Get("Location") != want {
			t.Fatalf("%s: %d %q, want 308 %q", method, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
}

func TestAccessLogLine(t *testing.T) {
	b := startBackend(t, "b", nil)
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"b\"\ntargets = [%q]\n[[routes]]\nname = \"api\"\npath = \"/api\"\nupstream = \"b\"\n", b.addr))
	e.get(t, "api.example.com", "/api/orders?token=SECRET123")
	e.stop()
	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(e.stdout.String()), "\n") {
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("access log line is not JSON: %q", l)
		}
	}
	for _, k := range []string{"time", "request_id", "client_ip", "method", "host", "path", "status", "bytes", "duration_ms", "route", "upstream", "target", "upstream_ms"} {
		if _, ok := line[k]; !ok {
			t.Errorf("access log line lacks %q: %v", k, line)
		}
	}
	if line["route"] != "api" || line["target"] != b.addr || line["status"] != float64(200) || line["path"] != "/api/orders" {
		t.Errorf("access log line: %v", line)
	}
	if strings.Contains(e.stdout.String(), "SECRET123") || strings.Contains(e.stderr.String(), "SECRET123") {
		t.Error("the query string (which may carry tokens) reached a log")
	}
}

// TestHSTSOnlyOverHTTPS: sent on HTTPS answers, and on plain HTTP only when a
// trusted load balancer says the client spoke HTTPS (TLS terminated there).
func TestHSTSOnlyOverHTTPS(t *testing.T) {
	e := startEdgeWith(t, "redirect_http = false\ntrusted_proxies = [\"127.0.0.1/32\"]", "",
		"[tls.hsts]\nmax_age = \"8760h\"\ninclude_subdomains = true\n[[routes]]\nname = \"r\"\npath = \"/\"\nrespond = { body = \"x\" }\n")
	const want = "max-age=31536000; includeSubDomains"
	resp, _ := e.get(t, "example.com", "/")
	if got := resp.Header.Get("Strict-Transport-Security"); got != want {
		t.Errorf("HTTPS: %q, want %q", got, want)
	}
	for proto, wantHSTS := range map[string]string{"https": want, "http": "", "": ""} {
		req, _ := http.NewRequest("GET", "http://"+e.addrs.HTTP+"/", nil)
		if proto != "" {
			req.Header.Set("X-Forwarded-Proto", proto)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Strict-Transport-Security"); got != wantHSTS {
			t.Errorf("plain HTTP with X-Forwarded-Proto %q: %q, want %q", proto, got, wantHSTS)
		}
	}
}

// TestHealthSurvivesReload: a target the health check took out stays out
// right after a reload that did not change it (no window of errors while a
// fresh checker learns again), and the new snapshot keeps checking it.
func TestHealthSurvivesReload(t *testing.T) {
	a := startBackend(t, "a", nil)
	b := startBackend(t, "b", nil)
	cfg := func(extra string) string {
		return fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q, %q]
retries = 0
[upstreams.health_check]
path = "/healthz"
interval = "100ms"
healthy_threshold = 1
unhealthy_threshold = 1
[upstreams.passive_health]
max_fails = 0
[[routes]]
name = "app"
path = "/"
upstream = "app"
%s`, a.addr, b.addr, extra)
	}
	e := startEdge(t, cfg(""))
	b.kill()
	down := fmt.Sprintf(`target=%q,upstream="app"} 0`, b.addr)
	eventually(t, 5*time.Second, func() bool { return strings.Contains(e.metric(t, "edge_upstream_target_healthy"), down) }, "b marked down")

	e.writeConfig(cfg("set_request_headers = { \"X-Gen\" = \"2\" }"))
	if res, err := e.srv.Reload(TriggerAdmin); err != nil || res != ReloadApplied {
		t.Fatalf("reload: %s %v", res, err)
	}
	if !strings.Contains(e.metric(t, "edge_upstream_target_healthy"), down) {
		t.Fatal("the reload forgot that b is down")
	}
	for i := 0; i < 10; i++ {
		if resp, body := e.get(t, "api.example.com", "/"); resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "a" {
			t.Fatalf("request %d after the reload: %d %q", i, resp.StatusCode, body)
		}
	}
	b.revive(t, nil)
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(e.metric(t, "edge_upstream_target_healthy"), fmt.Sprintf(`target=%q,upstream="app"} 1`, b.addr))
	}, "the new snapshot's checker to see b back")
}

// TestReadTimeoutIsAPauseNotADeadline: server.read_timeout bounds the pause
// while a body arrives (nginx client_body_timeout), never the life of a
// request: a stream may outlive it, and so may a slow but steady upload.
func TestReadTimeoutIsAPauseNotADeadline(t *testing.T) {
	sse := startBackend(t, "sse", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, err := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "got %d %v", n, err)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 8; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(400 * time.Millisecond)
		}
	})
	// read_timeout is the subject, so it is short, but each pause below is
	// a factor of four or more away from it, which a busy machine cannot
	// bridge.
	e := startEdgeWith(t, `read_timeout = "2s"`, "", fmt.Sprintf(`
[[upstreams]]
name = "sse"
targets = [%q]
[[routes]]
name = "sse"
path = "/"
upstream = "sse"
`, sse.addr))

	// 8 events over 3.2 s: past read_timeout, the stream goes on.
	resp, body := e.get(t, "api.example.com", "/events")
	if resp.StatusCode != 200 || strings.Count(body, "data:") != 8 {
		t.Fatalf("stream cut: %d %q", resp.StatusCode, body)
	}

	upload := func(client *http.Client, pause time.Duration, parts int) (*http.Response, string) {
		t.Helper()
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < parts; i++ {
				_, _ = pw.Write([]byte("part,"))
				time.Sleep(pause)
			}
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", e.url("api.example.com", "/upload"), pr)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, client := range []*http.Client{e.client, e.h2} {
		// Pauses of 500 ms, 2.5 s in all: arrives whole.
		resp, body := upload(client, 500*time.Millisecond, 5)
		if resp.StatusCode != 200 || body != "got 25 <nil>" {
			t.Fatalf("%s slow steady upload: %d %q", resp.Proto, resp.StatusCode, body)
		}
		// A pause longer than read_timeout: 408.
		resp, body = upload(client, 8*time.Second, 1)
		assertAPIError(t, resp, body, 408, 40801)
	}
}

// TestAccessLogPerRouteAndMaskedQuery: a route with access = false writes
// no line while its neighbour does; the logged query hides the values of
// log.mask_query names (here "sign" beside the defaults it replaces) while
// the upstream still receives every real value; the line carries exactly
// the fields of log.access_fields.
func TestAccessLogPerRouteAndMaskedQuery(t *testing.T) {
	b := startBackend(t, "b", nil)
	e := startEdgeWith(t, "", "mask_query = [\"code\", \"sign\"]\naccess_fields = [\"route\", \"status\", \"query\", \"user_agent\"]", fmt.Sprintf(`[[upstreams]]
name = "b"
targets = [%q]
[[routes]]
name = "quiet"
path = "/health"
upstream = "b"
access = false
[[routes]]
name = "api"
path = "/api"
upstream = "b"
`, b.addr))
	if _, body := e.get(t, "api.example.com", "/health/deep?probe=QUIETMARK"); !strings.Contains(body, "QUIETMARK") {
		t.Fatalf("quiet route answered %q", body)
	}
	_, body := e.get(t, "api.example.com", "/api/login?code=CODE123&Sign=SIGN456&page=2&token=KEPT789")
	if want := "b GET /api/login?code=CODE123&Sign=SIGN456&page=2&token=KEPT789"; body != want {
		t.Fatalf("upstream got %q, want %q", body, want)
	}
	e.stop()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(e.stdout.String()), "\n") {
		var line map[string]any
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("access log line is not JSON: %q", l)
		}
		lines = append(lines, line)
	}
	if len(lines) != 1 || lines[0]["route"] != "api" {
		t.Fatalf("want exactly one line, for route api: %v", lines)
	}
	if q := lines[0]["query"]; q != "code=***&Sign=***&page=2&token=KEPT789" {
		t.Errorf("logged query %q", q)
	}
	if len(lines[0]) != 4 || lines[0]["status"] != float64(200) || !strings.HasPrefix(fmt.Sprint(lines[0]["user_agent"]), "Go-http-client/") {
		t.Errorf("want route, status, query and user_agent: %v", lines[0])
	}
	if s := e.stdout.String() + e.stderr.String(); strings.Contains(s, "CODE123") || strings.Contains(s, "SIGN456") || strings.Contains(s, "QUIETMARK") {
		t.Error("a masked value or the quiet route's request reached a log")
	}
}

// TestAccessLogTextFormat: with log.access_format each request is one text
// line of the template, nginx's combined format here with edge's openid
// for $remote_user, and the masked query; no JSON line is written.
func TestAccessLogTextFormat(t *testing.T) {
	b := startBackend(t, "b", nil)
	e := startEdgeWith(t, "", `access_format = '$remote_addr - $openid [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $route $upstream_addr'`, fmt.Sprintf(`[[upstreams]]
name = "b"
targets = [%q]
[[routes]]
name = "api"
path = "/api"
upstream = "b"
`, b.addr))
	resp, _ := e.do(t, "GET", e.url("api.example.com", "/api/orders?code=CODE123&page=2"), nil, http.Header{"User-Agent": {`MicroMessenger "8.0"`}})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	e.stop()
	line := strings.TrimSpace(e.stdout.String())
	re := regexp.MustCompile(`^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /api/orders\?code=\*\*\*&page=2 HTTP/1\.1" 200 \d+ "-" "MicroMessenger \\x228\.0\\x22" api ` + regexp.QuoteMeta(b.addr) + `$`)
	if !re.MatchString(line) {
		t.Fatalf("access log:\n%s", line)
	}
}

// TestChunkedBodyOverLimitNeverReachesUpstream: a body of unknown length
// (chunked over HTTP/1.1, no content-length over HTTP/2) that turns out
// larger than max_body is refused with 413 and the upstream never sees
// the request, neither once nor retried.
func TestChunkedBodyOverLimitNeverReachesUpstream(t *testing.T) {
	b := startBackend(t, "b", nil)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "b"
targets = [%q]
[[routes]]
name = "small"
path = "/upload"
upstream = "b"
max_body = "1KB"
`, b.addr))
	for _, client := range []*http.Client{e.client, e.h2} {
		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write([]byte(strings.Repeat("y", 4096)))
			pw.Close()
		}()
		req, err := http.NewRequest("POST", e.url("api.example.com", "/upload"), pr)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assertAPIError(t, resp, string(body), 413, 41301)
		if n := b.count(); n != 0 {
			t.Fatalf("%s: the upstream got %d requests of a body over max_body", resp.Proto, n)
		}
	}
}

// TestChunkedBodyWithinLimitArrivesWhole: a body of unknown length within
// max_body, larger than edge holds in memory, reaches the upstream whole,
// with a Content-Length (read whole first, the rest of it on disk).
func TestChunkedBodyWithinLimitArrivesWhole(t *testing.T) {
	type got struct {
		length int64
		te     []string
		sum    [32]byte
	}
	seen := make(chan got, 2)
	b := startBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		seen <- got{r.ContentLength, r.TransferEncoding, sha256.Sum256(data)}
	})
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "b"
targets = [%q]
[[routes]]
name = "upload"
path = "/upload"
upstream = "b"
max_body = "1MB"
`, b.addr))
	payload := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16)
	// Without the collector, no finalizer closes a file edge left open.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for _, client := range []*http.Client{e.client, e.h2} {
		pr, pw := io.Pipe()
		go func() {
			for chunk := range slices.Chunk(payload, 7000) {
				_, _ = pw.Write(chunk)
			}
			pw.Close()
		}()
		req, err := http.NewRequest("POST", e.url("api.example.com", "/upload"), pr)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", resp.Proto, resp.StatusCode)
		}
		g := <-seen
		if g.length != int64(len(payload)) || len(g.te) != 0 || g.sum != sha256.Sum256(payload) {
			t.Fatalf("%s: the upstream got length %d, transfer encoding %q, the same bytes: %t", resp.Proto, g.length, g.te, g.sum == sha256.Sum256(payload))
		}
	}
	// The part of each body that went to disk is closed with its request:
	// no file stays open behind a client that sends many.
	eventually(t, 10*time.Second, func() bool { return openSpoolFiles(t) == 0 }, "no spooled body file left open")
}

// openSpoolFiles counts this process's open files that are request bodies
// spooled to disk (unlinked, so only /proc/self/fd still names them).
func openSpoolFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("reading open files: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.Contains(target, "edge-body-") {
			n++
		}
	}
	return n
}
