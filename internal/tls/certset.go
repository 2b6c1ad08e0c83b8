package tls

import (
	stdtls "crypto/tls"
	"strings"
)

// certSet is an immutable index of certificates by the names they cover. It
// is rebuilt and swapped whole whenever a source changes, so the handshake
// path reads it without locks.
type certSet struct {
	exact map[string]*stdtls.Certificate
	// wild is keyed by the part after "*.": "*.example.com" is stored under
	// "example.com" so a lookup is one cut of the first label and no
	// allocation.
	wild map[string]*stdtls.Certificate
	// pending holds, for each ACME name still waiting for its first
	// certificate, a channel closed when it arrives.
	pending map[string]chan struct{}
	// fallback answers a ClientHello whose name matches nothing (nginx's
	// default server); nil refuses it.
	fallback *stdtls.Certificate
}

func newCertSet() *certSet {
	return &certSet{
		exact:   make(map[string]*stdtls.Certificate),
		wild:    make(map[string]*stdtls.Certificate),
		pending: make(map[string]chan struct{}),
	}
}

// add indexes cert under each name; the first certificate to claim a name
// keeps it, so the config's order decides between overlapping files.
func (s *certSet) add(cert *stdtls.Certificate, names []string) {
	for _, n := range names {
		n = normalizeName(n)
		if suffix, ok := strings.CutPrefix(n, "*."); ok {
			if _, dup := s.wild[suffix]; !dup && suffix != "" {
				s.wild[suffix] = cert
			}
			continue
		}
		if _, dup := s.exact[n]; !dup && n != "" {
			s.exact[n] = cert
		}
	}
}

// lookup finds the certificate for an SNI name: exact name first, then a
// wildcard one label up (a wildcard never covers more than one label, as in
// RFC 6125), then the fallback.
func (s *certSet) lookup(name string) *stdtls.Certificate {
	if c := s.match(name); c != nil {
		return c
	}
	return s.fallback
}

// match is lookup without the fallback.
func (s *certSet) match(name string) *stdtls.Certificate {
	if name == "" {
		return nil
	}
	name = strings.ToLower(name)
	if c, ok := s.exact[name]; ok {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c, ok := s.wild[name[i+1:]]; ok {
			return c
		}
	}
	return nil
}

// normalizeName lower-cases a host name and drops a trailing dot and a port,
// so names from config, certificates and requests compare equal.
func normalizeName(n string) string {
	n = strings.TrimSpace(n)
	if h, _, ok := splitHostPort(n); ok {
		n = h
	}
	n = strings.TrimRight(n, ".")
	return strings.ToLower(n)
}

// splitHostPort splits "host:port" and "[v6]:port"; a bare IPv6 address
// (several colons, no brackets) is not split.
func splitHostPort(s string) (host, port string, ok bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false
		}
		rest := s[end+1:]
		if rest == "" {
			return s[1:end], "", true
		}
		if rest[0] != ':' {
			return "", "", false
		}
		return s[1:end], rest[1:], true
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 || strings.IndexByte(s[:i], ':') >= 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}
