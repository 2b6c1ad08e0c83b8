package limits

import (
	"hash/maphash"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/metrics"
)

// Reasons a connection is refused at accept, the reason label of
// edge_connections_refused_total.
const (
	refuseMaxConns      = "max_conns"
	refuseMaxConnsPerIP = "max_conns_per_ip"
)

// connTracker counts open connections, in total and per peer IP. Its map
// holds only IPs with a connection open, so it is bounded by the number of
// open connections.
type connTracker struct {
	mu      sync.Mutex
	total   int
	perIP   map[netip.Addr]int
	open    prometheus.Gauge
	refused map[string]prometheus.Counter
}

func newConnTracker(m *metrics.Limits) *connTracker {
	refused := make(map[string]prometheus.Counter)
	for _, r := range []string{refuseMaxConns, refuseMaxConnsPerIP, reasonIPDenied, reasonIPNotAllowed} {
		refused[r] = m.ConnRefused(r)
	}
	return &connTracker{perIP: make(map[netip.Addr]int), open: m.ConnsOpen(), refused: refused}
}

// admit decides one new connection from ip; "" means admitted (and
// counted until release).
func (t *connTracker) admit(s *snapshot, ip netip.Addr, trusted bool) string {
	if !trusted {
		if reason := s.access.check(ip); reason != "" {
			return reason
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.maxConns > 0 && t.total >= s.maxConns {
		return refuseMaxConns
	}
	if !trusted && s.maxConnsPerIP > 0 && t.perIP[ip] >= s.maxConnsPerIP {
		return refuseMaxConnsPerIP
	}
	t.total++
	t.perIP[ip]++
	t.open.Inc()
	return ""
}

// admitClient decides one connection of a client a balancer in
// server.proxy_protocol_from passed on, by the address its PROXY header
// names: the IP lists and max_conns_per_ip apply to it as to a client
// that connects itself. The balancer's connection already counts towards
// max_conns; this counts the client's IP only ("" means admitted, until
// releaseClient).
func (t *connTracker) admitClient(s *snapshot, ip netip.Addr) string {
	if reason := s.access.check(ip); reason != "" {
		return reason
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.maxConnsPerIP > 0 && t.perIP[ip] >= s.maxConnsPerIP {
		return refuseMaxConnsPerIP
	}
	t.perIP[ip]++
	return ""
}

func (t *connTracker) releaseClient(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.perIP[ip] - 1; n > 0 {
		t.perIP[ip] = n
	} else {
		delete(t.perIP, ip)
	}
}

func (t *connTracker) release(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total--
	if n := t.perIP[ip] - 1; n > 0 {
		t.perIP[ip] = n
	} else {
		delete(t.perIP, ip)
	}
	t.open.Dec()
}

// AdmitClient is the connection cap and IP lists for a client behind a
// balancer that sends the PROXY protocol, applied once its header is
// read: without it, one client could open connections up to max_conns
// through the balancer and lock every other client out. ok false: the
// connection is refused (counted); otherwise release ends its count when
// it closes.
func (e *Engine) AdmitClient(ip netip.Addr) (release func(), ok bool) {
	t := e.conns
	if s := e.snap.Load(); !s.trusted.contains(ip) {
		if reason := t.admitClient(s, ip); reason != "" {
			t.refused[reason].Inc()
			return nil, false
		}
		return func() { t.releaseClient(ip) }, true
	}
	return func() {}, true
}

// Listener wraps the raw TCP listener (beneath TLS) so that a connection
// over access.max_conns, over access.max_conns_per_ip for its peer, or from
// a denied network is closed at once, before any TLS or HTTP work. Peers in
// server.trusted_proxies or server.proxy_protocol_from are exempt from the
// per-IP cap and IP lists: each carries many clients, which are checked per
// request instead (by X-Forwarded-For or the PROXY header, read after
// accept). The caps follow reloads.
func (e *Engine) Listener(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, e: e}
}

type limitedListener struct {
	net.Listener
	e *Engine
}

// Accept returns the next admitted connection; refused ones are closed and
// counted without returning an error, which http.Server would take for a
// broken listener.
func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var ip netip.Addr
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip = ta.AddrPort().Addr().Unmap()
		}
		s := l.e.snap.Load()
		t := l.e.conns
		reason := t.admit(s, ip, s.trusted.contains(ip))
		if reason == "" {
			return &limitedConn{Conn: c, t: t, ip: ip}, nil
		}
		t.refused[reason].Inc()
		_ = c.Close()
	}
}

type limitedConn struct {
	net.Conn
	t      *connTracker
	ip     netip.Addr
	closed atomic.Bool
}

// CloseWrite passes a half-close on to the TCP connection (the HTTP/1.1
// front ends an answer with it before it closes).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *limitedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.t.release(c.ip)
	}
	return c.Conn.Close()
}

// inflight counts requests in progress per key on this replica, in
// shards: each openid's, and each client IP's per route. A key leaves the
// map when its last request ends, so the map is bounded by the requests in
// progress.
type inflight[K comparable] struct {
	seed   maphash.Seed
	hash   func(maphash.Seed, K) uint64
	shards [shardCount]struct {
		mu sync.Mutex
		m  map[K]int32
		_  [40]byte
	}
}

func newInflight[K comparable](hash func(maphash.Seed, K) uint64) *inflight[K] {
	f := &inflight[K]{seed: maphash.MakeSeed(), hash: hash}
	for i := range f.shards {
		f.shards[i].m = make(map[K]int32)
	}
	return f
}

// routeIP is the key of max_inflight_per_ip: the route's name (from the
// config, so the count survives a reload) and the client's address.
type routeIP struct {
	route string
	ip    netip.Addr
}

// hashRouteIP spreads by address alone: the routes of one client share a
// shard, which costs nothing, and hashing the name too would cost time.
func hashRouteIP(seed maphash.Seed, k routeIP) uint64 {
	a := k.ip.As16()
	return maphash.Bytes(seed, a[:])
}

func (f *inflight[K]) acquire(k K, limit int) bool {
	s := &f.shards[f.hash(f.seed, k)%shardCount]
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.m[k]
	if int(n) >= limit {
		return false
	}
	s.m[k] = n + 1
	return true
}

func (f *inflight[K]) release(k K) {
	s := &f.shards[f.hash(f.seed, k)%shardCount]
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.m[k] - 1; n > 0 {
		s.m[k] = n
	} else {
		delete(s.m, k)
	}
}
