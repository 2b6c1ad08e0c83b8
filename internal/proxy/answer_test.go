package proxy

import (
	"bufio"
	"bytes"
	"io"
	"maps"
	"net/http"
	"slices"
	"testing"
)

// FuzzAnswerAgainstNetHTTP: every upstream answer head read by the lean
// reader is read the same way by http.ReadResponse: status, header set,
// Content-Length, Close, and the body bytes and where they end.
func FuzzAnswerAgainstNetHTTP(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\nokNEXT",
		"HTTP/1.1 204 No Content\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nEtag: \"x\"\r\n\r\n",
		"HTTP/1.1 404\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		req := &http.Request{Method: method}
		mine, err := readAnswer(bufio.NewReaderSize(bytes.NewReader(data), 4096), req)
		if err != nil {
			return
		}
		theirs, theirErr := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), req)
		if theirErr != nil {
			t.Fatalf("read here as %d, but net/http refuses it: %v", mine.StatusCode, theirErr)
		}
		if mine.StatusCode != theirs.StatusCode || mine.Status != theirs.Status {
			t.Fatalf("status: here %q, net/http %q", mine.Status, theirs.Status)
		}
		if !maps.EqualFunc(mine.Header, theirs.Header, slices.Equal) {
			t.Fatalf("headers:\n here     %q\n net/http %q", mine.Header, theirs.Header)
		}
		if mine.ContentLength != theirs.ContentLength || mine.Close != theirs.Close {
			t.Fatalf("length/close: here %d %v, net/http %d %v", mine.ContentLength, mine.Close, theirs.ContentLength, theirs.Close)
		}
		a, aErr := io.ReadAll(mine.Body)
		b, bErr := io.ReadAll(theirs.Body)
		if !bytes.Equal(a, b) || (aErr == nil) != (bErr == nil) {
			t.Fatalf("body: here %q (%v), net/http %q (%v)", a, aErr, b, bErr)
		}
	})
}
