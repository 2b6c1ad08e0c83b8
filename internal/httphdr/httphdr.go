// Package httphdr holds the header-name rules that more than one package
// applies, so that each is written once: which names belong to edge alone
// (the identity and signature headers a client may never set), and how a
// comma-separated token list such as Connection or Te is read.
package httphdr

import (
	"iter"
	"strings"
)

// EdgeOwned reports whether name is one of edge's own headers: any X-WX-*
// (identity) or X-Edge-* (signature), in any letter case and with '_' for
// '-' (X_WX_OPENID reaches PHP and several Node frameworks as the same
// variable as X-WX-OPENID). A client's copy of such a header is never
// passed on; edge's own copy is never removed on the client's say-so.
func EdgeOwned(name string) bool {
	return hasSepPrefixFold(name, "x-wx-") || hasSepPrefixFold(name, "x-edge-")
}

// hasSepPrefixFold is a case-insensitive prefix test where '_' in s matches
// '-' in the lowercase prefix.
func hasSepPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := s[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// Elements yields the elements of a comma-separated list header (every
// value of it, RFC 9110 5.6.1), trimmed of surrounding spaces, empty ones
// skipped. It is the one reader of list headers: Connection, Te, Trailer,
// Vary, Accept-Encoding.
func Elements(values []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range values {
			for v != "" {
				var elem string
				elem, v, _ = strings.Cut(v, ",")
				if elem = strings.TrimSpace(elem); elem != "" && !yield(elem) {
					return
				}
			}
		}
	}
}

// HasToken reports whether a comma-separated list header (every value of
// it) names token, compared without regard to case or surrounding spaces.
func HasToken(values []string, token string) bool {
	for elem := range Elements(values) {
		if strings.EqualFold(elem, token) {
			return true
		}
	}
	return false
}
