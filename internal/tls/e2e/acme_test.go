package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// hstsTable turns HSTS on, to see it on HTTPS answers and not on port 80.
const hstsTable = `
[tls.hsts]
max_age = "1h"
`

// TestACMETLSALPN01 is the front door going live: edge orders both names
// from Pebble at start over TLS-ALPN-01 on its HTTPS listener, serves a
// chain that verifies against Pebble's root over HTTP/2, refuses names it
// was not given without ordering them, redirects port 80, and after a
// restart serves the stored certificates without a new order.
func TestACMETLSALPN01(t *testing.T) {
	t.Parallel()
	f := newACMEFront(t)
	p := f.pebble
	names := []string{"a.example.com", "b.example.com"}
	e := f.startEdge(t, t.TempDir(), acmeTLS(p, names...)+hstsTable+appRoute(t, names...))
	for _, n := range names {
		waitCert(t, e, p, n, 30*time.Second)
	}
	roots := p.Roots()
	orders := p.Orders()
	if orders != len(names) {
		t.Errorf("pebble saw %d orders for %d names", orders, len(names))
	}
	leaves := map[string]string{}

	t.Run("chain verifies against pebble's root", func(t *testing.T) {
		for _, n := range names {
			leaf := servedLeaf(t, e.HTTPS, n, roots)
			if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != n {
				t.Errorf("certificate for %s names %v", n, leaf.DNSNames)
			}
			leaves[n] = leaf.SerialNumber.String()
		}
		// SNI is case-insensitive.
		servedLeaf(t, e.HTTPS, "A.Example.COM", roots)
	})

	t.Run("http/2 through the route with HSTS", func(t *testing.T) {
		resp, err := httpsClient(t, e.HTTPS, roots).Get(e.URL("b.example.com", "/x"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || !strings.HasPrefix(string(body), "app GET b.example.com") {
			t.Errorf("got %s %s %q, want 200 over HTTP/2 from the upstream", resp.Proto, resp.Status, body)
		}
		if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=3600" {
			t.Errorf("Strict-Transport-Security = %q, want max-age=3600", got)
		}
	})

	t.Run("unconfigured name and no SNI get no certificate and no order", func(t *testing.T) {
		for _, sni := range []string{"evil.example.com", "c.example.com", ""} {
			if leaf, err := handshake(e.HTTPS, sni, nil); err == nil {
				t.Errorf("handshake for %q got a certificate for %v", sni, leaf.DNSNames)
			}
		}
		if got := p.Orders(); got != orders {
			t.Errorf("pebble orders went from %d to %d", orders, got)
		}
		if _, ok := metricValue(t, e, expirySeries("evil.example.com")); ok {
			t.Error("a metric series exists for a name taken from a ClientHello")
		}
	})

	t.Run("port 80", func(t *testing.T) {
		wantLoc := e.URL("a.example.com", "/p/q?x=1")
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req, err := http.NewRequest(method, "http://"+e.HTTP+"/p/q?x=1", strings.NewReader(`{"k":1}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "a.example.com"
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != wantLoc {
				t.Errorf("%s: %d Location %q, want 308 to %s", method, resp.StatusCode, resp.Header.Get("Location"), wantLoc)
			}
			if h := resp.Header.Get("Strict-Transport-Security"); h != "" {
				t.Errorf("%s: HSTS %q on plain HTTP (browsers ignore it there)", method, h)
			}
		}
		// HTTP-01 answers only for configured names.
		req, err := http.NewRequest(http.MethodGet, "http://"+e.HTTP+"/.well-known/acme-challenge/token", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "evil.example.com"
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("challenge for an unconfigured name: %d, want 403", resp.StatusCode)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		if v, _ := metricValue(t, e, ordersSeries("issue", "success")); v != float64(len(names)) {
			t.Errorf("issue/success = %v, want %d", v, len(names))
		}
		for _, n := range names {
			v, _ := metricValue(t, e, expirySeries(n))
			if exp := time.Unix(int64(v), 0); time.Until(exp) < 80*24*time.Hour {
				t.Errorf("expiry of %s is %s, want Pebble's 90 days", n, exp)
			}
		}
	})

	t.Run("restart serves the stored certificate without an order", func(t *testing.T) {
		e.Restart()
		for _, n := range names {
			waitCert(t, e, p, n, 10*time.Second)
			leaf := servedLeaf(t, e.HTTPS, n, roots)
			if leaves[n] != "" && leaf.SerialNumber.String() != leaves[n] {
				t.Errorf("%s: serial %s after the restart, %s before", n, leaf.SerialNumber, leaves[n])
			}
		}
		if got := p.Orders(); got != orders {
			t.Errorf("restart made %d new orders", got-orders)
		}
		if v, _ := metricValue(t, e, ordersSeries("issue", "success")); v != 0 {
			t.Errorf("restarted process counted %v orders", v)
		}
	})
}

// TestACMEHTTP01OnPort80 takes TLS-ALPN-01 away (Pebble's connection for
// it is closed at once), so the certificate can only come through the
// challenge answered by edge's HTTP listener. No plain-HTTP request reaches
// edge before the order.
func TestACMEHTTP01OnPort80(t *testing.T) {
	t.Parallel()
	f := newACMEFront(t)
	p := f.pebble
	addrs := edgeAddrs(t, 1)[0]
	f.http.route(addrs[1])
	e := testpeer.StartEdgeAt(t, t.TempDir(), addrs, "", acmeTLS(p, "h.example.com")+appRoute(t, "h.example.com"))
	waitCert(t, e, p, "h.example.com", 60*time.Second)
	servedLeaf(t, e.HTTPS, "h.example.com", p.Roots())
}

// TestACMEDownAtStart starts edge while the CA is down: it serves a
// purchased certificate's name, the redirect and the admin listener, logs
// and counts the failure, and gets the ACME certificate once the CA is up.
func TestACMEDownAtStart(t *testing.T) {
	t.Parallel()
	f := newACMEFront(t)
	p := f.pebble
	p.Stop()
	dir := t.TempDir()
	certPath, keyPath, fileRoots := filePair(t, dir, "files.example.com")
	body := acmeTLS(p, "late.example.com") + fmt.Sprintf(`
[[tls.certificates]]
cert = %q
key = %q
`, certPath, keyPath) + appRoute(t, "late.example.com", "files.example.com")
	e := f.startEdge(t, dir, body)

	resp, err := httpsClient(t, e.HTTPS, fileRoots).Get(e.URL("files.example.com", "/"))
	if err != nil {
		t.Fatalf("the purchased certificate's name while the CA is down: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("files.example.com: %s", resp.Status)
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+e.HTTP+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "late.example.com"
	if resp, err = noRedirect.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("port 80 while the CA is down: %d, want 308", resp.StatusCode)
	}

	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(e.Stderr(), "acme: obtaining a certificate failed") {
		if time.Now().After(deadline) {
			t.Fatal("no log line for the failed order")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(e.Stderr(), "unreachable") {
		t.Error("the failure log does not say the CA is unreachable")
	}
	if v, _ := metricValue(t, e, ordersSeries("issue", "failure")); v < 1 {
		t.Errorf("issue/failure = %v, want at least 1", v)
	}
	if _, ok := metricValue(t, e, `edge_tls_acme_last_failure_timestamp_seconds{name="late.example.com"}`); !ok {
		t.Error("no last-failure time for late.example.com")
	}

	p.Start()
	waitCert(t, e, p, "late.example.com", 60*time.Second)
	servedLeaf(t, e.HTTPS, "late.example.com", p.Roots())
	servedLeaf(t, e.HTTPS, "files.example.com", fileRoots)
}

// TestACMETwoReplicasShareRedis runs two edge processes with one
// [cluster] redis behind a TCP load balancer that Pebble validates
// through: one order per name, whichever replica the CA's validation
// reaches answers it, and both serve the same certificate.
func TestACMETwoReplicasShareRedis(t *testing.T) {
	t.Parallel()
	rs := testpeer.Redis(t)
	f := newACMEFront(t)
	p := f.pebble
	names := []string{"one.example.com", "two.example.com"}
	body := acmeTLS(p, names...) + `
[cluster]
redis = "` + rs.URL() + `"
` + appRoute(t, names...)
	ab := edgeAddrs(t, 2)
	a, b := ab[0], ab[1]
	f.tls.route(a[0], b[0])
	f.http.route(a[1], b[1])
	replicas := []*testpeer.EdgeProcess{
		testpeer.StartEdgeAt(t, t.TempDir(), a, "", body),
		testpeer.StartEdgeAt(t, t.TempDir(), b, "", body),
	}
	for _, e := range replicas {
		for _, n := range names {
			waitCert(t, e, p, n, 60*time.Second)
		}
	}
	if got := p.Orders(); got != len(names) {
		t.Errorf("pebble saw %d orders for %d names\n%s", got, len(names), p.LogTail())
	}
	var issued float64
	for _, e := range replicas {
		v, _ := metricValue(t, e, ordersSeries("issue", "success"))
		issued += v
	}
	if issued != float64(len(names)) {
		t.Errorf("the replicas counted %v successful orders together, want %d", issued, len(names))
	}
	roots := p.Roots()
	for _, n := range names {
		la := servedLeaf(t, replicas[0].HTTPS, n, roots)
		lb := servedLeaf(t, replicas[1].HTTPS, n, roots)
		if !la.Equal(lb) {
			t.Errorf("the replicas serve different certificates for %s (serials %s, %s)", n, la.SerialNumber, lb.SerialNumber)
		}
	}
}
