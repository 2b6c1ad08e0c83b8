package answer

import (
	"net/url"
	"strings"
	"testing"
)

func TestCORSAllowed(t *testing.T) {
	c, err := NewCORS(CORSOptions{Origins: []string{"https://h5.example.com", "*.example.org", "http://localhost:8080", "https://*.shop.test:8443"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		origin string
		want   bool
	}{
		{"https://h5.example.com", true},
		{"HTTPS://H5.Example.com", true},
		{"http://h5.example.com", false},
		{"https://h5.example.com:443", false},
		{"https://x.h5.example.com", false},
		{"https://a.example.org", true},
		{"https://a.b.example.org", true},
		{"https://example.org", false},
		{"https://evil-example.org", false},
		{"https://a.example.org.evil.test", false},
		{"https://a.example.org:8443", false},
		{"http://a.example.org", false},
		{"http://localhost:8080", true},
		{"http://localhost", false},
		{"https://m.shop.test:8443", true},
		{"https://m.shop.test", false},
		{"https://.example.org", false},
		{"https://a b.example.org", false},
		{"https://a_b.example.org", false},
		{"https://a..example.org", false},
		{"null", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := c.Allowed(tt.origin); got != tt.want {
			t.Errorf("Allowed(%q) = %v, want %v", tt.origin, got, tt.want)
		}
	}
}

func TestParseOriginRefuses(t *testing.T) {
	for _, o := range []string{"https://*.com", "https://a.*.example.com", "ftp://a.example.com", "https://a.example.com/path", "https://u@a.example.com", "https://", "*"} {
		if _, _, _, err := ParseOrigin(o); err == nil {
			t.Errorf("ParseOrigin(%q) accepted", o)
		}
	}
}

// FuzzCORSAllowed compares the allocation-free matcher with a reading of
// the Origin through net/url: a subdomain of example.org over https on
// the default port, or exactly https://h5.example.com.
func FuzzCORSAllowed(f *testing.F) {
	c, err := NewCORS(CORSOptions{Origins: []string{"https://h5.example.com", "https://*.example.org"}})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"https://h5.example.com", "https://a.example.org", "https://evil-example.org", "https://a.example.org:443", "https://a.example.org/", "https://u@a.example.org", "HTTPS://A.EXAMPLE.ORG"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, origin string) {
		if got, want := c.Allowed(origin), referenceAllowed(origin); got != want {
			t.Fatalf("%q: Allowed %v, reference %v", origin, got, want)
		}
	})
}

func referenceAllowed(origin string) bool {
	if strings.EqualFold(origin, "https://h5.example.com") {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || !strings.EqualFold(u.Scheme, "https") || u.User != nil || u.Path != "" || u.Opaque != "" ||
		strings.ContainsAny(origin, "?#") || u.Port() != "" || strings.HasSuffix(u.Host, ":") {
		return false
	}
	host := strings.ToLower(u.Host)
	sub, ok := strings.CutSuffix(host, ".example.org")
	if !ok {
		return false
	}
	for _, label := range strings.Split(sub, ".") {
		if label == "" || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return false
		}
	}
	return true
}
