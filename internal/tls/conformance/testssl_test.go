package conformance

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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

func testssl(t *testing.T, addr, caFile string) {
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

// judgeTestSSL lists what is wrong in a testssl report: a protocol below
// TLS 1.2, a weak suite, a missing check, or a finding of severity HIGH
// (unless accepted), CRITICAL, WARN (the scan could not test something)
// or FATAL.
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
	notOffered(belowTLS12, "protocol below TLS 1.2 offered:")
	notOffered(weakCipherLists, "weak cipher category offered:")
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
