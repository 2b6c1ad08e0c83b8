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
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/bcrypt"
)

// clients are the two protocols every answer step is tested over.
func (e *edgeUnderTest) clients() map[string]*http.Client {
	return map[string]*http.Client{"h1": e.client, "h2": e.h2}
}

func send(t *testing.T, c *http.Client, method, url string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func jsonCode(t *testing.T, body []byte) int {
	t.Helper()
	var v struct{ Code int }
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body %q is not the JSON error: %v", body, err)
	}
	return v.Code
}

func hasVary(h http.Header, name string) bool {
	for _, v := range h.Values("Vary") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), name) {
				return true
			}
		}
	}
	return false
}

// TestCORS: allowed origins (exact and subdomain wildcard) are reflected
// with Vary: Origin and the upstream's own CORS headers are replaced;
// others pass to the upstream with no CORS headers; preflights are
// answered by edge and never reach the upstream.
func TestCORS(t *testing.T) {
	be := startBackend(t, "app", func(w http.ResponseWriter, r *http.Request) {
		// An upstream that allows everyone must not widen the allow-list.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		fmt.Fprint(w, "hello")
	})
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q]

[[routes]]
name = "api"
path = "/api/"
upstream = "app"
[routes.cors]
origins = ["https://h5.example.com", "https://*.example.com"]
expose_headers = ["X-Request-Id"]
credentials = true
max_age = "5m"

[[routes]]
name = "posts"
path = "/posts/"
methods = ["POST"]
upstream = "app"
cors = { origins = ["https://h5.example.com"] }
`, be.addr))
	url := e.url("api.example.com", "/api/x")
	for proto, c := range e.clients() {
		t.Run(proto, func(t *testing.T) {
			for _, origin := range []string{"https://h5.example.com", "https://a.b.example.com"} {
				resp, body := send(t, c, "GET", url, http.Header{"Origin": {origin}})
				h := resp.Header
				if resp.StatusCode != 200 || string(body) != "hello" {
					t.Fatalf("%s: %d %q", origin, resp.StatusCode, body)
				}
				if got := h.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != origin {
					t.Errorf("%s: Access-Control-Allow-Origin %q, want only the origin", origin, got)
				}
				if h.Get("Access-Control-Allow-Credentials") != "true" || h.Get("Access-Control-Expose-Headers") != "X-Request-Id" || !hasVary(h, "Origin") {
					t.Errorf("%s: headers %v", origin, h)
				}
			}
			for _, origin := range []string{"https://evil-example.com", "https://example.com.evil.test", "http://h5.example.com", "https://example.com", "https://h5.example.com:8443", "null"} {
				before := be.count()
				resp, body := send(t, c, "GET", url, http.Header{"Origin": {origin}})
				if resp.StatusCode != 200 || string(body) != "hello" || be.count() != before+1 {
					t.Fatalf("%s: %d %q; a disallowed origin's request still goes upstream", origin, resp.StatusCode, body)
				}
				for k := range resp.Header {
					if strings.HasPrefix(k, "Access-Control-") {
						t.Errorf("%s: %s: %q sent to a disallowed origin", origin, k, resp.Header.Get(k))
					}
				}
				if !hasVary(resp.Header, "Origin") {
					t.Errorf("%s: no Vary: Origin", origin)
				}
			}

			before := be.count()
			resp, body := send(t, c, "OPTIONS", url, http.Header{
				"Origin":                         {"https://h5.example.com"},
				"Access-Control-Request-Method":  {"PUT"},
				"Access-Control-Request-Headers": {"content-type, x-edge-signature"},
			})
			h := resp.Header
			if resp.StatusCode != http.StatusNoContent || len(body) != 0 {
				t.Fatalf("preflight: %d %q", resp.StatusCode, body)
			}
			if h.Get("Access-Control-Allow-Origin") != "https://h5.example.com" || h.Get("Access-Control-Allow-Methods") != "GET, HEAD, POST, PUT, PATCH, DELETE" ||
				h.Get("Access-Control-Allow-Headers") != "content-type, x-edge-signature" || h.Get("Access-Control-Max-Age") != "300" ||
				h.Get("Access-Control-Allow-Credentials") != "true" {
				t.Errorf("preflight headers: %v", h)
			}
			resp, body = send(t, c, "OPTIONS", url, http.Header{"Origin": {"https://evil-example.com"}, "Access-Control-Request-Method": {"POST"}})
			if resp.StatusCode != 403 || jsonCode(t, body) != 40301 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("preflight from a disallowed origin: %d %q %v", resp.StatusCode, body, resp.Header)
			}
			resp, body = send(t, c, "OPTIONS", e.url("api.example.com", "/posts/x"), http.Header{"Origin": {"https://h5.example.com"}, "Access-Control-Request-Method": {"POST"}})
			if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Methods") != "POST" {
				t.Errorf("preflight to a POST-only route: %d %q %v", resp.StatusCode, body, resp.Header)
			}
			if n := be.count() - before; n != 0 {
				t.Errorf("%d preflights reached the upstream", n)
			}
		})
	}
}

// TestBasicAuth: an htpasswd file of bcrypt hashes guards a route; a
// refusal is a 401 with the challenge and the JSON body (which a CORS
// page can read), the Authorization header stays at edge unless
// forwarded, and a reload reads the edited file.
func TestBasicAuth(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "htpasswd")
	writeUsers := func(pass string) {
		hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(users, []byte("ops:"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeUsers("first-pass")
	be := startBackend(t, "app", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "auth=%q", r.Header.Get("Authorization"))
	})
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q]

[[routes]]
name = "admin"
path = "/admin/"
upstream = "app"
cors = { origins = ["https://h5.example.com"] }
auth_basic = { user_file = %q, realm = "ops area" }

[[routes]]
name = "fwd"
path = "/fwd/"
upstream = "app"
auth_basic = { user_file = %q, forward_authorization = true }
`, be.addr, users, users))
	basic := func(user, pass string) http.Header {
		return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}, "Origin": {"https://h5.example.com"}}
	}
	url := e.url("api.example.com", "/admin/x")
	for proto, c := range e.clients() {
		t.Run(proto, func(t *testing.T) {
			before := be.count()
			for name, hdr := range map[string]http.Header{
				"missing":      {"Origin": {"https://h5.example.com"}},
				"wrong pass":   basic("ops", "nope"),
				"unknown user": basic("root", "first-pass"),
				"bearer":       {"Authorization": {"Bearer x"}, "Origin": {"https://h5.example.com"}},
				"not base64":   {"Authorization": {"Basic ***"}, "Origin": {"https://h5.example.com"}},
			} {
				resp, body := send(t, c, "GET", url, hdr)
				if resp.StatusCode != 401 || jsonCode(t, body) != 40107 {
					t.Errorf("%s: %d %q", name, resp.StatusCode, body)
				}
				if got := resp.Header.Get("Www-Authenticate"); got != `Basic realm="ops area", charset="UTF-8"` {
					t.Errorf("%s: WWW-Authenticate %q", name, got)
				}
				if resp.Header.Get("Access-Control-Allow-Origin") != "https://h5.example.com" {
					t.Errorf("%s: the 401 has no CORS headers, so the page cannot read it", name)
				}
			}
			if be.count() != before {
				t.Errorf("refused requests reached the upstream")
			}
			resp, body := send(t, c, "GET", url, basic("ops", "first-pass"))
			if resp.StatusCode != 200 || string(body) != `auth=""` {
				t.Errorf("right credentials: %d %q (Authorization must not be forwarded)", resp.StatusCode, body)
			}
			// Twice: the second is answered from the verified cache.
			resp, body = send(t, c, "GET", e.url("api.example.com", "/fwd/x"), basic("ops", "first-pass"))
			if resp.StatusCode != 200 || !strings.Contains(string(body), "Basic ") {
				t.Errorf("forward_authorization: %d %q", resp.StatusCode, body)
			}
		})
	}

	writeUsers("second-pass")
	if res, err := e.srv.Reload(TriggerAdmin); err != nil || res != ReloadApplied {
		t.Fatalf("reload: %s %v", res, err)
	}
	if resp, _ := send(t, e.client, "GET", url, basic("ops", "first-pass")); resp.StatusCode != 401 {
		t.Errorf("old password after the reload: %d", resp.StatusCode)
	}
	if resp, body := send(t, e.client, "GET", url, basic("ops", "second-pass")); resp.StatusCode != 200 {
		t.Errorf("new password after the reload: %d %q", resp.StatusCode, body)
	}
}

// TestErrorPages: an upstream's 503 and edge's own 502 are replaced by the
// route's page with their status; other statuses and routes without pages
// keep their answers, edge's in the JSON house style.
func TestErrorPages(t *testing.T) {
	dir := t.TempDir()
	page := filepath.Join(dir, "50x.html")
	if err := os.WriteFile(page, []byte("<h1>back soon</h1>"), 0o600); err != nil {
		t.Fatal(err)
	}
	be := startBackend(t, "app", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/site/busy":
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Etag", `"x"`)
			w.WriteHeader(503)
			fmt.Fprint(w, "stack trace the client must not see")
		case "/site/missing":
			w.WriteHeader(404)
			fmt.Fprint(w, "upstream 404")
		default:
			fmt.Fprint(w, "fine")
		}
	})
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q]

[[upstreams]]
name = "dead"
targets = [%q]

[[routes]]
name = "site"
path = "/site/"
upstream = "app"
error_pages = [{ status = [502, 503, 504], file = %q }]

[[routes]]
name = "down"
path = "/down/"
upstream = "dead"
error_pages = [{ status = [502], body = '{"code":1,"msg":"maintenance"}', content_type = "application/json" }]

[[routes]]
name = "plain"
path = "/plain/"
upstream = "dead"

[[routes]]
name = "released"
path = "/released/"
upstream = "app"
error_pages = [{ status = [502], body = "next is down" }]
[routes.release]
upstream = "dead"
weight = 100
`, be.addr, deadAddr(t), page))
	for proto, c := range e.clients() {
		t.Run(proto, func(t *testing.T) {
			cases := []struct {
				path, ctype, body string
				status            int
			}{
				{"/site/busy", "text/html; charset=utf-8", "<h1>back soon</h1>", 503},
				{"/site/missing", "", "upstream 404", 404},
				{"/site/ok", "", "fine", 200},
				{"/down/x", "application/json", `{"code":1,"msg":"maintenance"}`, 502},
				// The release's next version gets the route's pages too.
				{"/released/x", "text/html; charset=utf-8", "next is down", 502},
			}
			for _, tc := range cases {
				resp, body := send(t, c, "GET", e.url("api.example.com", tc.path), nil)
				if resp.StatusCode != tc.status || string(body) != tc.body || (tc.ctype != "" && resp.Header.Get("Content-Type") != tc.ctype) {
					t.Errorf("%s: %d %q %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
				}
				if tc.ctype != "" && (resp.Header.Get("Etag") != "" || resp.Header.Get("Cache-Control") != "no-store") {
					t.Errorf("%s: the page kept the replaced answer's headers: %v", tc.path, resp.Header)
				}
			}
			resp, body := send(t, c, "GET", e.url("api.example.com", "/plain/x"), nil)
			if resp.StatusCode != 502 || jsonCode(t, body) != 50201 {
				t.Errorf("no pages: %d %q, want the JSON house style", resp.StatusCode, body)
			}
			resp, body = send(t, c, "HEAD", e.url("api.example.com", "/site/busy"), nil)
			if resp.StatusCode != 503 || len(body) != 0 {
				t.Errorf("HEAD: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestCompression: brotli, zstd and gzip chosen by Accept-Encoding
// weights (the route's order breaks ties) and decoded back to the body;
// gzip = true routes still offer gzip alone.
func TestCompression(t *testing.T) {
	payload := `{"items":[` + strings.Repeat(`{"id":1234567,"name":"mini-program item","price":99.5},`, 100) + `{}]}`
	be := startBackend(t, "app", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, payload)
	})
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q]

[[routes]]
name = "all"
path = "/all/"
upstream = "app"
compress = ["br", "zstd", "gzip"]

[[routes]]
name = "gz"
path = "/gz/"
upstream = "app"
gzip = true
`, be.addr))
	cases := []struct{ path, accept, want string }{
		{"/all/", "gzip, deflate, br, zstd", "br"},
		{"/all/", "gzip;q=1, br;q=0.5, zstd;q=0.8", "gzip"},
		{"/all/", "br;q=0.5, zstd", "zstd"},
		{"/all/", "br;q=0, *;q=0.3", "zstd"},
		{"/all/", "*", "br"},
		{"/all/", "br;q=0, zstd;q=0, gzip;q=0", ""},
		{"/all/", "identity", ""},
		{"/gz/", "br, zstd, gzip", "gzip"},
		{"/gz/", "br, zstd", ""},
	}
	for proto, c := range e.clients() {
		t.Run(proto, func(t *testing.T) {
			for _, tc := range cases {
				resp, body := send(t, c, "GET", e.url("api.example.com", tc.path+"x"), http.Header{"Accept-Encoding": {tc.accept}})
				if got := resp.Header.Get("Content-Encoding"); got != tc.want {
					t.Errorf("%s %q: Content-Encoding %q, want %q", tc.path, tc.accept, got, tc.want)
					continue
				}
				if !hasVary(resp.Header, "Accept-Encoding") {
					t.Errorf("%s %q: no Vary: Accept-Encoding", tc.path, tc.accept)
				}
				if got := decode(t, tc.want, body); got != payload {
					t.Errorf("%s %q: decoded body differs (%d bytes, want %d)", tc.path, tc.accept, len(got), len(payload))
				}
				if tc.want != "" && len(body) >= len(payload)/4 {
					t.Errorf("%s: %d compressed bytes of %d", tc.want, len(body), len(payload))
				}
			}
		})
	}
}

func decode(t *testing.T, coding string, body []byte) string {
	t.Helper()
	var r io.Reader
	switch coding {
	case "":
		return string(body)
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "gzip":
		gr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r = gr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", coding, err)
	}
	return string(b)
}

// TestPrecompressedStatic: app.js.br and app.js.gz are served for app.js
// when the client accepts them, with the file's type, the coding and
// Vary; a file without variants is served as it is.
func TestPrecompressedStatic(t *testing.T) {
	site := t.TempDir()
	js := strings.Repeat("console.log('edge');\n", 200)
	var br, gz bytes.Buffer
	bw := brotli.NewWriter(&br)
	_, _ = io.WriteString(bw, js)
	_ = bw.Close()
	gw := gzip.NewWriter(&gz)
	_, _ = io.WriteString(gw, js)
	_ = gw.Close()
	for name, body := range map[string][]byte{"app.js": []byte(js), "app.js.br": br.Bytes(), "app.js.gz": gz.Bytes(), "style.css": []byte("body{}")} {
		if err := os.WriteFile(filepath.Join(site, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e := startEdge(t, fmt.Sprintf(`
[[routes]]
name = "site"
path = "/"
static = %q
precompressed = true
`, site))
	cases := []struct{ path, accept, want string }{
		{"/app.js", "gzip, br", "br"},
		{"/app.js", "gzip", "gzip"},
		{"/app.js", "br;q=0.1, gzip", "gzip"},
		{"/app.js", "zstd", ""},
		{"/app.js", "", ""},
		{"/style.css", "br, gzip", ""},
	}
	for proto, c := range e.clients() {
		t.Run(proto, func(t *testing.T) {
			for _, tc := range cases {
				hdr := http.Header{"Accept-Encoding": {tc.accept}}
				resp, body := send(t, c, "GET", e.url("api.example.com", tc.path), hdr)
				if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != tc.want || !hasVary(resp.Header, "Accept-Encoding") {
					t.Errorf("%s %q: %d, Content-Encoding %q, want %q; %v", tc.path, tc.accept, resp.StatusCode, resp.Header.Get("Content-Encoding"), tc.want, resp.Header)
					continue
				}
				if tc.path == "/app.js" {
					if ct := resp.Header.Get("Content-Type"); ct != "text/javascript; charset=utf-8" {
						t.Errorf("%q: Content-Type %q", tc.accept, ct)
					}
					if got := decode(t, tc.want, body); got != js {
						t.Errorf("%q: decoded body differs", tc.accept)
					}
				}
			}
		})
	}
}
