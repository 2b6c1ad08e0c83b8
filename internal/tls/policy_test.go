package tls

import (
	"context"
	stdtls "crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"edge/internal/config"
)

func TestPolicy(t *testing.T) {
	m12, err := New(config.TLS{}, t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m12.Close()
	m13, err := New(config.TLS{MinVersion: "1.3"}, t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m13.Close()
	addr12 := serve(t, m12.TLSConfig())
	addr13 := serve(t, m13.TLSConfig())
	// RSA key exchange and the RSA suites can only be offered by a server
	// with an RSA certificate.
	dir := t.TempDir()
	rsaCert, rsaKey := pairIn(dir, "rsa")
	writeRSAPair(t, rsaCert, rsaKey, "localhost")
	mRSA, err := New(config.TLS{Mode: "files", Certificates: []config.CertificateFiles{{Cert: rsaCert, Key: rsaKey}}}, "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mRSA.Close()
	addrRSA := serve(t, mRSA.TLSConfig())

	tests := []struct {
		name   string
		addr   string
		min    uint16
		max    uint16
		suites []uint16
		ok     bool
	}{
		{"tls1.0 refused", addr12, stdtls.VersionTLS10, stdtls.VersionTLS10, nil, false},
		{"tls1.1 refused", addr12, stdtls.VersionTLS11, stdtls.VersionTLS11, nil, false},
		{"tls1.2 ecdhe-ecdsa-aes128-gcm", addr12, stdtls.VersionTLS12, stdtls.VersionTLS12, []uint16{stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, true},
		{"tls1.2 ecdhe-ecdsa-aes256-gcm", addr12, stdtls.VersionTLS12, stdtls.VersionTLS12, []uint16{stdtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, true},
		{"tls1.2 ecdhe-ecdsa-chacha20", addr12, stdtls.VersionTLS12, stdtls.VersionTLS12, []uint16{stdtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, true},
		{"tls1.2 ecdhe-ecdsa-aes128-cbc-sha refused", addr12, stdtls.VersionTLS12, stdtls.VersionTLS12, []uint16{stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}, false},
		{"tls1.2 ecdhe-ecdsa-aes128-cbc-sha256 refused", addr12, stdtls.VersionTLS12, stdtls.VersionTLS12, []uint16{stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}, false},
		{"tls1.2 ecdhe-rsa-aes128-gcm", addrRSA, stdtls.VersionTLS12, stdtls.VersionTLS12, []uint16{stdtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, true},
		{"tls1.2 ecdhe-rsa-chacha20", addrRSA, stdtls.VersionTLS12, stdtls.VersionTLS12, []uint16{stdtls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, true},
		{"tls1.2 ecdhe-rsa-aes256-cbc-sha refused", addrRSA, stdtls.VersionTLS12, stdtls.VersionTLS12, []uint16{stdtls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}, false},
		{"tls1.2 rsa-kx aes128-gcm refused", addrRSA, stdtls.VersionTLS12, stdtls.VersionTLS12, []uint16{stdtls.TLS_RSA_WITH_AES_128_GCM_SHA256}, false},
		{"tls1.2 3des refused", addrRSA, stdtls.VersionTLS12, stdtls.VersionTLS12, []uint16{stdtls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA, stdtls.TLS_RSA_WITH_3DES_EDE_CBC_SHA}, false},
		{"tls1.1 rsa refused", addrRSA, stdtls.VersionTLS11, stdtls.VersionTLS11, nil, false},
		{"tls1.3", addr12, stdtls.VersionTLS13, stdtls.VersionTLS13, nil, true},
		{"min 1.3 refuses tls1.2", addr13, stdtls.VersionTLS12, stdtls.VersionTLS12, nil, false},
		{"min 1.3 accepts tls1.3", addr13, stdtls.VersionTLS13, stdtls.VersionTLS13, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := handshake(t, tt.addr, &stdtls.Config{
				InsecureSkipVerify: true,
				ServerName:         "localhost",
				MinVersion:         tt.min,
				MaxVersion:         tt.max,
				CipherSuites:       tt.suites,
			})
			if tt.ok && err != nil {
				t.Fatalf("handshake refused: %v", err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("handshake succeeded with %s %s", stdtls.VersionName(st.Version), stdtls.CipherSuiteName(st.CipherSuite))
			}
		})
	}
}

func TestTLSConfigIsFresh(t *testing.T) {
	m, err := New(config.TLS{}, t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a := m.TLSConfig()
	a.NextProtos[0] = "changed"
	a.CipherSuites[0] = 0
	b := m.TLSConfig()
	if b.NextProtos[0] != "h2" || b.CipherSuites[0] == 0 {
		t.Fatal("changing one TLSConfig result changed the next")
	}
	if b.SessionTicketsDisabled {
		t.Error("session tickets are off")
	}
}

// TestKeyExchangeAndResumption: a client offering Go's default key shares
// (the post-quantum hybrid first, then X25519) gets X25519, a client that
// offers only P-256 still connects, and a returning client resumes its
// session instead of a full handshake.
func TestKeyExchangeAndResumption(t *testing.T) {
	m, err := New(config.TLS{}, t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := serve(t, m.TLSConfig())
	for _, tt := range []struct {
		name   string
		offers []stdtls.CurveID
		want   stdtls.CurveID
	}{
		{"Go's default offer", nil, stdtls.X25519},
		{"hybrid and X25519", []stdtls.CurveID{stdtls.X25519MLKEM768, stdtls.X25519}, stdtls.X25519},
		{"P-256 only", []stdtls.CurveID{stdtls.CurveP256}, stdtls.CurveP256},
		{"hybrid preferred by the client", []stdtls.CurveID{stdtls.X25519MLKEM768, stdtls.CurveP256}, stdtls.CurveP256},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, err := handshake(t, addr, &stdtls.Config{InsecureSkipVerify: true, ServerName: "localhost", CurvePreferences: tt.offers})
			if err != nil {
				t.Fatal(err)
			}
			if st.CurveID != tt.want {
				t.Fatalf("key exchange %s, want %s", st.CurveID, tt.want)
			}
		})
	}
	// TLS 1.3 tickets arrive after the handshake: the client sends a byte,
	// the test server reads it and closes, and reading to that end lets the
	// client take the ticket in.
	connect := func(cfg *stdtls.Config) stdtls.ConnectionState {
		t.Helper()
		d := stdtls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
		c, err := d.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{0}); err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, c)
		return c.(*stdtls.Conn).ConnectionState()
	}
	for _, version := range []uint16{stdtls.VersionTLS12, stdtls.VersionTLS13} {
		cfg := &stdtls.Config{InsecureSkipVerify: true, ServerName: "localhost", MaxVersion: version, ClientSessionCache: stdtls.NewLRUClientSessionCache(4)}
		connect(cfg)
		if st := connect(cfg); !st.DidResume {
			t.Errorf("%s: the second connection did a full handshake; session tickets must let it resume", stdtls.VersionName(version))
		}
	}
}
