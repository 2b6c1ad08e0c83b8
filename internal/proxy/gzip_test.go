package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// gzipClient never asks for or decodes gzip by itself, so the tests see
// the bytes on the wire and set Accept-Encoding themselves.
var gzipClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

func gzipGet(t *testing.T, method, u string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := gzipClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func gzipDecode(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzipDecode: %v", err)
	}
	return out
}

func TestGzip(t *testing.T) {
	json2k := []byte(`{"items":[` + strings.Repeat(`{"id":12345,"name":"widget"},`, 80) + `{}]}`)
	html2k := []byte("<!DOCTYPE html><html><body>" + strings.Repeat("<p>hello</p>", 200) + "</body></html>")
	png2k := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{0}, 2000)...)

	type resp struct {
		status int
		hdr    map[string]string
		body   []byte
		chunks int // body written in this many pieces; 0 means one
	}
	tests := []struct {
		name     string
		ae       string
		method   string
		resp     resp
		wantGzip bool
		wantVary bool
		wantType string
		wantETag string
	}{
		{"json", "gzip", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, json2k, 0}, true, true, "application/json", ""},
		{"json in small writes", "gzip", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, json2k, 50}, true, true, "", ""},
		{"json with length", "gzip, deflate, br", "GET", resp{200, map[string]string{"Content-Type": "application/json", "Content-Length": strconv.Itoa(len(json2k))}, json2k, 0}, true, true, "", ""},
		{"not found page", "gzip", "GET", resp{404, map[string]string{"Content-Type": "text/html; charset=utf-8"}, html2k, 0}, true, true, "", ""},
		{"type with params and case", "gzip", "GET", resp{200, map[string]string{"Content-Type": "Application/Problem+JSON; charset=utf-8"}, json2k, 0}, true, true, "", ""},
		{"svg", "gzip", "GET", resp{200, map[string]string{"Content-Type": "image/svg+xml"}, html2k, 0}, true, true, "", ""},
		{"sniffed html", "gzip", "GET", resp{200, nil, html2k, 3}, true, true, "text/html; charset=utf-8", ""},
		{"sniffed png", "gzip", "GET", resp{200, nil, png2k, 0}, false, false, "image/png", ""},
		{"png", "gzip", "GET", resp{200, map[string]string{"Content-Type": "image/png"}, png2k, 0}, false, false, "", ""},
		{"small", "gzip", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, []byte(`{"ok":true}`), 0}, false, true, "", ""},
		{"small in pieces", "gzip", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, json2k[:1000], 10}, false, true, "", ""},
		{"small by length", "gzip", "GET", resp{200, map[string]string{"Content-Type": "application/json", "Content-Length": "11"}, []byte(`{"ok":true}`), 0}, false, true, "", ""},
		{"already encoded", "gzip", "GET", resp{200, map[string]string{"Content-Type": "application/json", "Content-Encoding": "br"}, json2k, 0}, false, false, "", ""},
		{"event stream", "gzip", "GET", resp{200, map[string]string{"Content-Type": "text/event-stream"}, html2k, 0}, false, false, "", ""},
		{"no accept-encoding", "", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, json2k, 0}, false, true, "", ""},
		{"q=0", "gzip;q=0", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, json2k, 0}, false, true, "", ""},
		{"q=0.000 among others", "br, gzip; q=0.000", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, json2k, 0}, false, true, "", ""},
		{"star", "*", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, json2k, 0}, true, true, "", ""},
		{"star but gzip refused", "*, gzip;q=0", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, json2k, 0}, false, true, "", ""},
		{"identity only", "identity", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, json2k, 0}, false, true, "", ""},
		{"x-gzip upper case", "X-GZIP;Q=0.5", "GET", resp{200, map[string]string{"Content-Type": "application/json"}, json2k, 0}, true, true, "", ""},
		{"no content", "gzip", "GET", resp{204, map[string]string{"Content-Type": "application/json"}, nil, 0}, false, false, "", ""},
		{"partial", "gzip", "GET", resp{206, map[string]string{"Content-Type": "application/json", "Content-Range": fmt.Sprintf("bytes 0-%d/9999", len(json2k)-1)}, json2k, 0}, false, false, "", ""},
		{"head", "gzip", "HEAD", resp{200, map[string]string{"Content-Type": "application/json"}, nil, 0}, false, true, "", ""},
		{"strong etag weakened", "gzip", "GET", resp{200, map[string]string{"Content-Type": "application/json", "Etag": `"v1"`}, json2k, 0}, true, true, "", `W/"v1"`},
		{"weak etag kept", "gzip", "GET", resp{200, map[string]string{"Content-Type": "application/json", "Etag": `W/"v1"`}, json2k, 0}, true, true, "", `W/"v1"`},
		{"etag kept when plain", "gzip", "GET", resp{200, map[string]string{"Content-Type": "image/png", "Etag": `"v1"`}, png2k, 0}, false, false, "", `"v1"`},
		{"existing vary", "gzip", "GET", resp{200, map[string]string{"Content-Type": "application/json", "Vary": "Origin"}, json2k, 0}, true, true, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(Gzip(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.resp.hdr {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.resp.status)
				if r.Method == "HEAD" {
					return
				}
				n := max(tt.resp.chunks, 1)
				size := (len(tt.resp.body) + n - 1) / max(n, 1)
				for b := tt.resp.body; len(b) > 0; {
					k := min(size, len(b))
					if _, err := w.Write(b[:k]); err != nil {
						t.Error(err)
						return
					}
					b = b[k:]
				}
			}), GzipOptions{}))
			defer srv.Close()
			hdr := map[string]string{"Accept-Encoding": tt.ae}
			res, body := gzipGet(t, tt.method, srv.URL, hdr)
			if res.StatusCode != tt.resp.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.resp.status)
			}
			gzipped := res.Header.Get("Content-Encoding") == "gzip"
			if gzipped != tt.wantGzip {
				t.Fatalf("Content-Encoding %q, want gzip %v", res.Header.Get("Content-Encoding"), tt.wantGzip)
			}
			if gzipped {
				// net/http may set the length of the compressed bytes
				// itself; the handler's own length must be gone.
				if cl := res.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(body)) {
					t.Errorf("Content-Length %s on %d compressed bytes", cl, len(body))
				}
				body = gzipDecode(t, body)
			}
			if tt.method != "HEAD" && !bytes.Equal(body, tt.resp.body) {
				t.Errorf("body differs: %d bytes, want %d", len(body), len(tt.resp.body))
			}
			vary := res.Header.Values("Vary")
			hasVary := strings.Contains(strings.Join(vary, ","), "Accept-Encoding")
			if hasVary != tt.wantVary {
				t.Errorf("Vary %q, want Accept-Encoding %v", vary, tt.wantVary)
			}
			if tt.resp.hdr["Vary"] != "" && !strings.Contains(strings.Join(vary, ","), tt.resp.hdr["Vary"]) {
				t.Errorf("Vary %q lost %q", vary, tt.resp.hdr["Vary"])
			}
			if tt.wantType != "" && res.Header.Get("Content-Type") != tt.wantType {
				t.Errorf("Content-Type %q, want %q", res.Header.Get("Content-Type"), tt.wantType)
			}
			if tt.wantETag != "" && res.Header.Get("Etag") != tt.wantETag {
				t.Errorf("ETag %q, want %q", res.Header.Get("Etag"), tt.wantETag)
			}
		})
	}
}

func TestGzipOptions(t *testing.T) {
	body := bytes.Repeat([]byte("a"), 300)
	tests := []struct {
		name string
		opts GzipOptions
		want bool
	}{
		{"default min size", GzipOptions{}, false},
		{"lower min size", GzipOptions{MinSize: 256}, true},
		{"level 1", GzipOptions{Level: 1, MinSize: 256}, true},
		{"level 9", GzipOptions{Level: 9, MinSize: 256}, true},
		{"bad level means default", GzipOptions{Level: 42, MinSize: 256}, true},
		{"negative level means default", GzipOptions{Level: -1, MinSize: 256}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(Gzip(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				_, _ = w.Write(body)
			}), tt.opts))
			defer srv.Close()
			res, got := gzipGet(t, "GET", srv.URL, map[string]string{"Accept-Encoding": "gzip"})
			if gz := res.Header.Get("Content-Encoding") == "gzip"; gz != tt.want {
				t.Fatalf("gzip %v, want %v", gz, tt.want)
			}
			if tt.want {
				got = gzipDecode(t, got)
			}
			if !bytes.Equal(got, body) {
				t.Error("body differs")
			}
		})
	}
}

// TestGzipFlush checks that a streamed response reaches the client piece
// by piece: the handler writes its second line only after the client has
// decoded the first one.
func TestGzipFlush(t *testing.T) {
	tests := []struct {
		name     string
		ctype    string
		wantGzip bool
	}{
		{"ndjson is compressed and flushed", "application/x-ndjson", true},
		{"event stream is left plain", "text/event-stream", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := make(chan struct{})
			srv := httptest.NewServer(Gzip(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ctype)
				for i := range 3 {
					fmt.Fprintf(w, "data: event %d\n\n", i)
					if err := http.NewResponseController(w).Flush(); err != nil {
						t.Error(err)
						return
					}
					select {
					case <-next:
					case <-r.Context().Done():
						return
					}
				}
			}), GzipOptions{}))
			defer srv.Close()
			req, _ := http.NewRequest("GET", srv.URL, nil)
			req.Header.Set("Accept-Encoding", "gzip")
			res, err := gzipClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if gz := res.Header.Get("Content-Encoding") == "gzip"; gz != tt.wantGzip {
				t.Fatalf("gzip %v, want %v", gz, tt.wantGzip)
			}
			var body io.Reader = res.Body
			if tt.wantGzip {
				zr, err := gzip.NewReader(res.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			}
			br := bufio.NewReader(body)
			for i := range 3 {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if want := fmt.Sprintf("data: event %d\n", i); line != want {
					t.Fatalf("got %q, want %q", line, want)
				}
				if _, err := br.ReadString('\n'); err != nil {
					t.Fatal(err)
				}
				next <- struct{}{}
			}
		})
	}
}

// TestGzipUnwrap checks that the wrapper does not hide the connection:
// hijacking and deadlines reach it through http.ResponseController.
func TestGzipUnwrap(t *testing.T) {
	srv := httptest.NewServer(Gzip(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Error(err)
		}
		conn, brw, err := rc.Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = brw.Flush()
	}), GzipOptions{}))
	defer srv.Close()
	res, body := gzipGet(t, "GET", srv.URL, map[string]string{"Accept-Encoding": "gzip"})
	if res.StatusCode != 200 || string(body) != "hijacked" {
		t.Fatalf("status %d body %q", res.StatusCode, body)
	}
}

// TestGzipWebSocketThroughProxy runs an upgrade through Gzip in front of
// httputil.ReverseProxy to a real backend: the 101 and the bytes after it
// must pass untouched.
func TestGzipWebSocketThroughProxy(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		line, _ := brw.ReadString('\n')
		_, _ = brw.WriteString("echo " + line)
		_ = brw.Flush()
	}))
	defer backend.Close()
	target, _ := url.Parse(backend.URL)
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}
	front := httptest.NewServer(Gzip(rp, GzipOptions{MinSize: 1}))
	defer front.Close()

	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 101 || res.Header.Get("Content-Encoding") != "" {
		t.Fatalf("status %d, Content-Encoding %q", res.StatusCode, res.Header.Get("Content-Encoding"))
	}
	_, _ = io.WriteString(conn, "ping\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo ping\n" {
		t.Fatalf("got %q, %v", line, err)
	}
}

// TestGzipStatic runs the static handler behind Gzip, the way a route with
// static and gzip = true is built.
func TestGzipStatic(t *testing.T) {
	root := t.TempDir()
	js := []byte(strings.Repeat("function f(){return 42}\n", 500))
	if err := os.WriteFile(filepath.Join(root, "app.js"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := NewStatic(StaticOptions{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Gzip(st, GzipOptions{}))
	defer srv.Close()
	ae := map[string]string{"Accept-Encoding": "gzip"}

	res, body := gzipGet(t, "GET", srv.URL+"/app.js", ae)
	if res.Header.Get("Content-Encoding") != "gzip" || !bytes.Equal(gzipDecode(t, body), js) {
		t.Fatalf("Content-Encoding %q, body not the file", res.Header.Get("Content-Encoding"))
	}
	if len(body) >= len(js)/10 {
		t.Errorf("compressed %d bytes to %d", len(js), len(body))
	}
	if res.Header.Get("Accept-Ranges") != "" {
		t.Error("Accept-Ranges advertised on a compressed body")
	}
	etag := res.Header.Get("Etag")
	if !strings.HasPrefix(etag, `W/"`) {
		t.Fatalf("ETag %q not weak", etag)
	}

	res, _ = gzipGet(t, "GET", srv.URL+"/app.js", map[string]string{"Accept-Encoding": "gzip", "If-None-Match": etag})
	if res.StatusCode != 304 {
		t.Errorf("revalidation: status %d, want 304", res.StatusCode)
	}
	res, body = gzipGet(t, "GET", srv.URL+"/app.js", map[string]string{"Accept-Encoding": "gzip", "Range": "bytes=0-7"})
	if res.StatusCode != 206 || res.Header.Get("Content-Encoding") != "" || string(body) != "function" {
		t.Errorf("range: status %d, Content-Encoding %q, body %q", res.StatusCode, res.Header.Get("Content-Encoding"), body)
	}
	res, body = gzipGet(t, "GET", srv.URL+"/app.js", nil)
	if res.Header.Get("Content-Encoding") != "" || !bytes.Equal(body, js) || res.Header.Get("Vary") != "Accept-Encoding" {
		t.Errorf("identity: Content-Encoding %q, Vary %q", res.Header.Get("Content-Encoding"), res.Header.Get("Vary"))
	}
	res, body = gzipGet(t, "GET", srv.URL+"/missing.js", ae)
	if res.StatusCode != 404 || res.Header.Get("Content-Encoding") != "" || staticErrorCode(t, body) != 40401 {
		t.Errorf("404: status %d, Content-Encoding %q, body %q", res.StatusCode, res.Header.Get("Content-Encoding"), body)
	}
}

func TestGzipAccepted(t *testing.T) {
	tests := []struct {
		values []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"deflate, gzip"}, true},
		{[]string{"deflate", "gzip"}, true},
		{[]string{" GZip ; q=1"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip;q=0."}, false},
		{[]string{"gzip; Q = 0.00"}, false},
		{[]string{"gzip;q=0.001"}, true},
		{[]string{"gzip;q=0.0000"}, true},
		{[]string{"gzip;q="}, true},
		{[]string{"gzip;level=1;q=0"}, false},
		{[]string{"gzip;q=0", "gzip"}, true},
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"*, gzip;q=0"}, false},
		{[]string{"gzipx, xgzip"}, false},
		{[]string{"x-gzip"}, true},
	}
	for _, tt := range tests {
		if got := gzipAccepted(tt.values); got != tt.want {
			t.Errorf("gzipAccepted(%q) = %v, want %v", tt.values, got, tt.want)
		}
	}
}

// FuzzGzipAccepted compares the allocation-free parser with a plain
// reading of RFC 9110 section 12.5.3 built from strings.Split.
func FuzzGzipAccepted(f *testing.F) {
	for _, s := range []string{"gzip", "gzip;q=0", "*, gzip;q=0.000", "br;q=1, x-gzip;q=0.5", "gzip;q=0.", ";;,,", "*;q=0, gzip"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if got, want := gzipAccepted([]string{v}), gzipReferenceAccepted(v); got != want {
			t.Fatalf("%q: got %v, reference %v", v, got, want)
		}
	})
}

func gzipReferenceAccepted(v string) bool {
	gzipQ, starQ := -1, -1 // -1 unnamed, 0 refused, 1 allowed
	for _, elem := range strings.Split(v, ",") {
		parts := strings.Split(elem, ";")
		coding := strings.ToLower(strings.TrimSpace(parts[0]))
		q := 1
		for _, p := range parts[1:] {
			k, val, ok := strings.Cut(p, "=")
			if !ok || strings.ToLower(strings.TrimSpace(k)) != "q" {
				continue
			}
			val = strings.TrimSpace(val)
			if val == "0" || (strings.HasPrefix(val, "0.") && len(val) <= 5 && strings.Trim(val[2:], "0") == "") {
				q = 0
			}
			break
		}
		switch coding {
		case "gzip", "x-gzip":
			gzipQ = max(gzipQ, q)
		case "*":
			starQ = max(starQ, q)
		}
	}
	if gzipQ >= 0 {
		return gzipQ == 1
	}
	return starQ == 1
}

func BenchmarkGzipJSON10KB(b *testing.B) {
	body := []byte(`[` + strings.Repeat(`{"id":1234567,"openid":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","score":98.5},`, 150) + `{}]`)[:10<<10]
	h := Gzip(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"application/json"}
		_, _ = w.Write(body)
	}), GzipOptions{})
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Accept-Encoding", "gzip, deflate, br")
	w := &staticDiscardWriter{h: http.Header{}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
	}
}

func gzipAccepted(values []string) bool { return Negotiate(values, gzipOnly) == EncodingGzip }

func TestNegotiate(t *testing.T) {
	all := []Encoding{EncodingBrotli, EncodingZstd, EncodingGzip}
	tests := []struct {
		accept  string
		offered []Encoding
		want    Encoding
	}{
		{"gzip, deflate, br, zstd", all, EncodingBrotli},
		{"gzip, br", []Encoding{EncodingGzip, EncodingBrotli}, EncodingGzip},
		{"gzip;q=1.0, br;q=0.999", all, EncodingGzip},
		{"br;q=0.5, zstd", all, EncodingZstd},
		{"BR;Q=0.9, gzip;q=0.1", all, EncodingBrotli},
		{"br;q=0, *;q=0.2", all, EncodingZstd},
		{"*;q=0, gzip;q=0.1", all, EncodingGzip},
		{"br;q=0, zstd;q=0, gzip;q=0", all, EncodingNone},
		{"identity", all, EncodingNone},
		{"", all, EncodingNone},
		{"zstd", gzipOnly, EncodingNone},
		{"x-gzip;q=0.3, br;q=0.2", all, EncodingGzip},
		{"br;q=junk", all, EncodingBrotli},
	}
	for _, tt := range tests {
		if got := Negotiate([]string{tt.accept}, tt.offered); got != tt.want {
			t.Errorf("Negotiate(%q, %v) = %v, want %v", tt.accept, tt.offered, got, tt.want)
		}
	}
}
