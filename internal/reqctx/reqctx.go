// Package reqctx carries what edge learns about one request (its id, the
// client address, the matched route, the verified identity, the upstream
// target) from the first handler to the access log, in one pooled value.
package reqctx

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Info is filled in as the request moves along the chain. Fields are written
// by one goroutine (the request's) and read by the access log after the
// handler returns, so they need no locking.
type Info struct {
	Start     time.Time
	RequestID string
	ClientIP  netip.Addr
	// PeerTrusted is true when the TCP peer is in server.trusted_proxies, so
	// headers it sets about the client (X-Forwarded-For, X-WX-OPENID on
	// trusted_header routes) may be believed.
	PeerTrusted bool
	Route       string // route name from the config; "" when none matched
	Upstream    string // upstream name
	Target      string // target address that answered
	// UpstreamDuration is the time spent waiting for and reading the
	// upstream's response headers, summed over retries.
	UpstreamDuration time.Duration

	// Identity, set only by code that verified it.
	OpenID  string
	UnionID string
	AppID   string

	// Upgraded is set when the upstream switched protocols (WebSocket).
	Upgraded bool

	// WAF is what the firewall did: "pass", "detect" or "block"; "" on
	// routes without it. WAFRules are the ids of the rules that matched,
	// comma-separated.
	WAF      string
	WAFRules string
	// Cache is what the response cache did (X-Cache: "HIT", "MISS",
	// "STALE", "REVALIDATED", "BYPASS"); "" on routes without one.
	Cache string
	// Reason is a short machine word for why edge answered itself
	// (e.g. "no_route", "body_too_large", "upstream_down").
	Reason string
}

type ctxKey struct{}

var pool = sync.Pool{New: func() any { return new(Info) }}

// New returns a cleared Info from the pool.
func New(start time.Time) *Info {
	info := pool.Get().(*Info)
	*info = Info{Start: start}
	return info
}

// Release returns info to the pool; it must not be used afterwards.
func Release(info *Info) { pool.Put(info) }

// With returns ctx carrying info.
func With(ctx context.Context, info *Info) context.Context {
	return context.WithValue(ctx, ctxKey{}, info)
}

// From returns the Info of the request, or nil outside edge's chain.
func From(ctx context.Context) *Info {
	info, _ := ctx.Value(ctxKey{}).(*Info)
	return info
}

// FromRequest is From(r.Context()).
func FromRequest(r *http.Request) *Info { return From(r.Context()) }

// Holder is a request context that carries one Info at a time: a server
// that reuses its *http.Request from request to request (the HTTP/1.1
// front) binds the request to a Holder once, and the gateway sets the
// request's Info into it instead of deriving a new context and request
// copy each time. The server ends it (Cancel) when the client goes away
// mid-request, and readies it for the next request with Reset.
//
// Nothing is made for a request that never asks for Done: its channel, and
// the server's watch for a client that left (the watch function, called
// on the first Done of each request), start only when asked for.
type Holder struct {
	context.Context
	info *Info

	mu     sync.Mutex
	done   chan struct{}
	err    error
	after  []afterFunc
	nextID uint64
	armed  bool
	watch  func()
}

type afterFunc struct {
	id uint64
	f  func()
}

// NewHolder returns an empty Holder; watch (may be nil) is called on the
// first Done or AfterFunc of each request.
func NewHolder(watch func()) *Holder {
	return &Holder{Context: context.Background(), watch: watch}
}

// SetWatch replaces the watch function (a pooled Holder changes server
// connection).
func (h *Holder) SetWatch(watch func()) {
	h.mu.Lock()
	h.watch = watch
	h.mu.Unlock()
}

// Set makes info the Info of the request bound to h; nil clears it.
func (h *Holder) Set(info *Info) { h.info = info }

// Reset readies h for the next request.
func (h *Holder) Reset() {
	h.mu.Lock()
	h.info, h.done, h.err, h.armed = nil, nil, nil, false
	clear(h.after)
	h.after = h.after[:0]
	h.mu.Unlock()
}

// Value answers the Info key from the Holder.
func (h *Holder) Value(key any) any {
	if _, ok := key.(ctxKey); ok {
		if h.info == nil {
			return nil
		}
		return h.info
	}
	return h.Context.Value(key)
}

// Done is closed when the server cancels the request.
func (h *Holder) Done() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done == nil {
		h.done = make(chan struct{})
		if h.err != nil {
			close(h.done)
		}
	}
	h.armLocked()
	return h.done
}

// armLocked starts the server's watch once per request, for the first
// caller that waits on the request's end.
func (h *Holder) armLocked() {
	if !h.armed {
		h.armed = true
		if h.err == nil && h.watch != nil {
			h.watch()
		}
	}
}

// Err is context.Canceled once the request was cancelled.
func (h *Holder) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// AfterFunc runs f in its own goroutine when the request is cancelled;
// context.AfterFunc and the contexts derived from h use it instead of a
// goroutine each.
func (h *Holder) AfterFunc(f func()) (stop func() bool) {
	id := h.register(f)
	return func() bool { return h.unregister(id) }
}

// register adds f to run on Cancel and returns its id; 0 means the request
// has already ended and f was started.
func (h *Holder) register(f func()) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armLocked()
	if h.err != nil {
		go f()
		return 0
	}
	h.nextID++
	h.after = append(h.after, afterFunc{id: h.nextID, f: f})
	return h.nextID
}

// unregister removes the callback id; false when it ran or was removed.
func (h *Holder) unregister(id uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, a := range h.after {
		if a.id == id {
			h.after = append(h.after[:i], h.after[i+1:]...)
			return true
		}
	}
	return false
}

// Cancel ends the request's context: the client went away.
func (h *Holder) Cancel() {
	h.mu.Lock()
	if h.err != nil {
		h.mu.Unlock()
		return
	}
	h.err = context.Canceled
	if h.done != nil {
		close(h.done)
	}
	fns := h.after
	h.after = nil
	h.mu.Unlock()
	for _, a := range fns {
		go a.f()
	}
}

// HolderOf returns the Holder ctx is, if it is one.
func HolderOf(ctx context.Context) (*Holder, bool) {
	h, ok := ctx.(*Holder)
	return h, ok
}

// Registration is a callback registered by AfterFunc, until Stop.
type Registration struct {
	h    *Holder
	id   uint64
	stop func() bool
}

// Stop keeps the callback from running; false when it has run or was
// stopped already (context.AfterFunc's stop).
func (r Registration) Stop() bool {
	if r.h != nil {
		return r.id != 0 && r.h.unregister(r.id)
	}
	return r.stop()
}

// AfterFunc is context.AfterFunc, without the wrapping contexts or a stop
// closure when ctx is a Holder (the HTTP/1.1 front's requests).
func AfterFunc(ctx context.Context, f func()) Registration {
	if h, ok := HolderOf(ctx); ok {
		return Registration{h: h, id: h.register(f)}
	}
	return Registration{stop: context.AfterFunc(ctx, f)}
}
