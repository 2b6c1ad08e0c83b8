package h1

import (
	"bufio"
	"bytes"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"edge/internal/httphdr"
)

// parse runs parseHead on the head at the start of raw.
func parse(raw string) (verdict, head, http.Header, int) {
	n := httphdr.HeadEnd([]byte(raw))
	if n < 0 {
		return refuse, head{}, nil, -1
	}
	hdr := http.Header{}
	var vals []string
	var h head
	v := parseHead(raw[:n], &h, hdr, &vals)
	return v, h, hdr, n
}

func TestHeadVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		want      verdict
	}{
		{"plain GET", "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", serveHere},
		{"POST with a length", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", serveHere},
		{"escaped path", "GET /a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n", serveHere},
		{"lowercase names", "GET / HTTP/1.1\r\nhost: x\r\ncontent-type: a/b\r\n\r\n", serveHere},

		{"length and chunked", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", refuse},
		{"chunked and length", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", refuse},
		{"two lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", refuse},
		{"two equal lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", refuse},
		{"length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", refuse},
		{"signed length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", refuse},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", refuse},
		{"obs-fold with a tab", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\t2\r\n\r\n", refuse},
		{"bare LF in the head", "GET / HTTP/1.1\nHost: x\n\n", refuse},
		{"bare LF after a header", "GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", refuse},
		{"space before the colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n", refuse},
		{"control byte in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\x012\r\n\r\n", refuse},
		{"NUL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\x002\r\n\r\n", refuse},
		{"byte in a name", "GET / HTTP/1.1\r\nHost: x\r\nX\x7fA: 1\r\n\r\n", refuse},
		{"no colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n", refuse},
		{"no Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", refuse},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", refuse},
		{"bad Host", "GET / HTTP/1.1\r\nHost: x y\r\n\r\n", refuse},

		{"chunked upload", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", handOver},
		{"upgrade", "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", handOver},
		{"expect", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n", handOver},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", handOver},
		{"absolute form", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", handOver},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", handOver},
		{"CONNECT", "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", handOver},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", handOver},
		{"HTTP/2 line", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", handOver},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, h, _, _ := parse(tc.raw)
			if got != tc.want {
				t.Fatalf("verdict %d (problem %q), want %d", got, h.problem, tc.want)
			}
			if got == refuse && h.problem == "" {
				t.Fatal("refused without saying why")
			}
		})
	}
}

// FuzzHeadAgainstNetHTTP: whatever head this front serves itself, net/http
// reads the same way: the same method, target, path, query, Host, header
// set (ReadRequest leaves Host out, as the front does), body framing and
// body bytes.
func FuzzHeadAgainstNetHTTP(f *testing.F) {
	for _, s := range []string{
		"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcdef",
		"GET /a%2Fb/%7e?q=%zz HTTP/1.1\r\nHost: x:8080\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
		"GET /a;b/../c?#d HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n",
		"GET /?a HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\nCookie: a=b\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\n\n",
		"GET /\x80 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 01\r\n\r\nab",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, h, hdr, n := parse(string(data))
		if v != serveHere {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("served here, but net/http refuses it: %v", err)
		}
		if req.Method != h.method || req.RequestURI != h.target {
			t.Fatalf("request line: net/http %q %q, here %q %q", req.Method, req.RequestURI, h.method, h.target)
		}
		u := req.URL
		if u.Path != h.path || u.RawPath != h.rawPath || u.RawQuery != h.rawQuery || u.ForceQuery != h.forceQuery {
			t.Fatalf("target %q: net/http %q %q %q %v, here %q %q %q %v", h.target,
				u.Path, u.RawPath, u.RawQuery, u.ForceQuery, h.path, h.rawPath, h.rawQuery, h.forceQuery)
		}
		if req.Host != h.host {
			t.Fatalf("Host: net/http %q, here %q", req.Host, h.host)
		}
		want := maps.Clone(req.Header)
		// net/http's one rewrite of a request head (RFC 7234 Pragma).
		if p := hdr["Pragma"]; len(p) > 0 && p[0] == "no-cache" && hdr["Cache-Control"] == nil {
			delete(want, "Cache-Control")
		}
		if !maps.EqualFunc(want, hdr, slices.Equal) {
			t.Fatalf("headers:\n net/http %q\n here     %q", want, hdr)
		}
		if req.Close != h.close {
			t.Fatalf("Connection close: net/http %v, here %v", req.Close, h.close)
		}
		if req.TransferEncoding != nil {
			t.Fatalf("served here, but net/http reads a transfer coding %q", req.TransferEncoding)
		}
		length := max(h.contentLength, 0)
		if req.ContentLength != length {
			t.Fatalf("Content-Length: net/http %d, here %d", req.ContentLength, length)
		}
		got, err := io.ReadAll(req.Body)
		rest := data[n:]
		if int64(len(rest)) >= length {
			if err != nil || !bytes.Equal(got, rest[:length]) {
				t.Fatalf("body: net/http %q (%v), here %q", got, err, rest[:length])
			}
		} else if err == nil {
			t.Fatalf("body: net/http read a short body %q whole", got)
		}
		for k, vs := range hdr {
			if strings.ContainsAny(k, " \t\r\n:") {
				t.Fatalf("header name %q", k)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("header value %q", v)
				}
			}
		}
	})
}
