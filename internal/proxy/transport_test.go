package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startUpstream serves on loopback with a short keep-alive timeout, like a
// Node app (5 s by default), and counts the connections it accepted.
func startUpstream(t *testing.T, idle time.Duration) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int64)
	srv := &http.Server{
		IdleTimeout: idle,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			_, _ = io.WriteString(w, r.Method+":"+string(b))
		}),
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), conns
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
		addr, conns := startUpstream(t, 200*time.Millisecond)
		tr := newConnTransport(addr, TransportOptions{ConnectTimeout: time.Second, ResponseHeaderTimeout: 5 * time.Second, MaxIdle: 4})
		tr.inflight = new(atomic.Int64)
		if got := send(t, tr, "POST", addr, "a", readTimeout); got != "POST:a" {
			t.Fatalf("got %q", got)
		}
		time.Sleep(staleCheckAfter + 300*time.Millisecond) // the upstream closes the idle connection meanwhile
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
