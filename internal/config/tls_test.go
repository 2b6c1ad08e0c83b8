package config

import (
	"path/filepath"
	"testing"
	"time"
)

func TestTLSACMEParse(t *testing.T) {
	dir := testDir(t)
	cfg := mustParse(t, dir, doc(
		`[tls]`,
		`mode = "acme"`,
		`domains = ["api.example.com", "www.example.com"]`,
		`email = "ops@example.com"`,
		`acme_ca = "https://acme.zerossl.com/v2/DV90"`,
		`eab_key_id = "kid-1"`,
		`eab_hmac_key = "c2VjcmV0LWhtYWMta2V5"`,
		`acme_ca_roots = "cert.pem"`,
		`renew_before = "720h"`,
		`default_name = "api.example.com"`,
		`http_redirect_exempt = ["legacy.example.com", "*.old.example.com"]`,
		`certificates = [{ cert = "cert.pem", key = "key.pem" }]`,
		`[tls.hsts]`,
		`max_age = "8760h"`,
		`include_subdomains = true`,
		`preload = true`,
	))
	a := cfg.TLS.TLSACME
	if got := a.DirectoryURL(); got != "https://acme.zerossl.com/v2/DV90" {
		t.Errorf("DirectoryURL = %q", got)
	}
	if a.ACMECARoots != filepath.Join(dir, "cert.pem") {
		t.Errorf("acme_ca_roots not resolved: %q", a.ACMECARoots)
	}
	if key, err := DecodeEABKey(a.EABHMACKey); err != nil || string(key) != "secret-hmac-key" {
		t.Errorf("DecodeEABKey = %q, %v", key, err)
	}
	if a.RenewBefore.Std() != 720*time.Hour || !a.HSTS.Preload || len(a.HTTPRedirectExempt) != 2 {
		t.Errorf("parsed %+v", a)
	}
}

func TestDirectoryURL(t *testing.T) {
	tests := []struct {
		a    TLSACME
		want string
	}{
		{TLSACME{}, LetsEncryptProduction},
		{TLSACME{ACMEStaging: true}, LetsEncryptStaging},
		{TLSACME{ACMECA: "https://ca.test/dir"}, "https://ca.test/dir"},
	}
	for _, tt := range tests {
		if got := tt.a.DirectoryURL(); got != tt.want {
			t.Errorf("DirectoryURL(%+v) = %q, want %q", tt.a, got, tt.want)
		}
	}
}

func TestTLSACMEProblems(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []want
	}{
		{"acme without domains", doc(`[tls]`, `mode = "acme"`),
			[]want{{"tls.domains", 1, `needs the names to order certificates for`}}},
		{"bad domains", doc(`[tls]`, `mode = "acme"`, `domains = ["*.example.com", "API.example.com", "localhost", "a.example.com", "a.example.com"]`),
			[]want{
				{"tls.domains[0]", 3, "is a wildcard"},
				{"tls.domains[1]", 3, "is not a lowercase host name"},
				{"tls.domains[2]", 3, "has a single label"},
				{"tls.domains[4]", 3, "is already tls.domains[3]"},
			}},
		{"account settings", doc(`[tls]`, `mode = "acme"`, `domains = ["a.example.com"]`,
			`email = "not an email"`, `acme_ca = "http://ca.test/dir"`, `acme_staging = true`, `eab_hmac_key = "!!"`,
			`acme_ca_roots = "missing.pem"`, `renew_before = "1000h"`),
			[]want{
				{"tls.email", 4, "is not an email address"},
				{"tls.acme_ca", 5, "is not an https URL"},
				{"tls.acme_staging", 6, "cannot be used with tls.acme_ca"},
				{"tls.eab_hmac_key", 7, "go together"},
				{"tls.acme_ca_roots", 8, "no such file or directory"},
				{"tls.renew_before", 9, "is more than 30 days"},
			}},
		{"eab key not base64url", doc(`[tls]`, `mode = "acme"`, `domains = ["a.example.com"]`, `eab_key_id = "k"`, `eab_hmac_key = "not base64!"`),
			[]want{{"tls.eab_hmac_key", 5, "is not base64url (the value is not shown)"}}},
		{"default name", doc(`[tls]`, `mode = "acme"`, `domains = ["a.example.com"]`, `default_name = "b.example.com"`),
			[]want{{"tls.default_name", 4, "is neither in tls.domains nor covered"}}},
		{"hsts", doc(`[tls]`, `[tls.hsts]`, `include_subdomains = true`),
			[]want{{"tls.hsts.max_age", 2, "is 0, so no HSTS header is sent"}}},
		{"hsts preload", doc(`[tls]`, `[tls.hsts]`, `max_age = "720h"`, `preload = true`),
			[]want{{"tls.hsts.preload", 4, `needs max_age of at least "8760h" and include_subdomains`}}},
		{"redirect exempt", doc(`[tls]`, `http_redirect_exempt = ["ok.example.com", "bad host"]`),
			[]want{{"tls.http_redirect_exempt[1]", 2, `"bad host" is not a host name`}}},
		{"acme keys outside acme mode", doc(`[tls]`, `domains = ["a.example.com"]`, `acme_staging = true`),
			[]want{
				{"tls.domains", 2, `only used with tls.mode = "acme"`},
				{"tls.acme_staging", 3, `only used with tls.mode = "acme"`},
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, e := parseIn(t, testDir(t), tc.text)
			wantProblems(t, e, tc.want)
		})
	}
}
