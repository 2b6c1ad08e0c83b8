package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestForwardKeepsHTTPSemantics: what the lean forward path must preserve
// from httputil.ReverseProxy.
func TestForwardKeepsHTTPSemantics(t *testing.T) {
	up := startBackend(t, "up", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailers":
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Trailer", "X-Checksum")
			w.Header().Set("X-Seen-Te", r.Header.Get("Te"))
			w.Header().Set("X-Seen-Custom", r.Header.Get("X-Hop"))
			w.Header().Set("X-Seen-Length", fmt.Sprint(r.ContentLength))
			w.Header().Set("X-Seen-Trailer", r.Trailer.Get("X-Client-Sum"))
			_, _ = w.Write(body)
			w.Header().Set("X-Checksum", "abc")
		case "/head":
			w.Header().Set("Content-Length", "1234")
		case "/hop":
			w.Header().Set("Connection", "X-Private")
			w.Header().Set("X-Private", "secret")
			w.Header().Set("Keep-Alive", "timeout=5")
			_, _ = io.WriteString(w, "ok")
		case "/broken":
			// Promise 100 bytes, send 5, then hang up.
			conn, bw, _ := http.NewResponseController(w).Hijack()
			_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
			_ = bw.Flush()
			conn.Close()
		}
	})
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\nmax_body = \"10MB\"\n", up.addr))

	// A chunked request body with a trailer, and a response trailer back.
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte("chunk-one,"))
		_, _ = pw.Write([]byte("chunk-two"))
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", e.url("api.example.com", "/trailers"), pr)
	req.Trailer = http.Header{"X-Client-Sum": {"42"}}
	req.Header.Set("Te", "trailers")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "must not pass")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "chunk-one,chunk-two" {
		t.Fatalf("body %q", body)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "abc" {
		t.Errorf("response trailer %q", got)
	}
	for name, want := range map[string]string{"X-Seen-Te": "trailers", "X-Seen-Custom": "", "X-Seen-Length": "-1", "X-Seen-Trailer": "42"} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("upstream saw %s = %q, want %q", name, got, want)
		}
	}

	// HEAD: no body, the upstream's length kept.
	resp, err = e.client.Head(e.url("api.example.com", "/head"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 1234 {
		t.Errorf("HEAD: %d length %d", resp.StatusCode, resp.ContentLength)
	}

	// Hop-by-hop response headers, and those the Connection header names, stay behind.
	resp, body2 := e.get(t, "api.example.com", "/hop")
	if body2 != "ok" || resp.Header.Get("X-Private") != "" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop headers leaked: %v", resp.Header)
	}

	// A body the upstream breaks off must not look complete to the client.
	resp, err = e.client.Get(e.url("api.example.com", "/broken"))
	if err == nil {
		got, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil {
			t.Fatalf("a broken-off body arrived as complete: %q", got)
		}
	}
	if !strings.Contains(e.stderr.String(), "upstream body broken off") {
		t.Error("the broken body was not logged")
	}
}

// TestClientLeavingFreesAStalledUpstream: a client that goes away while the
// upstream stalls in the middle of a body must not leave edge waiting on the
// upstream: edge closes that upstream connection.
func TestClientLeavingFreesAStalledUpstream(t *testing.T) {
	released := make(chan struct{})
	up := startBackend(t, "up", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first part") // chunked: edge streams it on at once
		w.(http.Flusher).Flush()
		<-r.Context().Done() // ends when edge closes the connection
		close(released)
	})
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", up.addr))
	resp, err := e.client.Get(e.url("api.example.com", "/stall"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("first part"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	// Closing an unfinished body closes the client connection.
	resp.Body.Close()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("edge kept the stalled upstream connection after the client left")
	}
}

// TestProxyClaimsOnlyFromTrustedProxies: headers that tell an application
// what a proxy saw (X-Forwarded-Port, -Prefix, ...) or which URL the
// client asked for (X-Original-URL) are acted on by Spring, Symfony and
// URL rewriters; a client must not be able to send them, a trusted load
// balancer may. The same holds on HTTP/1.1 and HTTP/2.
func TestProxyClaimsOnlyFromTrustedProxies(t *testing.T) {
	claims := map[string]string{
		"X-Forwarded-Port": "443", "X-Forwarded-Prefix": "/admin", "X-Forwarded-Ssl": "on",
		"X-Original-Url": "/admin/delete", "X-Rewrite-Url": "/admin/delete",
	}
	for _, tc := range []struct {
		name    string
		server  string
		through bool
	}{
		{"from a client", "", false},
		{"from a trusted proxy", `trusted_proxies = ["127.0.0.1/32"]`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startBackend(t, "up", nil)
			e := startEdgeWith(t, tc.server, "", fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", up.addr))
			hdr := http.Header{}
			for k, v := range claims {
				hdr.Set(k, v)
			}
			for _, client := range []*http.Client{e.client, e.h2} {
				req, _ := http.NewRequest("GET", e.url("api.example.com", "/x"), nil)
				req.Header = hdr.Clone()
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				got := up.lastRequest()
				for k, v := range claims {
					if passed := got.Header.Get(k) == v; passed != tc.through {
						t.Errorf("%s: %s reached the upstream: %v, want %v", resp.Proto, k, passed, tc.through)
					}
				}
			}
		})
	}
}
