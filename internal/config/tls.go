package config

import (
	"encoding/base64"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"time"
)

// LetsEncryptProduction and LetsEncryptStaging are the directory URLs used
// when tls.acme_ca is not set.
const (
	LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStaging    = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// maxRenewBefore is autocert's own cap; a longer value would be silently
// shortened, so it is refused instead.
const maxRenewBefore = 30 * 24 * time.Hour

// hstsPreloadMinAge is the shortest max-age the browsers' preload list
// accepts.
const hstsPreloadMinAge = 365 * 24 * time.Hour

// TLSACME holds the [tls] keys of mode "acme" (certificates from an RFC 8555
// CA such as Let's Encrypt), the default name, the HSTS header and the
// port-80 redirect exceptions.
type TLSACME struct {
	// Domains are the names certificates are ordered for. No certificate is
	// ever ordered for a name not listed. Wildcards cannot be proved by
	// HTTP-01 or TLS-ALPN-01: put a wildcard certificate in
	// [[tls.certificates]] instead.
	Domains []string `toml:"domains"`
	// Email is the ACME account's contact; CAs send expiry warnings there.
	Email string `toml:"email"`
	// ACMECA is the CA's directory URL. Default: Let's Encrypt production.
	ACMECA string `toml:"acme_ca"`
	// ACMEStaging uses Let's Encrypt's staging CA (untrusted certificates,
	// generous rate limits) when acme_ca is not set.
	ACMEStaging bool `toml:"acme_staging"`
	// EABKeyID and EABHMACKey bind the account to one at the CA (External
	// Account Binding: ZeroSSL, Google Trust Services). The HMAC key is
	// base64url, as the CA hands it out.
	EABKeyID   string `toml:"eab_key_id"`
	EABHMACKey Secret `toml:"eab_hmac_key"`
	// ACMECARoots is a PEM file of roots trusted for the CA's API (a private
	// CA, tests); default: the system roots.
	ACMECARoots string `toml:"acme_ca_roots"`
	// RenewBefore is how long before expiry a certificate is renewed.
	// Default 0: a third of its lifetime, at most 30 days (30 days for
	// Let's Encrypt's 90-day certificates).
	RenewBefore Duration `toml:"renew_before"`
	// DefaultName answers a handshake without SNI or for a name no
	// certificate covers. Empty (the default) refuses such handshakes, so
	// scanning an IP address does not reveal the configured names. In mode
	// "files" the first certificate is the default unless this is set.
	DefaultName string `toml:"default_name"`
	// HSTS is the Strict-Transport-Security header on HTTPS responses.
	HSTS HSTS `toml:"hsts"`
	// HTTPRedirectExempt are hosts whose plain-HTTP requests are served on
	// port 80 instead of redirected to HTTPS (exact or "*.wildcard").
	HTTPRedirectExempt []string `toml:"http_redirect_exempt"`
}

// HSTS configures the Strict-Transport-Security header; MaxAge 0 (the
// default) sends none.
type HSTS struct {
	MaxAge            Duration `toml:"max_age"`
	IncludeSubdomains bool     `toml:"include_subdomains"`
	Preload           bool     `toml:"preload"`
}

// DirectoryURL is the ACME directory to use: acme_ca, else Let's Encrypt
// staging or production.
func (a *TLSACME) DirectoryURL() string {
	switch {
	case a.ACMECA != "":
		return a.ACMECA
	case a.ACMEStaging:
		return LetsEncryptStaging
	default:
		return LetsEncryptProduction
	}
}

// DecodeEABKey decodes the EAB HMAC key; CAs hand it out base64url, with or
// without padding.
func DecodeEABKey(s Secret) ([]byte, error) {
	v := strings.TrimRight(s.Value(), "=")
	return base64.RawURLEncoding.DecodeString(v)
}

// validateACME checks the keys of TLSACME; TLS.validate calls it.
func (t *TLS) validateACME(c *checker) {
	a := &t.TLSACME
	acme := t.Mode == "acme"
	if !acme {
		for _, k := range []struct {
			key string
			set bool
		}{
			{"tls.domains", len(a.Domains) > 0},
			{"tls.email", a.Email != ""},
			{"tls.acme_ca", a.ACMECA != ""},
			{"tls.acme_staging", a.ACMEStaging},
			{"tls.eab_key_id", a.EABKeyID != ""},
			{"tls.eab_hmac_key", a.EABHMACKey != ""},
			{"tls.acme_ca_roots", a.ACMECARoots != ""},
			{"tls.renew_before", a.RenewBefore != 0},
		} {
			if k.set {
				c.add(k.key, `is only used with tls.mode = "acme" (mode is %q); set mode = "acme" or remove it`, t.Mode)
			}
		}
	}
	if acme && len(a.Domains) == 0 {
		c.add("tls.domains", `tls.mode = "acme" needs the names to order certificates for; write domains = ["api.example.com"]`)
	}
	seen := make(map[string]int)
	for i, d := range a.Domains {
		key := indexKey("tls.domains", i)
		switch {
		case strings.HasPrefix(d, "*."):
			c.add(key, `%q is a wildcard; ACME HTTP-01 and TLS-ALPN-01 cannot prove one. List each name, or put a wildcard certificate in [[tls.certificates]]`, d)
		case !validHostName(d):
			c.add(key, `%q is not a lowercase host name; write it like "api.example.com"`, d)
		case !strings.Contains(d, "."):
			c.add(key, `%q has a single label; a public CA only issues for names like "api.example.com"`, d)
		}
		if j, dup := seen[d]; dup {
			c.add(key, "%q is already tls.domains[%d]; list each name once", d, j)
		}
		seen[d] = i
	}
	if a.Email != "" {
		if addr, err := mail.ParseAddress(a.Email); err != nil || addr.Address != a.Email {
			c.add("tls.email", `%q is not an email address; write it like "ops@example.com"`, a.Email)
		}
	}
	if a.ACMECA != "" {
		if u, err := url.Parse(a.ACMECA); err != nil || u.Scheme != "https" || u.Host == "" {
			c.add("tls.acme_ca", `%q is not an https URL; write the CA's directory URL, like "https://acme.zerossl.com/v2/DV90"`, a.ACMECA)
		}
		if a.ACMEStaging {
			c.add("tls.acme_staging", "cannot be used with tls.acme_ca; staging selects Let's Encrypt's staging CA, so remove one of them")
		}
	}
	switch {
	case (a.EABKeyID == "") != (a.EABHMACKey == ""):
		// Report it where the operator wrote the half that is there.
		key := "tls.eab_key_id"
		if a.EABKeyID == "" {
			key = "tls.eab_hmac_key"
		}
		c.add(key, "tls.eab_key_id and tls.eab_hmac_key go together; set both (from the CA's account page) or neither")
	case a.EABHMACKey != "":
		if k, err := DecodeEABKey(a.EABHMACKey); err != nil || len(k) == 0 {
			c.add("tls.eab_hmac_key", "is not base64url (the value is not shown); paste the HMAC key exactly as the CA gives it")
		}
	}
	if a.ACMECARoots != "" {
		c.resolve(&a.ACMECARoots)
		checkReadable(c, "tls.acme_ca_roots", a.ACMECARoots, "a PEM file of the roots the CA's API is signed by")
	}
	if a.RenewBefore.Std() > maxRenewBefore {
		c.add("tls.renew_before", `%s is more than 30 days ("720h"); leave it out to renew at a third of the lifetime`, a.RenewBefore.Std())
	}
	if a.DefaultName != "" && !validHostName(a.DefaultName) {
		c.add("tls.default_name", `%q is not a lowercase host name; write one of the names a certificate covers`, a.DefaultName)
	}
	if acme && a.DefaultName != "" && !slices.Contains(a.Domains, a.DefaultName) && len(t.Certificates) == 0 {
		c.add("tls.default_name", `%q is neither in tls.domains nor covered by [[tls.certificates]]; name a domain edge has a certificate for`, a.DefaultName)
	}
	if h := a.HSTS; h.MaxAge == 0 && (h.IncludeSubdomains || h.Preload) {
		c.add("tls.hsts.max_age", `is 0, so no HSTS header is sent; set it (e.g. "8760h") or remove include_subdomains and preload`)
	} else if h.Preload && (h.MaxAge.Std() < hstsPreloadMinAge || !h.IncludeSubdomains) {
		c.add("tls.hsts.preload", `the browsers' preload list needs max_age of at least "8760h" and include_subdomains = true`)
	}
	for i, h := range a.HTTPRedirectExempt {
		if !validHostPattern(h) {
			c.add(indexKey("tls.http_redirect_exempt", i), `%q is not a host name; write it like "legacy.example.com" or "*.example.com"`, h)
		}
	}
}
