package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// edgeAddrs picks the listen addresses (HTTPS, HTTP, admin) of n edge
// processes before they start, all distinct, so a balancer can be pointed
// at them.
func edgeAddrs(t *testing.T, n int) [][3]string {
	t.Helper()
	free := testpeer.FreePorts(t, 3*n)
	out := make([][3]string, n)
	for i := range out {
		out[i] = [3]string(free[3*i : 3*i+3])
	}
	return out
}

// acmeTLS is the [tls] table of mode "acme" against p, for domains.
func acmeTLS(p *testpeer.PebbleServer, domains ...string) string {
	quoted := make([]string, len(domains))
	for i, d := range domains {
		quoted[i] = strconv.Quote(d)
	}
	return fmt.Sprintf(`
[tls]
mode = "acme"
domains = [%s]
email = "ops@example.com"
acme_ca = %q
acme_ca_roots = %q
`, strings.Join(quoted, ", "), p.DirectoryURL, p.CAFile)
}

// appRoute proxies hosts to a real upstream that names itself and the Host
// it was asked for.
func appRoute(t *testing.T, hosts ...string) string {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "app %s %s", r.Method, r.Host)
	}))
	t.Cleanup(up.Close)
	quoted := make([]string, len(hosts))
	for i, h := range hosts {
		quoted[i] = strconv.Quote(h)
	}
	return fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q]

[[routes]]
name = "app"
hosts = [%s]
upstream = "app"
`, up.Listener.Addr().String(), strings.Join(quoted, ", "))
}

// metricValue reads one series (name with its labels, exactly as exposed)
// from edge's /metrics; ok is false when the series does not exist.
func metricValue(t *testing.T, e *testpeer.EdgeProcess, series string) (float64, bool) {
	t.Helper()
	for _, line := range strings.Split(e.Metrics(t, series), "\n") {
		rest, found := strings.CutPrefix(line, series+" ")
		if !found {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			t.Fatalf("metric %s: %v", line, err)
		}
		return v, true
	}
	return 0, false
}

func expirySeries(name string) string {
	return fmt.Sprintf("edge_tls_certificate_expiry_timestamp_seconds{name=%q}", name)
}

func ordersSeries(kind, result string) string {
	return fmt.Sprintf("edge_tls_acme_orders_total{kind=%q,result=%q}", kind, result)
}

// waitCert waits until edge reports a certificate for name (the expiry
// gauge is set when the certificate is published to the handshake index).
func waitCert(t *testing.T, e *testpeer.EdgeProcess, p *testpeer.PebbleServer, name string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if _, ok := metricValue(t, e, expirySeries(name)); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge has no certificate for %s after %s\npebble:\n%s", name, within, p.LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// handshake connects to addr asking for serverName and returns the served
// leaf. roots nil skips verification (to see what a scanner would get).
func handshake(addr, serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	cfg := &tls.Config{ServerName: serverName, RootCAs: roots, InsecureSkipVerify: roots == nil}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 15 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// servedLeaf is handshake that must succeed.
func servedLeaf(t *testing.T, addr, serverName string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	leaf, err := handshake(addr, serverName, roots)
	if err != nil {
		t.Fatalf("handshake with %s for %s: %v", addr, serverName, err)
	}
	return leaf
}

// httpsClient trusts roots and dials addr whatever the URL's host, as DNS
// pointing the names at edge would; it offers HTTP/2.
func httpsClient(t *testing.T, addr string, roots *x509.CertPool) *http.Client {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}
}

// noRedirect is a plain-HTTP client that shows redirects instead of
// following them.
var noRedirect = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// filePair writes a private CA and a certificate for names signed by it,
// as a purchased certificate would sit beside ACME ones, and returns the
// pair's paths and a pool trusting the CA.
func filePair(t *testing.T, dir string, names ...string) (certPath, keyPath string, roots *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "purchased test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "purchased.crt"), filepath.Join(dir, "purchased.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	return certPath, keyPath, roots
}

// tcpBalancer is a layer-4 load balancer (TLS passthrough, as a cloud
// network load balancer runs in front of replicas): each connection goes to
// the next backend in turn, skipping one that refuses it, and bytes are
// copied both ways untouched. With no backend it accepts and closes.
//
// Pebble validates through balancers because they hold their ports from
// the moment they start: edge's own ports are picked just before it starts,
// so no other process on the machine can take them in between.
type tcpBalancer struct {
	ln net.Listener

	mu       sync.Mutex
	backends []string
	next     int
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// startBalancer listens on a free loopback port; it stops with the test.
func startBalancer(t *testing.T) *tcpBalancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &tcpBalancer{ln: ln, conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.close)
	return b
}

func (b *tcpBalancer) port(t *testing.T) int { return testpeer.Port(t, b.ln.Addr().String()) }

// route sends new connections to backends from now on.
func (b *tcpBalancer) route(backends ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = backends
}

func (b *tcpBalancer) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		if !b.track(c) {
			c.Close()
			return
		}
		b.wg.Add(1)
		go b.relay(c)
	}
}

// track registers c so close can cut it; false once the balancer is closed.
func (b *tcpBalancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns == nil {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *tcpBalancer) untrack(c net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.conns, c)
	c.Close()
}

func (b *tcpBalancer) dial() (net.Conn, error) {
	b.mu.Lock()
	backends, start := b.backends, b.next
	b.next++
	b.mu.Unlock()
	if len(backends) == 0 {
		return nil, errors.New("no backend")
	}
	var errs []error
	for i := range backends {
		c, err := net.DialTimeout("tcp", backends[(start+i)%len(backends)], 2*time.Second)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (b *tcpBalancer) relay(front net.Conn) {
	defer b.wg.Done()
	defer b.untrack(front)
	back, err := b.dial()
	if err != nil {
		return
	}
	if !b.track(back) {
		back.Close()
		return
	}
	defer b.untrack(back)
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(back, front)
		if tc, ok := back.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(front, back)
	if tc, ok := front.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	<-done
}

func (b *tcpBalancer) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.conns = nil
	b.mu.Unlock()
	b.wg.Wait()
}

// acmeFront is Pebble validating through two balancers, TLS-ALPN-01
// through tls and HTTP-01 through http; a test routes them to edge.
type acmeFront struct {
	pebble    *testpeer.PebbleServer
	tls, http *tcpBalancer
}

func newACMEFront(t *testing.T) *acmeFront {
	t.Helper()
	f := &acmeFront{tls: startBalancer(t), http: startBalancer(t)}
	f.pebble = testpeer.Pebble(t, testpeer.PebbleOptions{TLSPort: f.tls.port(t), HTTPPort: f.http.port(t)})
	return f
}

// startEdge starts edge on fresh ports and routes the CA's validation to
// them.
func (f *acmeFront) startEdge(t *testing.T, dir, body string) *testpeer.EdgeProcess {
	t.Helper()
	addrs := edgeAddrs(t, 1)[0]
	f.tls.route(addrs[0])
	f.http.route(addrs[1])
	return testpeer.StartEdgeAt(t, dir, addrs, "", body)
}
