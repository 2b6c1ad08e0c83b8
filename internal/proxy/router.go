// Package proxy owns what happens between a matched request and the
// upstream: route matching, upstream pools (balancing, active and passive
// health, retries), the pooled HTTP/1.1 upstream transport, the
// httputil.ReverseProxy handler (WebSocket, streaming, JSON errors), static
// files and gzip.
package proxy

import (
	"path"
	"sort"
	"strings"
)

// RouteSpec is what the router needs to know of one route.
type RouteSpec struct {
	Hosts   []string // exact ("api.example.com") or wildcard ("*.example.com"); empty = any
	Prefix  string   // path prefix, "/" for everything
	Methods []string // upper case; empty = any
}

// Router finds the most specific route for a host, path and method: the
// longest host (exact before wildcard, longer wildcard before shorter, any
// host last), then the longest path prefix, then the order of the file.
// It is built once per snapshot and only read afterwards.
type Router struct {
	exact    map[string][]entry
	wildcard []wildcardBucket
	anyHost  []entry
}

type wildcardBucket struct {
	suffix  string // ".example.com"
	entries []entry
}

type entry struct {
	prefix  string // without a trailing slash, except the root "/"
	methods uint16 // bit per known method; 0 with others == nil means any
	others  []string
	index   int
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
	r := &Router{exact: map[string][]entry{}}
	wild := map[string][]entry{}
	for i, spec := range routes {
		e := entry{prefix: normalizePrefix(spec.Prefix), index: i}
		for _, m := range spec.Methods {
			m = strings.ToUpper(m)
			if bit := methodBit(m); bit != 0 {
				e.methods |= bit
			} else {
				e.others = append(e.others, m)
			}
		}
		if len(spec.Hosts) == 0 {
			r.anyHost = append(r.anyHost, e)
			continue
		}
		for _, h := range spec.Hosts {
			h = strings.ToLower(strings.TrimSuffix(h, "."))
			if suffix, ok := strings.CutPrefix(h, "*"); ok {
				wild[suffix] = append(wild[suffix], e)
			} else {
				r.exact[h] = append(r.exact[h], e)
			}
		}
	}
	for suffix, es := range wild {
		r.wildcard = append(r.wildcard, wildcardBucket{suffix: suffix, entries: es})
	}
	sort.Slice(r.wildcard, func(i, j int) bool {
		a, b := r.wildcard[i], r.wildcard[j]
		if len(a.suffix) != len(b.suffix) {
			return len(a.suffix) > len(b.suffix)
		}
		return a.suffix < b.suffix
	})
	for h := range r.exact {
		sortEntries(r.exact[h])
	}
	for i := range r.wildcard {
		sortEntries(r.wildcard[i].entries)
	}
	sortEntries(r.anyHost)
	return r
}

func normalizePrefix(p string) string {
	if p == "" || p == "/" {
		return "/"
	}
	return strings.TrimSuffix(p, "/")
}

// sortEntries orders by longest prefix, then file order (stable on index).
func sortEntries(es []entry) {
	sort.SliceStable(es, func(i, j int) bool {
		if len(es[i].prefix) != len(es[j].prefix) {
			return len(es[i].prefix) > len(es[j].prefix)
		}
		return es[i].index < es[j].index
	})
}

// Match returns the index of the route for the request, or -1. host may carry
// a port and any letter case; path must already be cleaned.
func (r *Router) Match(host, path, method string) int {
	host = canonicalHost(host)
	if es, ok := r.exact[host]; ok {
		if i := matchEntries(es, path, method); i >= 0 {
			return i
		}
	}
	for _, b := range r.wildcard {
		// "*.example.com" covers "a.example.com" and "a.b.example.com", not
		// "example.com" itself (as in nginx and TLS certificates).
		if len(host) > len(b.suffix) && strings.HasSuffix(host, b.suffix) {
			if i := matchEntries(b.entries, path, method); i >= 0 {
				return i
			}
		}
	}
	return matchEntries(r.anyHost, path, method)
}

func matchEntries(es []entry, path, method string) int {
	for i := range es {
		e := &es[i]
		if !PrefixMatch(e.prefix, path) {
			continue
		}
		if e.methods == 0 && e.others == nil {
			return e.index
		}
		if bit := methodBit(method); bit != 0 {
			if e.methods&bit != 0 {
				return e.index
			}
			continue
		}
		for _, m := range e.others {
			if m == method {
				return e.index
			}
		}
	}
	return -1
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
