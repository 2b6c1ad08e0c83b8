// Package h1 serves HTTP/1.1 on edge's listeners without net/http's
// per-request work: no header map, context, request copy or goroutine per
// request, one pooled set of buffers per connection. It takes the common
// request shape (an origin-form HTTP/1.1 request with no body or a
// Content-Length body, no Upgrade, no Expect, no Transfer-Encoding) and
// hands every other connection, with the bytes it has read, to a net/http
// server: HTTP/2 by ALPN, WebSocket upgrades, chunked uploads, 100-continue,
// HTTP/1.0, absolute-form targets. Both paths run the same handler, and
// heads the front refuses (RFC 9112's smuggling shapes) are refused before
// either sees them.
package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Server.
type Options struct {
	// Handler serves every request, on this front and on the fallback.
	Handler http.Handler
	// Fallback serves the connections handed over; its Handler and
	// ConnContext are set by New. Its TLSNextProto serves HTTP/2.
	Fallback *http.Server
	// TLSConfig, when set, makes this an HTTPS front; its NextProtos are
	// offered by ALPN.
	TLSConfig *tls.Config

	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// WriteTimeout bounds each answer from the end of its head; 0 is none.
	WriteTimeout   time.Duration
	MaxHeaderBytes int

	// Logger receives the panics of the handler (other than
	// http.ErrAbortHandler); nil is slog.Default.
	Logger *slog.Logger
	// RequestID makes the id of an answer the front gives itself (a
	// refused head); nil leaves it empty.
	RequestID func() string
	// HandshakeFailed is told of each failed TLS handshake.
	HandshakeFailed func(error)
	// Refused, when set, is told of each head the front refused (it has
	// answered it and closes the connection): a request that never reaches
	// the Handler still belongs in the access log and the metrics.
	Refused func(RefusedHead)
	// OpenConns counts the connections this front serves itself (the
	// fallback counts those handed to it).
	OpenConns interface {
		Inc()
		Dec()
	}
}

// RefusedHead is a request head the front answered with 400 or 431
// itself. Method and Path are as far as the head was read (empty for a
// head too large to read); both are the client's bytes.
type RefusedHead struct {
	Status    int
	Problem   string
	RequestID string
	Method    string
	Path      string
	Peer      net.Addr
	Start     time.Time
}

// Server is one listener's HTTP/1.1 front.
type Server struct {
	opts    Options
	handoff *handoffListener

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*conn]struct{}
	draining atomic.Bool
	closed   chan struct{}
}

// New returns a Server; Serve starts it.
func New(o Options) *Server {
	s := &Server{
		opts:    o,
		handoff: newHandoffListener(),
		conns:   make(map[*conn]struct{}),
		closed:  make(chan struct{}),
	}
	o.Fallback.Handler = withTLSState(o.Handler)
	o.Fallback.ConnContext = connContext
	return s
}

// Serve accepts connections on ln until Shutdown or Close, and runs the
// fallback server on the connections handed over. It returns
// http.ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go func() { _ = s.opts.Fallback.Serve(s.handoff) }()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.draining.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := &conn{s: s, nc: nc}
		if !s.track(c) {
			nc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, closes idle connections, lets each busy one
// finish its answer (with Connection: close) and waits for them, then
// shuts the fallback down the same way. On ctx's end it returns ctx's
// error; the caller then calls Close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.closeIdle() == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return s.opts.Fallback.Shutdown(ctx)
}

// closeIdle closes the connections waiting for a request and reports how
// many are left.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.nc.Close()
		}
	}
	return len(s.conns)
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.draining.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.state.Store(stateClosed)
		c.nc.Close()
	}
	s.mu.Unlock()
	return s.opts.Fallback.Close()
}

// handoffListener is the fallback server's listener: the connections the
// front hands over arrive through it.
type handoffListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newHandoffListener() *handoffListener {
	return &handoffListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return handoffAddr{} }

// give hands c to the fallback server; false when it has stopped.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "handoff" }

// replayConn is a connection handed over after the front read from it: its
// reads return what the front buffered first.
type replayConn struct {
	net.Conn
	buffered interface {
		Buffered() int
		Read([]byte) (int, error)
	}
	tls *tls.Conn
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.buffered != nil {
		if c.buffered.Buffered() > 0 {
			return c.buffered.Read(p)
		}
		c.buffered = nil
	}
	return c.Conn.Read(p)
}

type tlsStateKey struct{}

// connContext keeps the TLS state of a handed-over HTTPS connection, which
// net/http cannot see through the replaying wrapper.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if rc, ok := c.(*replayConn); ok && rc.tls != nil {
		st := rc.tls.ConnectionState()
		return context.WithValue(ctx, tlsStateKey{}, &st)
	}
	return ctx
}

func withTLSState(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
				r.TLS = st
			}
		}
		h.ServeHTTP(w, r)
	})
}
