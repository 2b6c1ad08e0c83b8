package gateway

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestNagleClientGetsItsFirstAnswerWithoutDelayedACK: a client that leaves
// Nagle's algorithm on (Python's and Java's default sockets) sends its
// request only once the server acknowledged its TLS Finished. A server
// that delays that ACK costs every new connection the kernel's delayed-ACK
// timer, at least 40 ms on Linux; nginx answers the same client in about
// 2 ms. The test asserts no speed: it only checks that one of up to 50
// fresh connections got its answer in less time than that timer's
// shortest wait, which no connection can while the ACK is delayed, and
// stops at the first that does (a busy machine only costs it tries).
func TestNagleClientGetsItsFirstAnswerWithoutDelayedACK(t *testing.T) {
	e := startEdge(t, "[[routes]]\nname = \"r\"\npath = \"/\"\nrespond = { body = \"hi\" }\n")
	const delayedACKMin = 40 * time.Millisecond
	fastest := time.Hour
	for range 50 {
		start := time.Now()
		c, err := net.DialTimeout("tcp", e.addrs.HTTPS, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).SetNoDelay(false); err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "api.example.com", NextProtos: []string{"http/1.1"}})
		if _, err := tc.Write([]byte("GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		fastest = min(fastest, time.Since(start))
		c.Close()
		if fastest < delayedACKMin {
			break
		}
	}
	t.Logf("fastest first answer of new connections with Nagle on: %s", fastest)
	if fastest >= delayedACKMin {
		t.Fatalf("every first answer took %s or more: the server delays its ACK of the handshake and the client's Nagle holds the request", fastest)
	}
}
