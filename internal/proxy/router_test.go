package proxy

import (
	"regexp"
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

// TestRouterPrecedence: within the routes of one host, as nginx chooses a
// location: an exact path, else the longest prefix marked before_regex, else
// the first regex in file order, else the longest prefix; host and method
// filters narrow every kind, and a more specific host still comes first.
func TestRouterPrecedence(t *testing.T) {
	routes := []RouteSpec{
		{Prefix: "/"},         // 0 catch-all
		{Prefix: "/api/"},     // 1
		{Exact: "/api/users"}, // 2
		{Regex: regexp.MustCompile(`^/api/users/(\d+)$`)},                                   // 3
		{Regex: regexp.MustCompile(`^/api/users/`)},                                         // 4 later in the file than 3
		{Regex: regexp.MustCompile(`(?i)\.(png|jpg)$`)},                                     // 5 case-insensitive
		{Prefix: "/static/", BeforeRegex: true},                                             // 6 nginx ^~
		{Exact: "/api/users", Methods: []string{"POST"}},                                    // 7 same path as 2, POST only: 2 wins (file order)
		{Exact: "/login", Methods: []string{"POST"}},                                        // 8
		{Regex: regexp.MustCompile(`^/m/`), Methods: []string{"DELETE"}},                    // 9
		{Hosts: []string{"api.example.com"}, Regex: regexp.MustCompile(`^/api/users/\d+$`)}, // 10 exact host
		{Hosts: []string{"*.example.com"}, Exact: "/only"},                                  // 11
	}
	r := NewRouter(routes)
	cases := []struct {
		name, host, path, method string
		want                     int
	}{
		{"exact beats prefix and regex", "other.test", "/api/users", "GET", 2},
		{"exact is the whole path", "other.test", "/api/users/", "GET", 4},
		{"first regex in file order", "other.test", "/api/users/42", "GET", 3},
		{"later regex when the first does not match", "other.test", "/api/users/me", "GET", 4},
		{"regex beats the longest prefix", "other.test", "/img/A.PNG", "GET", 5},
		{"prefix when no regex matches", "other.test", "/api/orders", "GET", 1},
		{"catch-all prefix", "other.test", "/x", "GET", 0},
		{"before_regex prefix beats regex", "other.test", "/static/a.png", "GET", 6},
		{"before_regex counts only as the longest prefix", "other.test", "/staticx.png", "GET", 5},
		{"exact with method filter", "other.test", "/login", "POST", 8},
		{"exact skipped on other method", "other.test", "/login", "GET", 0},
		{"regex with method filter", "other.test", "/m/1", "DELETE", 9},
		{"regex skipped on other method", "other.test", "/m/1", "GET", 0},
		{"exact host's regex first", "api.example.com", "/api/users/42", "GET", 10},
		{"exact host falls back to any host", "api.example.com", "/api/users", "GET", 2},
		{"wildcard host exact", "a.example.com", "/only", "GET", 11},
		{"wildcard host falls back", "a.example.com", "/only/x", "GET", 0},
	}
	for _, c := range cases {
		if got := r.Match(c.host, c.path, c.method); got != c.want {
			t.Errorf("%s: Match(%q, %q, %q) = %d, want %d", c.name, c.host, c.path, c.method, got, c.want)
		}
	}
	if got := NewRouter(routes[2:3]).Match("x", "/api", "GET"); got != -1 {
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

// BenchmarkRouterMatchKinds: exact and prefix routes stay free of
// allocations beside regex routes; a regex costs what regexp costs.
func BenchmarkRouterMatchKinds(b *testing.B) {
	r := NewRouter([]RouteSpec{
		{Prefix: "/"}, {Prefix: "/api/"}, {Exact: "/healthz"},
		{Regex: regexp.MustCompile(`^/v(\d+)/users/(\d+)$`)},
		{Regex: regexp.MustCompile(`(?i)\.(png|jpg)$`)},
	})
	for _, c := range []struct {
		name, path string
		want       int
	}{
		{"exact", "/healthz", 2},
		{"prefix", "/api/orders/42", 1},
		{"regex", "/v1/users/42", 3},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if r.Match("api.example.com", c.path, "GET") != c.want {
					b.Fatal("wrong route")
				}
			}
		})
	}
}
