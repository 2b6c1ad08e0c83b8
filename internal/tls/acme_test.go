package tls

import (
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/testpeer"
)

// countingRecorder keeps what the manager reports, for assertions.
type countingRecorder struct {
	mu       sync.Mutex
	orders   map[string]int
	expiry   map[string]time.Time
	failures map[string]time.Time
}

func newCountingRecorder() *countingRecorder {
	return &countingRecorder{orders: map[string]int{}, expiry: map[string]time.Time{}, failures: map[string]time.Time{}}
}

func (r *countingRecorder) SetExpiry(name string, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expiry[name] = t
}

func (r *countingRecorder) Order(kind, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.orders[kind+"/"+result]++
}

func (r *countingRecorder) Failure(name string, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures[name] = t
}

func (r *countingRecorder) Forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.expiry, name)
	delete(r.failures, name)
}

func (r *countingRecorder) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orders[key]
}

// acmeEnv is Pebble plus the two listeners it validates against.
type acmeEnv struct {
	pebble *testpeer.PebbleServer
	https  net.Listener
	http   net.Listener
}

// newACMEEnv listens first so Pebble can be told the ports. With noALPN
// Pebble's TLS-ALPN-01 port is one where nothing listens.
func newACMEEnv(t *testing.T, validity time.Duration, noALPN bool) *acmeEnv {
	t.Helper()
	e := &acmeEnv{}
	var err error
	if e.https, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if e.http, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	tlsPort := testpeer.Port(t, e.https.Addr().String())
	if noALPN {
		tlsPort = testpeer.Port(t, testpeer.FreePort(t))
	}
	e.pebble = testpeer.Pebble(t, testpeer.PebbleOptions{
		HTTPPort: testpeer.Port(t, e.http.Addr().String()),
		TLSPort:  tlsPort,
		Validity: validity,
	})
	return e
}

func (e *acmeEnv) config(domains ...string) config.TLS {
	return config.TLS{Mode: "acme", TLSACME: config.TLSACME{
		Domains: domains, Email: "ops@example.com",
		ACMECA: e.pebble.DirectoryURL, ACMECARoots: e.pebble.CAFile,
	}}
}

// serve runs the HTTPS listener (round robin over the managers, as a load
// balancer in front of replicas would) and the HTTP listener (the first
// manager's challenge handler in front of the redirect).
func (e *acmeEnv) serve(t *testing.T, ms ...*Manager) {
	t.Helper()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
	cfgs := make([]*stdtls.Config, len(ms))
	for i, m := range ms {
		cfgs[i] = m.TLSConfig()
	}
	quiet := log.New(io.Discard, "", 0)
	https := &http.Server{Handler: ok, ErrorLog: quiet}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = https.Serve(&roundRobinTLS{Listener: e.https, cfgs: cfgs})
	}()
	plain := &http.Server{Handler: ms[0].HTTPHandler(RedirectHandler("443", nil, ok)), ErrorLog: quiet}
	go func() {
		defer wg.Done()
		_ = plain.Serve(e.http)
	}()
	t.Cleanup(func() {
		https.Close()
		plain.Close()
		wg.Wait()
	})
}

// roundRobinTLS hands each accepted connection to the next manager's TLS
// configuration.
type roundRobinTLS struct {
	net.Listener
	mu   sync.Mutex
	n    int
	cfgs []*stdtls.Config
}

func (l *roundRobinTLS) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	cfg := l.cfgs[l.n%len(l.cfgs)]
	l.n++
	l.mu.Unlock()
	return stdtls.Server(c, cfg), nil
}

// waitReady waits for name's first certificate.
func waitReady(t *testing.T, m *Manager, name string, within time.Duration) {
	t.Helper()
	m.mu.Lock()
	st := m.acme.names[name]
	m.mu.Unlock()
	if st == nil {
		t.Fatalf("%s is not a managed name", name)
	}
	select {
	case <-st.ready:
	case <-time.After(within):
		t.Fatalf("no certificate for %s within %s", name, within)
	}
}

func servedLeaf(t *testing.T, addr, name string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	st, err := handshake(t, addr, &stdtls.Config{RootCAs: roots, ServerName: name})
	if err != nil {
		t.Fatalf("handshake for %s: %v", name, err)
	}
	return st.PeerCertificates[0]
}

func TestACMETLSALPN01(t *testing.T) {
	env := newACMEEnv(t, 0, false)
	state := t.TempDir()
	rec := newCountingRecorder()
	m, err := New(env.config("a.example.com", "b.example.com"), state, nil, nil, WithRecorder(rec))
	if err != nil {
		t.Fatal(err)
	}
	env.serve(t, m)
	waitReady(t, m, "a.example.com", 30*time.Second)
	waitReady(t, m, "b.example.com", 30*time.Second)
	roots := env.pebble.Roots()
	addr := env.https.Addr().String()

	t.Run("chain verifies against pebble's root", func(t *testing.T) {
		for _, name := range []string{"a.example.com", "B.Example.com"} {
			leaf := servedLeaf(t, addr, name, roots)
			if !strings.EqualFold(leaf.DNSNames[0], name) {
				t.Errorf("certificate for %s names %v", name, leaf.DNSNames)
			}
		}
	})
	t.Run("http/2", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &stdtls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
		}}
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://a.example.com/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || string(body) != "HTTP/2.0" {
			t.Fatalf("got %s (%q), want HTTP/2", resp.Proto, body)
		}
	})
	t.Run("unknown name and no SNI refused without an order", func(t *testing.T) {
		before := env.pebble.Orders()
		for _, name := range []string{"evil.example.com", ""} {
			if _, err := handshake(t, addr, &stdtls.Config{InsecureSkipVerify: true, ServerName: name}); err == nil {
				t.Errorf("handshake for %q succeeded", name)
			}
		}
		if policyErr := m.acme.hostPolicy(context.Background(), "evil.example.com:443"); policyErr == nil {
			t.Error("host policy allows an unconfigured name")
		}
		if got := env.pebble.Orders(); got != before {
			t.Errorf("pebble orders went from %d to %d", before, got)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		if got := rec.count("issue/success"); got != 2 {
			t.Errorf("issue/success = %d, want 2", got)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.expiry["a.example.com"].IsZero() || rec.expiry["b.example.com"].IsZero() {
			t.Errorf("expiry not recorded: %v", rec.expiry)
		}
	})
	t.Run("port 80 redirects", func(t *testing.T) {
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req, _ := http.NewRequest(method, "http://"+env.http.Addr().String()+"/p/q?x=1", strings.NewReader("body"))
			req.Host = "a.example.com"
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://a.example.com/p/q?x=1" {
				t.Errorf("%s: %d %q", method, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
	})

	t.Run("update adds and removes names live", func(t *testing.T) {
		if err := update(m, env.config("a.example.com", "c.example.com"), nil); err != nil {
			t.Fatal(err)
		}
		waitReady(t, m, "c.example.com", 30*time.Second)
		servedLeaf(t, addr, "c.example.com", roots)
		if _, err := handshake(t, addr, &stdtls.Config{InsecureSkipVerify: true, ServerName: "b.example.com"}); err == nil {
			t.Error("a removed name is still served")
		}
		changed := env.config("a.example.com", "c.example.com")
		changed.Email = "other@example.com"
		if err := update(m, changed, nil); !errors.Is(err, ErrNeedsRestart) {
			t.Errorf("changing the account email: %v, want ErrNeedsRestart", err)
		}
		if err := update(m, env.config("a.example.com", "b.example.com"), nil); err != nil {
			t.Fatal(err)
		}
		waitReady(t, m, "b.example.com", 30*time.Second)
	})

	t.Run("restart reuses the stored certificate", func(t *testing.T) {
		m.Close()
		orders := env.pebble.Orders()
		m2, err := New(env.config("a.example.com", "b.example.com"), state, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m2.Close()
		waitReady(t, m2, "a.example.com", 10*time.Second)
		waitReady(t, m2, "b.example.com", 10*time.Second)
		if got := env.pebble.Orders(); got != orders {
			t.Fatalf("restart made %d new orders", got-orders)
		}
	})
}

func TestACMEHTTP01WithoutTLSALPN(t *testing.T) {
	env := newACMEEnv(t, 0, true)
	m, err := New(env.config("h.example.com"), t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	env.serve(t, m)
	waitReady(t, m, "h.example.com", 60*time.Second)
	servedLeaf(t, env.https.Addr().String(), "h.example.com", env.pebble.Roots())

	// A challenge for a name not configured is refused before any lookup.
	resp, err := http.Get("http://" + env.http.Addr().String() + "/.well-known/acme-challenge/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("challenge for 127.0.0.1: %d, want 403", resp.StatusCode)
	}
}

func TestACMEServerDownAtStart(t *testing.T) {
	env := newACMEEnv(t, 0, false)
	env.pebble.Stop()
	logger, logs := newLogRecorder()
	rec := newCountingRecorder()
	m, err := New(env.config("late.example.com"), t.TempDir(), nil, logger, WithRecorder(rec))
	if err != nil {
		t.Fatalf("New with the CA down: %v", err)
	}
	defer m.Close()
	env.serve(t, m)
	failed := logs.waitFor(t, "acme: obtaining a certificate failed")
	if !strings.Contains(recordText(failed), "unreachable") {
		t.Errorf("failure log %q does not say the CA is unreachable", recordText(failed))
	}
	if rec.count("issue/failure") == 0 {
		t.Error("failure not counted")
	}

	env.pebble.Start()
	waitReady(t, m, "late.example.com", 60*time.Second)
	servedLeaf(t, env.https.Addr().String(), "late.example.com", env.pebble.Roots())
}

func TestACMETwoReplicasOneOrderPerName(t *testing.T) {
	env := newACMEEnv(t, 0, false)
	rs := testpeer.Redis(t)
	names := []string{"one.example.com", "two.example.com"}
	var ms []*Manager
	for range 2 {
		rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
		t.Cleanup(func() { rc.Close() })
		m, err := New(env.config(names...), t.TempDir(), nil, nil, WithRedis(rc))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		ms = append(ms, m)
	}
	env.serve(t, ms...)
	for _, m := range ms {
		for _, n := range names {
			waitReady(t, m, n, 60*time.Second)
		}
	}
	if got := env.pebble.Orders(); got != len(names) {
		t.Fatalf("pebble created %d orders for %d names\n%s", got, len(names), env.pebble.LogTail())
	}
	for _, n := range names {
		a := ms[0].certs.Load().match(n).Leaf
		b := ms[1].certs.Load().match(n).Leaf
		if !a.Equal(b) {
			t.Errorf("replicas serve different certificates for %s", n)
		}
	}
}

func TestACMERenewal(t *testing.T) {
	env := newACMEEnv(t, 90*time.Second, false)
	cfg := env.config("renew.example.com")
	cfg.RenewBefore = config.Duration(80 * time.Second)
	rec := newCountingRecorder()
	logger, logs := newLogRecorder()
	m, err := New(cfg, t.TempDir(), nil, logger, WithRecorder(rec))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	env.serve(t, m)
	waitReady(t, m, "renew.example.com", 30*time.Second)
	first := m.certs.Load().match("renew.example.com").Leaf

	logs.waitForWithin(t, "acme: certificate renewed", 60*time.Second)
	if rec.count("renew/success") == 0 {
		t.Error("renewal not counted")
	}
	leaf := servedLeaf(t, env.https.Addr().String(), "renew.example.com", env.pebble.Roots())
	if leaf.Equal(first) {
		t.Fatal("the renewed certificate is not served")
	}
}

func recordText(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	return b.String()
}
