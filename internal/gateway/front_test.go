package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// tlsRaw opens a TLS connection to edge's HTTPS listener offering only
// HTTP/1.1, for requests no well-behaved client would send.
func (e *edgeUnderTest) tlsRaw(t *testing.T) net.Conn {
	t.Helper()
	cfg := e.client.Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.ServerName = "api.example.com"
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.addrs.HTTPS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

// TestFrontRefusesSmugglingHeads: heads that two servers can frame
// differently (RFC 9112 6.1, 6.3), or that break the header syntax, get
// edge's JSON 400 and the connection is closed after it; the upstream never
// sees them. A head over server.max_header_bytes gets 431.
func TestFrontRefusesSmugglingHeads(t *testing.T) {
	up := startBackend(t, "up", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "upstream") })
	e := startEdgeWith(t, "max_header_bytes = \"4KB\"\n", "", fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", up.addr))
	const host = "Host: api.example.com\r\n"
	for _, tc := range []struct {
		name, head string
		status     int
		code       int
	}{
		{"length and chunked", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, 40001},
		{"chunked and length", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, 40001},
		{"two lengths", "POST / HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 5\r\n\r\nhello", 400, 40001},
		{"obs-fold", "GET / HTTP/1.1\r\n" + host + "X-A: 1\r\n X-B: 2\r\n\r\n", 400, 40001},
		{"bare LF", "GET / HTTP/1.1\n" + host + "\n", 400, 40001},
		{"control byte", "GET / HTTP/1.1\r\n" + host + "X-A: a\x01b\r\n\r\n", 400, 40001},
		{"two Hosts", "GET / HTTP/1.1\r\n" + host + "Host: other.example.com\r\n\r\n", 400, 40001},
		{"head too large", "GET / HTTP/1.1\r\n" + host + "X-A: " + strings.Repeat("a", 5000) + "\r\n\r\n", 431, 43101},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := e.tlsRaw(t)
			if _, err := io.WriteString(conn, tc.head); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			var got struct {
				Code      int
				RequestID string `json:"request_id"`
			}
			if resp.StatusCode != tc.status || json.Unmarshal(body, &got) != nil || got.Code != tc.code {
				t.Fatalf("%d %q, want %d with code %d", resp.StatusCode, body, tc.status, tc.code)
			}
			if got.RequestID == "" || resp.Header.Get("X-Request-Id") != got.RequestID {
				t.Fatalf("request id: body %q, header %q; want the same, not empty", got.RequestID, resp.Header.Get("X-Request-Id"))
			}
			if !resp.Close {
				t.Fatal("the answer does not say the connection closes")
			}
			if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
				t.Fatalf("the connection stayed open (read: %v)", err)
			}
		})
	}
	if n := up.count(); n != 0 {
		t.Fatalf("the upstream received %d refused requests", n)
	}
	// Each refusal is an access log line and a count, as a request no
	// route matched is: an operator sees the attempts.
	m := e.metric(t, "edge_http_requests_total")
	for _, want := range []string{`code="400",method="POST",route=""} 3`, `code="400",method="GET",route=""} 3`, `code="400",method="OTHER",route=""} 1`, `code="431",method="OTHER",route=""} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("no %s in\n%s", want, m)
			break
		}
	}
	e.stop()
	reasons := map[string]int{}
	for l := range strings.Lines(e.stdout.String()) {
		var line struct {
			Reason    string
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("access log line %q: %v", l, err)
		}
		if line.RequestID == "" {
			t.Errorf("access log line without a request id: %s", l)
		}
		reasons[line.Reason]++
	}
	if reasons["bad_head"] != 7 || reasons["head_too_large"] != 1 {
		t.Fatalf("access log reasons %v, want 7 bad_head and 1 head_too_large", reasons)
	}
}

// TestFrontHandsOverWhatItDoesNotServe: request shapes the HTTP/1.1 front
// leaves to net/http (a chunked upload, 100-continue, HTTP/1.0, an
// absolute-form target, a head larger than the front's buffer) are served
// on the same connection, after requests the front served itself.
func TestFrontHandsOverWhatItDoesNotServe(t *testing.T) {
	up := startBackend(t, "up", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s %d %d", r.Method, r.URL.Path, n, len(r.Header.Get("X-Big")))
	})
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", up.addr))
	const host = "Host: api.example.com\r\n"
	big := strings.Repeat("b", 10000)
	for _, tc := range []struct {
		name, request, want string
	}{
		{"chunked upload", "POST /c HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "POST /c 5 0"},
		{"100-continue", "POST /e HTTP/1.1\r\n" + host + "Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", "POST /e 5 0"},
		{"absolute form", "GET https://api.example.com/a HTTP/1.1\r\n" + host + "\r\n", "GET /a 0 0"},
		{"large head", "GET /l HTTP/1.1\r\n" + host + "X-Big: " + big + "\r\n\r\n", "GET /l 0 10000"},
		{"HTTP/1.0", "GET /o HTTP/1.0\r\n" + host + "\r\n", "GET /o 0 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := e.tlsRaw(t)
			br := bufio.NewReader(conn)
			// A request the front serves first, then the one it hands over.
			if _, err := io.WriteString(conn, "GET /first HTTP/1.1\r\n"+host+"\r\n"); err != nil {
				t.Fatal(err)
			}
			for i, want := range []string{"GET /first 0 0", tc.want} {
				if i == 1 {
					if _, err := io.WriteString(conn, tc.request); err != nil {
						t.Fatal(err)
					}
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode == http.StatusContinue {
					if resp, err = http.ReadResponse(br, nil); err != nil {
						t.Fatal(err)
					}
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(body) != want {
					t.Fatalf("request %d: %d %q, want 200 %q", i+1, resp.StatusCode, body, want)
				}
			}
		})
	}
}

// TestH1AndH2SendTheUpstreamTheSameBytes: one client request gives the
// upstream the same request head, byte for byte, over HTTP/1.1 and HTTP/2.
func TestH1AndH2SendTheUpstreamTheSameBytes(t *testing.T) {
	var mu sync.Mutex
	var heads []string
	addr := rawUpstream(t, func(head string) {
		mu.Lock()
		heads = append(heads, head)
		mu.Unlock()
	})
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", addr))
	for _, client := range []*http.Client{e.client, e.h2} {
		req, _ := http.NewRequest("POST", e.url("api.example.com", "/same/path?b=2&a=1"), strings.NewReader("hello"))
		req.Header.Set("User-Agent", "mini-program")
		req.Header.Set("X-Request-Id", "fixed-id")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Add("X-Multi", "one")
		req.Header.Add("X-Multi", "two")
		req.Header.Set("Cookie", "a=b")
		for i := range 12 {
			req.Header.Set(fmt.Sprintf("X-Extra-%02d", i), "v")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", resp.Proto, resp.StatusCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heads) != 2 {
		t.Fatalf("the upstream got %d requests, want 2", len(heads))
	}
	if heads[0] != heads[1] {
		t.Fatalf("HTTP/1.1 and HTTP/2 differ at the upstream:\n--- h1\n%s--- h2\n%s", heads[0], heads[1])
	}
}

// rawUpstream answers every request with 200 and reports its head as the
// bytes arrived.
func rawUpstream(t *testing.T, got func(head string)) string {
	t.Helper()
	return testpeer.RawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			var head bytes.Buffer
			tee := bufio.NewReader(io.TeeReader(br, &head))
			req, err := http.ReadRequest(tee)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			got(head.String())
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
}

// TestFrontKeepsConnectionsInStep: pipelined requests are answered in
// order; a body edge does not read (a request refused before the upstream)
// is read and dropped, so the next request on the connection is read from
// its own first byte; a HEAD answer carries its length and no body.
func TestFrontKeepsConnectionsInStep(t *testing.T) {
	up := startBackend(t, "up", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		body := fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, n)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = io.WriteString(w, body)
	})
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/api/\"\nupstream = \"up\"\n", up.addr))
	conn := e.tlsRaw(t)
	const host = "Host: api.example.com\r\n"
	pipelined := "GET /api/one HTTP/1.1\r\n" + host + "\r\n" +
		"POST /nowhere HTTP/1.1\r\n" + host + "Content-Length: 11\r\n\r\nnot wanted!" +
		"POST /api/two HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\nabc" +
		"HEAD /api/three HTTP/1.1\r\n" + host + "\r\n" +
		"GET /api/four HTTP/1.1\r\n" + host + "\r\n"
	if _, err := io.WriteString(conn, pipelined); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for _, want := range []struct {
		method string
		status int
		body   string
	}{
		{"GET", 200, "GET /api/one 0"},
		{"POST", 404, ""},
		{"POST", 200, "POST /api/two 3"},
		{"HEAD", 200, ""},
		{"GET", 200, "GET /api/four 0"},
	} {
		resp, err := http.ReadResponse(br, &http.Request{Method: want.method})
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != want.status || want.body != "" && string(body) != want.body {
			t.Fatalf("%s: %d %q, want %d %q", want.method, resp.StatusCode, body, want.status, want.body)
		}
		if want.method == "HEAD" && (resp.ContentLength != int64(len("HEAD /api/three 0")) || len(body) != 0) {
			t.Fatalf("HEAD: length %d, body %q", resp.ContentLength, body)
		}
		if resp.Close {
			t.Fatalf("%s: the connection was closed", want.method)
		}
	}
}
