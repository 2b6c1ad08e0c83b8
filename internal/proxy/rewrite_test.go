package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func TestParseTemplate(t *testing.T) {
	for _, c := range []struct {
		in       string
		maxGroup int
		query    bool
		err      string
	}{
		{"/api/$1", 1, false, ""},
		{"/api/${2}x$1", 2, false, ""},
		{"/a?b=$1", 1, true, ""},
		{"https://$host$request_uri", 0, false, ""},
		{"/${host}s", 0, false, ""},
		{"/a/$hosts", 0, false, `unknown variable "$hosts"`},
		{"/a/$", 0, false, "a lone"},
		{"/a/${1", 0, false, "without a closing"},
		{"/a/$10", 1, false, ""}, // $1 then "0", as in nginx
	} {
		tm, err := ParseTemplate(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseTemplate(%q) error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTemplate(%q): %v", c.in, err)
			continue
		}
		if tm.MaxGroup() != c.maxGroup || tm.HasQuery() != c.query {
			t.Errorf("ParseTemplate(%q): max group %d query %v, want %d %v", c.in, tm.MaxGroup(), tm.HasQuery(), c.maxGroup, c.query)
		}
	}
}

// TestRewriteTarget: the target a route's requests go upstream with, from
// the cleaned path the route matched.
func TestRewriteTarget(t *testing.T) {
	for _, c := range []struct {
		name, from, to, target string
		want                   string // path?query written upstream; "" = the client's own target
		refused                bool
	}{
		{"groups", `^/v1/(.*)$`, "/api/$1", "/v1/users/42?a=1", "/api/users/42?a=1", false},
		{"no match keeps the target", `^/v1/(.*)$`, "/api/$1", "/v2/x?a=1", "", false},
		{"query in to replaces the client's", `^/u/(\d+)$`, "/user?id=$1", "/u/7?a=1", "/user?id=7", false},
		{"$args keeps it", `^/u/(\d+)$`, "/user?id=$1&$args", "/u/7?a=1", "/user?id=7&a=1", false},
		{"query values are escaped", `^/s/(.*)$`, "/search?q=$1", "/s/a%20b%26c", "/search?q=a+b%26c", false},
		{"decoded groups are escaped back", `^/f/(.*)$`, "/files/$1", "/f/a%20b%3Fc", "/files/a%20b%3Fc", false},
		{"percent is not decoded twice", `^/f/(.*)$`, "/files/$1", "/f/a%252e%252e", "/files/a%252e%252e", false},
		{"result is cleaned", `^/x(.*)$`, "/y/$1/../z", "/x/a", "/y/z", false},
		{"repeated slashes merged", `^(.*)$`, "/$1", "/a", "/a", false},
		{"unmatched group is empty", `^/o(/x)?$`, "/p$1", "/o", "/p", false},
		{"ambiguous result refused", `^/x/(.*)$`, "/y;$1", "/x/a", "", true},
		{"encoded semicolon refused", `^/x/(.*)$`, "/y%3B/$1", "/x/a", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			to, err := ParseTemplate(c.to)
			if err != nil {
				t.Fatal(err)
			}
			p := &proxyHandler{opts: ProxyOptions{Rewrite: &Rewrite{From: regexp.MustCompile(c.from), To: to}}}
			r := httptest.NewRequest("GET", c.target, nil)
			tg, ok := p.target(r)
			if ok == c.refused {
				t.Fatalf("ok = %v, want %v", ok, !c.refused)
			}
			if c.refused {
				return
			}
			got := ""
			if tg.changed || tg.setQuery {
				var b strings.Builder
				b.WriteString(tg.rawPath)
				query := r.URL.RawQuery
				if tg.setQuery {
					query = tg.query
				}
				if query != "" {
					b.WriteString("?" + query)
				}
				got = b.String()
				if u, err := url.Parse(tg.rawPath); err != nil || u.Path != tg.path {
					t.Errorf("rawPath %q does not escape path %q", tg.rawPath, tg.path)
				}
			}
			if got != c.want {
				t.Errorf("target %q, want %q", got, c.want)
			}
		})
	}
}

func TestRedirect(t *testing.T) {
	for _, c := range []struct {
		name, re, to string
		status       int
		target, want string
	}{
		{"groups", `^/old/(\d+)/(.*)$`, "https://new.example.com/n/$1/$2", 301, "/old/7/a%20b", "https://new.example.com/n/7/a%20b"},
		{"query kept", `^/old/(.*)$`, "/new/$1", 302, "/old/x?a=1", "/new/x?a=1"},
		{"request_uri", "", "https://$host$request_uri", 308, "/a/b?c=d", "https://api.example.com/a/b?c=d"},
		{"query in to replaces", "", "/n?from=$uri", 307, "/a b?c=d", "/n?from=%2Fa+b"},
		{"no protocol-relative", `^(.*)$`, "/$1", 302, "/evil.example/x", "/evil.example/x"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var re *regexp.Regexp
			if c.re != "" {
				re = regexp.MustCompile(c.re)
			}
			to, err := ParseTemplate(c.to)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "https://api.example.com"+strings.ReplaceAll(c.target, " ", "%20"), nil)
			r.RequestURI = strings.ReplaceAll(c.target, " ", "%20")
			w := httptest.NewRecorder()
			NewRedirect(re, to, c.status).ServeHTTP(w, r)
			if w.Code != c.status || w.Header().Get("Location") != c.want {
				t.Errorf("%d %q, want %d %q", w.Code, w.Header().Get("Location"), c.status, c.want)
			}
		})
	}
}

// FuzzRewriteTarget: any cleaned client path through a rewrite gives a
// target that is clean, starts with "/", escapes its path and holds
// nothing CleanPath refuses; or the request is refused.
func FuzzRewriteTarget(f *testing.F) {
	to, err := ParseTemplate("/api/$1/${2}x?q=$1")
	if err != nil {
		f.Fatal(err)
	}
	p := &proxyHandler{opts: ProxyOptions{Rewrite: &Rewrite{From: regexp.MustCompile(`^/v1/([^/]*)(.*)$`), To: to}}}
	for _, s := range []string{"/v1/a/b", "/v1/%2e%2e/x", "/v1/a%3Bb", "/v1//..//", "/v1/%25/?"} {
		f.Add(s, "a=1")
	}
	f.Fuzz(func(t *testing.T, path, query string) {
		clean, ok := CleanPath(path)
		if !ok {
			return
		}
		r := &http.Request{Method: "GET", Host: "h", URL: &url.URL{Path: clean, RawQuery: query}}
		tg, ok := p.target(r)
		if !ok || !tg.changed {
			return
		}
		if c, ok := CleanPath(tg.path); !ok || c != tg.path || !strings.HasPrefix(tg.path, "/") {
			t.Fatalf("%q: target path %q is not clean", clean, tg.path)
		}
		if u, err := url.Parse(tg.rawPath); err != nil || u.Path != tg.path || u.RawQuery != "" {
			t.Fatalf("%q: raw path %q does not escape %q", clean, tg.rawPath, tg.path)
		}
		if strings.ContainsAny(tg.query, " #\r\n") {
			t.Fatalf("%q: query %q is not escaped", clean, tg.query)
		}
	})
}
