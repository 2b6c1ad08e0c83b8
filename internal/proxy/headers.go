package proxy

import (
	"bufio"
	"net"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"

	"edge/internal/httphdr"
	"edge/internal/reqctx"
)

// The header policy of both ways to the upstream: the lean path (forward.go)
// and ReverseProxy's (WebSocket upgrades, handler.go) pass on the client's
// headers, its trailers and the upstream's answer by these functions, and
// tell the upstream about the client with forwarding.

// hopHeader reports the headers that describe one connection, not the
// message (RFC 9110 section 7.6.1), in canonical form.
func hopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// forwardedHeader is replaced by edge, never passed on from the client.
func forwardedHeader(k string) bool {
	switch k {
	case "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Real-Ip", "X-Request-Id",
		"Host", "Content-Length":
		return true
	}
	return false
}

// proxyClaim reports headers that tell an application what a proxy in
// front of it saw (X-Forwarded-Port, -Prefix, -Ssl, -Server, ...) or which
// URL the client really asked for (X-Original-Url, X-Rewrite-Url): Spring,
// Symfony and IIS-style rewriters act on them, so only a trusted proxy may
// send them. Edge rebuilds For, Proto and Host itself (forwardedHeader).
func proxyClaim(k string) bool {
	return strings.HasPrefix(k, "X-Forwarded-") || k == "X-Original-Url" || k == "X-Rewrite-Url"
}

// passRequestHeader reports whether the request header k goes on to the
// upstream as it is; conn is the request's Connection header, trusted
// whether the peer is in server.trusted_proxies.
func (p *proxyHandler) passRequestHeader(k string, conn []string, trusted bool) bool {
	if hopHeader(k) || forwardedHeader(k) || p.opts.RequestHeaders.touches(k) || !trusted && proxyClaim(k) {
		return false
	}
	// Connection names the client's own hop-by-hop headers. Edge's own
	// headers at this point were set by the route's identity check
	// after it removed the client's, so they are not the client's to drop.
	return conn == nil || httphdr.EdgeOwned(k) || !httphdr.HasToken(conn, k)
}

// passRequestTrailer reports whether the client's trailer field k goes on.
// Upstream frameworks merge trailers into the request's headers or hand
// them over beside them, and the identity check never sees them (they
// arrive after the body), so a trailer may name nothing edge sets or
// controls, nor what RFC 9110 section 6.5.1 keeps out of trailers
// (framing, routing, authentication).
func (p *proxyHandler) passRequestTrailer(k string) bool {
	return !httphdr.EdgeOwned(k) && !hopHeader(k) && !forwardedHeader(k) && !proxyClaim(k) &&
		!p.opts.RequestHeaders.touches(k) && httpguts.ValidTrailerHeader(k)
}

// passResponseHeader reports whether the upstream's response header k goes
// on to the client; conn is the response's Connection header. Edge has set
// its own X-Request-Id already.
func passResponseHeader(k string, conn []string) bool {
	return !hopHeader(k) && k != "X-Request-Id" && (conn == nil || !httphdr.HasToken(conn, k))
}

// touches reports whether the route's header rules set or remove k.
func (h *HeaderRules) touches(k string) bool {
	for _, name := range h.Remove {
		if name == k {
			return true
		}
	}
	for _, kv := range h.Set {
		if kv.Name == k {
			return true
		}
	}
	return false
}

// forwarding is what edge tells the upstream about the client. A trusted
// peer's (a load balancer's) forwarding headers are believed and extended;
// anyone else's are replaced.
type forwarding struct {
	prior []string // X-Forwarded-For of a trusted peer, kept in front
	peer  string
	proto string
	host  string
	info  *reqctx.Info // nil outside edge's chain: no X-Real-Ip, X-Request-Id
}

func forwardingOf(r *http.Request, info *reqctx.Info) forwarding {
	f := forwarding{peer: peerHost(r.RemoteAddr), proto: scheme(r), host: r.Host, info: info}
	if info != nil && info.PeerTrusted {
		f.prior = r.Header["X-Forwarded-For"]
		if v := r.Header["X-Forwarded-Proto"]; len(v) > 0 && v[0] != "" {
			f.proto = v[0]
		}
		if v := r.Header["X-Forwarded-Host"]; len(v) > 0 && v[0] != "" {
			f.host = v[0]
		}
	}
	return f
}

// write writes the headers onto the lean path's request, without building
// the joined X-Forwarded-For string.
func (f *forwarding) write(bw *bufio.Writer) {
	bw.WriteString("X-Forwarded-For: ")
	for _, prior := range f.prior {
		bw.WriteString(prior)
		bw.WriteString(", ")
	}
	bw.WriteString(f.peer)
	bw.WriteString("\r\n")
	writeHeader(bw, "X-Forwarded-Proto", f.proto)
	writeHeader(bw, "X-Forwarded-Host", f.host)
	if f.info != nil {
		bw.WriteString("X-Real-Ip: ")
		// Appended in the writer's own free space: no buffer of its own.
		bw.Write(f.info.ClientIP.AppendTo(bw.AvailableBuffer()))
		bw.WriteString("\r\n")
		writeHeader(bw, "X-Request-Id", f.info.RequestID)
	}
}

// set sets the same headers in h, for ReverseProxy's request.
func (f *forwarding) set(h http.Header) {
	xff := f.peer
	if len(f.prior) > 0 {
		xff = strings.Join(f.prior, ", ") + ", " + f.peer
	}
	h["X-Forwarded-For"] = []string{xff}
	h["X-Forwarded-Proto"] = []string{f.proto}
	h["X-Forwarded-Host"] = []string{f.host}
	if f.info != nil {
		h["X-Real-Ip"] = []string{string(f.info.ClientIP.AppendTo(nil))}
		h["X-Request-Id"] = []string{f.info.RequestID}
	}
}

func writeHeader(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func peerHost(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}
