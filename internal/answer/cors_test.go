package answer

import "testing"

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
