package cache

import (
	"strings"
)

// directives are the Cache-Control directives of a response that a
// shared cache acts on (RFC 9111 5.2.2). A missing age is -1.
type directives struct {
	noStore, noCache, private bool
	// mustRevalidate is must-revalidate or proxy-revalidate: a stale
	// answer must not be served, not even when the upstream fails.
	mustRevalidate  bool
	maxAge, sMaxAge int64
}

// maxDelta caps a delta-seconds value: RFC 9111 1.2.2 asks for 2^31 on
// overflow, which is also far beyond anything worth keeping in memory.
const maxDelta = 1 << 31

// parseControl reads every Cache-Control value of an answer. The upstream
// is not trusted to be well formed: a directive it writes twice, or an age
// that is not a number, makes the answer uncacheable rather than fresh
// for longer than the upstream may have meant (RFC 9111 4.2.1).
func parseControl(values []string) directives {
	d := directives{maxAge: -1, sMaxAge: -1}
	for _, v := range values {
		for v != "" {
			var elem string
			elem, v = nextDirective(v)
			name, arg, hasArg := strings.Cut(elem, "=")
			name = strings.TrimSpace(name)
			arg = unquote(strings.TrimSpace(arg))
			switch {
			case strings.EqualFold(name, "no-store"):
				d.noStore = true
			case strings.EqualFold(name, "no-cache"):
				// With or without field names: the conservative reading
				// of both is to store nothing.
				d.noCache = true
			case strings.EqualFold(name, "private"):
				d.private = true
			case strings.EqualFold(name, "must-revalidate"), strings.EqualFold(name, "proxy-revalidate"):
				d.mustRevalidate = true
			case strings.EqualFold(name, "max-age"):
				d.maxAge = delta(d.maxAge, arg, hasArg)
			case strings.EqualFold(name, "s-maxage"):
				d.sMaxAge = delta(d.sMaxAge, arg, hasArg)
			}
		}
	}
	return d
}

// delta parses a delta-seconds argument; a second copy of the directive
// or a malformed value is 0, which stores nothing.
func delta(prev int64, arg string, hasArg bool) int64 {
	if prev != -1 || !hasArg || arg == "" {
		return 0
	}
	var n int64
	for i := 0; i < len(arg); i++ {
		c := arg[i]
		if c < '0' || c > '9' {
			return 0
		}
		if n < maxDelta {
			n = n*10 + int64(c-'0')
		}
	}
	return min(n, maxDelta)
}

// nextDirective splits the first directive off a Cache-Control value; a
// comma inside a quoted argument does not end it.
func nextDirective(v string) (elem, rest string) {
	quoted := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			return v[:i], v[i+1:]
		}
	}
	return v, ""
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}
