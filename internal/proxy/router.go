// Package proxy owns what happens between a matched request and the
// upstream: route matching, upstream pools (balancing, active and passive
// health, retries), the pooled HTTP/1.1 upstream transport, the
// httputil.ReverseProxy handler (WebSocket, streaming, JSON errors), static
// files and gzip.
package proxy

import (
	"path"
	"regexp"
	"sort"
	"strings"
)

// RouteSpec is what the router needs to know of one route. A route matches
// paths in one of three ways: Regex when set, else Exact when set, else
// Prefix.
type RouteSpec struct {
	Hosts  []string // exact ("api.example.com") or wildcard ("*.example.com"); empty = any
	Prefix string   // path prefix, "/" for everything
	// BeforeRegex makes a prefix route, when it is the longest match, win
	// over regex routes (nginx "location ^~").
	BeforeRegex bool
	Exact       string         // the whole path
	Regex       *regexp.Regexp // matched against the cleaned path
	Methods     []string       // upper case; empty = any
}

// Router finds the route for a host, path and method. The host decides
// first: exact before wildcard, longer wildcard before shorter, any host
// last. Among the routes of the first host that has a match, the path
// decides as nginx's locations do: an exact path; else the longest prefix
// if it is marked BeforeRegex; else the first regex in file order; else the
// longest prefix (file order between equal prefixes).
// It is built once per snapshot and only read afterwards.
type Router struct {
	exact    map[string]*routeSet
	wildcard []wildcardBucket
	anyHost  routeSet
}

type wildcardBucket struct {
	suffix string // ".example.com"
	routes routeSet
}

// routeSet holds the routes of one host pattern by how they match paths.
type routeSet struct {
	exact  []entry // file order
	prefix []entry // longest first, then file order
	regex  []entry // file order
}

type entry struct {
	path        string // exact path, or prefix without a trailing slash except the root "/"
	re          *regexp.Regexp
	beforeRegex bool
	methods     uint16 // bit per known method; 0 with others == nil means any
	others      []string
	index       int
}

func methodBit(m string) uint16 {
	switch m {
	case "GET":
		return 1 << 0
	case "HEAD":
		return 1 << 1
	case "POST":
		return 1 << 2
	case "PUT":
		return 1 << 3
	case "PATCH":
		return 1 << 4
	case "DELETE":
		return 1 << 5
	case "OPTIONS":
		return 1 << 6
	case "CONNECT":
		return 1 << 7
	case "TRACE":
		return 1 << 8
	}
	return 0
}

// NewRouter compiles routes; Match returns indexes into this slice.
func NewRouter(routes []RouteSpec) *Router {
	r := &Router{exact: map[string]*routeSet{}}
	wild := map[string]*routeSet{}
	for i, spec := range routes {
		e := entry{index: i}
		for _, m := range spec.Methods {
			m = strings.ToUpper(m)
			if bit := methodBit(m); bit != 0 {
				e.methods |= bit
			} else {
				e.others = append(e.others, m)
			}
		}
		add := func(s *routeSet) {
			switch {
			case spec.Regex != nil:
				e.re = spec.Regex
				s.regex = append(s.regex, e)
			case spec.Exact != "":
				e.path = spec.Exact
				s.exact = append(s.exact, e)
			default:
				e.path = normalizePrefix(spec.Prefix)
				e.beforeRegex = spec.BeforeRegex
				s.prefix = append(s.prefix, e)
			}
		}
		if len(spec.Hosts) == 0 {
			add(&r.anyHost)
			continue
		}
		for _, h := range spec.Hosts {
			h = strings.ToLower(strings.TrimSuffix(h, "."))
			set := r.exact
			if suffix, ok := strings.CutPrefix(h, "*"); ok {
				h, set = suffix, wild
			}
			if set[h] == nil {
				set[h] = &routeSet{}
			}
			add(set[h])
		}
	}
	for suffix, s := range wild {
		r.wildcard = append(r.wildcard, wildcardBucket{suffix: suffix, routes: *s})
	}
	sort.Slice(r.wildcard, func(i, j int) bool {
		a, b := r.wildcard[i], r.wildcard[j]
		if len(a.suffix) != len(b.suffix) {
			return len(a.suffix) > len(b.suffix)
		}
		return a.suffix < b.suffix
	})
	for _, s := range r.exact {
		sortPrefixes(s.prefix)
	}
	for i := range r.wildcard {
		sortPrefixes(r.wildcard[i].routes.prefix)
	}
	sortPrefixes(r.anyHost.prefix)
	return r
}

func normalizePrefix(p string) string {
	if p == "" || p == "/" {
		return "/"
	}
	return strings.TrimSuffix(p, "/")
}

// sortPrefixes orders by longest prefix, then file order (stable on index).
func sortPrefixes(es []entry) {
	sort.SliceStable(es, func(i, j int) bool {
		if len(es[i].path) != len(es[j].path) {
			return len(es[i].path) > len(es[j].path)
		}
		return es[i].index < es[j].index
	})
}

// Match returns the index of the route for the request, or -1. host may carry
// a port and any letter case; path must already be cleaned.
func (r *Router) Match(host, path, method string) int {
	host = canonicalHost(host)
	if s, ok := r.exact[host]; ok {
		if i := s.match(path, method); i >= 0 {
			return i
		}
	}
	for i := range r.wildcard {
		b := &r.wildcard[i]
		// "*.example.com" covers "a.example.com" and "a.b.example.com", not
		// "example.com" itself (as in nginx and TLS certificates).
		if len(host) > len(b.suffix) && strings.HasSuffix(host, b.suffix) {
			if i := b.routes.match(path, method); i >= 0 {
				return i
			}
		}
	}
	return r.anyHost.match(path, method)
}

func (s *routeSet) match(path, method string) int {
	for i := range s.exact {
		if e := &s.exact[i]; e.path == path && e.allows(method) {
			return e.index
		}
	}
	var longest *entry
	for i := range s.prefix {
		if e := &s.prefix[i]; PrefixMatch(e.path, path) && e.allows(method) {
			longest = e
			break
		}
	}
	if longest != nil && longest.beforeRegex {
		return longest.index
	}
	for i := range s.regex {
		if e := &s.regex[i]; e.allows(method) && e.re.MatchString(path) {
			return e.index
		}
	}
	if longest != nil {
		return longest.index
	}
	return -1
}

func (e *entry) allows(method string) bool {
	if e.methods == 0 && e.others == nil {
		return true
	}
	if bit := methodBit(method); bit != 0 {
		return e.methods&bit != 0
	}
	for _, m := range e.others {
		if m == method {
			return true
		}
	}
	return false
}

// PrefixMatch reports whether path is prefix or below it, segment-wise:
// "/api" matches "/api" and "/api/x", never "/apix".
func PrefixMatch(prefix, path string) bool {
	if prefix == "/" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// canonicalHost strips the port and a trailing dot and lowercases, without
// allocating for the common already-lowercase host.
func canonicalHost(h string) string {
	if strings.HasPrefix(h, "[") {
		if end := strings.IndexByte(h, ']'); end > 0 {
			h = h[1:end]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h, ':') == i {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// CleanPath returns the decoded request path as edge routes and forwards it:
// dot segments resolved and repeated slashes merged, so that
// "/public/../admin" is "/admin" to edge and to the upstream alike. ok is
// false for a path whose meaning depends on the server reading it, which
// must be refused rather than guessed at:
//
//   - ';' (also as %3B): Tomcat and Spring drop ";params" from every segment,
//     so "/public/..;/api/x" is "/api/x" to them and a file below /public to
//     edge, and "/api;x/y" is "/api/y" to them and outside /api to edge;
//   - '\' (also as %5C): a path separator on Windows servers and to some
//     frameworks, an ordinary byte to edge;
//   - NUL and the other control bytes: truncated or split by some servers
//     and file APIs, and a way to smuggle line breaks into logs.
//
// It does not allocate unless the path needs cleaning.
func CleanPath(p string) (clean string, ok bool) {
	if p == "" {
		return "/", true
	}
	dirty := p[0] != '/'
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c < 0x20 || c == 0x7f || c == ';' || c == '\\':
			return "", false
		case c == '/' && i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.'):
			dirty = true
		}
	}
	if !dirty {
		return p, true
	}
	clean = path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean, true
}
