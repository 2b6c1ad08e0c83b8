package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawExchange sends raw bytes to edge's plain HTTP listener and reads one
// answer, with a deadline of seconds so that a hang fails the test instead
// of stalling it. It keeps the connection open until the answer was read.
func rawExchange(addr, request string) (*http.Response, string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// targetsOut counts the targets edge reports as out of rotation.
func targetsOut(t *testing.T, e *edgeUnderTest) int {
	t.Helper()
	return strings.Count(e.metric(t, "edge_upstream_target_healthy{"), "} 0")
}

// TestClientBodyFaultsKeepTargetsInRotation: a request whose body the
// client breaks (a malformed chunk size, too large, cut off, stalled) is the
// client's fault. It gets the client's answer and never counts against the
// upstream's targets: otherwise a few anonymous requests take a whole
// upstream out of rotation.
func TestClientBodyFaultsKeepTargetsInRotation(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d %v", n, err)
	}
	a := startBackend(t, "a", echo)
	b := startBackend(t, "b", echo)
	cfg := fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q, %q]
[[routes]]
name = "app"
path = "/"
upstream = "app"
max_body = "64KB"
`, a.addr, b.addr)
	head := "POST /upload HTTP/1.1\r\nHost: api.example.com\r\n"

	cases := []struct {
		name   string
		n      int
		status int
		send   func(e *edgeUnderTest) (*http.Response, string, error)
	}{
		{"malformed chunk size", 6, 400, func(e *edgeUnderTest) (*http.Response, string, error) {
			return rawExchange(e.addrs.HTTP, head+"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
		}},
		{"chunked body over max_body", 6, 413, func(e *edgeUnderTest) (*http.Response, string, error) {
			var body bytes.Buffer
			for i := 0; i < 32; i++ {
				fmt.Fprintf(&body, "1000\r\n%s\r\n", strings.Repeat("x", 4096))
			}
			body.WriteString("0\r\n\r\n")
			return rawExchange(e.addrs.HTTP, head+"Transfer-Encoding: chunked\r\n\r\n"+body.String())
		}},
		{"body cut off", 6, 0, func(e *edgeUnderTest) (*http.Response, string, error) {
			conn, err := net.Dial("tcp", e.addrs.HTTP)
			if err != nil {
				return nil, "", err
			}
			defer conn.Close()
			_, _ = io.WriteString(conn, head+"Content-Length: 1000\r\n\r\nonly a part")
			_ = conn.(*net.TCPConn).CloseWrite()
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.Copy(io.Discard, conn)
			return nil, "", err
		}},
		{"body stalled", 6, 408, func(e *edgeUnderTest) (*http.Response, string, error) {
			return rawExchange(e.addrs.HTTP, head+"Content-Length: 1000\r\n\r\nonly a part")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := startEdgeWith(t, "redirect_http = false\nread_timeout = \"1s\"", "", cfg)
			type answer struct {
				resp *http.Response
				body string
				err  error
			}
			answers := make([]answer, c.n)
			var wg sync.WaitGroup
			for i := range answers {
				wg.Go(func() {
					a := &answers[i]
					a.resp, a.body, a.err = c.send(e)
				})
			}
			wg.Wait()
			for i, a := range answers {
				if c.status == 0 {
					continue
				}
				if a.err != nil {
					t.Fatalf("request %d: %v", i, a.err)
				}
				assertAPIError(t, a.resp, a.body, c.status, c.status*100+1)
			}
			if n := targetsOut(t, e); n != 0 {
				t.Fatalf("%d %s requests took %d of 2 targets out of rotation:\n%s", c.n, c.name, n, e.metric(t, "edge_upstream_target_healthy"))
			}
			if strings.Contains(e.stderr.String(), "taken out") {
				t.Fatalf("a client's fault was logged as the upstream's:\n%s", e.stderr.String())
			}
			resp, body := e.do(t, "POST", e.url("api.example.com", "/upload"), strings.NewReader("fine"), nil)
			if resp.StatusCode != 200 || body != "got 4 <nil>" {
				t.Fatalf("a good request after the faults: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestNonIdempotentRequestIsNeverSentTwice: an upstream that reads a request
// on a kept-alive connection and drops the connection without answering may
// have acted on it. A POST must not be sent again, not even bodiless.
func TestNonIdempotentRequestIsNeverSentTwice(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var posts atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for n := 1; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if req.Method == http.MethodPost {
						posts.Add(1)
					}
					if n > 1 && req.URL.Path == "/pay" {
						return // read it, then drop the connection unanswered
					}
					_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[upstreams.passive_health]\nmax_fails = 0\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", ln.Addr().String()))

	// The GET leaves a kept-alive connection in the pool; the POST takes it.
	if resp, body := e.get(t, "api.example.com", "/warm"); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %q", resp.StatusCode, body)
	}
	resp, body := e.do(t, "POST", e.url("api.example.com", "/pay"), nil, nil)
	if n := posts.Load(); n != 1 {
		t.Fatalf("the upstream received the POST %d times (answer %d %q); it may have acted on the first", n, resp.StatusCode, body)
	}
	assertAPIError(t, resp, body, 502, 50201)
}

// TestStalledUploadGets408: a body that stops arriving for longer than
// server.read_timeout gets its 408 and the connection is closed, also when
// little of the body is left (net/http would otherwise wait to read it).
func TestStalledUploadGets408(t *testing.T) {
	up := startBackend(t, "up", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d %v", n, err)
	})
	e := startEdgeWith(t, "redirect_http = false\nread_timeout = \"1s\"", "", fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", up.addr))
	for _, framing := range []string{"Content-Length: 1000\r\n\r\nonly a part", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"} {
		conn, err := net.Dial("tcp", e.addrs.HTTP)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: api.example.com\r\n"+framing)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			conn.Close()
			t.Fatalf("%q: no answer to a stalled upload: %v", framing, err)
		}
		body, _ := io.ReadAll(resp.Body)
		assertAPIError(t, resp, string(body), 408, 40801)
		if !resp.Close {
			t.Errorf("%q: the 408 does not say the connection closes", framing)
		}
		if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("%q: the connection stayed open after the 408: %d %v", framing, n, err)
		}
		conn.Close()
	}
}
