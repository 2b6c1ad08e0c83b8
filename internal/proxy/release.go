package proxy

import (
	"net/http"
	"time"
)

// ForUpstream returns the route's proxy h, made by NewProxy, sending to u
// instead: a release's next version is served by the same route, so every
// option of the route applies to both versions. readTimeout is the
// route's own (0: each upstream's).
func ForUpstream(h http.Handler, u *Upstream, readTimeout time.Duration) http.Handler {
	o := h.(*proxyHandler).opts
	o.Upstream, o.ReadTimeout = u, readTimeout
	return NewProxy(o)
}
