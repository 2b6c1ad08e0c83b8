package proxy

import (
	"strings"
	"testing"
)

func TestRouterMostSpecificWins(t *testing.T) {
	routes := []RouteSpec{
		{Prefix: "/"},     // 0 any host
		{Prefix: "/api/"}, // 1 any host, longer prefix
		{Hosts: []string{"*.example.com"}, Prefix: "/"},                                             // 2 wildcard
		{Hosts: []string{"*.api.example.com"}, Prefix: "/"},                                         // 3 longer wildcard
		{Hosts: []string{"api.example.com"}, Prefix: "/"},                                           // 4 exact
		{Hosts: []string{"api.example.com"}, Prefix: "/v1"},                                         // 5 exact, longer prefix
		{Hosts: []string{"api.example.com"}, Prefix: "/v1/"},                                        // 6 same prefix as 5: file order loses
		{Hosts: []string{"API.Example.com."}, Prefix: "/admin", Methods: []string{"post", "PURGE"}}, // 7
	}
	r := NewRouter(routes)
	cases := []struct {
		host, path, method string
		want               int
	}{
		{"other.test", "/", "GET", 0},
		{"other.test", "/api", "GET", 1},
		{"other.test", "/api/x", "GET", 1},
		{"other.test", "/apix", "GET", 0},
		{"www.example.com", "/api/x", "GET", 2},
		{"a.b.example.com", "/", "GET", 2},
		{"example.com", "/", "GET", 0},
		{"x.api.example.com", "/", "GET", 3},
		{"api.example.com", "/", "GET", 4},
		{"api.example.com:8443", "/v1/users", "GET", 5},
		{"API.EXAMPLE.COM", "/v1", "GET", 5},
		{"api.example.com.", "/v1x", "GET", 4},
		{"api.example.com", "/admin/x", "POST", 7},
		{"api.example.com", "/admin/x", "PURGE", 7},
		{"api.example.com", "/admin/x", "GET", 4},
		{"[::1]:443", "/", "GET", 0},
		{"", "/", "GET", 0},
	}
	for _, c := range cases {
		if got := r.Match(c.host, c.path, c.method); got != c.want {
			t.Errorf("Match(%q, %q, %q) = %d, want %d", c.host, c.path, c.method, got, c.want)
		}
	}
	if got := NewRouter(routes[2:3]).Match("other.test", "/", "GET"); got != -1 {
		t.Errorf("no route must give -1, got %d", got)
	}
}

func TestStripPrefix(t *testing.T) {
	for _, c := range []struct{ path, prefix, want string }{
		{"/api/orders", "/api", "/orders"},
		{"/api/orders", "/api/", "/orders"},
		{"/api", "/api", "/"},
		{"/api/", "/api/", "/"},
	} {
		if got := stripPrefix(c.path, c.prefix); got != c.want {
			t.Errorf("stripPrefix(%q, %q) = %q, want %q", c.path, c.prefix, got, c.want)
		}
	}
}

// FuzzRouterMatch: any Host and path from a client is matched without
// panicking, and a match always honours the segment rule of the prefix.
func FuzzRouterMatch(f *testing.F) {
	specs := []RouteSpec{
		{Prefix: "/api"},
		{Hosts: []string{"*.example.com"}, Prefix: "/static/"},
		{Hosts: []string{"a.example.com"}, Prefix: "/", Methods: []string{"GET"}},
	}
	r := NewRouter(specs)
	for _, s := range []string{"a.example.com", "[::1]:80", "x.example.com:1", "EXAMPLE.COM.", "::", "[", ":"} {
		f.Add(s, "/api/x", "GET")
	}
	f.Fuzz(func(t *testing.T, host, path, method string) {
		i := r.Match(host, path, method)
		if i < -1 || i >= len(specs) {
			t.Fatalf("index %d out of range", i)
		}
		if i >= 0 && !PrefixMatch(normalizePrefix(specs[i].Prefix), path) {
			t.Fatalf("route %d matched %q against prefix %q", i, path, specs[i].Prefix)
		}
		if h := canonicalHost(host); strings.ContainsAny(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
			t.Fatalf("canonicalHost(%q) = %q still has upper case", host, h)
		}
	})
}

func BenchmarkRouterMatch(b *testing.B) {
	r := NewRouter([]RouteSpec{
		{Prefix: "/"}, {Prefix: "/api/"}, {Hosts: []string{"*.example.com"}, Prefix: "/"},
		{Hosts: []string{"api.example.com"}, Prefix: "/v1/", Methods: []string{"GET", "POST"}},
	})
	b.ReportAllocs()
	for b.Loop() {
		if r.Match("api.example.com:443", "/v1/orders/42", "GET") != 3 {
			b.Fatal("wrong route")
		}
	}
}
