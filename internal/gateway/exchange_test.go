package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"edge/internal/testpeer"
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
			if m := e.metric(t, "edge_upstream_requests_total"); strings.Contains(m, `code="error"`) {
				t.Fatalf("a client's fault was counted as the target's error:\n%s", m)
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
	var posts atomic.Int32
	addr := testpeer.RawServer(t, func(conn net.Conn, br *bufio.Reader) {
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
	})
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[upstreams.passive_health]\nmax_fails = 0\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", addr))

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

// earlyAnswerBackend answers /early with 413 and /auth with 401 (unless the
// request carries Authorization) without reading the body, as an app that
// checks headers first does; everything else is echoed.
func earlyAnswerBackend(t *testing.T) *backend {
	return startBackend(t, "early", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/early":
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			_, _ = io.WriteString(w, "upstream: too large")
		case r.URL.Path == "/auth" && r.Header.Get("Authorization") == "":
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "upstream: who are you")
		default:
			n, err := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "got %d %v", n, err)
		}
	})
}

// TestEarlyAnswerReachesTheClient: an upstream that answers before it read
// the body (a 413 or 401 decided on the headers) is heard, not turned into
// 502 because it stopped reading.
func TestEarlyAnswerReachesTheClient(t *testing.T) {
	up := earlyAnswerBackend(t)
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\nmax_body = \"64MB\"\n", up.addr))
	big := bytes.Repeat([]byte("x"), 32<<20)
	for _, c := range []struct {
		path   string
		status int
		body   string
	}{
		{"/early", 413, "upstream: too large"},
		{"/auth", 401, "upstream: who are you"},
	} {
		for _, client := range []*http.Client{e.client, e.h2} {
			req, _ := http.NewRequest("POST", e.url("api.example.com", c.path), bytes.NewReader(big))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", c.path, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || string(got) != c.body {
				t.Fatalf("%s %s: %d %q, want the upstream's %d %q", resp.Proto, c.path, resp.StatusCode, got, c.status, c.body)
			}
		}
	}
	// The same upload, accepted, still arrives whole.
	resp, body := e.do(t, "POST", e.url("api.example.com", "/echo"), bytes.NewReader(big), nil)
	if resp.StatusCode != 200 || body != fmt.Sprintf("got %d <nil>", len(big)) {
		t.Fatalf("accepted upload: %d %q", resp.StatusCode, body)
	}
}

// TestExpectContinueIsLeftToTheUpstream: a client that asks "Expect:
// 100-continue" sends its body only when told to. Edge asks the upstream and
// passes its verdict on, so a refused upload is never sent at all.
func TestExpectContinueIsLeftToTheUpstream(t *testing.T) {
	up := earlyAnswerBackend(t)
	e := startEdgeWith(t, "redirect_http = false", "", fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\nmax_body = \"64MB\"\n", up.addr))

	conn, err := net.Dial("tcp", e.addrs.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	_, _ = io.WriteString(conn, "POST /auth HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 33554432\r\nExpect: 100-continue\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 401 || string(body) != "upstream: who are you" {
		t.Fatalf("refused upload: %d %q, want the upstream's 401 before any body was sent", resp.StatusCode, body)
	}

	// Accepted: 100 Continue, then the body, then the answer.
	conn2, err := net.Dial("tcp", e.addrs.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	_ = conn2.SetDeadline(time.Now().Add(10 * time.Second))
	br2 := bufio.NewReader(conn2)
	_, _ = io.WriteString(conn2, "POST /auth HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	tp := textproto.NewReader(br2)
	line, err := tp.ReadLine()
	if err != nil || line != "HTTP/1.1 100 Continue" {
		t.Fatalf("accepted upload: first line %q %v, want 100 Continue", line, err)
	}
	if _, err := tp.ReadMIMEHeader(); err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(conn2, "hello")
	resp, err = http.ReadResponse(br2, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "got 5 <nil>" {
		t.Fatalf("accepted upload: %d %q", resp.StatusCode, body)
	}
}

// TestEarlyHintsArePassedOn: 103 Early Hints reach the client before the
// answer, at most a handful of them, over HTTP/1.1 and HTTP/2.
func TestEarlyHintsArePassedOn(t *testing.T) {
	up := startBackend(t, "hints", func(w http.ResponseWriter, r *http.Request) {
		n := 1
		if r.URL.Path == "/many" {
			n = 20
		}
		for i := 0; i < n; i++ {
			w.Header().Set("Link", fmt.Sprintf("</style%d.css>; rel=preload; as=style", i))
			w.WriteHeader(http.StatusEarlyHints)
		}
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "page")
	})
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", up.addr))
	for _, client := range []*http.Client{e.client, e.h2} {
		for _, c := range []struct {
			path      string
			min, max  int
			firstLink string
		}{
			{"/one", 1, 1, "</style0.css>; rel=preload; as=style"},
			{"/many", 1, 5, "</style0.css>; rel=preload; as=style"},
		} {
			var mu sync.Mutex
			var links []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				mu.Lock()
				defer mu.Unlock()
				if code == http.StatusEarlyHints {
					links = append(links, h.Get("Link"))
				}
				return nil
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", e.url("api.example.com", c.path), nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", c.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mu.Lock()
			got := links
			mu.Unlock()
			if resp.StatusCode != 200 || string(body) != "page" || resp.Header.Get("X-Request-Id") == "" {
				t.Fatalf("%s %s: %d %q %v", resp.Proto, c.path, resp.StatusCode, body, resp.Header)
			}
			if len(got) < c.min || len(got) > c.max || got[0] != c.firstLink {
				t.Fatalf("%s %s: early hints %q, want %d to %d starting with %q", resp.Proto, c.path, got, c.min, c.max, c.firstLink)
			}
			if resp.Header.Get("Link") != "" {
				t.Fatalf("%s %s: a hint leaked into the final answer: %v", resp.Proto, c.path, resp.Header)
			}
		}
	}
}

// stallingUpstream answers /stall with headers and 1,000 of 10,000 promised
// bytes, and /silent with nothing; then it waits until the test ends.
func stallingUpstream(t *testing.T) string {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	return testpeer.RawServer(t, func(conn net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/stall" {
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10000\r\n\r\n"+strings.Repeat("a", 1000))
		}
		// Hold the connection until edge closes it or the test ends.
		go func() { _, _ = io.Copy(io.Discard, conn); conn.Close() }()
		<-done
	})
}

// TestUpstreamStallIsBounded: what a stalled upstream sent reaches the
// client at once; the stall itself is bounded by the upstream's
// read_timeout (a route may override it): an answer not yet begun becomes
// 504, one begun is broken off so the client sees it incomplete.
func TestUpstreamStallIsBounded(t *testing.T) {
	stall := stallingUpstream(t)
	// read_timeout is the subject, so it is short; each client waits 10 s
	// for what must come at once or after it.
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "patient"
targets = [%q]
[[upstreams]]
name = "brisk"
targets = [%q]
read_timeout = "1s"
[[routes]]
name = "patient"
path = "/patient/"
strip_prefix = true
upstream = "patient"
[[routes]]
name = "brisk"
path = "/brisk/"
strip_prefix = true
upstream = "brisk"
[[routes]]
name = "override"
path = "/override/"
strip_prefix = true
upstream = "patient"
upstream_read_timeout = "1s"
`, stall, stall))

	get := func(path string) (*http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url("api.example.com", path), nil)
		return e.client.Do(req)
	}

	// The status line and the 1,000 bytes arrive though the upstream is
	// still within its 60 s read_timeout.
	resp, err := get("/patient/stall")
	if err != nil {
		t.Fatalf("nothing arrived while the upstream stalled mid-body: %v", err)
	}
	first := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("the 1,000 bytes sent before the stall did not arrive: %v", err)
	}
	resp.Body.Close()

	for _, route := range []string{"/brisk", "/override"} {
		// Begun: broken off after read_timeout, visibly incomplete.
		resp, err := get(route + "/stall")
		if err != nil {
			t.Fatalf("%s: %v", route, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(got) != 1000 || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%s stalled mid-body: %d, %d bytes, %v; want 200, 1000 bytes and an unexpected EOF", route, resp.StatusCode, len(got), err)
		}
		// Not begun: 504 with the JSON body.
		resp, err = get(route + "/silent")
		if err != nil {
			t.Fatalf("%s silent upstream: %v", route, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assertAPIError(t, resp, string(body), 504, 50401)
	}
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

// TestFinishedEarlyAnswerIsNotHeldForTheBody: an upstream that has answered
// in full before it read the body does not want the rest. The client gets
// the answer at once, while it still holds its body back, and not only when
// it sends more or server.read_timeout passes; nobody is blamed for the
// body that never went out. The body is larger than what edge writes
// before it reads the answer, and smaller than what net/http drains after
// one: the rest must not be waited for, nor read as a next request.
func TestFinishedEarlyAnswerIsNotHeldForTheBody(t *testing.T) {
	addr := testpeer.RawServer(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if _, err := io.ReadFull(req.Body, make([]byte, 5)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
		// Keep the connection open: only edge may end it.
		_, _ = io.Copy(io.Discard, br)
	})
	e := startEdgeWith(t, "redirect_http = false", "", fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", addr))

	conn, err := net.Dial("tcp", e.addrs.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 102400\r\n\r\nhello")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer while the client holds its body back: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "done" || err != nil {
		t.Fatalf("got %d %q %v, want the upstream's 200 \"done\"", resp.StatusCode, body, err)
	}
	// The rest of the body is never read: the connection cannot carry
	// another request, and the client's late bytes must not be taken for one.
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil || isTimeoutErr(err) {
		t.Fatalf("the connection stayed open after an answer that cut the body short: %d %v", n, err)
	}
	if n := targetsOut(t, e); n != 0 {
		t.Errorf("the target was taken out of rotation")
	}
	e.stop()
	if log := e.stdout.String(); strings.Contains(log, "client_body_timeout") || !strings.Contains(log, `"status":200`) {
		t.Errorf("access log:\n%s", log)
	}
	if log := e.stderr.String(); strings.Contains(log, "upstream error") || strings.Contains(log, "upstream body broken off") {
		t.Errorf("an answer the upstream finished was logged as its failure:\n%s", log)
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
