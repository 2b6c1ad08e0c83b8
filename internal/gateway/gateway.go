// Package gateway compiles a config into an immutable snapshot (router,
// per-route plans, upstream pools), holds it in an atomic pointer,
// serves every request from the one snapshot it started on, reloads, drains
// and shuts down.
package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"edge/internal/apierror"
	"edge/internal/h1"
	"edge/internal/live"
	"edge/internal/metrics"
	"edge/internal/proxy"
	"edge/internal/reqctx"
	edgetls "edge/internal/tls"
)

// Gateway is the front door's http.Handler: the current snapshot, and the
// state that outlives it (lasting), with the process-wide metrics, logs and
// certificate manager.
type Gateway struct {
	snap    atomic.Pointer[snapshot]
	metrics *metrics.Metrics
	log     *slog.Logger
	access  *accessLog

	configPath string
	lasting    *lasting
	tlsm       *edgetls.Manager
	// httpsPort is the bound HTTPS port, for the port-80 redirect.
	httpsPort atomic.Value

	idPrefix string
	idSeq    atomic.Uint64
	// cacheClock is Options.CacheClock.
	cacheClock func() time.Time
	// live counts the traffic the dashboard draws, by route name, across
	// reloads.
	live *live.Recorder
}

func newGateway(m *metrics.Metrics, log *slog.Logger, access *accessLog, configPath string, l *lasting) *Gateway {
	var b [6]byte
	_, _ = rand.Read(b[:])
	g := &Gateway{
		metrics:  m,
		log:      log,
		access:   access,
		idPrefix: hex.EncodeToString(b[:]),

		configPath: configPath,
		lasting:    l,
		live:       live.NewRecorder(),
	}
	m.RegisterTargetHealth(g.targetHealth)
	m.RegisterInstances(g.instanceCounts)
	m.RegisterInstanceUsage(g.instanceUsage)
	m.RegisterReleaseWeights(g.releaseWeights)
	return g
}

func (g *Gateway) targetHealth() []metrics.TargetHealth {
	s := g.snap.Load()
	if s == nil {
		return nil
	}
	now := time.Now()
	var out []metrics.TargetHealth
	for _, u := range s.upstreamList {
		for _, t := range u.Targets() {
			out = append(out, metrics.TargetHealth{Upstream: u.Name(), Target: t.Addr, Healthy: t.Available(now)})
		}
	}
	return out
}

// ServeHTTP runs one request through the current snapshot.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s := g.snap.Load()
	g.metrics.InFlight().Inc()
	defer g.metrics.InFlight().Dec()

	info := reqctx.New(start)
	defer reqctx.Release(info)
	info.RequestID = g.requestID(r)
	s.clientIP(r, info)
	w.Header()["X-Request-Id"] = []string{info.RequestID}
	if s.hsts != nil && (r.TLS != nil || info.PeerTrusted && r.Header.Get("X-Forwarded-Proto") == "https") {
		// Behind a load balancer that terminates TLS, the trusted proxy's
		// X-Forwarded-Proto says the client spoke HTTPS.
		w.Header()["Strict-Transport-Security"] = s.hsts
	}

	sw := newStatusWriter(w)
	defer releaseStatusWriter(sw)
	if h, ok := reqctx.HolderOf(r.Context()); ok {
		// The HTTP/1.1 front reuses its request: no copy for the Info.
		h.Set(info)
		defer h.Set(nil)
	} else {
		r = r.WithContext(reqctx.With(r.Context(), info))
	}

	rt := s.route(r, info)
	defer g.record(s, rt, r, info, sw, start)
	if rt == nil {
		if info.Reason == reasonAmbiguousPath {
			apierror.Write(sw, r, apierror.BadRequest, "the path holds ';', '\\' or a control character, which servers read differently")
		} else {
			apierror.Write(sw, r, apierror.NotFound, "no route for this host and path")
		}
		return
	}
	info.Route = rt.name
	sw.headerRules = rt.responseHeaders
	rt.serve(sw, r, info)
}

// record counts the request in the metrics and writes its access log line,
// with the status the client saw. It runs deferred so that an answer
// aborted by a panic is recorded too: http.ErrAbortHandler from the proxy
// when the upstream broke off in the middle of a body. The panic then goes
// on to net/http, which closes the connection.
func (g *Gateway) record(s *snapshot, rt *route, r *http.Request, info *reqctx.Info, sw *statusWriter, start time.Time) {
	p := recover()
	if p == http.ErrAbortHandler {
		info.Reason = reasonUpstreamAborted
	} else if p != nil {
		info.Reason = reasonPanic
	}
	status := observedStatus(sw.status, info)
	elapsed := time.Since(start)
	if rt == nil {
		s.notFound.Observe(r.Method, status, elapsed)
		s.notFoundLive.Observe(status, elapsed)
	} else {
		rt.metrics.Observe(r.Method, status, elapsed)
		rt.live.Observe(status, elapsed)
		switch {
		case info.Target == "":
		case info.Reason == "":
			rt.metrics.ObserveUpstream(info.Target, status, info.UpstreamDuration)
		case info.Reason == proxy.ReasonUpstreamTimeout || info.Reason == proxy.ReasonUpstreamDown || info.Reason == reasonUpstreamAborted:
			// Edge answered for an upstream that did not, or it broke off.
			rt.metrics.ObserveUpstream(info.Target, 0, info.UpstreamDuration)
		}
		// Any other reason is the client's fault (its body, or it left):
		// the target's error count is no place for it.
	}
	if rt == nil && s.accessLog || rt != nil && rt.accessLog {
		g.access.write(r, info, status, sw.bytes, elapsed, s.accessFormat)
	}
	if p != nil {
		panic(p)
	}
}

// recordRefusedHead counts a request head the HTTP/1.1 front refused
// (smuggling shapes, a head too large) and writes its access log line, as
// for a request no route matched: the attempts are what an operator wants
// to see. The method and path are the client's bytes as far as they were
// read; the client IP is the peer's, since no header of a refused head is
// believed.
func (g *Gateway) recordRefusedHead(h h1.RefusedHead) {
	s := g.snap.Load()
	s.notFound.Observe(h.Method, h.Status, 0)
	s.notFoundLive.Observe(h.Status, 0)
	info := reqctx.New(h.Start)
	defer reqctx.Release(info)
	info.RequestID = h.RequestID
	if ta, ok := h.Peer.(*net.TCPAddr); ok {
		info.ClientIP = ta.AddrPort().Addr().Unmap()
	}
	info.Reason = reasonBadHead
	if h.Status == http.StatusRequestHeaderFieldsTooLarge {
		info.Reason = reasonHeadTooLarge
	}
	g.log.Debug("refused a request head", "status", h.Status, "problem", h.Problem, "request_id", h.RequestID, "client_ip", info.ClientIP.String())
	if s.accessLog {
		r := &http.Request{Method: h.Method, URL: &url.URL{Path: h.Path}, Proto: "HTTP/1.1", Header: http.Header{}}
		g.access.write(r, info, h.Status, 0, 0, s.accessFormat)
	}
}

// observedStatus is the status the client saw: the one written, or
//   - 101 when the proxy switched protocols: ReverseProxy writes the 101
//     onto the hijacked connection, past the ResponseWriter;
//   - for an answer aborted before its status went out, which the client
//     never got: 502 as nginx logs it (500 after a panic of a bug);
//   - otherwise 200, which net/http sends when a handler writes nothing.
func observedStatus(written int, info *reqctx.Info) int {
	switch {
	case written != 0:
		return written
	case info.Upgraded:
		return http.StatusSwitchingProtocols
	case info.Reason == reasonUpstreamAborted:
		return http.StatusBadGateway
	case info.Reason == reasonPanic:
		return http.StatusInternalServerError
	}
	return http.StatusOK
}

// requestID keeps a well-formed client X-Request-Id (so a trace crosses
// edge) or makes one: a per-process random prefix and a counter.
func (g *Gateway) requestID(r *http.Request) string {
	if v := r.Header["X-Request-Id"]; len(v) == 1 && wellFormedID(v[0]) {
		return v[0]
	}
	return g.newRequestID()
}

// newRequestID makes a request id: the per-process prefix and a counter.
func (g *Gateway) newRequestID() string {
	var b [32]byte
	n := copy(b[:], g.idPrefix)
	b[n] = '-'
	out := strconv.AppendUint(b[:n+1], g.idSeq.Add(1), 36)
	return string(out)
}

func wellFormedID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// clientIP is the peer, or, when the peer is a trusted proxy, the rightmost
// address of X-Forwarded-For that is not itself a trusted proxy (the left
// part of the header is whatever the client wrote).
func (s *snapshot) clientIP(r *http.Request, info *reqctx.Info) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return
	}
	peer := ap.Addr().Unmap()
	info.ClientIP = peer
	if !s.trusted(peer) {
		return
	}
	info.PeerTrusted = true
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for end := len(v); end > 0; {
			start := end - 1
			for start >= 0 && v[start] != ',' {
				start--
			}
			part := trimSpace(v[start+1 : end])
			end = start
			if part == "" {
				continue
			}
			addr, err := netip.ParseAddr(part)
			if err != nil {
				return
			}
			addr = addr.Unmap()
			info.ClientIP = addr
			if !s.trusted(addr) {
				return
			}
		}
	}
	if len(xff) == 0 {
		if v := r.Header.Get("X-Real-Ip"); v != "" {
			if addr, err := netip.ParseAddr(trimSpace(v)); err == nil {
				info.ClientIP = addr.Unmap()
			}
		}
	}
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func (s *snapshot) trusted(a netip.Addr) bool {
	for _, p := range s.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// statusWriter records the status and size of the answer for metrics and
// the access log, and applies the route's response header rules just before
// the headers go out, whoever wrote them (upstream, static files, edge).
type statusWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64
	headerRules proxy.HeaderRules
}

var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

func newStatusWriter(w http.ResponseWriter) *statusWriter {
	sw := statusWriters.Get().(*statusWriter)
	*sw = statusWriter{ResponseWriter: w}
	return sw
}

func releaseStatusWriter(sw *statusWriter) {
	*sw = statusWriter{}
	statusWriters.Put(sw)
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		w.status = code
		if !w.headerRules.Empty() {
			w.headerRules.Apply(w.Header())
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Flush keeps streaming answers streaming.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection (hijack for
// WebSocket, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
