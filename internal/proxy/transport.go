package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"edge/internal/httphdr"
	"edge/internal/reqctx"
)

// connTransport is an HTTP/1.1 client for one target address. Unlike
// http.Transport it does the exchange on the calling goroutine (no
// read-loop / write-loop goroutines per connection and no channel hand-offs),
// which is what lets a Go proxy get near nginx's throughput; only a request
// body goes out from a goroutine of its own, so that the answer can be read
// meanwhile. It keeps a LIFO pool of idle keep-alive connections.
type connTransport struct {
	addr           string
	connectTimeout time.Duration
	headerTimeout  time.Duration
	maxIdle        int
	idleTimeout    time.Duration
	dialer         net.Dialer
	// tls, when set, makes every connection HTTPS. Built once per target:
	// its session cache lets a new connection resume instead of doing a
	// full handshake.
	tls *tls.Config

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
	t := &connTransport{
		addr:           addr,
		connectTimeout: o.ConnectTimeout,
		headerTimeout:  o.ResponseHeaderTimeout,
		maxIdle:        o.MaxIdle,
		idleTimeout:    o.IdleTimeout,
		dialer:         net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second},
	}
	if o.TLS.Enabled {
		// Check has accepted o.TLS when the config was compiled.
		t.tls, _ = o.TLS.config(addr)
	}
	return t
}

// TransportOptions configure the connections to one target. They are
// compared on reload: equal options keep the target's pool.
type TransportOptions struct {
	ConnectTimeout        time.Duration
	ResponseHeaderTimeout time.Duration
	MaxIdle               int
	IdleTimeout           time.Duration
	TLS                   TLSOptions
}

type persistConn struct {
	t         *connTransport
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	dw        deadlineWriter
	idleSince time.Time
	reused    bool
	// pc.abandon and pc.sendBody, bound once per connection so that
	// neither the watch nor the body writer costs an allocation.
	abandonFn func()
	sendFn    func()

	// The exchange in progress. The goroutine that reads the answer owns
	// the plain fields; the body writer shares the atomic ones.
	readTimeout time.Duration // the longest pause between two reads of the answer
	continueBy  time.Time     // while waiting for 100 Continue
	inBody      bool          // the final headers are in
	raw         bool          // upgraded: the deadlines are the spliced peers'
	bodyUnsent  bool          // answered before the body was sent: not reusable
	body        requestWriter // what the body writer writes
	writing     bool          // a body writer was started and not joined
	bodyErr     error         // the body writer's result, once joined
	bodyDone    chan error    // made once per connection, on its first body
	// sendState is 0 while the body goes out, then the monotonic time
	// (nanoseconds since epoch, never 0) from which the answer is awaited;
	// -1 when the client's body failed and no answer is awaited.
	sendState atomic.Int64
	cancelled atomic.Bool // the client left
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

// errUpstreamTimeout is returned when the upstream does not answer in time:
// within the response-header timeout, or within the read timeout of a
// pause.
var errUpstreamTimeout = errors.New("upstream timed out")

var (
	// errAbandoned ends a read once the client has left.
	errAbandoned = errors.New("the client left")
	// errBodyFailed ends the wait for an answer once the client's body
	// failed: the upstream waits for a body that will not come.
	errBodyFailed = errors.New("the client's body failed")
)

// expectContinueTimeout is how long an upstream may take to say whether it
// wants a body the client offered with "Expect: 100-continue"; an upstream
// that says nothing gets the body (RFC 9110 section 10.1.1), as curl and
// Go's client do after 1 s.
const expectContinueTimeout = time.Second

// maxInterim bounds the 1xx answers passed on per request (Go's client
// gives up after 5); later ones are dropped.
const maxInterim = 5

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
	conn := pc.conn
	if tc, ok := conn.(*tls.Conn); ok {
		// Unread bytes under TLS are a close_notify or a reset as well:
		// every record an idle connection may get (session tickets come
		// before the first answer) was read with that answer.
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	// A read deadline that expired while the connection sat idle (the
	// last read's, or the body writer's wake-up) would fail the probe
	// before it looks.
	_ = pc.conn.SetReadDeadline(time.Time{})
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
	conn, err := t.dialConn(ctx)
	if err != nil {
		return nil, &dialError{err}
	}
	pc := &persistConn{t: t, conn: conn}
	pc.abandonFn, pc.sendFn = pc.abandon, pc.sendBody
	pc.br = readerPool.Get().(*bufio.Reader)
	pc.br.Reset(connReader{pc})
	pc.dw = deadlineWriter{conn: conn, timeout: t.headerTimeout}
	pc.bw = writerPool.Get().(*bufio.Writer)
	pc.bw.Reset(&pc.dw)
	return pc, nil
}

// dialConn connects to the target and, for HTTPS, completes the handshake
// within the connect timeout: a target that accepts and then says nothing
// is as unreachable as one that refuses.
func (t *connTransport) dialConn(ctx context.Context) (net.Conn, error) {
	network, address := dialNetwork(t.addr)
	conn, err := t.dialer.DialContext(ctx, network, address)
	if err != nil || t.tls == nil {
		return conn, err
	}
	if t.connectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.connectTimeout)
		defer cancel()
	}
	tc := tls.Client(conn, t.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", t.addr, err)
	}
	return tc, nil
}

// dialNetwork is where a target's address is: "unix:/path" is a Unix
// socket (nginx's server unix:/path), anything else host:port over TCP.
func dialNetwork(addr string) (network, address string) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", path
	}
	return "tcp", addr
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

// RoundTrip sends req on a pooled or new connection, with no read timeout
// of its own.
func (t *connTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.exchange(req, stdRequest{req}, 0)
}

// requestWriter puts one request on the wire: the head at once, the body
// (if any) from a goroutine of its own, so that the answer is read while
// the body goes out. req in exchange still supplies the context, the method
// (for reading the answer) and the body's replayability.
type requestWriter interface {
	// writeHead writes the request line and the header section.
	writeHead(bw *bufio.Writer) error
	// writeBody writes the body, framed; a failure to read the client's
	// body is a *clientBodyError.
	writeBody(bw *bufio.Writer) error
	hasBody() bool
	// inlineBody: the body is small and of known length. It fits in the
	// socket buffers, so writing it before the answer is read cannot hide
	// an early answer, and it costs no goroutine.
	inlineBody() bool
	// stopBody ends the reading of the client's body, a read in progress
	// included, without blaming the client: the upstream has answered and
	// the body writer must not wait for a client that holds the rest back.
	stopBody()
	// clientBodyRead reports whether the client's body has been read whole
	// (what is left is writing it to the upstream): stopping the reading is
	// then pointless, and would end a client connection that is fine.
	clientBodyRead() bool
	// expectsContinue: the client offered the body with "Expect:
	// 100-continue", so the upstream decides whether it is sent.
	expectsContinue() bool
	// interim passes a 1xx answer (103 Early Hints) on to the client.
	interim(code int, h http.Header)
}

// stdRequest writes a *http.Request as net/http does (used for upgrades,
// which go through httputil.ReverseProxy and carry no body).
type stdRequest struct{ req *http.Request }

func (s stdRequest) writeHead(bw *bufio.Writer) error { return s.req.Write(bw) }
func (stdRequest) writeBody(*bufio.Writer) error      { return nil }
func (stdRequest) hasBody() bool                      { return false }
func (stdRequest) inlineBody() bool                   { return false }
func (stdRequest) stopBody()                          {}
func (stdRequest) clientBodyRead() bool               { return true }
func (stdRequest) expectsContinue() bool              { return false }
func (stdRequest) interim(int, http.Header)           {}

// exchange sends one request and reads the response headers. readTimeout
// is the longest pause allowed between two reads of the answer.
func (t *connTransport) exchange(req *http.Request, w requestWriter, readTimeout time.Duration) (*http.Response, error) {
	t.inflight.Add(1)
	resp, err := t.roundTripRetry(req, w, readTimeout)
	if err != nil {
		t.inflight.Add(-1)
	}
	return resp, err
}

// roundTripRetry sends a request that failed on a reused connection once
// more, on a fresh one, when mayResend allows it: the upstream most likely
// closed the idle connection as it was picked.
func (t *connTransport) roundTripRetry(req *http.Request, w requestWriter, readTimeout time.Duration) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		pc := t.getIdle(time.Now())
		if pc == nil {
			var err error
			if pc, err = t.dial(req.Context()); err != nil {
				return nil, err
			}
		}
		resp, err := pc.roundTrip(req, w, readTimeout)
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

func (pc *persistConn) roundTrip(req *http.Request, w requestWriter, readTimeout time.Duration) (*http.Response, error) {
	pc.readTimeout, pc.continueBy, pc.inBody, pc.bodyUnsent = readTimeout, time.Time{}, false, false
	pc.dw.written = 0
	// Watch the client until the response body is over, not just until the
	// headers: a client that leaves while the upstream stalls mid-body
	// must free this goroutine. The body's finish stops the watch.
	stop := reqctx.AfterFunc(req.Context(), pc.abandonFn)
	resp, err := pc.send(req, w)
	if err != nil {
		stop.Stop()
		return nil, pc.failed(req, err)
	}

	if resp.StatusCode == http.StatusSwitchingProtocols {
		if pc.writing || !asksUpgrade(req) {
			// Handing the connection over would leave the body writer
			// running on it (and on w, which the caller recycles), or
			// splice a peer that was never asked to switch.
			stop.Stop()
			_ = pc.conn.Close()
			if pc.writing {
				w.stopBody()
				_ = pc.joinBody()
			}
			return nil, errors.New("upstream switched protocols on a request that did not ask to, or before it had the body")
		}
		// The connection now belongs to the spliced peers: no deadlines of
		// edge's own, and none the watch set may linger once it is stopped.
		pc.raw = true
		_ = pc.conn.SetDeadline(time.Time{})
		if err := req.Context().Err(); err != nil {
			stop.Stop()
			return nil, pc.failed(req, err)
		}
		resp.Body = &upgradedConn{pc: pc, stop: stop}
		return resp, nil
	}
	pc.inBody = true
	reusable := !resp.Close && !req.Close && !pc.bodyUnsent
	if resp.Body == http.NoBody && !pc.writing {
		pc.t.inflight.Add(-1)
		// A watch that already fired has poisoned the connection's deadline.
		if stop.Stop() && reusable {
			pc.t.putIdle(pc)
		} else {
			pc.closeConn()
		}
		return resp, nil
	}
	// With the body still going out, even an empty answer waits for the
	// body writer in Close.
	resp.Body = &pooledBody{pc: pc, body: resp.Body, req: w, reusable: reusable, stop: stop}
	return resp, nil
}

// send writes the request and reads the answer's final headers, passing
// 1xx answers on.
func (pc *persistConn) send(req *http.Request, w requestWriter) (*http.Response, error) {
	if err := w.writeHead(pc.bw); err != nil {
		return nil, err
	}
	expecting := false
	switch {
	case !w.hasBody():
		if err := pc.bw.Flush(); err != nil {
			return nil, err
		}
		pc.sendState.Store(sinceEpoch())
	case w.expectsContinue():
		if err := pc.bw.Flush(); err != nil {
			return nil, err
		}
		// The upstream owes an answer now: 100 Continue or a final one.
		pc.sendState.Store(sinceEpoch())
		pc.continueBy = time.Now().Add(expectContinueTimeout)
		expecting = true
	case w.inlineBody():
		err := w.writeBody(pc.bw)
		if err == nil {
			err = pc.bw.Flush()
		}
		if err != nil {
			return nil, err
		}
		pc.sendState.Store(sinceEpoch())
	default:
		pc.startBody(w)
	}
	interim := 0
	for {
		if expecting {
			_, err := pc.br.Peek(1)
			if err != nil {
				if !isTimeout(err) || pc.cancelled.Load() || time.Now().Before(pc.continueBy) {
					return nil, err
				}
				// No word from the upstream: send the body anyway.
				expecting, pc.continueBy = false, time.Time{}
				pc.startBody(w)
				continue
			}
		}
		resp, err := readAnswer(pc.br, req)
		if err != nil {
			return nil, err
		}
		code := resp.StatusCode
		if code >= 200 || code == http.StatusSwitchingProtocols {
			if expecting {
				pc.bodyUnsent = true
			}
			return resp, nil
		}
		if code == http.StatusContinue {
			if expecting {
				expecting, pc.continueBy = false, time.Time{}
				pc.startBody(w)
			}
			continue
		}
		// net/http writes a 1xx without the lock its automatic 100
		// Continue takes, which the body writer's first read of an
		// expect-continue body may be sending: skip hints then.
		interim++
		if interim <= maxInterim && !(pc.writing && w.expectsContinue()) {
			w.interim(code, resp.Header)
		}
	}
}

// startBody sends the body from a goroutine of its own, so that an early
// answer (a 413 or 401 decided on the headers) is read while it goes out.
func (pc *persistConn) startBody(w requestWriter) {
	if pc.bodyDone == nil {
		pc.bodyDone = make(chan error, 1)
	}
	pc.sendState.Store(0)
	pc.body, pc.writing, pc.bodyErr = w, true, nil
	go pc.sendFn()
}

func (pc *persistConn) sendBody() {
	err := pc.body.writeBody(pc.bw)
	if err == nil {
		err = pc.bw.Flush()
	}
	state := sinceEpoch()
	if isClientBodyError(err) {
		state = -1
	}
	pc.sendState.Store(state)
	// Wake the reader: a read waiting without a deadline while the body
	// went out now has one, or, with the client's body broken, ends.
	_ = pc.conn.SetReadDeadline(time.Now())
	pc.bodyDone <- err
}

// bodyFinished reports, without waiting, whether the body writer is done.
func (pc *persistConn) bodyFinished() bool {
	if !pc.writing {
		return true
	}
	select {
	case pc.bodyErr = <-pc.bodyDone:
		pc.writing, pc.body = false, nil
		return true
	default:
		return false
	}
}

// joinBody waits for the body writer and returns its result.
func (pc *persistConn) joinBody() error {
	if pc.writing {
		pc.bodyErr = <-pc.bodyDone
		pc.writing, pc.body = false, nil
	}
	return pc.bodyErr
}

// asksUpgrade reports whether req offered to switch protocols.
func asksUpgrade(req *http.Request) bool {
	return req.Header.Get("Upgrade") != "" && httphdr.HasToken(req.Header["Connection"], "upgrade")
}

func isClientBodyError(err error) bool {
	var cb *clientBodyError
	return err != nil && errors.As(err, &cb)
}

// failed ends a failed exchange: it stops a body writer (closing the
// connection makes its writes fail) and says whose fault it was.
func (pc *persistConn) failed(req *http.Request, err error) error {
	if isClientBodyError(err) && req.Context().Err() == nil {
		return err // an inline body
	}
	if pc.writing {
		_ = pc.conn.Close()
		if berr := pc.joinBody(); isClientBodyError(berr) && req.Context().Err() == nil {
			return berr
		}
	}
	if ctxErr := req.Context().Err(); ctxErr != nil {
		return ctxErr
	}
	if isTimeout(err) {
		return errUpstreamTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		err = fmt.Errorf("upstream closed the connection: %w", err)
	}
	if pc.dw.written == 0 {
		return &notSentError{err}
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// abandon is the watch's action when the client leaves: every read and
// write on the connection fails from now on.
func (pc *persistConn) abandon() {
	pc.cancelled.Store(true)
	_ = pc.conn.SetDeadline(aLongTimeAgo)
}

var aLongTimeAgo = time.Unix(1, 0)

// epoch makes sendState a monotonic time that fits an atomic integer.
var epoch = time.Now()

func sinceEpoch() int64 { return int64(time.Since(epoch)) + 1 }

// readDeadline is the deadline of the next read of the answer. While the
// body goes out there is none (the upstream may read all of it before it
// answers); then the answer's headers must come within the
// response-header timeout and the read timeout, whichever is shorter, and
// each later read within the read timeout of the one before.
func (pc *persistConn) readDeadline(state int64, now time.Time) time.Time {
	if pc.inBody {
		if pc.readTimeout <= 0 {
			return time.Time{}
		}
		return now.Add(pc.readTimeout)
	}
	var d time.Time
	if wait := headerWait(pc.t.headerTimeout, pc.readTimeout); state > 0 && wait > 0 {
		d = epoch.Add(time.Duration(state - 1 + int64(wait)))
	}
	if !pc.continueBy.IsZero() && (d.IsZero() || pc.continueBy.Before(d)) {
		d = pc.continueBy
	}
	return d
}

// headerWait is how long an upstream may take to begin its answer once it
// has the request: the shorter of the two timeouts that are set.
func headerWait(header, read time.Duration) time.Duration {
	if header <= 0 || (read > 0 && read < header) {
		return read
	}
	return header
}

// connReader reads the answer, setting the deadline of each read. The body
// writer and the client's watch change the state the deadline comes from
// and then set a deadline themselves to wake a read in progress; a timeout
// before the deadline this reader set is such a wake-up, and the read is
// tried again under the new state.
type connReader struct{ pc *persistConn }

func (r connReader) Read(p []byte) (int, error) {
	pc := r.pc
	if pc.raw {
		return pc.conn.Read(p)
	}
	for {
		state := pc.sendState.Load()
		if state < 0 && !pc.inBody {
			return 0, errBodyFailed
		}
		d := pc.readDeadline(state, time.Now())
		_ = pc.conn.SetReadDeadline(d)
		if pc.cancelled.Load() {
			return 0, errAbandoned
		}
		if pc.sendState.Load() != state {
			continue
		}
		n, err := pc.conn.Read(p)
		if n == 0 && err != nil && isTimeout(err) && !pc.cancelled.Load() && (d.IsZero() || time.Now().Before(d)) {
			continue
		}
		return n, err
	}
}

// pooledBody returns its connection to the pool once the body was read to
// the end, and closes it when the reader gives up early.
type pooledBody struct {
	pc       *persistConn
	body     io.ReadCloser
	req      requestWriter
	reusable bool
	done     bool
	// unjoined: the answer ended while the body writer was still sending;
	// Close joins it, once the caller has passed the answer on.
	unjoined bool
	stop     reqctx.Registration // ends the watch on the client's context
}

func (b *pooledBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		// A broken client body closed the connection under this read:
		// report the cause, not the symptom.
		if berr := b.finish(false); isClientBodyError(berr) {
			err = berr
		}
	}
	return n, err
}

// sending reports whether the request body is still going out: the
// upstream answered before it had all of it.
func (b *pooledBody) sending() bool { return b.unjoined || !b.done && !b.pc.bodyFinished() }

// finish ends the exchange and returns the body writer's result, if it is
// done.
func (b *pooledBody) finish(complete bool) error {
	if b.done {
		return nil
	}
	b.done = true
	pc := b.pc
	pc.t.inflight.Add(-1)
	if !pc.bodyFinished() {
		// The answer is over before the body: the upstream did not want
		// the rest, and the connection is in no state to reuse. Waiting
		// for the writer here would hold the answer's last bytes back
		// until the client sends more of a body nobody wants.
		_ = pc.conn.Close()
		b.unjoined = true
		return nil
	}
	berr := pc.bodyErr
	// stop is false when the watch already fired: the connection's deadline
	// is in the past and it cannot be reused.
	if b.stop.Stop() && complete && b.reusable && berr == nil {
		pc.t.putIdle(pc)
	} else {
		pc.closeConn()
	}
	return berr
}

// Close before EOF closes the connection first: net/http's response body
// would otherwise drain the rest, which never ends on an event stream.
func (b *pooledBody) Close() error {
	if b.done {
		if b.unjoined {
			b.unjoined = false
			b.stop.Stop()
			// The answer ended before the body was sent. Unless the writer
			// has since sent all of it, the rest of the client's body is
			// unwanted, whether the writer still waits for it or already
			// gave up on the closed upstream connection: either way the
			// client's connection must not wait to drain it.
			if !b.pc.bodyFinished() && !b.req.clientBodyRead() || b.pc.bodyErr != nil {
				b.req.stopBody()
			}
			_ = b.pc.joinBody()
			b.pc.closeConn()
		}
		return nil
	}
	b.done = true
	b.stop.Stop()
	pc := b.pc
	pc.t.inflight.Add(-1)
	_ = pc.conn.Close()
	b.joinWriter()
	_ = b.body.Close()
	pc.closeConn()
	return nil
}

// joinWriter waits for a body writer the upstream's answer or a closed
// connection has made pointless. Its write fails on the closed connection,
// but it may be waiting for the client instead.
func (b *pooledBody) joinWriter() {
	if !b.pc.bodyFinished() {
		b.req.stopBody()
		_ = b.pc.joinBody()
	}
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
	stop   reqctx.Registration
	closed atomic.Bool
}

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.pc.br.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.pc.conn.Write(p) }
func (u *upgradedConn) Close() error {
	if u.closed.CompareAndSwap(false, true) {
		u.stop.Stop()
		u.pc.t.inflight.Add(-1)
	}
	return u.pc.conn.Close()
}
