package config

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"slices"
	"strings"
)

// retryStatuses are the answers worth another target: the gateway and
// availability failures nginx's proxy_next_upstream names. Any other status
// is the application's answer and a second target would give the same.
var retryStatuses = []int{500, 502, 503, 504, 429}

func validateRetryOn(c *checker, key string, u *Upstream) {
	for j, code := range u.RetryOn {
		if !slices.Contains(retryStatuses, code) {
			c.add(indexKey(key+".retry_on", j), "%d cannot be retried; write statuses from 500, 502, 503, 504 and 429, like retry_on = [502, 503, 504]", code)
		}
	}
	if u.RetryTimeout < 0 {
		c.add(key+".retry_timeout", `must be 0 (no bound) or more, like "10s"`)
	}
	if len(u.RetryOn) > 0 && u.Retries == 0 {
		c.add(key+".retry_on", "is never used with retries = 0; set retries = 1 or more (the number of other targets tried)")
	}
	primary := u.Run != nil
	for _, t := range u.Targets {
		primary = primary || !t.Backup
	}
	if len(u.Targets) > 0 && !primary {
		c.add(key+".targets", "are all backups; a backup only gets requests while no other target is available, so leave at least one without backup = true")
	}
}

func validateUpstreamTLS(c *checker, key string, u *Upstream) {
	if !u.TLS {
		for _, k := range []string{"tls_ca", "tls_server_name", "tls_client_cert", "tls_client_key"} {
			if c.has(key + "." + k) {
				c.add(key+"."+k, "is only used with tls = true; set tls = true for HTTPS to the targets, or remove it")
			}
		}
		return
	}
	for j, t := range u.Targets {
		if strings.HasPrefix(t.Address, "unix:") && u.TLSServerName == "" {
			c.add(indexKey(key+".targets", j), "%q is a Unix socket, which has no host name to check the certificate for; set tls_server_name", t.Address)
		}
	}
	if u.TLSServerName != "" && !validHostName(u.TLSServerName) {
		c.add(key+".tls_server_name", "%q is not a host name; write the name the targets' certificate is for, like \"api.internal\"", u.TLSServerName)
	}
	if u.TLSCA != "" {
		c.resolve(&u.TLSCA)
		if checkReadable(c, key+".tls_ca", u.TLSCA, "a PEM file of the CA certificates the targets' certificates are signed by") {
			if b, err := os.ReadFile(u.TLSCA); err == nil && !x509.NewCertPool().AppendCertsFromPEM(b) {
				c.add(key+".tls_ca", "%q holds no PEM certificate; write the path to the CA certificate (BEGIN CERTIFICATE)", u.TLSCA)
			}
		}
	}
	switch {
	case u.TLSClientCert == "" && u.TLSClientKey == "":
	case u.TLSClientCert == "":
		c.add(key+".tls_client_key", "needs tls_client_cert, the PEM file of the certificate that goes with the key")
	case u.TLSClientKey == "":
		c.add(key+".tls_client_cert", "needs tls_client_key, the PEM file of the certificate's private key")
	default:
		c.resolve(&u.TLSClientCert)
		c.resolve(&u.TLSClientKey)
		okCert := checkReadable(c, key+".tls_client_cert", u.TLSClientCert, "the PEM certificate edge presents to the targets")
		okKey := checkReadable(c, key+".tls_client_key", u.TLSClientKey, "the PEM private key of tls_client_cert")
		if okCert && okKey {
			if _, err := tls.LoadX509KeyPair(u.TLSClientCert, u.TLSClientKey); err != nil {
				c.add(key+".tls_client_cert", "cannot be used with tls_client_key: %v; write a PEM certificate and its own private key", err)
			}
		}
	}
}
