package limits

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"edge/internal/config"
)

// TestSlowConnectionsHoldThePerIPCap opens 500 connections from one
// address that trickle a request header a byte at a time, while a normal
// client on another address is served. Once every attacker connection has
// been admitted or refused, exactly the cap is held and the rest refused,
// and the normal client has not noticed.
func TestSlowConnectionsHoldThePerIPCap(t *testing.T) {
	const perIP, slow = 20, 500
	h := newHarness(t, cfgWith(config.LimitSections{Access: config.Access{MaxConnsPerIP: perIP, MaxConns: 1000}}), harnessOpt{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	attacker := netip.MustParseAddr("127.0.0.1")
	var admitted, peak atomic.Int64
	srv := &http.Server{
		Handler: okHandler,
		// Far beyond the test: a held connection timed out would free a
		// slot for an attacker connection not yet accepted.
		ReadHeaderTimeout: time.Minute,
		ConnState: func(c net.Conn, st http.ConnState) {
			if st != http.StateNew || c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap() != attacker {
				return
			}
			admitted.Add(1)
			h.e.conns.mu.Lock()
			n := int64(h.e.conns.perIP[attacker])
			h.e.conns.mu.Unlock()
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
		},
	}
	go func() { _ = srv.Serve(h.e.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var dialErrs atomic.Int64
	for range slow {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				dialErrs.Add(1)
				return
			}
			defer c.Close()
			for _, b := range []byte("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1") {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
			// Held open to the end: a connection closed early would free
			// a slot.
			<-ctx.Done()
		})
	}
	defer wg.Wait()
	defer cancel()

	refused := func() int64 { return int64(counterValue(h.m.ConnRefused("max_conns_per_ip"))) }
	waitFor(t, 30*time.Second, "every attacker connection to be admitted or refused", func() bool {
		return admitted.Load()+refused()+dialErrs.Load() >= slow
	})
	if n := dialErrs.Load(); n > 0 {
		t.Fatalf("%d attacker connections could not be dialled", n)
	}
	if a, r, p := admitted.Load(), refused(), peak.Load(); a != perIP || r != slow-perIP || p != perIP {
		t.Fatalf("attacker: %d connections admitted, %d refused, at most %d open at once; want %d, %d and %d", a, r, p, perIP, slow-perIP, perIP)
	}

	normal := &http.Client{Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext,
	}, Timeout: 30 * time.Second}
	defer normal.CloseIdleConnections()
	for i := range 10 {
		resp, err := normal.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("normal client request %d while the attacker holds its cap: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("normal client request %d: status %d", i, resp.StatusCode)
		}
	}
}

func TestListenerCapsAndLists(t *testing.T) {
	trusted := prefixes(t, "127.0.0.3")
	cfg := cfgWith(config.LimitSections{Access: config.Access{
		MaxConnsPerIP: 1, MaxConns: 3, IPDeny: prefixes(t, "127.0.0.4"),
	}})
	cfg.Server.TrustedProxies = trusted
	h := newHarness(t, cfg, harnessOpt{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lln := h.e.Listener(ln)
	t.Cleanup(func() { _ = lln.Close() })
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := lln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// refused waits until the listener either hands c to Accept (kept) or
	// closes it without a word (refused), whichever it does.
	var kept []net.Conn
	refused := func(c net.Conn) bool {
		t.Helper()
		gone := make(chan struct{})
		go func() {
			_, _ = c.Read(make([]byte, 1))
			close(gone)
		}()
		select {
		case sc := <-accepted:
			kept = append(kept, sc)
			return false
		case <-gone:
			return true
		case <-time.After(30 * time.Second):
			t.Fatal("the listener neither accepted nor refused a connection")
			return false
		}
	}
	steps := []struct {
		from    string
		refused bool
	}{
		{"127.0.0.1", false},
		{"127.0.0.1", true}, // per-IP cap 1
		{"127.0.0.3", false},
		{"127.0.0.3", false}, // a trusted proxy is exempt from the per-IP cap
		{"127.0.0.4", true},  // denied
		{"127.0.0.5", true},  // global cap 3
	}
	for i, s := range steps {
		if got := refused(dial(s.from)); got != s.refused {
			t.Fatalf("step %d from %s: refused %v, want %v", i, s.from, got, s.refused)
		}
	}
	for reason, want := range map[string]float64{"max_conns_per_ip": 1, "ip_denied": 1, "max_conns": 1} {
		if got := counterValue(h.m.ConnRefused(reason)); got != want {
			t.Errorf("refused %s = %v, want %v", reason, got, want)
		}
	}
	// Closing a connection (twice, as servers do) frees exactly one slot.
	_ = kept[0].Close()
	_ = kept[0].Close()
	if refused(dial("127.0.0.1")) {
		t.Fatal("a slot freed by Close was not given back")
	}
	if got := counterValue(h.m.ConnsOpen()); got != 3 {
		t.Fatalf("open connections = %v, want 3", got)
	}
}
