package conformance

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// finding is one entry of testssl's --jsonfile output.
type finding struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Finding  string `json:"finding"`
}

// belowTLS12 must all be "not offered".
var belowTLS12 = []string{"SSLv2", "SSLv3", "TLS1", "TLS1_1"}

// weakCipherLists are testssl's -s categories a modern server offers none
// of: no encryption, no authentication, export, low strength, 3DES/IDEA,
// and "average" (non-forward-secret or CBC suites).
var weakCipherLists = []string{
	"cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT",
	"cipherlist_LOW", "cipherlist_3DES_IDEA", "cipherlist_AVERAGE",
}

// vulnerabilityChecks are the -U findings that must be in the report, so
// a scan that silently skipped them does not pass.
var vulnerabilityChecks = []string{
	"heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
	"CRIME_TLS", "BREACH", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN",
	"LOGJAM", "BEAST", "LUCKY13", "RC4",
}

// acceptedHigh are HIGH findings about the internal development CA's
// certificate rather than the TLS configuration. None is accepted at
// CRITICAL.
var acceptedHigh = map[string]string{
	"cert_expirationStatus": "the internal leaf lives 30 days (renewed at two thirds); ACME and purchased certificates live longer",
	"cert_notAfter":         "same as cert_expirationStatus: testssl flags any certificate expiring within 30 days",
	"cert_revocation":       "a development CA publishes neither CRL nor OCSP; public CAs' certificates carry a CRL URL",
}

// toolNotices are the ids testssl 3.0.8 gives its warnings about itself
// and its local OpenSSL (all raised through fileout_insert_warning, which
// pretty JSON files under "clientProblemN"). They describe the scanner's
// machine, not the server, so they are not findings. A notice that stops
// the scan still fails it: the checks it skipped are then missing.
// Warnings that name the local OpenSSL but carry a check's own id
// (CRIME_TLS "lacks zlib support", SWEET32 "lack of local support", ...)
// mean that check was not done, and stay failures.
var toolNotices = map[string]string{
	"engine_problem":  "the local openssl cannot load a GOST engine (Debian installs no gost.so by default); testssl then only skips GOST suites, which no policy here offers",
	"too_old_openssl": "the local openssl is older than 1.0; testssl then asks whether to go on, reads no answer from a test's stdin and exits before scanning",
	"old_fart":        "the local openssl is 0.9.8e or older; testssl exits right after it",
}

// Problem prefixes that the weak-server control looks for, so it and the
// judge cannot drift apart.
const (
	weakProtocol = "protocol below TLS 1.2 offered:"
	weakCipher   = "weak cipher category offered:"
)

func testssl(t *testing.T, addr, caFile string) {
	fs, out := scanTestSSL(t, addr, caFile)
	for _, p := range judgeTestSSL(fs) {
		t.Error(p)
	}
	for _, f := range fs {
		switch f.Severity {
		case "MEDIUM", "LOW":
			t.Logf("testssl accepted %s %s: %s", f.Severity, f.ID, f.Finding)
		case "HIGH":
			t.Logf("testssl accepted HIGH %s (%s): %s", f.ID, acceptedHigh[f.ID], f.Finding)
		}
	}
	if t.Failed() {
		t.Logf("testssl output:\n%s", out)
	}
}

// scanTestSSL runs testssl against addr and returns its findings and its
// output. Edge and the weak control go through this one invocation, so the
// control proves what the edge scan can catch.
func scanTestSSL(t *testing.T, addr, caFile string) ([]finding, string) {
	bin := testpeer.Binary(t, "testssl")
	dir := t.TempDir()
	report := filepath.Join(dir, "testssl.json")
	// --add-ca trusts the internal CA, so the chain is judged like a public
	// one; -s adds the cipher categories the weak-suite check reads.
	out := run(t, dir, bin, "--quiet", "--color", "0", "--nodns", "none", "--add-ca", caFile,
		"-p", "-s", "-S", "-P", "-f", "-U", "-h", "--jsonfile", report, addr)
	var fs []finding
	if err := json.Unmarshal(readFile(t, report, out), &fs); err != nil {
		t.Fatalf("reading testssl's JSON report: %v\n%s", err, out)
	}
	return fs, out
}

// testsslWeak is the negative control: edge's configuration cannot express
// a weak policy, so a scan of edge that passes says nothing about whether
// the scan and judge could fail. A deliberately weak server must make the
// judge name both the old protocols and the weak cipher categories.
func testsslWeak(t *testing.T) {
	addr, caFile := startWeakTLS(t)
	fs, out := scanTestSSL(t, addr, caFile)
	problems := judgeTestSSL(fs)
	for _, p := range problems {
		t.Logf("judge on the weak server: %s", p)
	}
	for _, want := range []string{
		weakProtocol + " TLS1:", weakProtocol + " TLS1_1:",
		weakCipher + " cipherlist_3DES_IDEA:", weakCipher + " cipherlist_AVERAGE:",
	} {
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.HasPrefix(p, want) }) {
			t.Errorf("the judge did not report %q for a weak server", want)
		}
	}
	if t.Failed() {
		t.Logf("testssl output:\n%s", out)
	}
}

// startWeakTLS serves HTTPS on loopback with what a policy must refuse:
// TLS 1.0 and 1.1, CBC suites and 3DES. Go leaves these out of its
// defaults, but still honours them when listed. It returns the address and
// the PEM file of its self-signed certificate.
//
// It offers no static-RSA suite: with one, testssl's ROBOT check waits out
// a timeout on each of its probes (Go rightly waits for the client's
// Finished), about 15 s more for nothing the control asserts.
func startWeakTLS(t *testing.T) (addr, certFile string) {
	t.Helper()
	// RSA, because Go has 3DES only with ECDHE_RSA.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "weak.test"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own trust anchor, so --add-ca makes the chain verify
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(t.TempDir(), "weak.crt")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS10,
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA,
			tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(page))
		}),
		// testssl's probes fail handshakes by the hundred; their log
		// would bury the test's own output.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), certFile
}

// judgeTestSSL lists what is wrong in a testssl report: a protocol below
// TLS 1.2, a weak suite, a missing check, or a finding of severity HIGH
// (unless accepted), CRITICAL, WARN (the scan could not test something)
// or FATAL. Tool notices are not findings.
func judgeTestSSL(fs []finding) []string {
	byID := make(map[string]finding, len(fs))
	for _, f := range fs {
		byID[f.ID] = f
	}
	var problems []string
	notOffered := func(ids []string, what string) {
		for _, id := range ids {
			f, ok := byID[id]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("testssl did not report %s", id))
			case !strings.HasPrefix(f.Finding, "not offered"):
				problems = append(problems, fmt.Sprintf("%s %s: %q", what, id, f.Finding))
			}
		}
	}
	notOffered(belowTLS12, weakProtocol)
	notOffered(weakCipherLists, weakCipher)
	if f, ok := byID["TLS1_2"]; !ok || !strings.HasPrefix(f.Finding, "offered") {
		problems = append(problems, fmt.Sprintf("TLS 1.2 not offered: %q", f.Finding))
	}
	if f, ok := byID["cipherorder_TLSv1_2"]; !ok {
		problems = append(problems, "testssl did not report cipherorder_TLSv1_2")
	} else {
		for _, suite := range strings.Fields(f.Finding) {
			if !strings.HasPrefix(suite, "ECDHE-") || !(strings.Contains(suite, "-GCM-") || strings.HasSuffix(suite, "-CHACHA20-POLY1305")) {
				problems = append(problems, fmt.Sprintf("TLS 1.2 suite %s is not ECDHE with an AEAD", suite))
			}
		}
	}
	for _, id := range vulnerabilityChecks {
		if _, ok := byID[id]; !ok {
			problems = append(problems, fmt.Sprintf("testssl did not report %s", id))
		}
	}
	for _, f := range fs {
		if _, ok := toolNotices[f.ID]; ok {
			continue
		}
		switch f.Severity {
		case "HIGH":
			if _, ok := acceptedHigh[f.ID]; ok {
				continue
			}
			fallthrough
		case "CRITICAL", "WARN", "FATAL":
			problems = append(problems, fmt.Sprintf("%s %s: %s", f.Severity, f.ID, f.Finding))
		}
	}
	slices.Sort(problems)
	return problems
}

func TestJudgeTestSSL(t *testing.T) {
	good := func() []finding {
		fs := []finding{
			{"TLS1_2", "OK", "offered"},
			{"TLS1_3", "OK", "offered with final"},
			{"cipherorder_TLSv1_2", "INFO", "ECDHE-ECDSA-AES128-GCM-SHA256 ECDHE-ECDSA-CHACHA20-POLY1305"},
			{"BREACH", "MEDIUM", "potentially VULNERABLE, gzip HTTP compression detected"},
			{"cert_revocation", "HIGH", "Neither CRL nor OCSP URI provided"},
		}
		for _, id := range append(slices.Clone(belowTLS12), weakCipherLists...) {
			fs = append(fs, finding{id, "OK", "not offered"})
		}
		for _, id := range vulnerabilityChecks {
			if id != "BREACH" {
				fs = append(fs, finding{id, "OK", "not vulnerable"})
			}
		}
		return fs
	}
	set := func(id, severity, text string) func([]finding) []finding {
		return func(fs []finding) []finding {
			for i := range fs {
				if fs[i].ID == id {
					fs[i] = finding{id, severity, text}
					return fs
				}
			}
			return append(fs, finding{id, severity, text})
		}
	}
	drop := func(id string) func([]finding) []finding {
		return func(fs []finding) []finding {
			return slices.DeleteFunc(fs, func(f finding) bool { return f.ID == id })
		}
	}
	both := func(a, b func([]finding) []finding) func([]finding) []finding {
		return func(fs []finding) []finding { return b(a(fs)) }
	}
	tests := []struct {
		name   string
		change func([]finding) []finding
		want   string // substring of the only problem; "" for none
	}{
		{"edge's actual profile", func(fs []finding) []finding { return fs }, ""},
		{"TLS 1.1 offered", set("TLS1_1", "INFO", "offered"), "protocol below TLS 1.2"},
		{"CBC suites offered", set("cipherlist_AVERAGE", "LOW", "offered"), "weak cipher category"},
		{"a non-AEAD 1.2 suite", set("cipherorder_TLSv1_2", "INFO", "ECDHE-RSA-AES128-SHA"), "not ECDHE with an AEAD"},
		{"a static RSA 1.2 suite", set("cipherorder_TLSv1_2", "INFO", "AES128-GCM-SHA256"), "not ECDHE with an AEAD"},
		{"a vulnerability", set("ROBOT", "HIGH", "VULNERABLE"), "HIGH ROBOT"},
		{"an accepted id at CRITICAL", set("cert_revocation", "CRITICAL", "revoked"), "CRITICAL cert_revocation"},
		{"a scan problem", set("scanProblem", "WARN", "timeout"), "WARN scanProblem"},
		{"the tool's OpenSSL has no engine", set("engine_problem", "WARN", "No engine or GOST support via engine with your /usr/bin/openssl"), ""},
		{"a tool notice beside a weak protocol", both(set("engine_problem", "WARN", "No engine"), set("TLS1", "LOW", "offered (deprecated)")), weakProtocol + " TLS1:"},
		// Judged by id: a check that blames the local OpenSSL was still not done.
		{"a check the tool's OpenSSL could not run", set("CRIME_TLS", "WARN", "CRIME, TLS: Not tested. /usr/bin/openssl lacks zlib support"), "WARN CRIME_TLS"},
		{"a server WARN", set("fallback_SCSV", "WARN", "Check failed. (couldn't connect)"), "WARN fallback_SCSV"},
		{"a check skipped", drop("heartbleed"), "did not report heartbleed"},
		{"protocols not scanned", drop("SSLv3"), "did not report SSLv3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := judgeTestSSL(tt.change(good()))
			switch {
			case tt.want == "" && len(got) != 0:
				t.Errorf("problems %v, want none", got)
			case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)):
				t.Errorf("problems %v, want one containing %q", got, tt.want)
			}
		})
	}
}
