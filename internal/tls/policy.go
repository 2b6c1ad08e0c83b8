package tls

import (
	stdtls "crypto/tls"

	"golang.org/x/crypto/acme"
)

// tls12Suites are the only TLS 1.2 suites offered: forward secrecy (ECDHE)
// and AEAD ciphers, the set Mozilla's "intermediate" profile and the
// mini-program platforms accept. TLS 1.3 suites are not configurable in Go
// and are all AEAD.
var tls12Suites = []uint16{
	stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	stdtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	stdtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	stdtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	stdtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	stdtls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// keyExchanges puts X25519 first, as nginx with Debian's OpenSSL does: it is
// the cheapest exchange every mini-program client supports, and a phone
// that opens many fresh connections pays for each. The post-quantum hybrid
// X25519MLKEM768 is left out: crypto/tls picks it over any server order
// whenever a client offers it, and it costs a larger handshake and more CPU
// per new connection; a client offering only the hybrid is asked to retry
// with X25519 (docs/configuration.md, [tls]).
var keyExchanges = []stdtls.CurveID{stdtls.X25519, stdtls.CurveP256, stdtls.CurveP384}

// TLSConfig is the HTTPS listener's configuration: certificates from the
// manager, TLS 1.2 or 1.3 minimum, strong suites only, X25519 first, HTTP/2
// by ALPN and session tickets for resumption (crypto/tls rotates their keys
// itself). Each call returns a fresh value the caller may modify.
func (m *Manager) TLSConfig() *stdtls.Config {
	protos := []string{"h2", "http/1.1"}
	if m.acme != nil {
		// TLS-ALPN-01: the CA validates on this listener.
		protos = append(protos, acme.ALPNProto)
	}
	return &stdtls.Config{
		MinVersion:       m.minVersion,
		CipherSuites:     append([]uint16(nil), tls12Suites...),
		CurvePreferences: append([]stdtls.CurveID(nil), keyExchanges...),
		NextProtos:       protos,
		GetCertificate:   m.getCertificate,
	}
}
