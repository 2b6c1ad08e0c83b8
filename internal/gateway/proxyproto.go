package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyProtocolListener reads the PROXY protocol header (v1 or v2) that a
// TCP load balancer sends before the client's bytes, so that the
// connection's RemoteAddr is the client and everything after it (the
// HTTP/1.1 front, net/http's HTTP/2, clientIP, limits, the access log)
// sees the client without knowing the header existed.
//
// The header is demanded from the sources in from, as nginx demands it on
// a `listen ... proxy_protocol`: a balancer that stopped sending it is a
// misconfiguration to notice, not traffic to attribute to the balancer.
// Anyone else's bytes are not looked at (go-proxyproto hands the raw
// connection back), so a forged header is garbage to TLS or HTTP, and a
// client reaching edge directly (in-cluster, a node) still gets through.
// The header is awaited in the connection's own goroutine (on its first
// read), never in Accept, and for at most timeout.
//
// With from empty ln is returned as it is: a listener without PROXY
// protocol costs nothing.
//
// admit applies the client's connection cap and IP lists once its header
// is read (limits.Engine.AdmitClient): the balancer's own address is
// exempt from them at accept, as it carries many clients.
func proxyProtocolListener(ln net.Listener, from []netip.Prefix, timeout time.Duration, admit clientAdmission) net.Listener {
	if len(from) == 0 {
		return ln
	}
	policy := func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
		if ta, ok := o.Upstream.(*net.TCPAddr); ok && fromTrusted(from, ta.AddrPort().Addr().Unmap()) {
			return proxyproto.REQUIRE, nil
		}
		return proxyproto.SKIP, nil
	}
	return &ppListener{Listener: &proxyproto.Listener{
		Listener:          ln,
		ConnPolicy:        policy,
		ValidateHeader:    validProxyHeader,
		ReadHeaderTimeout: timeout,
	}, admit: admit}
}

// clientAdmission admits one connection of the client a PROXY header
// names; release ends its count.
type clientAdmission func(ip netip.Addr) (release func(), ok bool)

var errClientRefused = errors.New("the client the PROXY header names is refused a connection")

func fromTrusted(from []netip.Prefix, ip netip.Addr) bool {
	for _, p := range from {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

var errProxyTransport = errors.New("PROXY header is not for a TCP connection")

// validProxyHeader takes TCP over IPv4 or IPv6, and LOCAL (a balancer's
// own health check: the connection keeps the balancer's address). A UDP
// or Unix socket address is no client address clientIP could use.
func validProxyHeader(h *proxyproto.Header) error {
	if h.Command.IsLocal() {
		return nil
	}
	switch h.TransportProtocol {
	case proxyproto.TCPv4, proxyproto.TCPv6:
		return nil
	}
	return fmt.Errorf("%w: %v", errProxyTransport, h.TransportProtocol)
}

type ppListener struct {
	net.Listener
	admit clientAdmission
}

func (l *ppListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if pc, ok := c.(*proxyproto.Conn); ok {
		return &ppConn{Conn: pc, admit: l.admit}, err
	}
	return c, err
}

// ppConn admits the client its header names on the first read (the
// header is read then, in the connection's own goroutine), and passes a
// half-close on to the TCP connection, which proxyproto.Conn does not:
// the HTTP/1.1 front ends a plain answer with one before it closes.
type ppConn struct {
	*proxyproto.Conn
	admit clientAdmission

	once     sync.Once
	refused  bool
	mu       sync.Mutex
	release  func()
	released bool
}

func (c *ppConn) Read(p []byte) (int, error) {
	c.once.Do(c.admitClient)
	if c.refused {
		return 0, errClientRefused
	}
	return c.Conn.Read(p)
}

// admitClient runs once the header is read. A connection without one
// (from a source edge does not ask it of) or with a LOCAL one keeps the
// peer's own address, already admitted at accept.
func (c *ppConn) admitClient() {
	ta, ok := c.Conn.RemoteAddr().(*net.TCPAddr)
	if !ok || c.Conn.ProxyHeader() == nil || c.Conn.ProxyHeader().Command.IsLocal() {
		return
	}
	release, ok := c.admit(ta.AddrPort().Addr().Unmap())
	if !ok {
		c.refused = true
		_ = c.Conn.Close()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		// Closed while the header was read.
		release()
		return
	}
	c.release = release
}

func (c *ppConn) Close() error {
	c.mu.Lock()
	if !c.released {
		c.released = true
		if c.release != nil {
			c.release()
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

func (c *ppConn) CloseWrite() error {
	if cw, ok := c.Raw().(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
