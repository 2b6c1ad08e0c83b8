package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// startUpstream serves on loopback with a short keep-alive timeout, like a
// Node app (5 s by default), and counts the connections it accepted.
func startUpstream(t *testing.T, idle time.Duration) (addr string, conns *atomic.Int64) {
	addr, conns, _ = startCountingUpstream(t, idle)
	return addr, conns
}

// startCountingUpstream is startUpstream that also counts the connections
// it closed.
func startCountingUpstream(t *testing.T, idle time.Duration) (addr string, conns, closed *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns, closed = new(atomic.Int64), new(atomic.Int64)
	srv := &http.Server{
		IdleTimeout: idle,
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed:
				closed.Add(1)
			}
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			_, _ = io.WriteString(w, r.Method+":"+string(b))
		}),
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), conns, closed
}

func send(t *testing.T, tr *connTransport, method, addr, body string, readTimeout time.Duration) string {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+addr+"/", strings.NewReader(body))
	if body == "" {
		req.Body = http.NoBody
	}
	// A server-side request has no GetBody: it cannot be replayed.
	req.GetBody = nil
	resp, err := tr.exchange(req, stdRequest{req}, readTimeout)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTransportReusesConnections(t *testing.T) {
	addr, conns := startUpstream(t, time.Minute)
	tr := newConnTransport(addr, TransportOptions{ConnectTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, MaxIdle: 4})
	tr.inflight = new(atomic.Int64)
	for i := 0; i < 20; i++ {
		if got := send(t, tr, "POST", addr, "x", 0); got != "POST:x" {
			t.Fatalf("got %q", got)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 sequential requests used %d connections, want 1", n)
	}
	if n := tr.inflight.Load(); n != 0 {
		t.Fatalf("in-flight count %d after all bodies were read", n)
	}
}

// TestTransportDropsConnectionsTheUpstreamClosed: a POST cannot be replayed,
// so sending it on a connection the upstream already closed would fail it.
// The pool must notice the close before reuse, also when the last read's
// deadline (a read timeout shorter than the idle time) expired meanwhile.
func TestTransportDropsConnectionsTheUpstreamClosed(t *testing.T) {
	for _, readTimeout := range []time.Duration{0, time.Second} {
		addr, conns, closed := startCountingUpstream(t, 200*time.Millisecond)
		tr := newConnTransport(addr, TransportOptions{ConnectTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, MaxIdle: 4})
		tr.inflight = new(atomic.Int64)
		if got := send(t, tr, "POST", addr, "a", readTimeout); got != "POST:a" {
			t.Fatalf("got %q", got)
		}
		// Wait (with a deadline) until the upstream has closed the idle
		// connection, then age it past staleCheckAfter on the pool's own
		// record instead of sleeping that long.
		deadline := time.Now().Add(10 * time.Second)
		for closed.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the upstream did not close its idle connection within 10 s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		tr.mu.Lock()
		for _, pc := range tr.idle {
			pc.idleSince = pc.idleSince.Add(-2 * staleCheckAfter)
		}
		tr.mu.Unlock()
		if got := send(t, tr, "POST", addr, "b", readTimeout); got != "POST:b" {
			t.Fatalf("read timeout %s: got %q", readTimeout, got)
		}
		if n := conns.Load(); n != 2 {
			t.Fatalf("read timeout %s: want a fresh connection after the upstream closed the idle one, got %d connections", readTimeout, n)
		}
	}
}

func TestTransportStopsAtConnectTimeout(t *testing.T) {
	// 192.0.2.1 (TEST-NET-1) is not routed: the dial hangs until the timeout.
	tr := newConnTransport("192.0.2.1:80", TransportOptions{ConnectTimeout: 200 * time.Millisecond, MaxIdle: 1})
	tr.inflight = new(atomic.Int64)
	req, _ := http.NewRequest("GET", "http://upstream/", nil)
	start := time.Now()
	_, err := tr.RoundTrip(req)
	if err == nil {
		t.Fatal("dial to an unrouted address succeeded")
	}
	var de *dialError
	if !errors.As(err, &de) {
		t.Fatalf("want a dial error, got %T %v", err, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("connect timeout of 200ms took %s", d)
	}
}

// TestResendAndBlamePolicy: a request is sent twice only when it may be
// (idempotent, or an Idempotency-Key) and nothing of it can have reached
// the upstream; a target is blamed only for its own faults.
func TestResendAndBlamePolicy(t *testing.T) {
	notSent := &notSentError{errors.New("connection reset")}
	dialed := &dialError{errors.New("refused")}
	read := errors.New("upstream closed the connection: EOF")
	clientFault := &clientBodyError{errors.New("invalid byte in chunk length")}
	body := func() io.ReadCloser { return io.NopCloser(strings.NewReader("x")) }
	cases := []struct {
		method string
		key    bool
		body   bool
		err    error
		resend bool
	}{
		{"GET", false, false, dialed, true},
		{"GET", false, false, notSent, true},
		{"GET", false, false, read, false},
		{"PUT", false, true, dialed, true},
		{"PUT", false, true, notSent, false}, // its body was read once already
		{"POST", false, false, dialed, false},
		{"POST", false, false, notSent, false},
		{"POST", true, false, notSent, true},
		{"POST", true, false, read, false},
		{"PATCH", true, false, dialed, true},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, "http://upstream/", nil)
		if c.body {
			req.Body, req.GetBody = body(), nil
		}
		if c.key {
			req.Header.Set("Idempotency-Key", "k1")
		}
		if got := mayResend(req, c.err); got != c.resend {
			t.Errorf("%s key=%v body=%v after %v: resend %v, want %v", c.method, c.key, c.body, c.err, got, c.resend)
		}
	}

	req, _ := http.NewRequest("POST", "http://upstream/", nil)
	for _, c := range []struct {
		err   error
		blame bool
	}{{dialed, true}, {notSent, true}, {read, true}, {errUpstreamTimeout, true}, {clientFault, false}} {
		if got := countsAgainstTarget(req, c.err); got != c.blame {
			t.Errorf("%v counts against the target: %v, want %v", c.err, got, c.blame)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if countsAgainstTarget(req.WithContext(ctx), read) {
		t.Error("a client that left counts against the target")
	}
}

// testRequest is a POST of a body of n bytes: the first part at once, the
// rest only when hold is closed; stopBody ends a wait for it, as the
// gateway's limited body does.
type testRequest struct {
	n       int64
	first   string
	hold    chan struct{}
	stopped chan struct{}
	once    sync.Once
	done    atomic.Bool // writeBody returned
	goid    atomic.Int64
}

func newTestRequest(n int64, first string) *testRequest {
	return &testRequest{n: n, first: first, hold: make(chan struct{}), stopped: make(chan struct{})}
}

func (r *testRequest) writeHead(bw *bufio.Writer) error {
	_, err := fmt.Fprintf(bw, "POST / HTTP/1.1\r\nHost: up\r\nContent-Length: %d\r\n\r\n", r.n)
	return err
}

func (r *testRequest) writeBody(bw *bufio.Writer) error {
	defer r.done.Store(true)
	r.goid.Store(goid())
	if _, err := bw.WriteString(r.first); err != nil {
		return err
	}
	if int64(len(r.first)) < r.n {
		if err := bw.Flush(); err != nil {
			return err
		}
		select {
		case <-r.hold:
		case <-r.stopped:
			return &clientBodyError{errors.New("stopped")}
		case <-time.After(10 * time.Second):
			return &clientBodyError{errors.New("never stopped")}
		}
		if _, err := bw.WriteString(strings.Repeat("x", int(r.n)-len(r.first))); err != nil {
			return err
		}
	}
	return nil
}

func (r *testRequest) hasBody() bool            { return true }
func (r *testRequest) inlineBody() bool         { return r.n <= inlineBodyMax }
func (r *testRequest) stopBody()                { r.once.Do(func() { close(r.stopped) }) }
func (r *testRequest) clientBodyRead() bool     { return false }
func (r *testRequest) expectsContinue() bool    { return false }
func (r *testRequest) interim(int, http.Header) {}

// goid is the calling goroutine's id, from its stack header.
func goid() int64 {
	var buf [64]byte
	s := strings.TrimPrefix(string(buf[:runtime.Stack(buf[:], false)]), "goroutine ")
	id, _ := strconv.ParseInt(s[:strings.IndexByte(s, ' ')], 10, 64)
	return id
}

// rawUpstream answers every request with answer once it has read the
// request head and min(upTo, Content-Length) bytes of the body; after an
// early answer it keeps the connection open without reading another request.
func rawUpstream(t *testing.T, upTo int, answer string) string {
	t.Helper()
	return testpeer.RawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.ReadFull(req.Body, make([]byte, min(int64(upTo), req.ContentLength))); err != nil {
				return
			}
			_, _ = io.WriteString(c, answer)
			if int64(upTo) < req.ContentLength {
				_, _ = io.Copy(io.Discard, br)
				return
			}
		}
	})
}

// TestUnaskedSwitchIsRefused: an upstream that answers 101 to a POST whose
// body is still going out must not get the connection handed over with the
// body writer still running on it (and on a request the caller recycles
// once the exchange is over).
func TestUnaskedSwitchIsRefused(t *testing.T) {
	addr := rawUpstream(t, 5, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	tr := newConnTransport(addr, TransportOptions{ConnectTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, MaxIdle: 4})
	tr.inflight = new(atomic.Int64)
	req, _ := http.NewRequest("POST", "http://"+addr+"/", http.NoBody)
	w := newTestRequest(1<<20, "hello")
	resp, err := tr.exchange(req, w, 0)
	running := !w.done.Load()
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a 101 to a POST was handed over (status %d)", resp.StatusCode)
	}
	if running {
		t.Fatalf("the exchange failed (%v) with its body writer still running", err)
	}
	if n := tr.inflight.Load(); n != 0 {
		t.Fatalf("in-flight count %d after the exchange failed", n)
	}
}

// TestSmallBodyIsWrittenInline: a small body of known length goes out from
// the goroutine that reads the answer, at no goroutine of its own; a large
// one still from its own, so that an early answer is heard while it goes
// out.
func TestSmallBodyIsWrittenInline(t *testing.T) {
	addr := rawUpstream(t, 1<<30, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	tr := newConnTransport(addr, TransportOptions{ConnectTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, MaxIdle: 4})
	tr.inflight = new(atomic.Int64)
	for _, c := range []struct {
		n      int64
		inline bool
	}{{100, true}, {inlineBodyMax, true}, {inlineBodyMax + 1, false}} {
		req, _ := http.NewRequest("POST", "http://"+addr+"/", http.NoBody)
		w := newTestRequest(c.n, strings.Repeat("y", int(c.n)))
		resp, err := tr.exchange(req, w, 0)
		if err != nil {
			t.Fatalf("%d bytes: %v", c.n, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok" || err != nil {
			t.Fatalf("%d bytes: %q %v", c.n, b, err)
		}
		if inline := w.goid.Load() == goid(); inline != c.inline {
			t.Errorf("%d bytes: written inline %v, want %v", c.n, inline, c.inline)
		}
	}
}
