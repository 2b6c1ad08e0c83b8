package proxy

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	tests := []struct {
		path, want string
		ok         bool
	}{
		{"/", "/", true},
		{"", "/", true},
		{"/api/orders", "/api/orders", true},
		{"/api/orders/", "/api/orders/", true},
		{"/public/../admin", "/admin", true},
		{"/public/../admin/", "/admin/", true},
		{"/a//b/./c", "/a/b/c", true},
		{"/../../x", "/x", true},
		{"/a/..", "/", true},
		{"/café/ü", "/café/ü", true},
		{"/a.b/.hidden/..x/x..", "/a.b/.hidden/..x/x..", true},
		{"*", "*", true},

		{"/public/..;/api/x", "", false},
		{"/public/.;/api/x", "", false},
		{"/public/..;jsessionid=1/api/x", "", false},
		{"/api;x/secret", "", false},
		{"/shop/cart;jsessionid=1", "", false},
		{`/public\..\api`, "", false},
		{`\`, "", false},
		{"/x\x00.json", "", false},
		{"/x\r\nSet-Cookie: a", "", false},
		{"/x\t", "", false},
		{"/x\x7f", "", false},
		{"/x\x1f", "", false},
	}
	for _, tt := range tests {
		got, ok := CleanPath(tt.path)
		if got != tt.want || ok != tt.ok {
			t.Errorf("CleanPath(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

func TestCleanPathDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = CleanPath("/api/v1/orders/12345") }); n != 0 {
		t.Errorf("%v allocations for a path that needs no cleaning", n)
	}
}

// FuzzCleanPath: for any request-target net/http accepts, a path edge lets
// through means the same to edge as to a servlet container (Tomcat, and
// Spring on top of it) and to a server that takes '\' for '/': the same
// segments, or the other server refuses it. The cleaned path is clean.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{
		"/api/x", "/public/..;/api/x", "/public/%2e%2e;/api/x", "/api;x/y", "/public/%2e%2e/api/x",
		`/public\..\api`, "/public/%5c..%5capi", "/a/%00", "/a//b/../c/", "/%2e%2e/%2e/x", "/public%2f..%2fapi",
		"/x;/../api", "/x/..%3b/api",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		if !strings.HasPrefix(target, "/") {
			return // origin-form only: net/http parses the others into a host and a path of their own
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		clean, ok := CleanPath(u.Path)
		if !ok {
			return
		}
		if again, ok := CleanPath(clean); !ok || again != clean {
			t.Fatalf("CleanPath(%q) = %q, which cleans again to %q, %v", u.Path, clean, again, ok)
		}
		edge := segments(clean)
		if clean[0] != '/' || slices.Contains(edge, ".") || slices.Contains(edge, "..") || strings.Contains(clean, "//") {
			t.Fatalf("CleanPath(%q) = %q is not clean", u.Path, clean)
		}
		rawPath, _, _ := strings.Cut(target, "?")
		for name, read := range map[string]func(string) ([]string, bool){"servlet": servletPath, "backslash": backslashPath} {
			if other, ok := read(rawPath); ok && !slices.Equal(other, edge) {
				t.Fatalf("%q: edge reads %q, a %s server %q", target, edge, name, other)
			}
		}
	})
}

// servletPath reads a raw path as Tomcat does by default: ";params" cut from
// every segment before decoding, %2F and '\' refused, dot segments resolved,
// ".." above the root refused.
func servletPath(raw string) ([]string, bool) {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] == ';' {
			for i+1 < len(raw) && raw[i+1] != '/' {
				i++
			}
			continue
		}
		b.WriteByte(raw[i])
	}
	stripped := b.String()
	if strings.Contains(strings.ToLower(stripped), "%2f") {
		return nil, false
	}
	decoded, err := url.PathUnescape(stripped)
	if err != nil || strings.ContainsAny(decoded, "\\\x00") {
		return nil, false
	}
	return resolve(decoded)
}

// backslashPath reads a raw path as a server that takes '\' for '/' after
// decoding.
func backslashPath(raw string) ([]string, bool) {
	decoded, err := url.PathUnescape(raw)
	if err != nil {
		return nil, false
	}
	return resolve(strings.ReplaceAll(decoded, `\`, "/"))
}

func resolve(p string) ([]string, bool) {
	var out []string
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return nil, false
			}
			out = out[:len(out)-1]
		default:
			out = append(out, seg)
		}
	}
	return out, true
}

func segments(p string) []string {
	var out []string
	for _, seg := range strings.Split(p, "/") {
		if seg != "" {
			out = append(out, seg)
		}
	}
	return out
}
