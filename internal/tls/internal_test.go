package tls

import (
	"bytes"
	stdtls "crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
	"edge/internal/testpeer"
)

func TestInternalLeafVerifiesAgainstCA(t *testing.T) {
	state := t.TempDir()
	m, err := New(config.TLS{Mode: "internal", Hosts: []string{"extra.test"}}, state,
		[]string{"api.example.com", "*.wild.example.com", "API2.Example.com"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if want := filepath.Join(state, "internal", "ca.crt"); m.CAPath() != want {
		t.Fatalf("CAPath = %q, want %q", m.CAPath(), want)
	}
	roots := poolFromFile(t, m.CAPath())
	addr := serve(t, m.TLSConfig())

	for _, name := range []string{"api.example.com", "x.wild.example.com", "api2.example.com", "extra.test", "localhost", "127.0.0.1", "::1"} {
		t.Run(name, func(t *testing.T) {
			st, err := handshake(t, addr, &stdtls.Config{RootCAs: roots, ServerName: name, NextProtos: []string{"h2", "http/1.1"}})
			if err != nil {
				t.Fatalf("handshake for %s: %v", name, err)
			}
			if st.NegotiatedProtocol != "h2" {
				t.Errorf("ALPN = %q, want h2", st.NegotiatedProtocol)
			}
		})
	}
	if _, err := handshake(t, addr, &stdtls.Config{RootCAs: roots, ServerName: "other.example.com"}); err == nil {
		t.Error("a name outside the leaf verified")
	}
}

func TestInternalCAReusedAcrossRestart(t *testing.T) {
	state := t.TempDir()
	first, err := New(config.TLS{}, state, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	caBefore, err := os.ReadFile(first.CAPath())
	if err != nil {
		t.Fatal(err)
	}

	second, err := New(config.TLS{}, state, []string{"new.example.com"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	caAfter, err := os.ReadFile(second.CAPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(caBefore, caAfter) {
		t.Fatal("a restart replaced the internal CA")
	}
	// The developer trusted the first CA file; the new leaf must verify.
	addr := serve(t, second.TLSConfig())
	if _, err := handshake(t, addr, &stdtls.Config{RootCAs: poolFromFile(t, first.CAPath()), ServerName: "new.example.com"}); err != nil {
		t.Fatalf("leaf after restart does not verify against the original CA: %v", err)
	}

	for path, want := range map[string]os.FileMode{
		filepath.Join(state, "internal"):           0o700,
		filepath.Join(state, "internal", "ca.key"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %o, want %o", path, got, want)
		}
	}
}

func TestInternalIncompleteCAIsAnError(t *testing.T) {
	state := t.TempDir()
	if err := os.MkdirAll(filepath.Join(state, "internal"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "internal", "ca.key"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := New(config.TLS{}, state, nil, nil)
	if err == nil {
		m.Close()
		t.Fatal("New accepted a CA key without its certificate")
	}
	if !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("error %q does not say the CA is incomplete", err)
	}
}

func TestInternalUpdateReissuesOnHostChange(t *testing.T) {
	m, err := New(config.TLS{}, t.TempDir(), []string{"a.example.com"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	before := m.certs.Load().fallback

	if err := update(m, config.TLS{Mode: "internal"}, []string{"A.example.com."}); err != nil {
		t.Fatal(err)
	}
	if m.certs.Load().fallback != before {
		t.Error("the same host set re-issued the leaf")
	}

	if err := update(m, config.TLS{}, []string{"a.example.com", "b.example.com"}); err != nil {
		t.Fatal(err)
	}
	leaf := m.certs.Load().fallback.Leaf
	if !slices.Contains(leaf.DNSNames, "b.example.com") {
		t.Errorf("new leaf names %v lack b.example.com", leaf.DNSNames)
	}
}

func TestInternalRenewalAtTwoThirds(t *testing.T) {
	clock := testpeer.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	m, err := newManager(config.TLS{}, t.TempDir(), nil, nil, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	first := m.certs.Load().fallback

	tests := []struct {
		advance time.Duration
		renewed bool
	}{
		{advance: 19 * 24 * time.Hour, renewed: false},
		{advance: 2 * 24 * time.Hour, renewed: true},
	}
	for _, tt := range tests {
		clock.Advance(tt.advance)
		m.renewInternal()
		if got := m.certs.Load().fallback != first; got != tt.renewed {
			t.Fatalf("after %s more: renewed = %v, want %v", tt.advance, got, tt.renewed)
		}
	}
	if na := m.certs.Load().fallback.Leaf.NotAfter; !na.Equal(clock.Now().Add(leafLifetime)) {
		t.Errorf("renewed leaf expires %s, want %s", na, clock.Now().Add(leafLifetime))
	}
}

func TestUpdateModeChangeNeedsRestart(t *testing.T) {
	m, err := New(config.TLS{}, t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tests := []struct {
		name string
		cfg  config.TLS
	}{
		{"mode", config.TLS{Mode: "files"}},
		{"min_version", config.TLS{MinVersion: "1.3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := update(m, tt.cfg, nil); !errors.Is(err, ErrNeedsRestart) {
				t.Fatalf("Update = %v, want ErrNeedsRestart", err)
			}
		})
	}
}
