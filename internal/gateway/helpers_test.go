package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// edgeUnderTest is a Server started in-process on loopback ports, with its
// own state dir and config file.
type edgeUnderTest struct {
	t       testing.TB
	srv     *Server
	addrs   Addrs
	cfgPath string
	client  *http.Client // HTTPS client trusting the internal CA, HTTP/1.1
	h2      *http.Client // same, HTTP/2
	stderr  *testpeer.SyncBuffer
	stdout  *testpeer.SyncBuffer
	cancel  context.CancelFunc
	done    chan error
	stopped sync.Once
}

// baseConfig is prepended to every test config: loopback port 0 listeners,
// internal TLS in a temp state dir.
func baseConfig(stateDir string) string { return baseConfigWith(stateDir, "", "") }

func baseConfigWith(stateDir, serverExtra, logExtra string) string {
	return fmt.Sprintf(`
[server]
listen_https = "127.0.0.1:0"
listen_http = "127.0.0.1:0"
listen_admin = "127.0.0.1:0"
state_dir = %q
shutdown_grace = "5s"
%s

[tls]
mode = "internal"
hosts = ["api.example.com", "*.example.com", "example.com", "other.test"]

[log]
level = "debug"
%s
`, stateDir, serverExtra, logExtra)
}

func startEdge(t testing.TB, cfg string) *edgeUnderTest {
	t.Helper()
	return startEdgeWith(t, "", "", cfg)
}

func startEdgeWith(t testing.TB, serverExtra, logExtra, cfg string) *edgeUnderTest {
	t.Helper()
	return startEdgeClock(t, serverExtra, logExtra, cfg, nil)
}

// startEdgeClock starts edge with clock as its response cache's clock.
func startEdgeClock(t testing.TB, serverExtra, logExtra, cfg string, clock func() time.Time) *edgeUnderTest {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.toml")
	if err := os.WriteFile(path, []byte(baseConfigWith(filepath.Join(dir, "state"), serverExtra, logExtra)+cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &edgeUnderTest{t: t, cfgPath: path, stderr: &testpeer.SyncBuffer{}, stdout: &testpeer.SyncBuffer{}, done: make(chan error, 1)}
	srv, err := New(Options{ConfigPath: path, Version: "test", Stdout: e.stdout, Stderr: e.stderr,
		Listening: func(a Addrs) { e.addrs = a }, CacheClock: clock})
	if err != nil {
		t.Fatalf("starting edge: %v", err)
	}
	e.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	ready := make(chan struct{})
	srv.opts.Listening = func(a Addrs) { e.addrs = a; close(ready) }
	go func() { e.done <- srv.Serve(ctx) }()
	select {
	case <-ready:
	case err := <-e.done:
		t.Fatalf("edge stopped at start: %v\n%s", err, e.stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("edge did not start listening")
	}
	t.Cleanup(e.stop)

	caPEM, err := os.ReadFile(srv.tlsm.CAPath())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	// Every name resolves to the edge under test, as a DNS entry would.
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dialer.DialContext(ctx, network, e.addrs.HTTPS)
	}
	e.client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, DialContext: dial,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}, MaxIdleConnsPerHost: 64,
	}}
	e.h2 = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, DialContext: dial, ForceAttemptHTTP2: true,
	}}
	return e
}

func (e *edgeUnderTest) stop() {
	e.stopped.Do(func() {
		e.cancel()
		select {
		case <-e.done:
		case <-time.After(15 * time.Second):
			e.t.Error("edge did not stop")
		}
	})
}

// url builds an https URL for host and path; the client dials edge whatever
// the host.
func (e *edgeUnderTest) url(host, path string) string {
	_, port, _ := net.SplitHostPort(e.addrs.HTTPS)
	return "https://" + host + ":" + port + path
}

func (e *edgeUnderTest) do(t *testing.T, method, url string, body io.Reader, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	return resp, string(b)
}

func (e *edgeUnderTest) get(t *testing.T, host, path string) (*http.Response, string) {
	t.Helper()
	return e.do(t, http.MethodGet, e.url(host, path), nil, nil)
}

// writeConfig replaces the config file (same base settings).
func (e *edgeUnderTest) writeConfig(cfg string) {
	e.t.Helper()
	state := filepath.Join(filepath.Dir(e.cfgPath), "state")
	if err := os.WriteFile(e.cfgPath, []byte(baseConfig(state)+cfg), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func (e *edgeUnderTest) metric(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.addrs.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// backend is a real HTTP server on loopback that says who it is and echoes
// what it received.
type backend struct {
	name string
	ln   net.Listener
	srv  *http.Server
	addr string

	mu   sync.Mutex
	hits int
	last *http.Request
}

func startBackend(t *testing.T, name string, h http.HandlerFunc) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, ln: ln, addr: ln.Addr().String()}
	b.serve(h)
	t.Cleanup(b.kill)
	return b
}

func (b *backend) serve(h http.HandlerFunc) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.hits++
		b.last = r.Clone(context.Background())
		b.mu.Unlock()
		w.Header().Set("X-Backend", b.name)
		if r.URL.Path == "/healthz" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		if h != nil {
			h(w, r)
			return
		}
		fmt.Fprintf(w, "%s %s %s", b.name, r.Method, r.URL.RequestURI())
	})}
	b.srv = srv
	ln := b.ln
	go func() { _ = srv.Serve(ln) }()
}

// kill stops the backend as a crash would: the port refuses connections.
func (b *backend) kill() {
	if b.srv != nil {
		_ = b.srv.Close()
		b.srv = nil
	}
}

// revive listens again on the same port.
func (b *backend) revive(t *testing.T, h http.HandlerFunc) {
	t.Helper()
	var err error
	for i := 0; i < 50; i++ {
		if b.ln, err = net.Listen("tcp", b.addr); err == nil {
			b.serve(h)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("re-listening on %s: %v", b.addr, err)
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

func (b *backend) lastRequest() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// deadAddr is a loopback address that refuses connections (testpeer.DeadAddr).
func deadAddr(t *testing.T) string {
	t.Helper()
	return testpeer.DeadAddr(t)
}

// eventually retries cond until it holds or the time is up. Used only for
// background work edge does on its own schedule (health checks).
func eventually(t *testing.T, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
