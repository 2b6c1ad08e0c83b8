package proxy

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"

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
func (p *proxyHandler) forward(w http.ResponseWriter, r *http.Request) {
	out := outRequests.Get().(*outRequest)
	*out = outRequest{r: r, p: p, info: reqctx.FromRequest(r)}
	resp, err := p.opts.Upstream.exchange(r, out)
	outRequests.Put(out)
	if err != nil {
		p.errorHandler(w, r, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		p.errorHandler(w, r, errors.New("upstream switched protocols on a request that did not ask to"))
		return
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
	if err := copyBody(w, resp.Body, stream); err != nil {
		if errors.Is(err, errClientWrite) {
			return
		}
		p.warn(r, reqctx.FromRequest(r), warnBodyBroken, "upstream body broken off", err)
		// The status line is gone: all that is left is to end the
		// connection so the client sees an incomplete answer, not a short one.
		panic(http.ErrAbortHandler)
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

func copyBody(w http.ResponseWriter, body io.Reader, stream bool) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var flusher http.Flusher
	if stream {
		flusher, _ = w.(http.Flusher)
	}
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return errClientWrite
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream")
}

// outRequest writes the upstream request for an inbound one.
type outRequest struct {
	r    *http.Request
	p    *proxyHandler
	info *reqctx.Info
}

var outRequests = sync.Pool{New: func() any { return new(outRequest) }}

func (o *outRequest) writeRequest(bw *bufio.Writer) error {
	r, p := o.r, o.p
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	o.writeTarget(bw)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")

	conn := r.Header["Connection"]
	for k, vs := range r.Header {
		if !p.passRequestHeader(k, conn) {
			continue
		}
		for _, v := range vs {
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
	return o.writeBody(bw)
}

// writeTarget writes the request-target: the client's own bytes unless edge
// changed the path (cleaning dot segments, strip_prefix) or the query (a
// callback verifier drops it).
func (o *outRequest) writeTarget(bw *bufio.Writer) {
	r := o.r
	if o.p.opts.StripPrefix == "" && r.URL.RawPath == "" && r.RequestURI != "" && !strings.Contains(r.RequestURI, "://") &&
		sameTarget(r) {
		bw.WriteString(r.RequestURI)
		return
	}
	path := r.URL.EscapedPath()
	if o.p.opts.StripPrefix != "" {
		path = stripPrefix(path, o.p.opts.StripPrefix)
	}
	if path == "" {
		path = "/"
	}
	bw.WriteString(path)
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		bw.WriteByte('?')
		bw.WriteString(r.URL.RawQuery)
	}
}

// sameTarget reports whether the client's request-target still says what
// r.URL says.
func sameTarget(r *http.Request) bool {
	path, query, hasQuery := strings.Cut(r.RequestURI, "?")
	return path == r.URL.EscapedPath() && query == r.URL.RawQuery && hasQuery == (query != "" || r.URL.ForceQuery)
}

// writeBody frames the body as the client did: a known length, or chunks
// (with the client's trailers) when it streamed.
func (o *outRequest) writeBody(bw *bufio.Writer) error {
	r := o.r
	switch {
	case r.ContentLength > 0:
		var n [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(n[:0], r.ContentLength, 10))
		bw.WriteString("\r\n\r\n")
		copied, err := io.Copy(bw, io.LimitReader(r.Body, r.ContentLength))
		if err != nil {
			return err
		}
		if copied != r.ContentLength {
			return io.ErrUnexpectedEOF
		}
		return nil
	case r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody:
		bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		cw := httputil.NewChunkedWriter(bw)
		if _, err := io.Copy(cw, r.Body); err != nil {
			return err
		}
		if err := cw.Close(); err != nil {
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
	default:
		switch r.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			bw.WriteString("Content-Length: 0\r\n")
		}
		_, err := bw.WriteString("\r\n")
		return err
	}
}
