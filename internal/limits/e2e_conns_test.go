package limits_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// slowClient holds connections that send a request's headers a line at a
// time, as a slowloris attack does.
type slowClient struct {
	mu    sync.Mutex
	conns []net.Conn
}

func dialFrom(t *testing.T, source, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dialling %s from %s: %v", addr, source, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// open dials n connections from source and sends each the first line of a
// request and its Host header, but not the blank line that ends them.
func (s *slowClient) open(t *testing.T, source, addr string, n int) []net.Conn {
	t.Helper()
	out := make([]net.Conn, 0, n)
	for range n {
		c := dialFrom(t, source, addr)
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: api.example.com\r\n")); err != nil {
			t.Fatalf("writing to a new connection: %v", err)
		}
		out = append(out, c)
	}
	s.mu.Lock()
	s.conns = append(s.conns, out...)
	s.mu.Unlock()
	return out
}

// trickle sends one more header line on every connection each interval
// until stop is closed. The connections were opened by the test goroutine,
// which closes them at cleanup; write errors only mean edge closed one.
func (s *slowClient) trickle(interval time.Duration, stop <-chan struct{}, done *sync.WaitGroup) {
	done.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			s.mu.Lock()
			conns := s.conns
			s.mu.Unlock()
			line := []byte(fmt.Sprintf("X-Slow-%d: 1\r\n", i))
			for _, c := range conns {
				_, _ = c.Write(line)
			}
		}
	})
}

func TestE2ESlowConnectionsDoNotStarveOthers(t *testing.T) {
	t.Parallel()
	const (
		attackers = 5   // 127.0.0.2 to 127.0.0.6
		perIP     = 100 // the cap, and what each attacker holds open
		extra     = 10  // connections each attacker tries beyond the cap
	)
	u := startUpstream(t)
	// read_header_timeout far beyond the test: the slow connections stay
	// held however long a loaded machine takes, and an ordinary request
	// starved by them would wait minutes, not the moment it takes here.
	e := testpeer.StartEdge(t, "redirect_http = false\nread_header_timeout = \"10m\"", appConfig(u, fmt.Sprintf(`
[access]
max_conns_per_ip = %d
`, perIP)))

	var slow slowClient
	for i := range attackers {
		slow.open(t, fmt.Sprintf("127.0.0.%d", i+2), e.HTTP, perIP)
	}
	stop := make(chan struct{})
	var trickling sync.WaitGroup
	slow.trickle(200*time.Millisecond, stop, &trickling)
	defer trickling.Wait()
	defer close(stop)
	eventually(t, 30*time.Second, "edge to accept the slow connections", func() bool {
		return metric(t, e, "edge_listener_connections_open") >= attackers*perIP
	})

	// Beyond the cap, edge closes a connection at accept, before reading.
	var refused []net.Conn
	for i := range attackers {
		refused = append(refused, slow.open(t, fmt.Sprintf("127.0.0.%d", i+2), e.HTTP, extra)...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range refused {
		_ = c.SetReadDeadline(deadline)
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a connection over the per-IP cap was kept open (read: %v)", err)
		}
	}
	if n := metric(t, e, "edge_connections_refused_total", `reason="max_conns_per_ip"`); n != attackers*extra {
		t.Errorf("connections refused over the per-IP cap: %v, want %d", n, attackers*extra)
	}

	// Meanwhile ordinary clients, over HTTPS and plain HTTP, from the
	// attackers' neighbour addresses, are served. The clients' timeouts
	// are generous for a loaded machine and still far below how long a
	// request the slow connections starved would wait.
	https := e.Client(t, false)
	plain := &http.Client{Timeout: 30 * time.Second}
	fresh := e.ClientFrom(t, "127.0.0.7")
	for i := range 10 {
		for name, try := range map[string]func() (answer, error){
			"https": func() (answer, error) { return tryRequest(https, e.URL("api.example.com", "/"), nil) },
			"http": func() (answer, error) {
				return tryRequest(plain, "http://"+e.HTTP+"/", map[string]string{"Host": "api.example.com"})
			},
			"https fresh": func() (answer, error) { return tryRequest(fresh, e.URL("api.example.com", "/"), nil) },
		} {
			a, err := try()
			if err != nil || a.status != 200 {
				t.Fatalf("%s request %d during the attack: %v %d", name, i, err, a.status)
			}
		}
	}

	// The slow connections were held, not dropped, and are served when
	// their headers end.
	if n := metric(t, e, "edge_listener_connections_open"); n < attackers*perIP {
		t.Errorf("only %v connections open; edge dropped slow ones under the cap", n)
	}
	for i := range attackers {
		c := slow.conns[i*perIP]
		if _, err := c.Write([]byte("\r\n")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
			t.Errorf("slow connection from 127.0.0.%d: %q %v", i+2, status, err)
		}
	}
}
