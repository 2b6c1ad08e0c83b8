package tls

import (
	stdtls "crypto/tls"
	"strings"
	"testing"
)

func TestNormalizeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"example.com:443", "example.com"},
		{"EXAMPLE.com.:8443", "example.com"},
		{"[::1]:443", "::1"},
		{"[::1]", "::1"},
		{"::1", "::1"},
		{"127.0.0.1:80", "127.0.0.1"},
		{"*.Example.com", "*.example.com"},
		{" a.example.com ", "a.example.com"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := normalizeName(tt.in); got != tt.want {
			t.Errorf("normalizeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func testSet() (*certSet, map[string]*stdtls.Certificate) {
	certs := map[string]*stdtls.Certificate{"a": {}, "b": {}, "fb": {}}
	s := newCertSet()
	s.add(certs["a"], []string{"a.example.com", "*.a.example.com"})
	s.add(certs["b"], []string{"B.example.com", "a.example.com", "*.example.com"})
	s.fallback = certs["fb"]
	return s, certs
}

func TestCertSetLookup(t *testing.T) {
	s, certs := testSet()
	tests := []struct{ name, want string }{
		{"a.example.com", "a"}, // first pair to claim a name keeps it
		{"A.EXAMPLE.COM", "a"},
		{"x.a.example.com", "a"},
		{"b.example.com", "b"},
		{"other.example.com", "b"},
		{"example.com", "fb"},
		{"y.x.a.example.com", "fb"},
		{"", "fb"},
		{".", "fb"},
		{".example.com", "fb"},
	}
	for _, tt := range tests {
		if got := s.lookup(tt.name); got != certs[tt.want] {
			t.Errorf("lookup(%q) is not pair %s", tt.name, tt.want)
		}
	}
}

// FuzzCertSetLookup feeds SNI names as a client may send them: a lookup
// never panics, ignores ASCII case, and a match is always one of the names
// indexed or the wildcard one label up.
func FuzzCertSetLookup(f *testing.F) {
	for _, seed := range []string{"a.example.com", "X.A.EXAMPLE.COM", "", ".", "..", "*.example.com", "a.", "\x00.example.com", "ä.example.com", "[::1]:443"} {
		f.Add(seed)
	}
	s, _ := testSet()
	f.Fuzz(func(t *testing.T, name string) {
		got := s.match(name)
		if isASCII(name) && s.match(strings.ToUpper(name)) != got {
			t.Fatalf("match(%q) depends on case", name)
		}
		if got == nil {
			return
		}
		lower := strings.ToLower(name)
		if _, ok := s.exact[lower]; ok {
			return
		}
		_, parent, _ := strings.Cut(lower, ".")
		if _, ok := s.wild[parent]; !ok {
			t.Fatalf("match(%q) returned a certificate for a name not indexed", name)
		}
	})
}

// FuzzNormalizeName feeds Host headers and config names: the result is
// lower case and has no trailing dot, whatever the input.
func FuzzNormalizeName(f *testing.F) {
	for _, seed := range []string{"Example.COM.:443", "[::1]:80", "[::1", "a:b:c", "x..", "]:", "[]:", ":80", "\xff"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := normalizeName(in)
		if isASCII(in) && out != strings.ToLower(out) {
			t.Fatalf("normalizeName(%q) = %q is not lower case", in, out)
		}
		if strings.HasSuffix(out, ".") {
			t.Fatalf("normalizeName(%q) = %q ends in a dot", in, out)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func BenchmarkGetCertificate(b *testing.B) {
	s, _ := testSet()
	m := &Manager{}
	m.certs.Store(s)
	for _, name := range []string{"a.example.com", "x.a.example.com", "unknown.example.org"} {
		hello := &stdtls.ClientHelloInfo{ServerName: name}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.getCertificate(hello); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
