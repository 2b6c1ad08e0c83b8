package h1

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"

	"edge/internal/httphdr"
)

// A head is judged in one of three ways: served here, handed to net/http
// (a valid shape this front does not take: net/http parses it again and
// decides), or refused with 400 and the connection closed (a shape that
// smuggles, which neither path may read).
type verdict uint8

const (
	serveHere verdict = iota
	handOver
	refuse
)

// head is one parsed request head. Its strings are substrings of one
// string copied from the connection's buffer, so they outlive the buffer
// (a nonce store may keep one) at the cost of one allocation.
type head struct {
	method, target string
	path, rawPath  string
	rawQuery       string
	forceQuery     bool
	host           string
	contentLength  int64 // -1: none
	close          bool
	// problem says why a refused head was refused (for the 400's message).
	problem string
}

// Why heads are refused; the client sees these in the JSON error.
const (
	problemLineEnding = "a line of the request head does not end in CRLF"
	problemObsFold    = "a header line is folded (obs-fold)"
	problemHeaderLine = "a header line is malformed"
	problemFraming    = "the request has both Content-Length and Transfer-Encoding, or several Content-Length headers"
	problemLength     = "Content-Length is not a number"
	problemHost       = "the Host header is missing, repeated or malformed"
)

// parseHead reads the head in block into h and hdr (cleared by the
// caller), which receives every header but Host, as net/http's server
// leaves it. vals is the connection's reusable backing for header values.
// Header names and values are checked by httpguts, net/http's own rules.
func parseHead(block string, h *head, hdr http.Header, vals *[]string) verdict {
	*h = head{contentLength: -1}
	line, rest, ok := httphdr.NextLine(block)
	if !ok {
		h.problem = problemLineEnding
		return refuse
	}
	if !h.requestLine(line) {
		return handOver
	}
	hosts, lengths := 0, 0
	transferEncoding, other := false, false
	for {
		line, rest, ok = httphdr.NextLine(rest)
		if !ok {
			h.problem = problemLineEnding
			return refuse
		}
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			h.problem = problemObsFold
			return refuse
		}
		name, value, found := strings.Cut(line, ":")
		if !found || !httpguts.ValidHeaderFieldName(name) {
			h.problem = problemHeaderLine
			return refuse
		}
		value = strings.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(value) {
			h.problem = problemHeaderLine
			return refuse
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Host":
			hosts++
			h.host = value
			continue
		case "Content-Length":
			lengths++
			n, ok := httphdr.ParseLength(value)
			if !ok {
				h.problem = problemLength
				return refuse
			}
			h.contentLength = n
		case "Transfer-Encoding":
			transferEncoding = true
		case "Upgrade", "Expect":
			other = true
		}
		if prior, seen := hdr[key]; seen {
			hdr[key] = append(prior, value)
		} else {
			*vals = append(*vals, value)
			n := len(*vals)
			hdr[key] = (*vals)[n-1 : n : n]
		}
	}
	if lengths > 1 || lengths == 1 && transferEncoding {
		h.problem = problemFraming
		return refuse
	}
	if hosts != 1 || !httpguts.ValidHostHeader(h.host) {
		h.problem = problemHost
		return refuse
	}
	if transferEncoding || other {
		return handOver
	}
	h.close = httphdr.HasToken(hdr["Connection"], "close")
	return serveHere
}

// requestLine takes "METHOD /origin-form HTTP/1.1" and nothing else; other
// valid lines (HTTP/1.0, absolute-form, CONNECT, OPTIONS *, targets with
// bytes whose reading is subtle) go to net/http.
func (h *head) requestLine(line string) bool {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || method == "" || !httpguts.ValidHeaderFieldName(method) ||
		method == http.MethodConnect || target == "" || target[0] != '/' {
		return false
	}
	h.method = method
	h.target = target
	path, query, hasQuery := strings.Cut(target, "?")
	if !plainPath(path) || !plainQuery(query) {
		return h.parseTarget()
	}
	h.path, h.rawQuery, h.forceQuery = path, query, hasQuery && query == ""
	return true
}

// parseTarget reads a target with escapes or reserved bytes as net/http
// does; one it refuses goes to net/http for its own answer.
func (h *head) parseTarget() bool {
	for i := 0; i < len(h.target); i++ {
		if c := h.target[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	u, err := url.ParseRequestURI(h.target)
	if err != nil {
		return false
	}
	h.path, h.rawPath, h.rawQuery, h.forceQuery = u.Path, u.RawPath, u.RawQuery, u.ForceQuery
	return true
}

// plainPath reports whether url.ParseRequestURI would take p as the path
// unchanged with no RawPath: only bytes a path never escapes.
func plainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-_.~$&+,/:;=@", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// plainQuery reports whether q holds only visible ASCII, which net/url
// keeps verbatim as RawQuery.
func plainQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}
