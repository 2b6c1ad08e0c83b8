package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rapidResetPairs is how many open-then-cancel streams the attacker sends
// at most: far more than edge may accept on one connection.
const rapidResetPairs = 5000

// rapidReset is an HTTP/2 client that opens streams and cancels each at
// once (CVE-2023-44487) on one TLS connection, until edge closes it or
// every pair is sent. It returns how many pairs it wrote and whether edge
// ended the connection (GOAWAY, or the connection closed). A PING after
// the last pair tells when edge has read them all: edge acknowledges it
// only after acting on every frame before it.
func rapidReset(t *testing.T, e *edgeUnderTest, pairs int) (sent int, closed bool) {
	t.Helper()
	caPEM, err := os.ReadFile(e.srv.tlsm.CAPath())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", e.addrs.HTTPS, &tls.Config{RootCAs: pool, ServerName: "api.example.com", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))

	// Edge's frames are read all along: a client that stops reading would
	// be cut off for that instead.
	ended, acked := make(chan struct{}), make(chan struct{})
	pingData := [8]byte{'p', 'a', 'i', 'r', 's', 'e', 'n', 't'}
	go func() {
		defer close(ended)
		fr := http2.NewFramer(io.Discard, conn)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				return
			case *http2.PingFrame:
				if f.IsAck() && f.Data == pingData {
					close(acked)
				}
			}
		}
	}()

	bw := bufio.NewWriter(conn)
	fr := http2.NewFramer(bw, nil)
	if _, err := bw.WriteString(http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "api.example.com"}, {Name: ":path", Value: "/reset"},
	} {
		_ = enc.WriteField(f)
	}
	for sent = 0; sent < pairs; sent++ {
		id := uint32(2*sent + 1)
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}) != nil ||
			fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
		if sent%50 == 49 && bw.Flush() != nil {
			break
		}
		select {
		case <-ended:
			return sent, true
		default:
		}
	}
	if fr.WritePing(false, pingData) == nil {
		_ = bw.Flush()
	}
	select {
	case <-ended:
		return sent, true
	case <-acked:
		return sent, false
	case <-time.After(30 * time.Second):
		t.Fatalf("edge neither acknowledged the PING nor closed the connection after %d pairs", sent)
		return sent, false
	}
}

// TestHTTP2RapidResetClosesTheConnection: a client that cancels stream
// after stream on one connection is cut off after a few hundred, counted,
// and most of its streams never reach the upstream; other clients are
// served as before.
func TestHTTP2RapidResetClosesTheConnection(t *testing.T) {
	up := startBackend(t, "up", nil)
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", up.addr))

	sent, closed := rapidReset(t, e, rapidResetPairs)
	eventually(t, 10*time.Second, func() bool { return e.metric(t, "edge_http_requests_in_flight") == "edge_http_requests_in_flight 0" }, "the cancelled requests to end")
	accepted, hits := requestsAnswered(t, e), up.count()
	t.Logf("rapid reset: %d stream pairs written, %d streams accepted by edge, %d requests reached the upstream, connection closed by edge: %v", sent, accepted, hits, closed)
	if !closed {
		t.Fatalf("edge accepted %d open-then-cancel streams on one connection without closing it", accepted)
	}
	// Edge reads no frame after the one that crossed the limit.
	if accepted > rapidResetLimit+1 {
		t.Errorf("edge accepted %d streams; want at most %d", accepted, rapidResetLimit+1)
	}
	if got := e.metric(t, "edge_http2_rapid_reset_closes_total"); got != "edge_http2_rapid_reset_closes_total 1" {
		t.Errorf("metric: %q", got)
	}
	if !strings.Contains(e.stderr.String(), "HTTP/2 client cancelled too many streams") {
		t.Errorf("no log line for the closed connection:\n%s", e.stderr.String())
	}
	// The HTTP/2 server and net/http report the connection under different
	// values; it must still be counted once and uncounted once.
	open := `edge_connections_open{listener="https",protocol=`
	eventually(t, 10*time.Second, func() bool {
		return e.metric(t, open) == open+`"h1"} 0`+"\n"+open+`"h2"} 0`
	}, "the closed connection to leave edge_connections_open")

	resp, err := e.h2.Get(e.url("api.example.com", "/after"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("a normal HTTP/2 request after the attack: %d over HTTP/%d", resp.StatusCode, resp.ProtoMajor)
	}
	if got := e.metric(t, open+`"h2"}`); got != open+`"h2"} 1` {
		t.Errorf("an open HTTP/2 connection: %q", got)
	}
}

// requestsAnswered sums edge_http_requests_total.
func requestsAnswered(t *testing.T, e *edgeUnderTest) int {
	t.Helper()
	total := 0
	for _, line := range strings.Split(e.metric(t, "edge_http_requests_total"), "\n") {
		if _, v, ok := strings.Cut(line, "} "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("metric line %q", line)
			}
			total += n
		}
	}
	return total
}

// TestHTTP2CancelsBelowTheLimitKeepTheConnection: a client that cancels a
// few streams, as a mini-program leaving a page does, keeps its connection.
func TestHTTP2CancelsBelowTheLimitKeepTheConnection(t *testing.T) {
	up := startBackend(t, "up", nil)
	e := startEdge(t, fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", up.addr))
	sent, closed := rapidReset(t, e, rapidResetLimit/2)
	if closed {
		t.Fatalf("edge closed a connection after %d cancelled streams", sent)
	}
	if got := e.metric(t, "edge_http2_rapid_reset_closes_total"); got != "edge_http2_rapid_reset_closes_total 0" {
		t.Errorf("metric: %q", got)
	}
}

// TestResetGuardFollowsFramesAndWindow feeds the guard a client's bytes in
// awkward pieces: it must find every RST_STREAM header (and no false one
// inside a payload), and count only those within one window.
func TestResetGuardFollowsFramesAndWindow(t *testing.T) {
	var stream bytes.Buffer
	fr := http2.NewFramer(&stream, nil)
	stream.WriteString(http2.ClientPreface)
	_ = fr.WriteSettings()
	// A payload full of bytes that look like an RST_STREAM header.
	_ = fr.WriteData(1, false, bytes.Repeat([]byte{0, 0, 4, frameRSTStream, 0, 0, 0, 0, 1}, 40))
	for i := range rapidResetLimit {
		_ = fr.WriteRSTStream(uint32(2*i+1), http2.ErrCodeCancel)
	}
	b := stream.Bytes()

	now := time.Unix(1700000000, 0)
	g := &resetGuard{now: func() time.Time { return now }, skip: len(http2.ClientPreface)}
	for i := 0; i < len(b); i += 7 {
		if g.scan(b[i:min(i+7, len(b))]) {
			t.Fatalf("tripped at byte %d with %d resets", i, g.resets)
		}
	}
	if g.resets != rapidResetLimit {
		t.Fatalf("counted %d resets, want %d", g.resets, rapidResetLimit)
	}
	var one bytes.Buffer
	_ = http2.NewFramer(&one, nil).WriteRSTStream(999, http2.ErrCodeCancel)
	now = now.Add(rapidResetWindow + time.Second)
	if g.scan(one.Bytes()) || g.resets != 1 {
		t.Fatalf("a reset in a new window: resets %d", g.resets)
	}
	now = now.Add(time.Second)
	for range rapidResetLimit - 1 {
		if g.scan(one.Bytes()) {
			t.Fatalf("tripped at %d resets", g.resets)
		}
	}
	if !g.scan(one.Bytes()) {
		t.Fatalf("no trip at %d resets within one window", g.resets)
	}
}
