package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strings"

	"edge/internal/apierror"
	"edge/internal/config"
	"edge/internal/identity"
)

// guard stands before the admin API. A browser page the operator
// visits can reach a loopback listener two ways: by pointing its own name
// at 127.0.0.1 (DNS rebinding: the request is then same-origin, and its
// Host is the page's name), or by a plain cross-origin POST to
// http://127.0.0.1:9180 (the browser sends it, even if the page cannot read
// the answer). The first is refused by Host, the second by the browser's
// Sec-Fetch-Site / Origin headers. server.admin_token then keeps out
// whoever else reaches the listener. The settings are read from the
// current snapshot, so a reload applies them.
func guard(g Gateway, next http.Handler) http.Handler {
	crossOrigin := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc := g.Server()
		if !HostAllowed(r.Host, sc.AdminHosts) {
			apierror.Write(w, r, apierror.Forbidden, "the admin listener does not answer this Host; add the name to server.admin_hosts")
			return
		}
		if crossOrigin.Check(r) != nil {
			apierror.Write(w, r, apierror.Forbidden, "cross-origin request to the admin listener refused")
			return
		}
		if !authorized(r, sc) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edge admin"`)
			apierror.Write(w, r, apierror.AuthMissing, "send Authorization: Bearer <server.admin_token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// HostAllowed reports whether a loopback listener may answer a request
// with this Host: IP literals and localhost cannot be a rebound name;
// other names only when the operator listed them. No Host at all (an
// HTTP/1.0 health check) cannot come from a browser.
func HostAllowed(hostport string, listed []string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	if host == "" || strings.EqualFold(host, "localhost") {
		return true
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	for _, name := range listed {
		if strings.EqualFold(host, name) {
			return true
		}
	}
	return false
}

// authorized checks server.admin_token. Probes and the metrics scrape
// stay open: load balancers and Prometheus poll them, often without a
// way to send a token, and they change nothing and hold no client data.
func authorized(r *http.Request, sc *config.Server) bool {
	want := sc.AdminToken.Value()
	if want == "" {
		return true
	}
	switch r.URL.Path {
	case "/healthz", "/readyz", "/metrics":
		return true
	}
	// The dashboard's page, script and style hold no data and no secret:
	// a browser cannot send a token with a navigation, so the page loads
	// without one and sends it (asked of the operator) with each /api/
	// call, which stays guarded.
	if p := path.Clean(r.URL.Path); r.Method == http.MethodGet && (p == "/dashboard" || strings.HasPrefix(p, "/dashboard/")) {
		return true
	}
	got, ok := identity.Bearer(r.Header)
	// Hashes have one length, so the comparison says nothing about the
	// token's length either.
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return ok && subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
