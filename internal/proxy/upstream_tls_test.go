package proxy

import (
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// TestTransportTLS: connections to an HTTPS target are pooled like plain
// ones; the stale-connection probe, which looks under the TLS layer, keeps
// a healthy idle connection and drops one the target closed (a POST on it
// would fail, and is never sent twice); a new connection resumes the TLS
// session.
func TestTransportTLS(t *testing.T) {
	var conns, closed atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+":"+string(b)+":"+strconv.FormatBool(r.TLS.DidResume))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.Add(1)
		case http.StateClosed:
			closed.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	tr := newConnTransport(addr, TransportOptions{
		ConnectTimeout: 5 * time.Second, ResponseHeaderTimeout: 5 * time.Second, MaxIdle: 4,
		TLS: TLSOptions{Enabled: true, CAPEM: ca},
	})
	tr.inflight = new(atomic.Int64)
	age := func() {
		tr.mu.Lock()
		for _, pc := range tr.idle {
			pc.idleSince = pc.idleSince.Add(-2 * staleCheckAfter)
		}
		tr.mu.Unlock()
	}

	for range 5 {
		if got := send(t, tr, "POST", addr, "x", 0); got != "POST:x:false" {
			t.Fatalf("got %q", got)
		}
	}
	age()
	if got := send(t, tr, "POST", addr, "y", 0); got != "POST:y:false" {
		t.Fatalf("got %q", got)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("6 sequential requests, one after the probe, used %d connections, want 1", n)
	}

	srv.CloseClientConnections()
	deadline := time.Now().Add(10 * time.Second)
	for closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the target did not close the connection within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	age()
	if got := send(t, tr, "POST", addr, "z", 0); got != "POST:z:true" {
		t.Fatalf("after the target closed the idle connection: got %q, want a resumed session", got)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("want a second connection after the target closed the first, got %d", n)
	}
}

// TestTLSServerName: the name verified and sent is tls_server_name, or the
// target's host.
func TestTLSServerName(t *testing.T) {
	for _, c := range []struct {
		o    TLSOptions
		addr string
		want string
	}{
		{TLSOptions{Enabled: true}, "api.internal:8443", "api.internal"},
		{TLSOptions{Enabled: true}, "[::1]:8443", "::1"},
		{TLSOptions{Enabled: true, ServerName: "api.internal"}, "10.0.0.1:8443", "api.internal"},
	} {
		cfg, err := c.o.config(c.addr)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.ServerName != c.want || cfg.MinVersion != 0x0303 || cfg.ClientSessionCache == nil || cfg.InsecureSkipVerify {
			t.Errorf("%s: ServerName %q (want %q), MinVersion %x, cache %v", c.addr, cfg.ServerName, c.want, cfg.MinVersion, cfg.ClientSessionCache != nil)
		}
	}
	if err := (TLSOptions{Enabled: true, CAPEM: "not pem"}).Check(); err == nil {
		t.Error("a CA without a certificate was accepted")
	}
}
