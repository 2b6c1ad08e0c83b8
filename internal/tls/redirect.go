package tls

import (
	stdtls "crypto/tls"
	"net"
	"net/http"
	"strconv"
	"strings"

	"edge/internal/config"
)

// RedirectHandler is the port-80 answer to everything but ACME challenges:
// a 308 to the same host, path and query on HTTPS (308 keeps the method and
// body of a POST, unlike 301/302). Hosts in exempt (exact or "*.wildcard",
// tls.http_redirect_exempt) are passed to plain instead. httpsPort is the
// HTTPS listener's port; 443 is left out of the URL.
func RedirectHandler(httpsPort string, exempt []string, plain http.Handler) http.Handler {
	ex := newCertSet()
	for _, h := range exempt {
		ex.add(exemptCert, []string{h})
	}
	suffix := ""
	if httpsPort != "" && httpsPort != "443" {
		suffix = ":" + httpsPort
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := normalizeName(r.Host)
		if host == "" {
			http.Error(w, "missing Host header", http.StatusBadRequest)
			return
		}
		if ex.match(host) != nil {
			plain.ServeHTTP(w, r)
			return
		}
		if strings.IndexByte(host, ':') >= 0 {
			host = "[" + host + "]"
		}
		http.Redirect(w, r, "https://"+host+suffix+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// exemptCert marks exempt hosts in the name index RedirectHandler reuses;
// it is never served.
var exemptCert = new(stdtls.Certificate)

// HSTSValue is the Strict-Transport-Security header value for h, or "" when
// no header is to be sent.
func HSTSValue(h config.HSTS) string {
	if h.MaxAge <= 0 {
		return ""
	}
	v := "max-age=" + strconv.FormatInt(int64(h.MaxAge.Std().Seconds()), 10)
	if h.IncludeSubdomains {
		v += "; includeSubDomains"
	}
	if h.Preload {
		v += "; preload"
	}
	return v
}

// PortOf returns the port of a listen address (":443" -> "443"), for
// RedirectHandler.
func PortOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return port
}
