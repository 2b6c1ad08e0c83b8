package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// connTransport is an HTTP/1.1 client for one target address. Unlike
// http.Transport it does the whole exchange on the calling goroutine (no
// read-loop / write-loop goroutines per connection and no channel hand-offs),
// which is what lets a Go proxy get near nginx's throughput. It keeps a LIFO
// pool of idle keep-alive connections.
type connTransport struct {
	addr           string
	connectTimeout time.Duration
	headerTimeout  time.Duration
	maxIdle        int
	idleTimeout    time.Duration
	dialer         net.Dialer

	// inflight is the owning Target's counter: up while a request is sent
	// and until its response body is finished.
	inflight *atomic.Int64

	mu     sync.Mutex
	idle   []*persistConn
	closed bool
}

// staleCheckAfter is how long a connection may sit idle before it is probed
// for a close by the upstream before reuse. Node's default keep-alive timeout
// is 5 s, so idle connections to app servers go stale all the time; a probe
// costs one non-blocking recv, so it is skipped for connections reused at once.
const staleCheckAfter = time.Second

func newConnTransport(addr string, o TransportOptions) *connTransport {
	return &connTransport{
		addr:           addr,
		connectTimeout: o.ConnectTimeout,
		headerTimeout:  o.ResponseHeaderTimeout,
		maxIdle:        o.MaxIdle,
		idleTimeout:    o.IdleTimeout,
		dialer:         net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second},
	}
}

// TransportOptions configure the connections to one target.
type TransportOptions struct {
	ConnectTimeout        time.Duration
	ResponseHeaderTimeout time.Duration
	MaxIdle               int
	IdleTimeout           time.Duration
}

type persistConn struct {
	t         *connTransport
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	dw        deadlineWriter
	idleSince time.Time
	reused    bool
}

// dialError marks a failure to connect: nothing reached the upstream, so any
// request may go to another target.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connecting to upstream: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// notSentError marks a failure before any byte of the request was written
// to the connection: the upstream cannot have seen the request.
type notSentError struct{ err error }

func (e *notSentError) Error() string { return e.err.Error() }
func (e *notSentError) Unwrap() error { return e.err }

// clientBodyError is a failure to read the client's body (too large,
// stalled, cut off, malformed): the client's fault, never the target's.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "reading the client's body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// errHeaderTimeout is returned when the upstream does not answer within the
// response-header timeout.
var errHeaderTimeout = errors.New("upstream response header timeout")

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}
)

func (t *connTransport) getIdle(now time.Time) *persistConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	for n := len(t.idle); n > 0; n = len(t.idle) {
		pc := t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		age := now.Sub(pc.idleSince)
		if t.idleTimeout > 0 && age > t.idleTimeout {
			pc.closeConn()
			continue
		}
		if age > staleCheckAfter && !pc.alive() {
			pc.closeConn()
			continue
		}
		return pc
	}
	return nil
}

// alive peeks at the socket without blocking: an idle connection that is
// readable has either been closed by the upstream or sent bytes nobody asked
// for; both make it unusable.
func (pc *persistConn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	sc, ok := pc.conn.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var buf [1]byte
	_ = raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if n > 0 || (n == 0 && err == nil) || (err != nil && err != syscall.EAGAIN) {
			alive = false
		}
		return true
	})
	return alive
}

func (t *connTransport) dial(ctx context.Context) (*persistConn, error) {
	conn, err := t.dialer.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, &dialError{err}
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(conn)
	pc := &persistConn{t: t, conn: conn, br: br}
	pc.dw = deadlineWriter{conn: conn, timeout: t.headerTimeout}
	pc.bw = writerPool.Get().(*bufio.Writer)
	pc.bw.Reset(&pc.dw)
	return pc, nil
}

func (t *connTransport) putIdle(pc *persistConn) {
	pc.idleSince = time.Now()
	pc.reused = true
	t.mu.Lock()
	if t.closed || len(t.idle) >= t.maxIdle {
		t.mu.Unlock()
		pc.closeConn()
		return
	}
	t.idle = append(t.idle, pc)
	t.mu.Unlock()
}

// closeIdle closes every idle connection and, when final, refuses new ones.
func (t *connTransport) closeIdle(final bool) {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	if final {
		t.closed = true
	}
	t.mu.Unlock()
	for _, pc := range idle {
		pc.closeConn()
	}
}

func (pc *persistConn) closeConn() {
	_ = pc.conn.Close()
	if pc.br != nil {
		pc.br.Reset(nil)
		readerPool.Put(pc.br)
		pc.br = nil
	}
	if pc.bw != nil {
		pc.bw.Reset(nil)
		writerPool.Put(pc.bw)
		pc.bw = nil
	}
}

// RoundTrip sends req on a pooled or new connection.
func (t *connTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.exchange(req, stdRequest{req})
}

// requestWriter puts one request on the wire. req in exchange still supplies
// the context, the method (for reading the answer) and the body's
// replayability.
type requestWriter interface {
	writeRequest(bw *bufio.Writer) error
}

// stdRequest writes a *http.Request as net/http does (used for upgrades,
// which go through httputil.ReverseProxy).
type stdRequest struct{ req *http.Request }

func (s stdRequest) writeRequest(bw *bufio.Writer) error { return s.req.Write(bw) }

// exchange sends one request and reads the response headers.
func (t *connTransport) exchange(req *http.Request, w requestWriter) (*http.Response, error) {
	t.inflight.Add(1)
	resp, err := t.roundTripRetry(req, w)
	if err != nil {
		t.inflight.Add(-1)
	}
	return resp, err
}

// roundTripRetry sends a request that failed on a reused connection once
// more, on a fresh one, when mayResend allows it: the upstream most likely
// closed the idle connection as it was picked.
func (t *connTransport) roundTripRetry(req *http.Request, w requestWriter) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		pc := t.getIdle(time.Now())
		if pc == nil {
			var err error
			if pc, err = t.dial(req.Context()); err != nil {
				return nil, err
			}
		}
		resp, err := pc.roundTrip(req, w)
		if err == nil {
			return resp, nil
		}
		pc.closeConn()
		if attempt > 0 || !pc.reused || !mayResend(req, err) {
			return nil, err
		}
		if req.GetBody != nil {
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
	}
}

func replayable(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	return req.GetBody != nil
}

func (pc *persistConn) roundTrip(req *http.Request, w requestWriter) (*http.Response, error) {
	// Watch the client until the response body is over, not just until the
	// headers: a client that leaves while the upstream stalls mid-body
	// must free this goroutine. The body's finish stops the watch.
	stop := context.AfterFunc(req.Context(), func() { _ = pc.conn.SetDeadline(aLongTimeAgo) })
	handedOff := false
	defer func() {
		if !handedOff {
			stop()
		}
	}()

	// The timeout applies to each write while the request goes out (a slow
	// mobile upload may take minutes, but must not stall), then to the wait
	// for the response headers.
	d := pc.t.headerTimeout
	pc.dw.written = 0
	if err := w.writeRequest(pc.bw); err != nil {
		return nil, pc.wrapErr(req, err)
	}
	if err := pc.bw.Flush(); err != nil {
		return nil, pc.wrapErr(req, err)
	}
	if d > 0 {
		_ = pc.conn.SetReadDeadline(time.Now().Add(d))
	}
	var resp *http.Response
	for {
		r, err := http.ReadResponse(pc.br, req)
		if err != nil {
			return nil, pc.wrapErr(req, err)
		}
		// 100 Continue and 103 Early Hints precede the real answer.
		if r.StatusCode >= 100 && r.StatusCode < 200 && r.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		resp = r
		break
	}
	// Clear the header timeout; if the client left meanwhile, the watch's
	// deadline may have just been overwritten, so look at the context.
	_ = pc.conn.SetDeadline(time.Time{})
	if err := req.Context().Err(); err != nil {
		return nil, err
	}

	if resp.StatusCode == http.StatusSwitchingProtocols {
		handedOff = true
		resp.Body = &upgradedConn{pc: pc, stop: stop}
		return resp, nil
	}
	reusable := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		pc.t.inflight.Add(-1)
		// A watch that already fired has poisoned the connection's deadline.
		if stop() && reusable {
			pc.t.putIdle(pc)
		} else {
			pc.closeConn()
		}
		handedOff = true
		return resp, nil
	}
	handedOff = true
	resp.Body = &pooledBody{pc: pc, body: resp.Body, reusable: reusable, stop: stop}
	return resp, nil
}

var aLongTimeAgo = time.Unix(1, 0)

// wrapErr says whose fault a failed exchange was.
func (pc *persistConn) wrapErr(req *http.Request, err error) error {
	if ctxErr := req.Context().Err(); ctxErr != nil {
		return ctxErr
	}
	var cb *clientBodyError
	if errors.As(err, &cb) {
		return err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errHeaderTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		err = fmt.Errorf("upstream closed the connection: %w", err)
	}
	if pc.dw.written == 0 {
		return &notSentError{err}
	}
	return err
}

// pooledBody returns its connection to the pool once the body was read to
// the end, and closes it when the reader gives up early.
type pooledBody struct {
	pc       *persistConn
	body     io.ReadCloser
	reusable bool
	done     bool
	stop     func() bool // ends the watch on the client's context
}

func (b *pooledBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *pooledBody) finish(complete bool) {
	if b.done {
		return
	}
	b.done = true
	b.pc.t.inflight.Add(-1)
	// stop is false when the watch already fired: the connection's deadline
	// is in the past and it cannot be reused.
	if b.stop() && complete && b.reusable {
		b.pc.t.putIdle(b.pc)
		return
	}
	b.pc.closeConn()
}

// Close before EOF closes the connection first: net/http's response body
// would otherwise drain the rest, which never ends on an event stream.
func (b *pooledBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	b.stop()
	pc := b.pc
	pc.t.inflight.Add(-1)
	_ = pc.conn.Close()
	_ = b.body.Close()
	pc.closeConn()
	return nil
}

// deadlineWriter refreshes the write deadline before every write and counts
// what was written.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
	written int64
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if w.timeout > 0 {
		_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	n, err := w.conn.Write(p)
	w.written += int64(n)
	return n, err
}

// upgradedConn is the body of a 101 answer: the raw connection, for
// ReverseProxy to splice to the client (WebSocket). Its buffers are never
// pooled: ReverseProxy may still read on one goroutine while another closes.
type upgradedConn struct {
	pc     *persistConn
	stop   func() bool
	closed atomic.Bool
}

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.pc.br.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.pc.conn.Write(p) }
func (u *upgradedConn) Close() error {
	if u.closed.CompareAndSwap(false, true) {
		u.stop()
		u.pc.t.inflight.Add(-1)
	}
	return u.pc.conn.Close()
}
