package proxy

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// Template is the target of a rewrite or a redirect, parsed once when the
// config is compiled: literal text with $1..$9 (or ${1}) for the groups of
// a regex, and nginx's variables $host (without the port), $uri (the
// cleaned path), $request_uri (the target as the client sent it) and $args
// (the query). The first literal '?' starts the query part. Groups and $uri
// are decoded text, so they are escaped for the part they land in (a path,
// or a query value); $host, $request_uri and $args are wire text already
// and go in as they are.
type Template struct {
	parts    []tmplPart
	query    int // index of the first part after the literal '?'; -1 without one
	maxGroup int
	// writesQuery: the template has a query part, $request_uri or $args.
	writesQuery bool
}

type tmplPart struct {
	lit   string
	group int     // >= 0: a regex group
	v     tmplVar // else a variable, or none for a literal
}

type tmplVar int

const (
	varNone tmplVar = iota
	varHost
	varURI
	varRequestURI
	varArgs
)

var tmplVars = map[string]tmplVar{"host": varHost, "uri": varURI, "request_uri": varRequestURI, "args": varArgs}

// ParseTemplate parses s; errors say what to write instead.
func ParseTemplate(s string) (*Template, error) {
	t := &Template{query: -1}
	lit := func(l string) {
		if l == "" {
			return
		}
		if q := strings.IndexByte(l, '?'); q >= 0 && t.query < 0 {
			if q > 0 {
				t.parts = append(t.parts, tmplPart{lit: l[:q], group: -1})
			}
			t.query = len(t.parts)
			l = l[q+1:]
			if l == "" {
				return
			}
		}
		t.parts = append(t.parts, tmplPart{lit: l, group: -1})
	}
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			lit(s)
			t.writesQuery = t.writesQuery || t.query >= 0
			return t, nil
		}
		lit(s[:i])
		s = s[i+1:]
		var name string
		if rest, ok := strings.CutPrefix(s, "{"); ok {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return nil, fmt.Errorf("\"${\" without a closing \"}\"")
			}
			name, s = rest[:end], rest[end+1:]
		} else if s != "" && s[0] >= '0' && s[0] <= '9' {
			name, s = s[:1], s[1:]
		} else {
			n := 0
			for n < len(s) && (s[n] == '_' || s[n] >= 'a' && s[n] <= 'z') {
				n++
			}
			name, s = s[:n], s[n:]
		}
		switch v, ok := tmplVars[name]; {
		case ok:
			t.parts = append(t.parts, tmplPart{group: -1, v: v})
			t.writesQuery = t.writesQuery || v == varRequestURI || v == varArgs
		case len(name) == 1 && name[0] >= '0' && name[0] <= '9':
			g := int(name[0] - '0')
			t.parts = append(t.parts, tmplPart{group: g})
			t.maxGroup = max(t.maxGroup, g)
		case name == "":
			return nil, fmt.Errorf("a lone \"$\"; write $1..$9 for a group or one of $host, $uri, $request_uri, $args")
		default:
			return nil, fmt.Errorf("unknown variable \"$%s\"; write $1..$9 for a group or one of $host, $uri, $request_uri, $args (in braces, like ${host}, when letters follow)", name)
		}
	}
}

// MaxGroup is the highest regex group the template refers to, 0 for none.
func (t *Template) MaxGroup() int { return t.maxGroup }

// HasQuery reports whether the template writes the query itself.
func (t *Template) HasQuery() bool { return t.query >= 0 }

// expand returns the path part (escaped) and the query part. m holds the
// group offsets into r.URL.Path, as regexp's Submatch*Index give them;
// groups a regex did not fill expand to nothing.
func (t *Template) expand(r *http.Request, m []int) (path, query string) {
	var b strings.Builder
	for i, p := range t.parts {
		if i == t.query {
			path = b.String()
			b.Reset()
		}
		inQuery := t.query >= 0 && i >= t.query
		escape := escapePath
		if inQuery {
			escape = url.QueryEscape
		}
		switch {
		case p.group >= 0:
			if 2*p.group+1 < len(m) && m[2*p.group] >= 0 {
				b.WriteString(escape(r.URL.Path[m[2*p.group]:m[2*p.group+1]]))
			}
		case p.v == varHost:
			b.WriteString(hostVar(r.Host))
		case p.v == varURI:
			b.WriteString(escape(r.URL.Path))
		case p.v == varRequestURI:
			b.WriteString(requestURI(r))
		case p.v == varArgs:
			b.WriteString(r.URL.RawQuery)
		default:
			b.WriteString(p.lit)
		}
	}
	if t.query >= 0 && t.query < len(t.parts) {
		query = b.String()
	} else {
		path = b.String()
	}
	return path, query
}

// hostVar is nginx's $host: the name without the port, lowercased.
func hostVar(h string) string {
	h = canonicalHost(h)
	if strings.IndexByte(h, ':') >= 0 {
		return "[" + h + "]"
	}
	return h
}

func escapePath(s string) string {
	return strings.ReplaceAll(url.PathEscape(s), "%2F", "/")
}

// requestURI is the target as the client sent it (nginx $request_uri),
// made origin-form if it came absolute.
func requestURI(r *http.Request) string {
	if r.RequestURI == "" || strings.Contains(r.RequestURI, "://") {
		return r.URL.RequestURI()
	}
	return r.RequestURI
}

// Rewrite changes the path sent upstream (nginx "rewrite ... break"): when
// From matches the cleaned path, the target becomes To, the route stays.
type Rewrite struct {
	From *regexp.Regexp
	To   *Template
}

// upTarget is the path and query a request goes upstream with, when edge
// changes them (strip_prefix, rewrite); the zero value keeps the client's.
type upTarget struct {
	changed  bool
	path     string // decoded
	rawPath  string // escaped, as written on the wire
	setQuery bool
	query    string
}

// target works out the upstream target once per request. ok is false when
// a rewrite produced a path CleanPath refuses: the request is refused as
// the same path from a client would be.
func (p *proxyHandler) target(r *http.Request) (t upTarget, ok bool) {
	if p.opts.StripPrefix != "" {
		return upTarget{
			changed: true,
			path:    stripPrefix(r.URL.Path, p.opts.StripPrefix),
			rawPath: stripPrefix(r.URL.EscapedPath(), p.opts.StripPrefix),
		}, true
	}
	rw := p.opts.Rewrite
	if rw == nil {
		return upTarget{}, true
	}
	m := rw.From.FindStringSubmatchIndex(r.URL.Path)
	if m == nil {
		return upTarget{}, true
	}
	raw, query := rw.To.expand(r, m)
	decoded, err := url.PathUnescape(raw)
	if err != nil {
		return upTarget{}, false
	}
	clean, ok := CleanPath(decoded)
	if !ok {
		return upTarget{}, false
	}
	return upTarget{changed: true, path: clean, rawPath: escapePath(clean), setQuery: rw.To.HasQuery(), query: query}, true
}

// NewRedirect answers every request with status and a Location built from
// to; re, when not nil, is the route's regex, whose groups to may use.
func NewRedirect(re *regexp.Regexp, to *Template, status int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m []int
		if re != nil {
			m = re.FindStringSubmatchIndex(r.URL.Path)
		}
		loc, query := to.expand(r, m)
		// "/$1" with a group holding "/evil.example" would otherwise send
		// the client to another host ("//evil.example").
		if strings.HasPrefix(loc, "//") {
			loc = "/" + strings.TrimLeft(loc, "/")
		}
		switch {
		case to.HasQuery():
			loc += "?" + query
		case !to.writesQuery && r.URL.RawQuery != "":
			// As nginx's "rewrite ... permanent" keeps the arguments.
			loc += "?" + r.URL.RawQuery
		}
		h := w.Header()
		h["Location"] = []string{loc}
		h["Content-Length"] = []string{"0"}
		w.WriteHeader(status)
	})
}
