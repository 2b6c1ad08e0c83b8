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
// client on another address is served. The per-IP cap must hold throughout
// and the normal client must not notice.
func TestSlowConnectionsHoldThePerIPCap(t *testing.T) {
	const perIP, slow = 20, 500
	h := newHarness(t, cfgWith(config.LimitSections{Access: config.Access{MaxConnsPerIP: perIP, MaxConns: 1000}}), harnessOpt{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	attacker := netip.MustParseAddr("127.0.0.1")
	var peak atomic.Int64
	srv := &http.Server{
		Handler:           okHandler,
		ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				h.e.conns.mu.Lock()
				n := int64(h.e.conns.perIP[attacker])
				h.e.conns.mu.Unlock()
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
			}
		},
	}
	go func() { _ = srv.Serve(h.e.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range slow {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
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
		})
	}

	normal := &http.Client{Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext,
	}, Timeout: 2 * time.Second}
	for i := range 10 {
		time.Sleep(50 * time.Millisecond)
		resp, err := normal.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("normal client request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("normal client request %d: status %d", i, resp.StatusCode)
		}
	}
	cancel()
	wg.Wait()

	if p := peak.Load(); p > perIP || p < perIP/2 {
		t.Fatalf("peak connections from the attacker = %d, want at most %d (and the cap reached)", p, perIP)
	}
	refused := counterValue(h.m.ConnRefused("max_conns_per_ip"))
	if refused < slow-perIP-50 {
		t.Fatalf("refused %v connections, want about %d", refused, slow-perIP)
	}
	t.Logf("peak %d from the attacker, %v refused", peak.Load(), refused)
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
	// refusedByServer reports whether the server closed the connection
	// without a word.
	refusedByServer := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF || (err != nil && !isTimeout(err))
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
	var kept []net.Conn
	for i, s := range steps {
		c := dial(s.from)
		if got := refusedByServer(c); got != s.refused {
			t.Fatalf("step %d from %s: refused %v, want %v", i, s.from, got, s.refused)
		}
		if !s.refused {
			kept = append(kept, <-accepted)
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
	if refusedByServer(dial("127.0.0.1")) {
		t.Fatal("a slot freed by Close was not given back")
	}
	if got := counterValue(h.m.ConnsOpen()); got != 3 {
		t.Fatalf("open connections = %v, want 3", got)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
