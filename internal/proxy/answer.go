package proxy

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"

	"edge/internal/httphdr"
)

// readAnswer reads the upstream's answer head. The shape nearly every
// answer has (HTTP/1.1, a final status, a Content-Length or no body by its
// status) is read here with three allocations; anything else (1xx and 101,
// chunked or unframed bodies, trailers, HTTP/1.0, heads larger than the
// buffer, anything odd) is left unread for http.ReadResponse, which reads
// it as before. FuzzAnswerAgainstNetHTTP holds the lean reading to
// net/http's.
func readAnswer(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	n, err := httphdr.PeekHead(br)
	if err == httphdr.ErrHeadTooLarge {
		return http.ReadResponse(br, req)
	}
	if err != nil {
		return nil, err
	}
	raw, _ := br.Peek(n)
	a := parseAnswer(string(raw), req)
	if a == nil {
		return http.ReadResponse(br, req)
	}
	_, _ = br.Discard(n)
	if a.body.Remaining > 0 {
		a.body.R = br
		a.Body = &a.body
	}
	return &a.Response, nil
}

// answer is a Response and its body in one allocation.
type answer struct {
	http.Response
	body answerBody
}

// parseAnswer reads head, or returns nil for net/http to read it.
func parseAnswer(head string, req *http.Request) *answer {
	status, rest, ok := httphdr.NextLine(head)
	if !ok || len(status) < 12 || !strings.HasPrefix(status, "HTTP/1.1 ") || len(status) > 12 && status[12] != ' ' {
		return nil
	}
	code := 0
	for _, c := range []byte(status[9:12]) {
		if c < '0' || c > '9' {
			return nil
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 {
		return nil
	}
	lines := strings.Count(rest, "\n")
	vals := make([]string, 0, lines)
	hdr := make(http.Header, lines)
	length := int64(-1)
	for {
		var line string
		line, rest, ok = httphdr.NextLine(rest)
		if !ok {
			return nil
		}
		if line == "" {
			break
		}
		name, value, found := strings.Cut(line, ":")
		if !found || !httpguts.ValidHeaderFieldName(name) {
			return nil
		}
		value = strings.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(value) {
			return nil
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Content-Length":
			if length >= 0 {
				return nil
			}
			n, ok := httphdr.ParseLength(value)
			if !ok {
				return nil
			}
			length = n
		case "Transfer-Encoding", "Trailer":
			return nil
		}
		vals = append(vals, value)
		if prior, seen := hdr[key]; seen {
			hdr[key] = append(prior, value)
		} else {
			hdr[key] = vals[len(vals)-1 : len(vals) : len(vals)]
		}
	}
	bodiless := req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if length < 0 && !bodiless {
		return nil // read until close: net/http's business
	}
	a := &answer{}
	a.Status = status[9:]
	a.StatusCode = code
	a.Proto, a.ProtoMajor, a.ProtoMinor = "HTTP/1.1", 1, 1
	a.Header = hdr
	a.Request = req
	if httphdr.HasToken(hdr["Connection"], "close") {
		// net/http keeps the fact, not the header.
		a.Close = true
		delete(hdr, "Connection")
	}
	a.Body = http.NoBody
	// net/http's lengths: a HEAD's answer says what the GET's would be;
	// 204 and 304 have none.
	switch {
	case req.Method == http.MethodHead:
		a.ContentLength = length
	case code == http.StatusNoContent || code == http.StatusNotModified:
		a.ContentLength = 0
	default:
		a.ContentLength = length
		a.body.Remaining = length
	}
	return a
}

// answerBody is an answer's body of known length on the upstream
// connection.
type answerBody struct{ httphdr.LengthBody }

func (b *answerBody) Close() error { return nil }
