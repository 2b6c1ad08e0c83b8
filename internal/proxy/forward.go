package proxy

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"edge/internal/httphdr"
	"edge/internal/reqctx"
)

// forward proxies an ordinary (non-upgrade) request. It keeps
// httputil.ReverseProxy's guarantees (hop-by-hop headers and those named in
// Connection removed both ways, forwarding headers rebuilt, Te: trailers
// kept, trailers passed on, streams flushed at once, a broken body aborted
// rather than truncated silently) but writes the upstream request straight
// from the inbound one: no request clone, no header map copy, no sorted
// header serialisation. Upgrades still go through ReverseProxy.
func (p *proxyHandler) forward(w http.ResponseWriter, r *http.Request, t upTarget) {
	out := outRequests.Get().(*outRequest)
	*out = outRequest{r: r, w: w, p: p, info: reqctx.FromRequest(r), target: t}
	// The body writer uses out until the response body is closed, which
	// the deferred Close below does first.
	defer outRequests.Put(out)
	resp, err := p.opts.Upstream.exchange(r, out, p.opts.ReadTimeout)
	if err != nil {
		p.errorHandler(w, r, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		p.errorHandler(w, r, errors.New("upstream switched protocols on a request that did not ask to"))
		return
	}
	pb, _ := resp.Body.(*pooledBody)
	if pb != nil && pb.sending() {
		// The upstream answered before it had the whole body, which keeps
		// going out: net/http must not read (and drop) the rest of the
		// body itself when the answer's headers go out.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}

	h := w.Header()
	conn := resp.Header["Connection"]
	for k, vs := range resp.Header {
		if !passResponseHeader(k, conn) {
			continue
		}
		if prior := h[k]; prior != nil {
			h[k] = append(prior, vs...)
		} else {
			h[k] = vs
		}
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)

	stream := resp.ContentLength == -1 || isEventStream(resp.Header)
	if err := copyBody(w, resp.Body, pb, stream); err != nil {
		if errors.Is(err, errClientWrite) {
			return
		}
		// A client that stopped sending is the client's business: the
		// upstream is not to blame and nothing is worth a warning.
		var cb *clientBodyError
		if !errors.As(err, &cb) {
			p.warn(r, reqctx.FromRequest(r), warnBodyBroken, "upstream body broken off", err)
		}
		// The status line is gone: all that is left is to end the
		// connection so the client sees an incomplete answer, not a short one.
		panic(http.ErrAbortHandler)
	}
	if pb != nil && pb.sending() {
		// Closing stops the body writer and waits for it: the answer goes
		// out first, whatever the writer is waiting for.
		http.NewResponseController(w).Flush()
	}
	resp.Body.Close() // now, so resp.Trailer is filled in
	if len(resp.Trailer) > 0 {
		// A flush forces chunked encoding, so net/http does not turn a short
		// body into a Content-Length answer without trailers.
		http.NewResponseController(w).Flush()
		if len(resp.Trailer) == announced {
			for k, vs := range resp.Trailer {
				h[k] = vs
			}
		} else {
			for k, vs := range resp.Trailer {
				h[http.TrailerPrefix+k] = vs
			}
		}
	}
}

var errClientWrite = errors.New("writing to the client failed")

// copyBody passes the answer on as it arrives: whatever was read is flushed
// before a read that may wait for the upstream, so nothing sits in a buffer
// while the upstream pauses (a model's streamed answer, a stalled body).
// For a body of known length, a read waits only when nothing more of it is
// buffered from the upstream; a chunked one may wait on any chunk.
func copyBody(w http.ResponseWriter, body io.Reader, pb *pooledBody, stream bool) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	flusher, _ := w.(http.Flusher)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return errClientWrite
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if n > 0 && flusher != nil && (stream || pb == nil || pb.pc.br.Buffered() == 0) {
			flusher.Flush()
		}
	}
}

func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream")
}

// outRequest writes the upstream request for an inbound one, and passes
// 1xx answers back to w.
type outRequest struct {
	r    *http.Request
	w    http.ResponseWriter
	p    *proxyHandler
	info *reqctx.Info
	// target is the path and query when strip_prefix or a rewrite changed
	// them, worked out once for every try of the request.
	target upTarget
	// clientRead is set by the body writer once the client's body is read
	// whole.
	clientRead atomic.Bool
}

var outRequests = sync.Pool{New: func() any { return new(outRequest) }}

func (o *outRequest) writeHead(bw *bufio.Writer) error {
	r, p := o.r, o.p
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	o.writeTarget(bw)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")

	conn := r.Header["Connection"]
	trusted := o.info != nil && o.info.PeerTrusted
	// In name order: the same client request reaches the upstream as the
	// same bytes, whether it came over HTTP/1.1 or HTTP/2 (whose header
	// order is HPACK's) and whatever order a map walk takes.
	var namesBuf [32]string
	names := namesBuf[:0]
	for k := range r.Header {
		if p.passRequestHeader(k, conn, trusted) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		for _, v := range r.Header[k] {
			writeHeader(bw, k, v)
		}
	}
	if te := r.Header["Te"]; te != nil && httphdr.HasToken(te, "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	f := forwardingOf(r, o.info)
	f.write(bw)
	for _, kv := range p.opts.RequestHeaders.Set {
		writeHeader(bw, kv.Name, kv.Value)
	}
	o.writeFraming(bw)
	_, err := bw.WriteString("\r\n")
	return err
}

// writeTarget writes the request-target: the client's own bytes unless edge
// changed the path (cleaning dot segments, strip_prefix, a rewrite) or the
// query (a rewrite, or a callback verifier that drops it).
func (o *outRequest) writeTarget(bw *bufio.Writer) {
	r, t := o.r, &o.target
	if !t.changed && r.URL.RawPath == "" && r.RequestURI != "" && !strings.Contains(r.RequestURI, "://") &&
		sameTarget(r) {
		bw.WriteString(r.RequestURI)
		return
	}
	path, query, force := t.rawPath, r.URL.RawQuery, r.URL.ForceQuery
	if !t.changed {
		path = r.URL.EscapedPath()
	}
	if t.setQuery {
		query, force = t.query, false
	}
	if path == "" {
		path = "/"
	}
	bw.WriteString(path)
	if query != "" || force {
		bw.WriteByte('?')
		bw.WriteString(query)
	}
}

// sameTarget reports whether the client's request-target still says what
// r.URL says.
func sameTarget(r *http.Request) bool {
	path, query, hasQuery := strings.Cut(r.RequestURI, "?")
	return path == r.URL.EscapedPath() && query == r.URL.RawQuery && hasQuery == (query != "" || r.URL.ForceQuery)
}

// writeFraming frames the body as the client did: a known length, or
// chunks (with the client's trailers) when it streamed.
func (o *outRequest) writeFraming(bw *bufio.Writer) {
	r := o.r
	switch {
	case r.ContentLength > 0:
		var n [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(n[:0], r.ContentLength, 10))
		bw.WriteString("\r\n")
	case o.hasBody():
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		switch r.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			bw.WriteString("Content-Length: 0\r\n")
		}
	}
}

func (o *outRequest) hasBody() bool {
	r := o.r
	return r.ContentLength > 0 || r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody
}

// inlineBodyMax is the largest body written before the answer is read.
// Loopback and LAN socket buffers hold it whole, so an upstream that
// answers without reading it is still heard; larger bodies go out from a
// goroutine of their own.
const inlineBodyMax = 16 << 10

func (o *outRequest) inlineBody() bool {
	return o.r.ContentLength > 0 && o.r.ContentLength <= inlineBodyMax
}

// bodyStopper is a client body that can end a read in progress at once
// (the gateway's limited body, which sets read deadlines of its own).
type bodyStopper interface{ StopReading() }

// stopBody runs on the handler's goroutine, after the answer went out.
func (o *outRequest) clientBodyRead() bool { return o.clientRead.Load() }

func (o *outRequest) stopBody() {
	if s, ok := o.r.Body.(bodyStopper); ok {
		s.StopReading()
	} else {
		_ = http.NewResponseController(o.w).SetReadDeadline(aLongTimeAgo)
	}
	closeAfterReply(o.w)
}

// closeAfterReply has net/http close an HTTP/1 client connection once the
// answer is out, as it does for a body over its limit (half-close, then a
// short wait so the answer is not lost to a reset). Otherwise, with less
// than 256 KB of the body left, its drain fails on the expired deadline and
// the connection is kept: the rest of the body would be read as the next
// request. A MaxBytesReader over its limit is the one public way to ask
// for this once the headers are gone. HTTP/2 needs nothing: the stream is
// reset.
func closeAfterReply(w http.ResponseWriter) {
	for {
		if c, ok := w.(interface{ CloseAfterReply() }); ok {
			// edge's HTTP/1.1 front says so directly.
			c.CloseAfterReply()
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	var b [1]byte
	_, _ = http.MaxBytesReader(w, io.NopCloser(strings.NewReader("x")), 0).Read(b[:])
}

func (o *outRequest) expectsContinue() bool {
	return o.r.ProtoAtLeast(1, 1) && httphdr.HasToken(o.r.Header["Expect"], "100-continue")
}

func (o *outRequest) writeBody(bw *bufio.Writer) error {
	r := o.r
	if r.ContentLength > 0 {
		return sendBody(bw, r.Body, r.ContentLength, &o.clientRead)
	}
	if err := sendChunked(bw, r.Body, &o.clientRead); err != nil {
		return err
	}
	for k, vs := range r.Trailer {
		if !o.p.passRequestTrailer(k) {
			continue
		}
		for _, v := range vs {
			writeHeader(bw, k, v)
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// interim passes a 1xx answer on. The response's header map already holds
// edge's headers for the final answer; the hint's are added for the 1xx
// only, and a header edge set is not overridden.
func (o *outRequest) interim(code int, hint http.Header) {
	if !o.r.ProtoAtLeast(1, 1) {
		return // HTTP/1.0 knows no 1xx
	}
	h := o.w.Header()
	added := make([]string, 0, len(hint))
	for k, vs := range hint {
		if _, taken := h[k]; taken || hopHeader(k) {
			continue
		}
		h[k] = vs
		added = append(added, k)
	}
	o.w.WriteHeader(code)
	for _, k := range added {
		delete(h, k)
	}
}

// sendBody copies a body of n bytes to the upstream, flushing each part as
// it arrives; the caller flushes the last. A failure to read the
// client's body, or a body that ends short, is the client's fault and says
// so; a failure to write is the upstream's.
func sendBody(bw *bufio.Writer, body io.Reader, n int64, read *atomic.Bool) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	for n > 0 {
		nr, err := body.Read(buf[:min(int64(len(buf)), n)])
		if int64(nr) == n {
			// The client has sent all of it; the upstream cannot have it
			// all before this point.
			read.Store(true)
		}
		if nr > 0 {
			if _, werr := bw.Write(buf[:nr]); werr != nil {
				return werr
			}
			n -= int64(nr)
			// The next read may wait for the client: what it sent so far
			// must not wait with it (the upstream may answer on it).
			if n > 0 {
				if werr := bw.Flush(); werr != nil {
					return werr
				}
			}
		}
		if err == io.EOF && n > 0 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil && err != io.EOF {
			return &clientBodyError{err}
		}
	}
	return nil
}

// sendChunked copies a streamed body to the upstream as chunks, each
// flushed as it arrives, up to the last chunk (trailers are the caller's).
func sendChunked(bw *bufio.Writer, body io.Reader, read *atomic.Bool) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var size [16]byte
	for {
		nr, err := body.Read(buf)
		if nr > 0 {
			bw.Write(strconv.AppendInt(size[:0], int64(nr), 16))
			bw.WriteString("\r\n")
			bw.Write(buf[:nr])
			bw.WriteString("\r\n")
			if ferr := bw.Flush(); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			read.Store(true)
			_, werr := bw.WriteString("0\r\n")
			return werr
		}
		if err != nil {
			return &clientBodyError{err}
		}
	}
}
