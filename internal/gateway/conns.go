package gateway

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/metrics"
)

// connTracker feeds edge_connections_open from http.Server.ConnState. A
// connection is counted once it serves its first request, when its protocol
// (h1 or h2 by ALPN) is known; accept-level counts, which include
// connections still in the handshake, are the limits listener's.
type connTracker struct {
	open sync.Map // net.Conn -> prometheus.Gauge it was counted in
	h1   prometheus.Gauge
	h2   prometheus.Gauge
}

func newConnTracker(m *metrics.Metrics, listener string) *connTracker {
	return &connTracker{h1: m.ConnectionsOpen(listener, "h1"), h2: m.ConnectionsOpen(listener, "h2")}
}

func (c *connTracker) state(conn net.Conn, st http.ConnState) {
	// The HTTP/2 server reports the guarded connection, net/http its
	// *tls.Conn: one key for both.
	if g, ok := conn.(*resetGuard); ok {
		conn = g.Conn
	}
	switch st {
	case http.StateActive:
		if _, seen := c.open.Load(conn); seen {
			return
		}
		g := c.h1
		if tc, ok := conn.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
			g = c.h2
		}
		c.open.Store(conn, g)
		g.Inc()
	case http.StateClosed, http.StateHijacked:
		if g, ok := c.open.LoadAndDelete(conn); ok {
			g.(prometheus.Gauge).Dec()
		}
	}
}

// handshakeErrorLog is the HTTPS server's ErrorLog sink: net/http reports a
// failed TLS handshake only as a log line, so the line is counted here and
// passed on at debug level (scanners make many of them).
type handshakeErrorLog struct {
	m   *metrics.Metrics
	log *slog.Logger
}

var handshakeError = []byte("TLS handshake error")

func (h handshakeErrorLog) Write(p []byte) (int, error) {
	if bytes.Contains(p, handshakeError) {
		h.m.TLSHandshake(false)
	}
	h.log.Debug(string(bytes.TrimSpace(p)), "source", "http.Server")
	return len(p), nil
}
