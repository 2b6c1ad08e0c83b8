package testpeer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PebbleOptions say where Pebble validates challenges and what it issues.
type PebbleOptions struct {
	// HTTPPort and TLSPort are where Pebble connects for HTTP-01 and
	// TLS-ALPN-01: the gateway's listeners under test.
	HTTPPort, TLSPort int
	// Validity is the lifetime of issued certificates; default 90 days.
	Validity time.Duration
}

// PebbleServer is Let's Encrypt's test ACME server with challtestsrv as its
// DNS (every name resolves to 127.0.0.1), both owned by a test.
type PebbleServer struct {
	// DirectoryURL is the ACME directory.
	DirectoryURL string
	// CAFile is the PEM root that signs Pebble's own HTTPS certificate;
	// the ACME client must trust it (tls.acme_ca_roots).
	CAFile string

	t          testing.TB
	dir        string
	bin        string
	cfgPath    string
	dnsAddr    string
	mgmtAddr   string
	listenAddr string
	logPath    string
	caPool     *x509.CertPool
	cmd        *exec.Cmd
	log        *os.File
}

// Pebble starts challtestsrv and Pebble on free loopback ports; both stop
// with the test.
func Pebble(t testing.TB, opts PebbleOptions) *PebbleServer {
	t.Helper()
	pebbleBin := Binary(t, "pebble")
	challBin := Binary(t, "pebble-challtestsrv")
	dir := t.TempDir()
	if opts.Validity == 0 {
		opts.Validity = 90 * 24 * time.Hour
	}
	p := &PebbleServer{
		t: t, dir: dir, bin: pebbleBin,
		dnsAddr:    FreePort(t),
		mgmtAddr:   FreePort(t),
		listenAddr: FreePort(t),
		logPath:    filepath.Join(dir, "pebble.log"),
	}
	certPath, keyPath := p.writeServerCert()

	challMgmt := FreePort(t)
	chall := exec.Command(challBin, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-dnsserver", p.dnsAddr, "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-management", challMgmt)
	challLog, err := os.Create(filepath.Join(dir, "challtestsrv.log"))
	if err != nil {
		t.Fatal(err)
	}
	chall.Stdout, chall.Stderr = challLog, challLog
	if err := chall.Start(); err != nil {
		t.Fatalf("starting pebble-challtestsrv: %v", err)
	}
	t.Cleanup(func() {
		_ = chall.Process.Kill()
		_ = chall.Wait()
		challLog.Close()
	})
	WaitTCP(t, challMgmt, 10*time.Second)

	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  p.listenAddr,
		"managementListenAddress":        p.mgmtAddr,
		"certificate":                    certPath,
		"privateKey":                     keyPath,
		"httpPort":                       opts.HTTPPort,
		"tlsPort":                        opts.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 0, "order": 0},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description":    "test",
			"validityPeriod": int64(opts.Validity / time.Second),
		}},
	}}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.cfgPath = filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(p.cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p.DirectoryURL = "https://" + p.listenAddr + "/dir"
	p.Start()
	t.Cleanup(p.Stop)
	return p
}

// writeServerCert makes a CA and a certificate for 127.0.0.1 for Pebble's
// HTTPS API, so the test does not depend on the bundled one's expiry.
func (p *PebbleServer) writeServerCert() (certPath, keyPath string) {
	p.t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pebble test API CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		p.t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	certPath = filepath.Join(p.dir, "api.crt")
	keyPath = filepath.Join(p.dir, "api.key")
	p.CAFile = filepath.Join(p.dir, "api-ca.crt")
	for path, block := range map[string]*pem.Block{
		certPath: {Type: "CERTIFICATE", Bytes: der},
		keyPath:  {Type: "PRIVATE KEY", Bytes: keyDER},
		p.CAFile: {Type: "CERTIFICATE", Bytes: caDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			p.t.Fatal(err)
		}
	}
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(caCert)
	return certPath, keyPath
}

// Start starts Pebble (again, after Stop) on the same ports. Its issuing
// root is new at every start.
func (p *PebbleServer) Start() {
	p.t.Helper()
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.bin, "-config", p.cfgPath, "-dnsserver", p.dnsAddr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		p.t.Fatalf("starting pebble: %v", err)
	}
	p.cmd, p.log = cmd, log
	WaitTCP(p.t, p.listenAddr, 10*time.Second)
	WaitTCP(p.t, p.mgmtAddr, 10*time.Second)
}

// Stop kills Pebble (challtestsrv keeps running), to test a CA that is down.
func (p *PebbleServer) Stop() {
	if p.cmd != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		p.log.Close()
		p.cmd = nil
	}
}

// Roots returns the root that signs the certificates Pebble issues now.
func (p *PebbleServer) Roots() *x509.CertPool {
	p.t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.caPool}}, Timeout: 10 * time.Second}
	resp, err := c.Get("https://" + p.mgmtAddr + "/roots/0")
	if err != nil {
		p.t.Fatalf("fetching pebble's root: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		p.t.Fatalf("fetching pebble's root: %s %v", resp.Status, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		p.t.Fatal("pebble's /roots/0 holds no certificate")
	}
	return pool
}

// Orders is how many orders Pebble has created since the test began,
// counted from its log.
func (p *PebbleServer) Orders() int {
	p.t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.Count(string(b), "Added order")
}

// LogTail is the end of Pebble's log, for failure messages.
func (p *PebbleServer) LogTail() string { return LogTail(p.logPath, 40) }

// Port is the port of a "host:port" address as a number.
func Port(t testing.TB, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(fmt.Errorf("port of %q: %w", addr, err))
	}
	return n
}
