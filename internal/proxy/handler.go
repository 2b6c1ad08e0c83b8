package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"syscall"
	"time"

	"edge/internal/apierror"
	"edge/internal/logsample"
	"edge/internal/reqctx"
)

// HeaderRules are fixed header edits compiled from a route. Names are in
// canonical form.
type HeaderRules struct {
	Set    []HeaderValue
	Remove []string
}

// HeaderValue is one header to set.
type HeaderValue struct{ Name, Value string }

// Apply edits hdr in place.
func (h HeaderRules) Apply(hdr http.Header) {
	for _, name := range h.Remove {
		delete(hdr, name)
	}
	for _, kv := range h.Set {
		hdr[kv.Name] = []string{kv.Value}
	}
}

// Empty reports whether there is nothing to do.
func (h HeaderRules) Empty() bool { return len(h.Set) == 0 && len(h.Remove) == 0 }

// ProxyOptions configure the proxy handler of one route.
type ProxyOptions struct {
	Route       string
	Upstream    *Upstream
	StripPrefix string // the route's prefix to remove, "" to keep the path
	// Rewrite, when not nil, changes the path (and maybe the query) sent
	// upstream; configs never set it beside StripPrefix.
	Rewrite        *Rewrite
	RequestHeaders HeaderRules
	WebSocket      bool
	// ReadTimeout overrides the upstream's read timeout for this route
	// when not 0.
	ReadTimeout time.Duration
	// WebSocketsOpen counts upgraded connections while they last.
	WebSocketsOpen interface {
		Inc()
		Dec()
	}
	Logger *slog.Logger
}

// NewProxy returns the handler that forwards a route's requests to its
// upstream with httputil.ReverseProxy (Rewrite, never Director).
func NewProxy(o ProxyOptions) http.Handler {
	if o.ReadTimeout == 0 {
		o.ReadTimeout = o.Upstream.opts.ReadTimeout
	}
	p := &proxyHandler{opts: o}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      o.Upstream,
		BufferPool:     bufferPool{},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		// What the upstream sent goes out at once, as on the forward path.
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	return p
}

type proxyHandler struct {
	opts ProxyOptions
	rp   *httputil.ReverseProxy
}

func (p *proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t, ok := p.target(r)
	if !ok {
		if info := reqctx.FromRequest(r); info != nil {
			info.Reason = "ambiguous_path"
		}
		apierror.Write(w, r, apierror.BadRequest, "the rewritten path holds ';', '\\' or a control character, which servers read differently")
		return
	}
	if r.Header["Upgrade"] == nil || !p.opts.WebSocket {
		// Without websocket = true an Upgrade goes on as plain HTTP, as with
		// nginx without "proxy_set_header Upgrade": forward drops it with
		// the other hop-by-hop headers.
		p.forward(w, r, t)
		return
	}
	// The server's read/write timeouts must not cut a long-lived WebSocket;
	// idle connections are the upstream's to close.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	p.rp.ServeHTTP(w, r)
	if info := reqctx.FromRequest(r); info != nil && info.Upgraded && p.opts.WebSocketsOpen != nil {
		p.opts.WebSocketsOpen.Dec()
	}
}

func (p *proxyHandler) rewrite(pr *httputil.ProxyRequest) {
	in, out := pr.In, pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = p.opts.Upstream.opts.Name
	out.Host = in.Host
	// ServeHTTP has refused a request whose target cannot be worked out.
	if t, _ := p.target(in); t.changed {
		out.URL.Path, out.URL.RawPath = t.path, t.rawPath
		if t.setQuery {
			out.URL.RawQuery, out.URL.ForceQuery = t.query, false
		}
	}
	// ReverseProxy has removed the hop-by-hop headers by its own rules
	// (under which Connection could remove edge's identity headers) and put
	// back those of the upgrade. The rest is rebuilt by edge's rules.
	h := out.Header
	connection, upgrade, te := h["Connection"], h["Upgrade"], h["Te"]
	clear(h)
	conn := in.Header["Connection"]
	info := reqctx.FromRequest(in)
	trusted := info != nil && info.PeerTrusted
	for k, vs := range in.Header {
		if p.passRequestHeader(k, conn, trusted) {
			h[k] = vs
		}
	}
	if connection != nil {
		h["Connection"] = connection
	}
	if upgrade != nil {
		h["Upgrade"] = upgrade
	}
	if te != nil {
		h["Te"] = te
	}
	f := forwardingOf(in, reqctx.From(in.Context()))
	f.set(h)
	for k := range out.Trailer {
		if !p.passRequestTrailer(k) {
			delete(out.Trailer, k)
		}
	}
	p.opts.RequestHeaders.Apply(h)
}

// stripPrefix removes the route prefix; what remains always starts with "/".
func stripPrefix(path, prefix string) string {
	prefix = strings.TrimSuffix(prefix, "/")
	rest := strings.TrimPrefix(path, prefix)
	if rest == "" || rest[0] != '/' {
		return "/" + rest
	}
	return rest
}

func (p *proxyHandler) modifyResponse(resp *http.Response) error {
	// edge already set its own X-Request-Id on the response.
	delete(resp.Header, "X-Request-Id")
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// ReverseProxy splices the connection inside ServeHTTP, which
		// returns when the WebSocket closes.
		if info := reqctx.FromRequest(resp.Request); info != nil {
			info.Upgraded = true
			if p.opts.WebSocketsOpen != nil {
				p.opts.WebSocketsOpen.Inc()
			}
		}
	}
	return nil
}

// The reasons an exchange failed on the upstream's side. Every other reason
// edge records (a body too large, stalled or cut off, a client that left)
// is the client's, and not counted against the target in metrics either.
const (
	ReasonUpstreamTimeout = "upstream_timeout"
	ReasonUpstreamDown    = "upstream_down"
)

func (p *proxyHandler) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	info := reqctx.FromRequest(r)
	setReason := func(reason string) {
		if info != nil {
			info.Reason = reason
		}
	}
	var cb *clientBodyError
	if errors.As(err, &cb) && r.Context().Err() == nil {
		AnswerClientBodyFault(w, r, info, cb.err)
		return
	}
	var maxBytes *http.MaxBytesError
	switch {
	case errors.As(err, &maxBytes) || (info != nil && info.Reason == "body_too_large"):
		setReason("body_too_large")
		apierror.Write(w, r, apierror.BodyTooLarge, "request body is larger than this route allows")
		return
	case info != nil && info.Reason == "client_body_timeout":
		apierror.Write(w, r, apierror.RequestTimeout, "the request body stopped arriving")
		return
	case r.Context().Err() != nil:
		// The client went away; nobody reads an answer. 499 as nginx logs it.
		setReason("client_closed")
		w.WriteHeader(499)
		return
	case errors.Is(err, errUpstreamTimeout) || errors.Is(err, context.DeadlineExceeded):
		setReason(ReasonUpstreamTimeout)
		p.logUpstreamError(r, info, err)
		apierror.Write(w, r, apierror.UpstreamTimeout, "upstream timed out")
		return
	default:
		setReason(ReasonUpstreamDown)
		p.logUpstreamError(r, info, err)
		apierror.Write(w, r, apierror.UpstreamDown, "upstream unreachable")
	}
}

// AnswerClientBodyFault answers a client whose body could not be read: too
// large 413, stalled 408, cut off 499 (the client closed its side: nobody
// is there to read more than a status), malformed framing 400.
func AnswerClientBodyFault(w http.ResponseWriter, r *http.Request, info *reqctx.Info, err error) {
	var maxBytes *http.MaxBytesError
	var ne net.Error
	reason := "bad_body"
	switch {
	case errors.As(err, &maxBytes):
		reason = "body_too_large"
		apierror.Write(w, r, apierror.BodyTooLarge, "request body is larger than this route allows")
	case errors.As(err, &ne) && ne.Timeout():
		reason = "client_body_timeout"
		apierror.Write(w, r, apierror.RequestTimeout, "the request body stopped arriving")
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		reason = "client_closed"
		w.WriteHeader(499)
	default:
		apierror.Write(w, r, apierror.BadRequest, "the request body is malformed")
	}
	if info != nil {
		info.Reason = reason
	}
}

func (p *proxyHandler) logUpstreamError(r *http.Request, info *reqctx.Info, err error) {
	p.warn(r, info, warnUpstreamError, "upstream error", err)
}

// warn writes a line about the request's target through the target's
// sampler: a target that fails every request writes one line a second, not
// one per request.
func (p *proxyHandler) warn(r *http.Request, info *reqctx.Info, w warning, msg string, err error) {
	target := ""
	if info != nil {
		target = info.Target
	}
	ok, suppressed := p.opts.Upstream.allowWarning(target, w, time.Now())
	if !ok {
		return
	}
	p.opts.Logger.LogAttrs(r.Context(), slog.LevelWarn, msg,
		slog.String("route", p.opts.Route),
		slog.String("upstream", p.opts.Upstream.opts.Name),
		slog.String("target", target),
		slog.String("error", err.Error()),
		logsample.Suppressed(suppressed))
}

type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Get and Put move the slice headers through a second pool of pointers, so
// that neither direction allocates.
func (bufferPool) Get() []byte {
	bp := copyBuffers.Get().(*[]byte)
	b := *bp
	*bp = nil
	bufHeaders.Put(bp)
	return b
}

func (bufferPool) Put(b []byte) {
	bp := bufHeaders.Get().(*[]byte)
	*bp = b
	copyBuffers.Put(bp)
}

var bufHeaders = sync.Pool{New: func() any { return new([]byte) }}
