package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
)

// TLSOptions make the connections to an upstream's targets HTTPS. They hold
// the PEM contents, not file names, so that options compare equal exactly
// when the connections would be the same: a renewed client certificate or
// CA under the same path replaces the targets' pools on reload.
type TLSOptions struct {
	Enabled bool
	// ServerName is the name verified and sent as SNI; "" is the target's
	// host.
	ServerName string
	// CAPEM are the roots the targets' certificates must chain to; "" is
	// the system's.
	CAPEM string
	// CertPEM and KeyPEM are the client certificate, for targets that ask.
	CertPEM, KeyPEM string
}

// Check reports whether the options can make a TLS config.
func (o TLSOptions) Check() error {
	if !o.Enabled {
		return nil
	}
	_, err := o.config("")
	return err
}

// config is the TLS config of the connections to addr. Verification is
// never turned off: a target with a certificate edge cannot check gets its
// CA in CAPEM.
func (o TLSOptions) config(addr string) (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         o.ServerName,
		ClientSessionCache: tls.NewLRUClientSessionCache(64),
		// The exchange is HTTP/1.1 on edge's own client.
		NextProtos: []string{"http/1.1"},
	}
	if c.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			c.ServerName = host
		}
	}
	if o.CAPEM != "" {
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM([]byte(o.CAPEM)) {
			return nil, errors.New("the CA file holds no PEM certificate")
		}
	}
	if o.CertPEM != "" || o.KeyPEM != "" {
		cert, err := tls.X509KeyPair([]byte(o.CertPEM), []byte(o.KeyPEM))
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
