package tls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	leafLifetime = 30 * 24 * time.Hour
	// clockSkew back-dates certificates so a client whose clock is a little
	// behind does not see them as not yet valid.
	clockSkew = time.Hour
)

// localCA is the development CA of mode "internal". Its key never leaves
// stateDir/internal; the certificate is what a developer trusts.
type localCA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	path    string
}

// loadOrCreateCA reuses the CA stored in dir, or creates one when there is
// none, so a developer trusts it once and not after every restart.
func loadOrCreateCA(dir string, now time.Time) (*localCA, bool, error) {
	certPath := filepath.Join(dir, "ca.crt")
	keyPath := filepath.Join(dir, "ca.key")
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := parseCA(certPEM, keyPEM)
		if err != nil {
			return nil, false, fmt.Errorf("loading internal CA from %s: %w", dir, err)
		}
		ca.path = certPath
		return ca, false, nil
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, false, fmt.Errorf("reading internal CA: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, false, fmt.Errorf("reading internal CA key: %w", keyErr)
	default:
		// One file without the other would silently replace a CA that a
		// developer already trusts; make them decide.
		return nil, false, fmt.Errorf("internal CA in %s is incomplete (ca.crt and ca.key must both exist); remove both to create a new CA", dir)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("creating internal CA directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generating internal CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, false, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"edge development CA"}, CommonName: "edge internal CA " + host},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, false, fmt.Errorf("signing internal CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("encoding internal CA key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	// The key goes first: a crash between the two writes leaves a key
	// without a certificate, which the next start reports instead of
	// trusting a certificate whose key is gone.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, false, fmt.Errorf("storing internal CA key: %w", err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, false, fmt.Errorf("storing internal CA: %w", err)
	}
	ca, err := parseCA(certPEM, keyPEM)
	if err != nil {
		return nil, false, fmt.Errorf("reading back internal CA: %w", err)
	}
	ca.path = certPath
	return ca, true, nil
}

func parseCA(certPEM, keyPEM []byte) (*localCA, error) {
	pair, err := stdtls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if !pair.Leaf.IsCA {
		return nil, errors.New("ca.crt is not a CA certificate")
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("ca.key cannot sign")
	}
	return &localCA{cert: pair.Leaf, key: signer, certPEM: certPEM}, nil
}

// issue signs a leaf for names (DNS names, wildcards and IP literals) valid
// from now for leafLifetime, never beyond the CA's own expiry.
func (ca *localCA) issue(names []string, now time.Time) (*stdtls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating leaf key: %w", err)
	}
	notAfter := now.Add(leafLifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"edge development certificate"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if len(tmpl.DNSNames) > 0 {
		tmpl.Subject.CommonName = tmpl.DNSNames[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("signing leaf: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing leaf: %w", err)
	}
	return &stdtls.Certificate{
		Certificate: [][]byte{der, ca.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// leafNames is the sorted, de-duplicated name set of the internal leaf: the
// route hosts, the configured extras and the loopback names a developer uses.
func leafNames(hosts, extra []string) []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	for _, list := range [][]string{hosts, extra} {
		for _, h := range list {
			if h = normalizeName(h); h != "" && h != "*" {
				names = append(names, h)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// needsRenewal reports whether a leaf has used two thirds of its lifetime.
func needsRenewal(leaf *x509.Certificate, now time.Time) bool {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return !now.Before(leaf.NotBefore.Add(life * 2 / 3))
}

// randomSerial is a positive 127-bit serial, as RFC 5280 asks.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("drawing a serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// writeFileAtomic writes through a temporary file and a rename so a reader
// never sees half a key.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
