package h1

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"edge/internal/apierror"
	"edge/internal/httphdr"
	"edge/internal/reqctx"
)

// The states of a connection, for Shutdown: only an idle one (waiting for
// its next request) may be closed under it.
const (
	stateActive int32 = iota
	stateIdle
	stateClosed
)

// readBufferSize bounds the heads this front reads itself; a larger one
// (up to server.max_header_bytes) goes to net/http.
const readBufferSize = 8 << 10

// maxDrain is how much of an unread request body is read and dropped to
// keep the connection (net/http's figure); more closes it.
const maxDrain = 256 << 10

type conn struct {
	s     *Server
	nc    net.Conn
	state atomic.Int32

	// The watch for a client that leaves while its request is served
	// (net/http's background read), started only for a request that asked
	// for its context's Done and is still running after watchDelay.
	watchMu    sync.Mutex
	watchState uint8
	watchTimer *time.Timer
	watchDone  chan struct{}
	watchRWC   net.Conn
	watchBufs  *buffers
}

// The watch's states in one request.
const (
	watchNone uint8 = iota
	watchArmed
	watchReading
	watchFinished
	watchOver
)

// watchDelay is how long a request runs before edge starts reading its
// connection to notice a client that left: quick requests never pay for
// the goroutine that reading takes.
const watchDelay = 200 * time.Millisecond

// buffers are what a connection needs per request, reused from request to
// request and pooled between connections.
type buffers struct {
	br     *bufio.Reader
	bw     *bufio.Writer
	req    *http.Request
	holder *reqctx.Holder
	url    url.URL
	hdr    http.Header
	vals   []string
	head   head
	body   body
	w      response
}

var buffersPool = sync.Pool{New: func() any {
	b := &buffers{
		br:     bufio.NewReaderSize(nil, readBufferSize),
		bw:     bufio.NewWriterSize(nil, 4<<10),
		holder: reqctx.NewHolder(nil),
		hdr:    make(http.Header, 16),
	}
	b.req = (&http.Request{}).WithContext(b.holder)
	b.w.header = make(http.Header, 16)
	return b
}}

func (c *conn) serve() {
	handedOver := false
	defer func() {
		c.s.untrack(c)
		if !handedOver {
			c.nc.Close()
		}
	}()
	var rwc net.Conn = c.nc
	var tc *tls.Conn
	var tlsState *tls.ConnectionState
	if cfg := c.s.opts.TLSConfig; cfg != nil {
		tc = tls.Server(c.nc, cfg)
		if d := c.s.opts.ReadHeaderTimeout; d > 0 {
			_ = c.nc.SetDeadline(time.Now().Add(d))
		}
		if err := tc.Handshake(); err != nil {
			c.handshakeFailed(err)
			return
		}
		_ = c.nc.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		if st.NegotiatedProtocol == "h2" {
			handedOver = c.s.handoff.give(tc)
			return
		}
		rwc, tlsState = tc, &st
	}
	if c.s.opts.OpenConns != nil {
		c.s.opts.OpenConns.Inc()
		defer c.s.opts.OpenConns.Dec()
	}
	b := buffersPool.Get().(*buffers)
	b.br.Reset(rwc)
	b.bw.Reset(rwc)
	b.req.RemoteAddr = c.nc.RemoteAddr().String()
	b.req.TLS = tlsState
	b.holder.SetWatch(c.armWatch)
	c.watchRWC, c.watchBufs = rwc, b
	defer func() {
		if c.watchTimer != nil {
			c.watchTimer.Stop()
		}
	}()
	for first := true; ; first = false {
		switch c.serveOne(rwc, b, first) {
		case keepAlive:
			continue
		case handOverConn:
			// The fallback reads what b.br buffered: b stays with it.
			handedOver = c.s.handoff.give(&replayConn{Conn: rwc, buffered: b.br, tls: tc})
			return
		case lingerThenClose:
			linger(rwc)
		}
		b.holder.SetWatch(nil)
		b.br.Reset(nil)
		b.bw.Reset(nil)
		buffersPool.Put(b)
		return
	}
}

// handshakeFailed reports a failed handshake; a client that spoke plain
// HTTP to the HTTPS port is told so, as net/http does.
func (c *conn) handshakeFailed(err error) {
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		_ = re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
	}
	if c.s.opts.HandshakeFailed != nil {
		c.s.opts.HandshakeFailed(err)
	}
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

type outcome uint8

const (
	keepAlive outcome = iota
	closeConn
	// lingerThenClose: request bytes may be left unread; closing at once
	// would reset the connection and could destroy the answer in flight.
	lingerThenClose
	handOverConn
)

// serveOne reads one request and answers it.
func (c *conn) serveOne(rwc net.Conn, b *buffers, first bool) outcome {
	o := c.s.opts
	c.state.Store(stateIdle)
	if c.s.draining.Load() {
		return closeConn
	}
	wait := o.IdleTimeout
	if first || wait == 0 {
		wait = o.ReadHeaderTimeout
	}
	setReadDeadline(rwc, wait)
	if _, err := b.br.Peek(1); err != nil {
		return closeConn
	}
	if !c.state.CompareAndSwap(stateIdle, stateActive) {
		return closeConn
	}
	if !first {
		setReadDeadline(rwc, o.ReadHeaderTimeout)
	}
	n, err := httphdr.PeekHead(b.br)
	if err == httphdr.ErrHeadTooLarge {
		if o.MaxHeaderBytes > readBufferSize {
			return handOverConn
		}
		b.head = head{}
		c.refuse(b, http.StatusRequestHeaderFieldsTooLarge, "the request head is larger than server.max_header_bytes")
		return lingerThenClose
	}
	if err != nil {
		return closeConn
	}
	if o.MaxHeaderBytes > 0 && n > o.MaxHeaderBytes {
		b.head = head{}
		c.refuse(b, http.StatusRequestHeaderFieldsTooLarge, "the request head is larger than server.max_header_bytes")
		return lingerThenClose
	}
	raw, _ := b.br.Peek(n)
	block := string(raw)
	clear(b.hdr)
	b.vals = b.vals[:0]
	switch parseHead(block, &b.head, b.hdr, &b.vals) {
	case handOver:
		return handOverConn
	case refuse:
		c.refuse(b, http.StatusBadRequest, b.head.problem)
		return lingerThenClose
	}
	_, _ = b.br.Discard(n)
	_ = rwc.SetReadDeadline(time.Time{})
	if o.WriteTimeout > 0 {
		_ = rwc.SetWriteDeadline(time.Now().Add(o.WriteTimeout))
	}

	h := &b.head
	b.url = url.URL{Path: h.path, RawPath: h.rawPath, RawQuery: h.rawQuery, ForceQuery: h.forceQuery}
	r := b.req
	r.Method = h.method
	r.URL = &b.url
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header = b.hdr
	r.ContentLength = 0
	r.Body = http.NoBody
	b.body.reset(b.br, max(h.contentLength, 0))
	if h.contentLength > 0 {
		r.ContentLength = h.contentLength
		r.Body = &b.body
	}
	r.GetBody = nil
	r.TransferEncoding = nil
	r.Close = h.close
	r.Host = h.host
	r.Form, r.PostForm, r.MultipartForm = nil, nil, nil
	r.Trailer = nil
	r.RequestURI = h.target
	r.Response = nil
	r.Pattern = ""

	w := &b.w
	w.reset(c, b.bw, rwc, r, &b.body)
	b.holder.Reset()
	c.watchMu.Lock()
	c.watchState = watchNone
	c.watchMu.Unlock()
	ok := c.runHandler(w, r)
	c.endWatch()
	if !ok || !w.finish() {
		return closeConn
	}
	if b.body.Remaining > 0 && !b.body.drain(rwc) {
		return lingerThenClose
	}
	if w.closeAfter || r.Close {
		return closeConn
	}
	return keepAlive
}

// armWatch is the request context's watch function: the first Done of a
// request arms the timer that starts the watch.
func (c *conn) armWatch() {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if c.watchState != watchNone {
		return
	}
	c.watchState = watchArmed
	if c.watchTimer == nil {
		c.watchTimer = time.AfterFunc(watchDelay, c.watchClient)
	} else {
		c.watchTimer.Reset(watchDelay)
	}
}

// watchClient reads from the connection while the request is served: an
// error means the client left, and the request's context is cancelled. A
// byte read (the next request, pipelined) stays buffered.
func (c *conn) watchClient() {
	c.watchMu.Lock()
	if c.watchState != watchArmed {
		c.watchMu.Unlock()
		return
	}
	if !c.watchBufs.body.over.Load() {
		// The handler may still read the body: try again later.
		c.watchTimer.Reset(watchDelay)
		c.watchMu.Unlock()
		return
	}
	c.watchState = watchReading
	c.watchDone = make(chan struct{}, 1)
	c.watchMu.Unlock()

	_, err := c.watchBufs.br.Peek(1)

	c.watchMu.Lock()
	ended := c.watchState == watchOver
	if !ended {
		c.watchState = watchFinished
	}
	c.watchMu.Unlock()
	if err != nil && !ended {
		c.watchBufs.holder.Cancel()
	}
	c.watchDone <- struct{}{}
}

// endWatch stops the watch when the handler has returned, so that nothing
// but the connection's loop reads from it.
func (c *conn) endWatch() {
	c.watchMu.Lock()
	prev := c.watchState
	c.watchState = watchOver
	c.watchMu.Unlock()
	if c.watchTimer != nil {
		c.watchTimer.Stop()
	}
	switch prev {
	case watchReading:
		_ = c.watchRWC.SetReadDeadline(aLongTimeAgo)
		<-c.watchDone
	case watchFinished:
		<-c.watchDone
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// linger reads what the client still sends, for a short while, before the
// connection is closed: closing with unread bytes resets the connection,
// and the client could lose the answer it has not read yet.
// The end of the answer is sent first (FIN, or TLS close_notify), so the
// client learns at once that nothing more comes.
func linger(rwc net.Conn) {
	if cw, ok := rwc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = rwc.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.Copy(io.Discard, rwc)
}

// lingerTime is net/http's figure for the same wait.
const lingerTime = 500 * time.Millisecond

// runHandler runs the handler; false when it panicked, which ends the
// connection without another byte (http.ErrAbortHandler is the proxy's way
// of saying the answer broke off).
func (c *conn) runHandler(w *response, r *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			ok = false
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.logger().Error("panic serving a request", "error", fmt.Sprint(p), "stack", string(buf))
			}
		}
	}()
	c.s.opts.Handler.ServeHTTP(w, r)
	return true
}

func (c *conn) logger() *slog.Logger {
	if c.s.opts.Logger != nil {
		return c.s.opts.Logger
	}
	return slog.Default()
}

// refuse answers a head this front will not read, in the house JSON, and
// the connection closes after it.
func (c *conn) refuse(b *buffers, status int, msg string) {
	code := apierror.BadRequest
	if status == http.StatusRequestHeaderFieldsTooLarge {
		code = apierror.HeadTooLarge
	}
	id := ""
	if c.s.opts.RequestID != nil {
		id = c.s.opts.RequestID()
	}
	var buf [256]byte
	body := apierror.AppendJSON(buf[:0], code, msg, id)
	bw := b.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(statusLine(status))
	if id != "" {
		bw.WriteString("\r\nX-Request-Id: ")
		bw.WriteString(id)
	}
	bw.WriteString("\r\nContent-Type: application/json; charset=utf-8\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: ")
	var n [20]byte
	bw.Write(appendInt(n[:0], int64(len(body))))
	bw.WriteString("\r\n\r\n")
	bw.Write(body)
	_ = bw.Flush()
	if c.s.opts.Refused != nil {
		c.s.opts.Refused(RefusedHead{Status: status, Problem: msg, RequestID: id, Method: b.head.method,
			Path: b.head.path, Peer: c.nc.RemoteAddr(), Start: time.Now()})
	}
}

func setReadDeadline(c net.Conn, d time.Duration) {
	if d > 0 {
		_ = c.SetReadDeadline(time.Now().Add(d))
	} else {
		_ = c.SetReadDeadline(time.Time{})
	}
}

// body is a request body of known length, read from the connection.
type body struct {
	httphdr.LengthBody
	err error
	// over is set once the body was read whole or failed: the client watch
	// may read the connection from then on.
	over atomic.Bool
	// left and failed are what the answer's head may know of the body
	// while the proxy's body writer still reads it on another goroutine
	// (an upstream that answered early).
	left   atomic.Int64
	failed atomic.Bool
}

func (b *body) reset(br *bufio.Reader, length int64) {
	b.R, b.Remaining, b.err = br, length, nil
	b.over.Store(length == 0)
	b.left.Store(length)
	b.failed.Store(false)
}

func (b *body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.LengthBody.Read(p)
	b.left.Store(b.Remaining)
	switch {
	case err == io.EOF:
		b.over.Store(true)
	case err != nil:
		b.err = err
		b.failed.Store(true)
		b.over.Store(true)
	}
	return n, err
}

func (b *body) Close() error { return nil }

// drain reads and drops what the handler left of the body, so the
// connection can carry the next request; false when that is not possible
// (too much left, or the body failed or was stopped).
func (b *body) drain(rwc net.Conn) bool {
	if b.err != nil || b.Remaining > maxDrain {
		return false
	}
	_ = rwc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.R.Discard(int(b.Remaining))
	b.Remaining -= int64(n)
	return err == nil
}
