package gateway

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/net/http2"

	"edge/internal/logsample"
	"edge/internal/metrics"
)

// An HTTP/2 client may cancel at most rapidResetLimit streams (RST_STREAM)
// per rapidResetWindow on one connection. Opening a stream and cancelling
// it at once costs the client two small frames and edge a handler, a route
// and often an upstream request (the rapid reset attack, CVE-2023-44487);
// net/http only bounds how many such handlers queue, not how many run. A
// mini-program that leaves a page cancels a handful of requests, far below
// the limit.
const (
	rapidResetLimit  = 200
	rapidResetWindow = 10 * time.Second
)

// guardHTTP2 makes front serve HTTP/2 through golang.org/x/net/http2 on a
// connection that watches the client's frames: net/http's built-in HTTP/2
// server takes only the *tls.Conn itself, so nothing could see the frames
// it reads. ConfigureServer keeps what net/http would do (ALPN, GOAWAY on
// Shutdown, settings from front.HTTP2); only the connection handed to the
// HTTP/2 server changes.
func guardHTTP2(front *http.Server, m *metrics.Metrics, log *slog.Logger) error {
	//lint:ignore SA1019 x/net's Server is the only HTTP/2 server that serves a net.Conn the caller wraps.
	h2 := &http2.Server{}
	//lint:ignore SA1019 as above: the wrapped connection needs x/net's server configured on front.
	if err := http2.ConfigureServer(front, h2); err != nil {
		return err
	}
	// One sampler for the listener: an attacker opening many connections
	// must not write a line for each.
	sampler := new(logsample.Sampler)
	front.TLSNextProto[http2.NextProtoTLS] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		g := &resetGuard{Conn: c, m: m, log: log, sampler: sampler, now: time.Now, skip: len(http2.ClientPreface)}
		// net/http hands the connection's base context to TLSNextProto
		// through the handler, as it does for its own HTTP/2 server.
		var ctx context.Context
		if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
			ctx = bc.BaseContext()
		}
		//lint:ignore SA1019 as above.
		h2.ServeConn(g, &http2.ServeConnOpts{Context: ctx, Handler: h, BaseConfig: hs})
	}
	return nil
}

// frameHeaderLen is the size of an HTTP/2 frame header (RFC 9113 4.1).
const frameHeaderLen = 9

// frameRSTStream is the type of a RST_STREAM frame.
const frameRSTStream = 0x3

// resetGuard is an HTTP/2 connection as the HTTP/2 server reads it. It
// follows the frame headers in the bytes the client sends (the server reads
// from one goroutine, so no lock) and, when the client cancels more than
// rapidResetLimit streams within rapidResetWindow, fails the read with
// ENHANCE_YOUR_CALM: the server then reads nothing more, sends GOAWAY and
// closes the connection, as for its own protocol errors. The embedded
// *tls.Conn gives the server Request.TLS and the cipher checks.
type resetGuard struct {
	*tls.Conn
	m       *metrics.Metrics
	log     *slog.Logger
	sampler *logsample.Sampler
	now     func() time.Time

	// skip is how many bytes of the preface or of a frame payload are
	// still to pass before the next frame header.
	skip int
	hdr  [frameHeaderLen]byte
	hdrN int

	resets      int
	windowStart time.Time
}

var errRapidReset = http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)

func (g *resetGuard) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if g.scan(p[:n]) {
		g.m.HTTP2RapidResetClose()
		if ok, suppressed := g.sampler.Allow(g.now()); ok {
			g.log.Warn("HTTP/2 client cancelled too many streams; closing the connection",
				"client", g.RemoteAddr().String(), "cancelled", g.resets, "window", rapidResetWindow.String(),
				logsample.Suppressed(suppressed))
		}
		return 0, errRapidReset
	}
	return n, err
}

// scan follows the frame boundaries through b and reports whether the
// client has now cancelled too many streams.
func (g *resetGuard) scan(b []byte) bool {
	for len(b) > 0 {
		if g.skip > 0 {
			k := min(g.skip, len(b))
			g.skip -= k
			b = b[k:]
			continue
		}
		k := copy(g.hdr[g.hdrN:], b)
		g.hdrN += k
		b = b[k:]
		if g.hdrN < frameHeaderLen {
			return false
		}
		g.hdrN = 0
		g.skip = int(g.hdr[0])<<16 | int(g.hdr[1])<<8 | int(g.hdr[2])
		if g.hdr[3] == frameRSTStream && g.reset() {
			return true
		}
	}
	return false
}

// reset counts one cancelled stream in the current window.
func (g *resetGuard) reset() bool {
	now := g.now()
	if now.Sub(g.windowStart) > rapidResetWindow {
		g.windowStart, g.resets = now, 0
	}
	g.resets++
	return g.resets > rapidResetLimit
}
