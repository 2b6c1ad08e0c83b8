package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a private CA made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "edge test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf for name (a server's DNS name, or a client's common
// name) and returns its certificate and key as PEM.
func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUpstreamTLS: edge talks HTTPS to a target whose certificate is from a
// private CA, for the name tls_server_name says, with a client certificate
// the target requires; its health checks do too. The wrong name, or no
// client certificate, is refused with a 502 and a log line saying why.
func TestUpstreamTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA := newTestCA(t), newTestCA(t)
	srvCert, srvKey := serverCA.issue(t, "backend.internal", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := clientCA.issue(t, "edge-client", x509.ExtKeyUsageClientAuth)
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	clientRoots := x509.NewCertPool()
	clientRoots.AppendCertsFromPEM(clientCA.pem)

	var served, checks, plain atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
				plain.Add(1)
				return
			}
			if r.URL.Path == "/healthz" {
				checks.Add(1)
				return
			}
			served.Add(1)
			fmt.Fprintf(w, "hello %s over %s", r.TLS.PeerCertificates[0].Subject.CommonName, r.TLS.ServerName)
		}),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    clientRoots,
		},
		// The refused handshakes are the point of the test.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()

	caPath := writeFile(t, dir, "ca.pem", serverCA.pem)
	certPath := writeFile(t, dir, "client.pem", cliCert)
	keyPath := writeFile(t, dir, "client.key", cliKey)
	upstream := func(name, extra string) string {
		return fmt.Sprintf(`
[[upstreams]]
name = %q
targets = [%q]
tls = true
tls_ca = %q
retries = 0
%s
[upstreams.passive_health]
max_fails = 0
[[routes]]
name = %q
path = "/%s/"
upstream = %q
`, name, addr, caPath, extra, name, name, name)
	}
	e := startEdge(t, upstream("good", fmt.Sprintf(`tls_server_name = "backend.internal"
tls_client_cert = %q
tls_client_key = %q
[upstreams.health_check]
path = "/healthz"
interval = "1s"`, certPath, keyPath))+
		upstream("wrongname", fmt.Sprintf("tls_server_name = \"other.internal\"\ntls_client_cert = %q\ntls_client_key = %q", certPath, keyPath))+
		upstream("nocert", `tls_server_name = "backend.internal"`))

	for range 3 {
		resp, body := e.get(t, "api.example.com", "/good/x")
		if resp.StatusCode != 200 || body != "hello edge-client over backend.internal" {
			t.Fatalf("good: %d %q, want 200 from the TLS target with edge's client certificate", resp.StatusCode, body)
		}
	}
	if served.Load() != 3 {
		t.Errorf("the target served %d requests, want 3", served.Load())
	}
	eventually(t, 10*time.Second, func() bool { return checks.Load() >= 2 }, "health checks over TLS with the client certificate")
	if !strings.Contains(e.metric(t, "edge_upstream_target_healthy"), fmt.Sprintf(`target=%q,upstream="good"} 1`, addr)) {
		t.Errorf("the TLS target is not healthy:\n%s", e.metric(t, "edge_upstream_target_healthy"))
	}

	resp, _ := e.get(t, "api.example.com", "/wrongname/x")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("wrong server name: %d, want 502", resp.StatusCode)
	}
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(e.stderr.String(), "certificate is valid for backend.internal, not other.internal")
	}, "a log line saying the certificate is not for the name")

	resp, _ = e.get(t, "api.example.com", "/nocert/x")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("no client certificate: %d, want 502", resp.StatusCode)
	}
	if served.Load() != 3 || plain.Load() != 0 {
		t.Errorf("served %d (want 3), without a client certificate %d (want 0)", served.Load(), plain.Load())
	}
}

// counting is a backend that counts the requests its handler answers
// (health checks not included).
func counting(t *testing.T, name string, status *atomic.Int64) (*backend, *atomic.Int64) {
	var n atomic.Int64
	b := startBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		if code := status.Load(); code != 0 {
			w.WriteHeader(int(code))
		}
		fmt.Fprintf(w, "%s %s", name, r.Method)
	})
	return b, &n
}

// TestUpstreamBackup: a backup target gets requests only while the primary
// is down, and the primary gets them all again once it is back.
func TestUpstreamBackup(t *testing.T) {
	var ok atomic.Int64
	a, atA := counting(t, "a", &ok)
	b, atB := counting(t, "b", &ok)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q, { address = %q, backup = true }]
[upstreams.health_check]
path = "/healthz"
interval = "1s"
healthy_threshold = 1
unhealthy_threshold = 1
[upstreams.passive_health]
max_fails = 0
[[routes]]
name = "app"
path = "/"
upstream = "app"
`, a.addr, b.addr))
	send := func(want string) {
		t.Helper()
		for range 5 {
			resp, body := e.get(t, "api.example.com", "/x")
			if resp.StatusCode != 200 || body != want+" GET" {
				t.Fatalf("%d %q, want 200 from %s", resp.StatusCode, body, want)
			}
		}
	}
	send("a")
	if atA.Load() != 5 || atB.Load() != 0 {
		t.Fatalf("primary up: a %d, b %d; want 5, 0", atA.Load(), atB.Load())
	}

	healthy := func(v int) bool {
		return strings.Contains(e.metric(t, "edge_upstream_target_healthy"), fmt.Sprintf(`target=%q,upstream="app"} %d`, a.addr, v))
	}
	a.kill()
	// A request on a connection a had kept open may fail (it was written
	// before the close was seen, and is never sent twice); the next go
	// to b at once, before the health check has noticed.
	eventually(t, 5*time.Second, func() bool {
		_, body := e.get(t, "api.example.com", "/x")
		return body == "b GET"
	}, "the backup serving")
	eventually(t, 10*time.Second, func() bool { return healthy(0) }, "the primary marked down")
	before := atB.Load()
	send("b")
	if atB.Load()-before != 5 {
		t.Fatalf("primary down: b served %d, want 5", atB.Load()-before)
	}

	a.revive(t, func(w http.ResponseWriter, r *http.Request) {
		atA.Add(1)
		fmt.Fprint(w, "a GET")
	})
	eventually(t, 10*time.Second, func() bool { return healthy(1) }, "the primary marked up")
	before = atB.Load()
	send("a")
	if atB.Load() != before {
		t.Errorf("primary back: b still got %d requests", atB.Load()-before)
	}
}

// TestUpstreamRetryOnStatus: an idempotent request without a body that
// gets a status of retry_on goes to another target, within retries and
// retry_timeout; a POST never goes twice, nor a request with a body.
func TestUpstreamRetryOnStatus(t *testing.T) {
	var fail, ok atomic.Int64
	fail.Store(503)
	a, atA := counting(t, "a", &fail)
	b, atB := counting(t, "b", &ok)
	// Three targets that all fail: a request is tried at most retries+1 times.
	var d [3]*backend
	var atD [3]*atomic.Int64
	for i := range d {
		d[i], atD[i] = counting(t, fmt.Sprintf("d%d", i), &fail)
	}
	// Longer than retry_timeout, so the first try uses it all up.
	slow503 := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		w.WriteHeader(503)
	}
	slow, slow2 := startBackend(t, "slow", slow503), startBackend(t, "slow2", slow503)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "mixed"
targets = [%q, %q]
retry_on = [502, 503, 504]
[upstreams.passive_health]
max_fails = 0
[[upstreams]]
name = "down"
targets = [%q, %q, %q]
retry_on = [503]
retries = 1
[upstreams.passive_health]
max_fails = 0
[[upstreams]]
name = "slow"
targets = [%q, %q]
retry_on = [503]
retry_timeout = "10ms"
[upstreams.passive_health]
max_fails = 0
[[routes]]
name = "mixed"
path = "/mixed/"
upstream = "mixed"
[[routes]]
name = "down"
path = "/down/"
upstream = "down"
[[routes]]
name = "slow"
path = "/slow/"
upstream = "slow"
`, a.addr, b.addr, d[0].addr, d[1].addr, d[2].addr, slow.addr, slow2.addr))

	for range 4 {
		resp, body := e.get(t, "api.example.com", "/mixed/x")
		if resp.StatusCode != 200 || body != "b GET" {
			t.Fatalf("GET: %d %q, want 200 from b after a's 503", resp.StatusCode, body)
		}
	}
	if atA.Load() == 0 || atB.Load() != 4 {
		t.Fatalf("GET: a answered %d (want some), b %d (want 4)", atA.Load(), atB.Load())
	}
	if m := e.metric(t, "edge_upstream_retries_total"); !strings.Contains(m, fmt.Sprintf(`reason="503",upstream="mixed"} %d`, atA.Load())) {
		t.Errorf("retries metric, want %d for 503:\n%s", atA.Load(), m)
	}

	// POST: the 503 is passed on, whichever target got it.
	a0, b0 := atA.Load(), atB.Load()
	for range 4 {
		resp, _ := e.do(t, http.MethodPost, e.url("api.example.com", "/mixed/x"), strings.NewReader("order=1"), nil)
		if resp.StatusCode != 200 && resp.StatusCode != 503 {
			t.Fatalf("POST: %d", resp.StatusCode)
		}
	}
	if got := atA.Load() + atB.Load() - a0 - b0; got != 4 {
		t.Errorf("4 POSTs reached the upstreams %d times, want 4 (never retried)", got)
	}

	total := func() int64 { return atD[0].Load() + atD[1].Load() + atD[2].Load() }
	cases := []struct {
		method string
		body   string
		hdr    http.Header
		tries  int64
	}{
		{http.MethodGet, "", nil, 2},    // retries = 1 bounds the tries
		{http.MethodDelete, "", nil, 2}, // idempotent by RFC 9110
		{http.MethodPost, "", nil, 1},
		{http.MethodPost, "", http.Header{"Idempotency-Key": {"k1"}}, 2}, // as connection retries allow
		{http.MethodPut, "x=1", nil, 1},                                  // its body was used up
	}
	for _, c := range cases {
		before := total()
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		resp, got := e.do(t, c.method, e.url("api.example.com", "/down/x"), body, c.hdr)
		if resp.StatusCode != 503 || !strings.HasPrefix(got, "d") {
			t.Errorf("%s: %d %q, want the last target's 503", c.method, resp.StatusCode, got)
		}
		if n := total() - before; n != c.tries {
			t.Errorf("%s %v: reached the upstream %d times, want %d", c.method, c.hdr, n, c.tries)
		}
	}

	before := slow.count() + slow2.count()
	if resp, _ := e.get(t, "api.example.com", "/slow/x"); resp.StatusCode != 503 {
		t.Errorf("slow: %d, want 503", resp.StatusCode)
	}
	if n := slow.count() + slow2.count() - before; n != 1 {
		t.Errorf("retry_timeout passed during the first try, yet it was tried %d times", n)
	}
}
