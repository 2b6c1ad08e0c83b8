package tls

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	stdtls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"edge/internal/config"
)

// serve runs a TLS listener on 127.0.0.1:0 with cfg that completes handshakes
// and closes; it returns the address. The accept loop stops with the test.
func serve(t *testing.T, cfg *stdtls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := stdtls.Server(c, cfg)
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if tc.Handshake() == nil {
					// Let the client read the session ticket before closing.
					var b [1]byte
					_, _ = tc.Read(b[:])
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// handshake dials addr with cfg and returns the connection state.
func handshake(t *testing.T, addr string, cfg *stdtls.Config) (stdtls.ConnectionState, error) {
	t.Helper()
	d := stdtls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return stdtls.ConnectionState{}, err
	}
	defer c.Close()
	return c.(*stdtls.Conn).ConnectionState(), nil
}

// poolFromFile reads a PEM CA file into a pool, as a developer's trust
// store would.
func poolFromFile(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no certificate", path)
	}
	return pool
}

// testCA is a CA for signing the certificate files of mode "files".
func testCA(t *testing.T) (*localCA, *x509.CertPool) {
	t.Helper()
	ca, _, err := loadOrCreateCA(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return ca, pool
}

// writePair issues a certificate for names and writes it and its key as PEM
// files; it returns the leaf.
func writePair(t *testing.T, ca *localCA, certPath, keyPath string, names ...string) *x509.Certificate {
	t.Helper()
	cert, err := ca.issue(names, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then certificate: the order a careful rotation uses, and
	// the one that makes the watcher see a matching pair at the end.
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return cert.Leaf
}

// writeRSAPair writes a self-signed RSA certificate for names.
func writeRSAPair(t *testing.T, certPath, keyPath string, names ...string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// pairIn is the usual cert/key path pair inside dir.
func pairIn(dir, name string) (string, string) {
	return filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
}

// logRecorder is a slog handler that hands every record to the test.
type logRecorder struct {
	ch chan slog.Record
}

func newLogRecorder() (*slog.Logger, *logRecorder) {
	r := &logRecorder{ch: make(chan slog.Record, 1024)}
	return slog.New(r), r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	select {
	case r.ch <- rec:
		return nil
	default:
		return errors.New("log recorder full")
	}
}

// waitFor returns the next record with message msg, failing after a while.
func (r *logRecorder) waitFor(t *testing.T, msg string) slog.Record {
	t.Helper()
	return r.waitForWithin(t, msg, 10*time.Second)
}

// waitForWithin is waitFor with its own limit.
func (r *logRecorder) waitForWithin(t *testing.T, msg string, within time.Duration) slog.Record {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case rec := <-r.ch:
			if rec.Message == msg {
				return rec
			}
		case <-deadline:
			t.Fatalf("no log record %q within %s", msg, within)
		}
	}
}

// drain empties the recorder and returns the messages it held.
func (r *logRecorder) drain() []string {
	var msgs []string
	for {
		select {
		case rec := <-r.ch:
			msgs = append(msgs, rec.Message)
		default:
			return msgs
		}
	}
}

// update is a reload's TLS step in one call: prepare, commit, and the
// settings that need a restart as an error wrapping ErrNeedsRestart.
func update(m *Manager, cfg config.TLS, hosts []string) error {
	c, err := m.Prepare(cfg, hosts)
	if err != nil {
		return err
	}
	if err := c.Commit(); err != nil {
		return err
	}
	return c.RestartNeeded()
}
