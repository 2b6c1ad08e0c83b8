package identity

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"hash"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Header names of docs/signature.md, in Go's canonical form
// so the request path reads them with a plain map lookup.
const (
	hdrTimestamp = "X-Edge-Timestamp"
	hdrNonce     = "X-Edge-Nonce"
	hdrSignature = "X-Edge-Signature"
	hdrBody      = "X-Edge-Body"

	unsignedPayload = "UNSIGNED-PAYLOAD"
	minNonceLen     = 16
	maxNonceLen     = 64
)

// emptyBodyHash is the lowercase hex SHA-256 of no bytes.
const emptyBodyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// sigHeaders are the parsed signature headers of one request.
type sigHeaders struct {
	timestamp int64
	tsRaw     string
	nonce     string
	signature [sha256.Size]byte
	unsigned  bool
}

var errBadSigHeader = errors.New("a signature header is missing or malformed")

// parseSigHeaders reads the X-Edge-* headers. Each must appear once; the
// timestamp is decimal seconds, the nonce 16 to 64 of [A-Za-z0-9_-], the
// signature 64 lowercase hex digits, and X-Edge-Body, when present, exactly
// UNSIGNED-PAYLOAD.
func parseSigHeaders(h http.Header) (sigHeaders, error) {
	var p sigHeaders
	ts, ok := single(h, hdrTimestamp)
	if !ok || len(ts) == 0 || len(ts) > 18 {
		return p, errBadSigHeader
	}
	for i := 0; i < len(ts); i++ {
		c := ts[i]
		if c < '0' || c > '9' {
			return p, errBadSigHeader
		}
		p.timestamp = p.timestamp*10 + int64(c-'0')
	}
	p.tsRaw = ts
	nonce, ok := single(h, hdrNonce)
	if !ok || !validNonce(nonce) {
		return p, errBadSigHeader
	}
	p.nonce = nonce
	sig, ok := single(h, hdrSignature)
	if !ok || len(sig) != 2*sha256.Size {
		return p, errBadSigHeader
	}
	for i := range p.signature {
		hi, ok1 := lowerHexValue(sig[2*i])
		lo, ok2 := lowerHexValue(sig[2*i+1])
		if !ok1 || !ok2 {
			return p, errBadSigHeader
		}
		p.signature[i] = hi<<4 | lo
	}
	if v, present := h[hdrBody]; present {
		if len(v) != 1 || v[0] != unsignedPayload {
			return p, errBadSigHeader
		}
		p.unsigned = true
	}
	return p, nil
}

// single returns the only value of a header.
func single(h http.Header, key string) (string, bool) {
	v := h[key]
	if len(v) != 1 {
		return "", false
	}
	return v[0], true
}

func validNonce(s string) bool {
	if len(s) < minNonceLen || len(s) > maxNonceLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// signPath is the PATH of the string to sign: the path as sent on the wire,
// still percent-encoded, without the query.
func signPath(r *http.Request) string {
	uri := r.RequestURI
	if strings.HasPrefix(uri, "/") {
		if i := strings.IndexByte(uri, '?'); i >= 0 {
			uri = uri[:i]
		}
		return uri
	}
	// Absolute-form targets and requests built in-process have no
	// origin-form RequestURI; the URL's own escaping is the best left.
	if p := r.URL.EscapedPath(); p != "" {
		return p
	}
	return "/"
}

// hmacSHA256 is HMAC-SHA256 over two reusable SHA-256 states, so a signed
// request costs no allocation for the MAC (the standard hmac.New allocates
// per key, and every session has its own key).
type hmacSHA256 struct {
	inner, outer hash.Hash
	// Scratch space lives here rather than on the stack: slices of it go
	// through the hash.Hash interface and would escape.
	ipad, opad [sha256.BlockSize]byte
	sum, out   [sha256.Size]byte
}

func (m *hmacSHA256) reset(key []byte) {
	if len(key) > sha256.BlockSize {
		m.outer.Reset()
		m.outer.Write(key)
		key = m.outer.Sum(m.sum[:0])
	}
	clear(m.ipad[:])
	clear(m.opad[:])
	copy(m.ipad[:], key)
	copy(m.opad[:], key)
	for i := range m.ipad {
		m.ipad[i] ^= 0x36
		m.opad[i] ^= 0x5c
	}
	m.inner.Reset()
	m.inner.Write(m.ipad[:])
}

func (m *hmacSHA256) Write(p []byte) (int, error) { return m.inner.Write(p) }

func (m *hmacSHA256) final() [sha256.Size]byte {
	in := m.inner.Sum(m.sum[:0])
	m.outer.Reset()
	m.outer.Write(m.opad[:])
	m.outer.Write(in)
	m.outer.Sum(m.out[:0])
	return m.out
}

// signer holds the per-request scratch state of a signature check: the MAC,
// the body hasher and the canonical query buffers. Pooled.
type signer struct {
	mac   hmacSHA256
	body  hash.Hash
	query canonicalQuery
	line  []byte // the string to sign
	key   [signKeyStrLen]byte
	sum   [sha256.Size]byte
}

var signerPool = sync.Pool{New: func() any {
	return &signer{mac: hmacSHA256{inner: sha256.New(), outer: sha256.New()}, body: sha256.New()}
}}

// sign computes the EDGE-HMAC-SHA256 of a request. bodyHash is the 64 hex
// digits of the body's SHA-256 or UNSIGNED-PAYLOAD. rawQuery that cannot be
// decoded yields ok == false.
func (s *signer) sign(key []byte, method, path, rawQuery, ts, nonce string, bodyHash []byte) (sum [sha256.Size]byte, ok bool) {
	q, ok := s.query.canonical(rawQuery)
	if !ok {
		return sum, false
	}
	if path == "" {
		path = "/"
	}
	line := append(s.line[:0], method...)
	line = append(line, '\n')
	line = append(line, path...)
	line = append(line, '\n')
	line = append(line, q...)
	line = append(line, '\n')
	line = append(line, ts...)
	line = append(line, '\n')
	line = append(line, nonce...)
	line = append(line, '\n')
	line = append(line, bodyHash...)
	s.line = line
	m := &s.mac
	m.reset(key)
	m.Write(line)
	return m.final(), true
}

// equalMAC compares in constant time.
func equalMAC(a, b *[sha256.Size]byte) bool {
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// canonicalQuery builds the QUERY line of the string to sign in reusable
// buffers.
type canonicalQuery struct {
	buf   []byte   // encoded names and values, back to back
	pairs [][3]int // name start, name end (= value start), value end in buf
	out   []byte
}

// maxQueryPairs bounds the sort a hostile query could cause.
const maxQueryPairs = 1024

// canonical returns the canonical form of rawQuery, valid until the next
// call: each name and value percent-decoded ('+' is a space), re-encoded
// with only RFC 3986 unreserved bytes bare and %XX upper case otherwise,
// pairs sorted by encoded name then encoded value, joined name=value by &.
// Empty pieces between two & are skipped. Malformed escapes yield false.
func (c *canonicalQuery) canonical(rawQuery string) ([]byte, bool) {
	c.buf, c.pairs, c.out = c.buf[:0], c.pairs[:0], c.out[:0]
	if rawQuery == "" {
		return c.out, true
	}
	for rawQuery != "" {
		var piece string
		piece, rawQuery, _ = strings.Cut(rawQuery, "&")
		if piece == "" {
			continue
		}
		if len(c.pairs) == maxQueryPairs {
			return nil, false
		}
		name, value, _ := strings.Cut(piece, "=")
		start := len(c.buf)
		var ok bool
		if c.buf, ok = appendReencoded(c.buf, name); !ok {
			return nil, false
		}
		mid := len(c.buf)
		if c.buf, ok = appendReencoded(c.buf, value); !ok {
			return nil, false
		}
		c.pairs = append(c.pairs, [3]int{start, mid, len(c.buf)})
	}
	buf := c.buf
	slices.SortFunc(c.pairs, func(a, b [3]int) int {
		if n := bytes.Compare(buf[a[0]:a[1]], buf[b[0]:b[1]]); n != 0 {
			return n
		}
		return bytes.Compare(buf[a[1]:a[2]], buf[b[1]:b[2]])
	})
	for i, p := range c.pairs {
		if i > 0 {
			c.out = append(c.out, '&')
		}
		c.out = append(c.out, buf[p[0]:p[1]]...)
		c.out = append(c.out, '=')
		c.out = append(c.out, buf[p[1]:p[2]]...)
	}
	return c.out, true
}

const upperHex = "0123456789ABCDEF"

// appendReencoded percent-decodes s and appends it re-encoded.
func appendReencoded(dst []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch b {
		case '+':
			b = ' '
		case '%':
			if i+2 >= len(s) {
				return dst, false
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return dst, false
			}
			b = hi<<4 | lo
			i += 2
		}
		if unreserved(b) {
			dst = append(dst, b)
		} else {
			dst = append(dst, '%', upperHex[b>>4], upperHex[b&15])
		}
	}
	return dst, true
}

func unreserved(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == '-' || b == '.' || b == '_' || b == '~'
}

// lowerHexValue accepts only the lowercase digits the spec prescribes.
func lowerHexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
