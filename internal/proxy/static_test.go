package proxy

import (
	"bufio"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const staticOutsideSecret = "TOP-SECRET-OUTSIDE-ROOT"

// staticTree lays out a site in a temporary directory, with a secret file
// beside the root that no request may ever read, and returns the root.
func staticTree(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "site")
	files := map[string]string{
		"index.html":                "<html>home</html>",
		"app.js":                    "console.log(1)",
		"Logo.PNG":                  "\x89PNG\r\n\x1a\nimage",
		"README":                    "plain words, no extension",
		"digits.txt":                "0123456789abcdefghij",
		"docs/index.html":           "<html>docs</html>",
		"docs/page.html":            "<html>page</html>",
		"empty/.keep":               "",
		".env":                      "SECRET=1",
		".git/config":               "[core]",
		"sub/.hidden":               "hidden",
		".well-known/security.txt":  "Contact: mailto:sec@example.com",
		"with space/file name.json": `{"ok":true}`,
	}
	for name, body := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(dir, "secret.txt")
	if err := os.WriteFile(secret, []byte(staticOutsideSecret), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"link-out":     secret,
		"link-out-rel": "../secret.txt",
		"link-dir-out": dir,
		"link-in":      "app.js",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("mkfifo", filepath.Join(root, "fifo")).CombinedOutput(); err != nil {
		t.Fatalf("mkfifo: %v: %s", err, out)
	}
	return root
}

func staticServer(t *testing.T, opts StaticOptions) *httptest.Server {
	t.Helper()
	h, err := NewStatic(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// staticRawRequest sends target exactly as written, so that the tests control
// every byte of the request line that a client library would normalise.
func staticRawRequest(t *testing.T, addr, method, target string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n")
	for k, v := range hdr {
		b.WriteString(k + ": " + v + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %q: reading body: %v", method, target, err)
	}
	resp.Body.Close()
	return resp, body
}

func staticErrorCode(t *testing.T, body []byte) int {
	t.Helper()
	var e struct {
		Code int `json:"code"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.Code
}

func TestStaticServes(t *testing.T) {
	root := staticTree(t)
	plain := staticServer(t, StaticOptions{Root: root})
	spa := staticServer(t, StaticOptions{Root: root, SPA: true})
	prefixed := staticServer(t, StaticOptions{Root: root, StripPrefix: "/app/", SPA: true})

	tests := []struct {
		name     string
		srv      *httptest.Server
		method   string
		target   string
		status   int
		body     string
		ctype    string
		location string
		code     int
	}{
		{"root index", plain, "GET", "/", 200, "<html>home</html>", "text/html; charset=utf-8", "", 0},
		{"file", plain, "GET", "/app.js", 200, "console.log(1)", "text/javascript; charset=utf-8", "", 0},
		{"extension in upper case", plain, "GET", "/Logo.PNG", 200, "\x89PNG\r\n\x1a\nimage", "image/png", "", 0},
		{"sniffed type", plain, "GET", "/README", 200, "plain words, no extension", "text/plain; charset=utf-8", "", 0},
		{"escaped space", plain, "GET", "/with%20space/file%20name.json", 200, `{"ok":true}`, "application/json", "", 0},
		{"dir index", plain, "GET", "/docs/", 200, "<html>docs</html>", "text/html; charset=utf-8", "", 0},
		{"index by name", plain, "GET", "/docs/index.html", 200, "<html>docs</html>", "text/html; charset=utf-8", "", 0},
		{"dir redirect", plain, "GET", "/docs", 301, "", "", "/docs/", 0},
		{"dir redirect keeps query", plain, "GET", "/docs?a=1&b=%2F", 301, "", "", "/docs/?a=1&b=%2F", 0},
		{"dir redirect keeps escapes", plain, "GET", "/with%20space", 301, "", "", "/with%20space/", 0},
		{"dir without index", plain, "GET", "/empty/", 404, "", "", "", 40401},
		{"file as dir", plain, "GET", "/app.js/", 404, "", "", "", 40401},
		{"missing", plain, "GET", "/nope", 404, "", "", "", 40401},
		{"well-known", plain, "GET", "/.well-known/security.txt", 200, "Contact: mailto:sec@example.com", "text/plain; charset=utf-8", "", 0},
		{"symlink inside", plain, "GET", "/link-in", 200, "console.log(1)", "", "", 0},
		{"fifo", plain, "GET", "/fifo", 404, "", "", "", 40401},
		{"head", plain, "HEAD", "/app.js", 200, "", "text/javascript; charset=utf-8", "", 0},
		{"post", plain, "POST", "/app.js", 405, "", "", "", 40501},
		{"delete", plain, "DELETE", "/", 405, "", "", "", 40501},
		{"spa route", spa, "GET", "/users/42", 200, "<html>home</html>", "text/html; charset=utf-8", "", 0},
		{"spa route slash", spa, "GET", "/users/", 200, "<html>home</html>", "text/html; charset=utf-8", "", 0},
		{"spa missing asset", spa, "GET", "/missing.js", 404, "", "", "", 40401},
		{"spa missing nested asset", spa, "GET", "/static/v2.0/chunk", 200, "<html>home</html>", "", "", 0},
		{"spa dir without index", spa, "GET", "/empty/", 404, "", "", "", 40401},
		{"spa hidden", spa, "GET", "/.env", 404, "", "", "", 40401},
		{"spa existing file", spa, "GET", "/docs/page.html", 200, "<html>page</html>", "", "", 0},
		{"prefix file", prefixed, "GET", "/app/app.js", 200, "console.log(1)", "", "", 0},
		{"prefix root redirect", prefixed, "GET", "/app", 301, "", "", "/app/", 0},
		{"prefix root", prefixed, "GET", "/app/", 200, "<html>home</html>", "", "", 0},
		{"prefix dir redirect", prefixed, "GET", "/app/docs?x=1", 301, "", "", "/app/docs/?x=1", 0},
		{"prefix spa", prefixed, "GET", "/app/users/1", 200, "<html>home</html>", "", "", 0},
		{"outside prefix", prefixed, "GET", "/app.js", 404, "", "", "", 40401},
		{"prefix not at a segment", prefixed, "GET", "/application", 404, "", "", "", 40401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := staticRawRequest(t, tt.srv.Listener.Addr().String(), tt.method, tt.target, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			if tt.code != 0 {
				if got := staticErrorCode(t, body); got != tt.code {
					t.Errorf("code %d, want %d", got, tt.code)
				}
				if tt.code == 40501 && resp.Header.Get("Allow") != "GET, HEAD" {
					t.Errorf("Allow %q", resp.Header.Get("Allow"))
				}
				return
			}
			if tt.body != "" && string(body) != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if tt.method == "HEAD" && (len(body) != 0 || resp.ContentLength != int64(len("console.log(1)"))) {
				t.Errorf("HEAD: body %q, length %d", body, resp.ContentLength)
			}
			if tt.ctype != "" && resp.Header.Get("Content-Type") != tt.ctype {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tt.ctype)
			}
			if got := resp.Header.Get("Location"); got != tt.location {
				t.Errorf("Location %q, want %q", got, tt.location)
			}
			if tt.status == 200 {
				if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
					t.Error("no X-Content-Type-Options: nosniff")
				}
				if et := resp.Header.Get("Etag"); !strings.HasPrefix(et, `"`) {
					t.Errorf("ETag %q is not strong", et)
				}
				if resp.Header.Get("Last-Modified") == "" {
					t.Error("no Last-Modified")
				}
			}
		})
	}
}

// TestStaticRefusesEscapes sends every way out of the root we know of. None
// may answer 200, and no answer may hold the file beside the root.
func TestStaticRefusesEscapes(t *testing.T) {
	root := staticTree(t)
	srv := staticServer(t, StaticOptions{Root: root, SPA: true})
	prefixed := staticServer(t, StaticOptions{Root: root, StripPrefix: "/app"})
	targets := []string{
		"/../secret.txt",
		"/docs/../../secret.txt",
		"/%2e%2e/secret.txt",
		"/%2E%2E/secret.txt",
		"/docs/%2e%2e/%2e%2e/secret.txt",
		"/..%2fsecret.txt",
		"/..%2Fsecret.txt",
		"/docs%2F..%2F..%2Fsecret.txt",
		"/docs%2findex.html",
		"/docs%5cindex.html",
		"/..%5csecret.txt",
		`/..\secret.txt`,
		`/docs\..\..\secret.txt`,
		"/link-out",
		"/link-out-rel",
		"/link-dir-out/secret.txt",
		"/%00",
		"/index.html%00.js",
		"/app.js%00",
		"/.env",
		"/.git/config",
		"/sub/.hidden",
		"/./index.html",
		"/docs/./index.html",
		"/docs/../index.html",
		"//secret.txt",
		"/docs//index.html",
		"/./",
		"/..",
		"/.well-known/../../secret.txt",
		"/users/..%2f..%2fsecret.txt",
	}
	check := func(t *testing.T, srv *httptest.Server, target string) {
		resp, body := staticRawRequest(t, srv.Listener.Addr().String(), "GET", target, nil)
		if strings.Contains(string(body), staticOutsideSecret) {
			t.Fatalf("%q leaked the secret", target)
		}
		switch resp.StatusCode {
		case 400:
			// net/http refused the request line before the handler ran.
		case 404:
			if code := staticErrorCode(t, body); code != 40401 {
				t.Errorf("%q: code %d", target, code)
			}
		default:
			t.Errorf("%q: status %d (body %q)", target, resp.StatusCode, body)
		}
	}
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			check(t, srv, target)
			check(t, prefixed, "/app"+target)
		})
	}
}

func TestStaticConditionalAndRange(t *testing.T) {
	root := staticTree(t)
	srv := staticServer(t, StaticOptions{Root: root})
	addr := srv.Listener.Addr().String()
	first, _ := staticRawRequest(t, addr, "GET", "/digits.txt", nil)
	etag, lastMod := first.Header.Get("Etag"), first.Header.Get("Last-Modified")

	tests := []struct {
		name   string
		hdr    map[string]string
		status int
		body   string
	}{
		{"if-none-match", map[string]string{"If-None-Match": etag}, 304, ""},
		{"if-none-match weak", map[string]string{"If-None-Match": "W/" + etag}, 304, ""},
		{"if-none-match list", map[string]string{"If-None-Match": `"other", ` + etag}, 304, ""},
		{"if-none-match other", map[string]string{"If-None-Match": `"other"`}, 200, "0123456789abcdefghij"},
		{"if-modified-since", map[string]string{"If-Modified-Since": lastMod}, 304, ""},
		{"if-modified-since earlier", map[string]string{"If-Modified-Since": "Mon, 02 Jan 2006 15:04:05 GMT"}, 200, "0123456789abcdefghij"},
		{"range", map[string]string{"Range": "bytes=2-5"}, 206, "2345"},
		{"suffix range", map[string]string{"Range": "bytes=-3"}, 206, "hij"},
		{"if-range match", map[string]string{"Range": "bytes=0-0", "If-Range": etag}, 206, "0"},
		{"if-range stale", map[string]string{"Range": "bytes=0-0", "If-Range": `"old"`}, 200, "0123456789abcdefghij"},
		{"unsatisfiable", map[string]string{"Range": "bytes=50-60"}, 416, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := staticRawRequest(t, addr, "GET", "/digits.txt", tt.hdr)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status != 416 && string(body) != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if tt.status == 304 && resp.Header.Get("Etag") != etag {
				t.Errorf("304 ETag %q, want %q", resp.Header.Get("Etag"), etag)
			}
		})
	}

	t.Run("multi range", func(t *testing.T) {
		resp, body := staticRawRequest(t, addr, "GET", "/digits.txt", map[string]string{"Range": "bytes=0-1,10-12"})
		if resp.StatusCode != 206 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/byteranges" {
			t.Fatalf("Content-Type %q: %v", resp.Header.Get("Content-Type"), err)
		}
		mr := multipart.NewReader(strings.NewReader(string(body)), params["boundary"])
		want := []struct{ rng, body string }{{"bytes 0-1/20", "01"}, {"bytes 10-12/20", "abc"}}
		for i, w := range want {
			part, err := mr.NextPart()
			if err != nil {
				t.Fatalf("part %d: %v", i, err)
			}
			got, _ := io.ReadAll(part)
			if part.Header.Get("Content-Range") != w.rng || string(got) != w.body {
				t.Errorf("part %d: %q %q, want %q %q", i, part.Header.Get("Content-Range"), got, w.rng, w.body)
			}
		}
		if _, err := mr.NextPart(); err != io.EOF {
			t.Errorf("extra part: %v", err)
		}
	})

	t.Run("etag follows the file", func(t *testing.T) {
		later := time.Now().Add(time.Hour)
		if err := os.Chtimes(filepath.Join(root, "digits.txt"), later, later); err != nil {
			t.Fatal(err)
		}
		resp, body := staticRawRequest(t, addr, "GET", "/digits.txt", map[string]string{"If-None-Match": etag})
		if resp.StatusCode != 200 || string(body) != "0123456789abcdefghij" {
			t.Fatalf("status %d body %q after touch", resp.StatusCode, body)
		}
		if resp.Header.Get("Etag") == etag {
			t.Error("ETag did not change with the modification time")
		}
	})
}

// TestStaticFollowsRootSwap checks the deploy pattern of switching a
// symlink to a new release: no reload may be needed.
func TestStaticFollowsRootSwap(t *testing.T) {
	dir := t.TempDir()
	for _, rel := range []string{"v1", "v2"} {
		if err := os.MkdirAll(filepath.Join(dir, rel), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rel, "index.html"), []byte(rel), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	current := filepath.Join(dir, "current")
	if err := os.Symlink("v1", current); err != nil {
		t.Fatal(err)
	}
	srv := staticServer(t, StaticOptions{Root: current})
	addr := srv.Listener.Addr().String()
	if _, body := staticRawRequest(t, addr, "GET", "/", nil); string(body) != "v1" {
		t.Fatalf("before swap: %q", body)
	}
	next := filepath.Join(dir, "next")
	if err := os.Symlink("v2", next); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, current); err != nil {
		t.Fatal(err)
	}
	if _, body := staticRawRequest(t, addr, "GET", "/", nil); string(body) != "v2" {
		t.Fatalf("after swap: %q", body)
	}
}

func TestNewStaticRejects(t *testing.T) {
	root := staticTree(t)
	tests := []struct {
		name string
		opts StaticOptions
	}{
		{"relative root", StaticOptions{Root: "site"}},
		{"missing root", StaticOptions{Root: filepath.Join(root, "nope")}},
		{"file root", StaticOptions{Root: filepath.Join(root, "app.js")}},
		{"index with slash", StaticOptions{Root: root, Index: "docs/index.html"}},
		{"hidden index", StaticOptions{Root: root, Index: ".index.html"}},
		{"relative prefix", StaticOptions{Root: root, StripPrefix: "app"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewStatic(tt.opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestStaticName(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"/", ".", true},
		{"/a", "a", true},
		{"/a/", "a", true},
		{"/a/b.js", "a/b.js", true},
		{"/.well-known/x", ".well-known/x", true},
		{"/a..b", "a..b", true},
		{"", "", false},
		{"a", "", false},
		{"//", "", false},
		{"/a//b", "", false},
		{"/a/b//", "", false},
		{"/..", "", false},
		{"/a/../b", "", false},
		{"/.", "", false},
		{"/.git/x", "", false},
		{"/a/.env", "", false},
		{"/a\\b", "", false},
		{"/a\x00", "", false},
	}
	for _, tt := range tests {
		got, ok := staticName(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("staticName(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzStaticName(f *testing.F) {
	for _, s := range []string{"/", "/a/b.js", "/a/", "/../x", "/.well-known/a", "//x", `/a\b`, "/a\x00", "/.env", "/a/./b", "/0\x8b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, upath string) {
		name, ok := staticName(upath)
		if !ok {
			return
		}
		if name == "." {
			if upath != "/" {
				t.Fatalf("%q named the root", upath)
			}
			return
		}
		if upath != "/"+name && upath != "/"+name+"/" {
			t.Fatalf("%q became %q", upath, name)
		}
		if strings.ContainsAny(name, "\\\x00") || strings.HasPrefix(name, "/") {
			t.Fatalf("%q became invalid name %q", upath, name)
		}
		for seg := range strings.SplitSeq(name, "/") {
			if seg == "" || (seg[0] == '.' && seg != ".well-known") {
				t.Fatalf("%q let through segment %q", upath, seg)
			}
		}
	})
}

// FuzzStaticHandler drives the whole handler with arbitrary request paths:
// whatever the path, the file beside the root never comes back.
func FuzzStaticHandler(f *testing.F) {
	for _, s := range []string{"/", "/../secret.txt", "/..%2fsecret.txt", "/link-out", "/%2e%2e/secret.txt", "/docs", "/app/x", `/..\secret.txt`} {
		f.Add(s)
	}
	root := staticTree(f)
	h, err := NewStatic(StaticOptions{Root: root, SPA: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: "GET", URL: u, Header: http.Header{}, Host: "test", RequestURI: target}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if strings.Contains(w.Body.String(), staticOutsideSecret) {
			t.Fatalf("%q leaked the secret", target)
		}
		if loc := w.Header().Get("Location"); strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, `/\`) {
			t.Fatalf("%q redirected off site to %q", target, loc)
		}
	})
}

// staticDiscardWriter is the cheapest ResponseWriter, so benchmarks measure the
// handler and not a recorder.
type staticDiscardWriter struct{ h http.Header }

func (d *staticDiscardWriter) Header() http.Header         { return d.h }
func (d *staticDiscardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *staticDiscardWriter) WriteHeader(int)             {}

// ReadFrom stands for net/http's, which copies with a pooled buffer.
func (d *staticDiscardWriter) ReadFrom(r io.Reader) (int64, error) { return io.Copy(io.Discard, r) }

func BenchmarkStaticSmallFile(b *testing.B) {
	root := b.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "assets"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "assets", "app.js"), []byte(strings.Repeat("x", 1024)), 0o644); err != nil {
		b.Fatal(err)
	}
	h, err := NewStatic(StaticOptions{Root: root})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/assets/app.js", nil)
	w := &staticDiscardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
	}
}
