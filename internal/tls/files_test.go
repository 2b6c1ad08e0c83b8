package tls

import (
	stdtls "crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"edge/internal/config"
)

func TestFilesSNISelection(t *testing.T) {
	ca, roots := testCA(t)
	dir := t.TempDir()
	aCert, aKey := pairIn(dir, "a")
	bCert, bKey := pairIn(dir, "b")
	a := writePair(t, ca, aCert, aKey, "a.example.com")
	b := writePair(t, ca, bCert, bKey, "b.example.com", "*.b.example.com")

	m, err := New(config.TLS{Mode: "files", Certificates: []config.CertificateFiles{
		{Cert: aCert, Key: aKey}, {Cert: bCert, Key: bKey},
	}}, "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := serve(t, m.TLSConfig())

	tests := []struct {
		sni  string
		want string // serial of the expected leaf: a or b
	}{
		{"a.example.com", "a"},
		{"A.Example.COM", "a"},
		{"b.example.com", "b"},
		{"x.b.example.com", "b"},
		{"deep.x.b.example.com", "a"}, // a wildcard covers one label only
		{"unknown.example.org", "a"},  // the first pair is the default
		{"", "a"},
	}
	serial := map[string]string{"a": a.SerialNumber.String(), "b": b.SerialNumber.String()}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			// The fallback answers names it does not cover, so only check
			// the chain where the name is really in the certificate.
			cfg := &stdtls.Config{ServerName: tt.sni, InsecureSkipVerify: true}
			st, err := handshake(t, addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			leaf := st.PeerCertificates[0]
			if got := leaf.SerialNumber.String(); got != serial[tt.want] {
				t.Fatalf("SNI %q got certificate %v, want pair %s", tt.sni, leaf.DNSNames, tt.want)
			}
			if tt.sni != "" && tt.sni != "unknown.example.org" && tt.sni != "deep.x.b.example.com" {
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: tt.sni}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestFilesChangePickedUp(t *testing.T) {
	ca, roots := testCA(t)
	dir := t.TempDir()
	certPath, keyPath := pairIn(dir, "site")
	writePair(t, ca, certPath, keyPath, "site.example.com")
	logger, rec := newLogRecorder()
	m, err := New(config.TLS{Mode: "files", Certificates: []config.CertificateFiles{{Cert: certPath, Key: keyPath}}}, "", nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := serve(t, m.TLSConfig())

	renewed := writePair(t, ca, certPath, keyPath, "site.example.com", "www.example.com")
	rec.waitFor(t, "certificate reloaded")
	st, err := handshake(t, addr, &stdtls.Config{RootCAs: roots, ServerName: "www.example.com"})
	if err != nil {
		t.Fatalf("handshake for the new certificate's name: %v", err)
	}
	if !st.PeerCertificates[0].Equal(renewed) {
		t.Fatal("the listener still serves the old certificate")
	}
}

func TestFilesBrokenChangeKeepsOldPair(t *testing.T) {
	ca, roots := testCA(t)
	dir := t.TempDir()
	certPath, keyPath := pairIn(dir, "site")
	orig := writePair(t, ca, certPath, keyPath, "site.example.com")
	logger, rec := newLogRecorder()
	m, err := New(config.TLS{Mode: "files", Certificates: []config.CertificateFiles{{Cert: certPath, Key: keyPath}}}, "", nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := serve(t, m.TLSConfig())

	if err := os.WriteFile(certPath, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	warn := rec.waitFor(t, "certificate files changed but cannot be used; keeping the previous certificate")
	if warn.Level.String() != "WARN" {
		t.Errorf("level = %s, want WARN", warn.Level)
	}
	st, err := handshake(t, addr, &stdtls.Config{RootCAs: roots, ServerName: "site.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !st.PeerCertificates[0].Equal(orig) {
		t.Fatal("a broken file replaced the served certificate")
	}

	// Further events with the same broken content must not log again.
	m.mu.Lock()
	changed := m.reloadPairsLocked()
	m.reloadPairsLocked()
	m.mu.Unlock()
	if len(changed) > 0 {
		t.Error("reload of a broken file reported a change")
	}
	for _, msg := range rec.drain() {
		if msg == warn.Message {
			t.Error("the same broken file was logged twice")
		}
	}
}

func TestFilesUpdateList(t *testing.T) {
	ca, roots := testCA(t)
	dir := t.TempDir()
	other := t.TempDir()
	aCert, aKey := pairIn(dir, "a")
	cCert, cKey := pairIn(other, "c")
	writePair(t, ca, aCert, aKey, "a.example.com")
	writePair(t, ca, cCert, cKey, "c.example.com")
	a := config.CertificateFiles{Cert: aCert, Key: aKey}
	c := config.CertificateFiles{Cert: cCert, Key: cKey}
	logger, rec := newLogRecorder()
	m, err := New(config.TLS{Mode: "files", Certificates: []config.CertificateFiles{a}}, "", nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := serve(t, m.TLSConfig())

	broken := config.CertificateFiles{Cert: filepath.Join(dir, "missing.crt"), Key: aKey}
	if err := update(m, config.TLS{Mode: "files", Certificates: []config.CertificateFiles{a, broken}}, nil); err == nil {
		t.Fatal("Update accepted a missing certificate file")
	}
	if err := update(m, config.TLS{Mode: "files", Certificates: []config.CertificateFiles{a, c}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, addr, &stdtls.Config{RootCAs: roots, ServerName: "c.example.com"}); err != nil {
		t.Fatalf("the added pair is not served: %v", err)
	}

	// The new pair's directory is watched too.
	writePair(t, ca, cCert, cKey, "c.example.com", "c2.example.com")
	rec.waitFor(t, "certificate reloaded")
	if _, err := handshake(t, addr, &stdtls.Config{RootCAs: roots, ServerName: "c2.example.com"}); err != nil {
		t.Fatalf("a change in the added pair's directory was not picked up: %v", err)
	}
}

func TestFilesStartErrors(t *testing.T) {
	ca, _ := testCA(t)
	dir := t.TempDir()
	aCert, aKey := pairIn(dir, "a")
	bCert, bKey := pairIn(dir, "b")
	writePair(t, ca, aCert, aKey, "a.example.com")
	writePair(t, ca, bCert, bKey, "b.example.com")
	tests := []struct {
		name  string
		certs []config.CertificateFiles
	}{
		{"none", nil},
		{"missing key", []config.CertificateFiles{{Cert: aCert, Key: filepath.Join(dir, "nope.key")}}},
		{"mismatched key", []config.CertificateFiles{{Cert: aCert, Key: bKey}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(config.TLS{Mode: "files", Certificates: tt.certs}, "", nil, nil)
			if err == nil {
				m.Close()
				t.Fatal("New accepted it")
			}
		})
	}
}
