package testpeer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ClientFrom is Client (HTTP/1.1) with the connections dialled from source,
// a loopback address such as "127.0.0.2": on Linux the whole of 127/8 is
// local, so one test can be several clients that edge tells apart by peer
// IP.
func (e *EdgeProcess) ClientFrom(t testing.TB, source string) *http.Client {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(e.Dir, "state", "internal", "ca.crt"))
	if err != nil {
		t.Fatalf("reading edge's internal CA (tls.mode must be internal): %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, e.HTTPS)
		},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}
}
