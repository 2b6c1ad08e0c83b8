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
