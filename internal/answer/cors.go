package answer

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"edge/internal/apierror"
	"edge/internal/reqctx"
)

// CORSOptions configure a route's cross-origin answers.
type CORSOptions struct {
	// Origins allowed: "https://h5.example.com" (exact), "https://*.example.com"
	// (any subdomain, not example.com itself), or "*" (any origin, never
	// with Credentials). An entry without a scheme means https.
	Origins []string
	// Methods listed in preflight answers.
	Methods []string
	// Headers listed in preflight answers; empty reflects the headers the
	// preflight asks for (the origin is already on the allow-list).
	Headers []string
	// Expose are response headers the page's script may read.
	Expose      []string
	Credentials bool
	// MaxAge is how long a browser may cache a preflight answer.
	MaxAge time.Duration
}

// CORS answers preflights and sets the Access-Control-* headers of one
// route. It owns them: those the upstream sets are replaced, so an
// upstream's "Access-Control-Allow-Origin: *" cannot widen the allow-list.
type CORS struct {
	any      bool
	exact    []string
	suffixes []originSuffix
	creds    []string // nil without credentials
	methods  []string
	headers  []string // nil: reflect the preflight's
	expose   []string
	maxAge   []string
	vary     []string // nil when the answer does not depend on Origin
}

// originSuffix matches "scheme://<labels>.suffix[:port]" for "scheme://*.suffix[:port]".
type originSuffix struct {
	scheme string // "https://"
	suffix string // ".example.com"
	port   string // ":8443" or ""
}

// NewCORS compiles opts; an origin that is not a valid pattern is an error.
func NewCORS(opts CORSOptions) (*CORS, error) {
	c := &CORS{
		methods: []string{strings.Join(opts.Methods, ", ")},
		maxAge:  []string{strconv.Itoa(int(opts.MaxAge / time.Second))},
	}
	for _, o := range opts.Origins {
		if o == "*" {
			if opts.Credentials {
				return nil, fmt.Errorf(`origin "*" cannot be used with credentials; browsers refuse it`)
			}
			c.any = true
			continue
		}
		scheme, host, port, err := ParseOrigin(o)
		if err != nil {
			return nil, err
		}
		if rest, ok := strings.CutPrefix(host, "*."); ok {
			c.suffixes = append(c.suffixes, originSuffix{scheme: scheme + "://", suffix: "." + rest, port: port})
			continue
		}
		c.exact = append(c.exact, scheme+"://"+host+port)
	}
	if opts.Credentials {
		c.creds = []string{"true"}
	}
	if len(opts.Headers) > 0 {
		c.headers = []string{strings.Join(opts.Headers, ", ")}
	}
	if len(opts.Expose) > 0 {
		c.expose = []string{strings.Join(opts.Expose, ", ")}
	}
	if !c.any || opts.Credentials || len(c.exact)+len(c.suffixes) > 0 {
		c.vary = []string{"Origin"}
	}
	return c, nil
}

// ParseOrigin splits an allow-list entry into its lowercase scheme, host
// (which may start with "*.") and ":port" (or ""). Without a scheme, https.
func ParseOrigin(o string) (scheme, host, port string, err error) {
	s := strings.ToLower(o)
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, perr := url.Parse(s)
	if perr != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", "", "", fmt.Errorf(`origin %q is not a scheme and host like "https://h5.example.com" or "https://*.example.com"`, o)
	}
	host = u.Hostname()
	if p := u.Port(); p != "" {
		port = ":" + p
	}
	wild := strings.HasPrefix(host, "*.")
	if strings.Contains(strings.TrimPrefix(host, "*."), "*") || (wild && !strings.Contains(host[2:], ".")) {
		return "", "", "", fmt.Errorf(`origin %q: a wildcard is allowed only as the first label of a domain with a dot, like "*.example.com"`, o)
	}
	return u.Scheme, host, port, nil
}

// Allowed reports whether a request's Origin value is on the allow-list.
func (c *CORS) Allowed(origin string) bool {
	if c.any {
		return true
	}
	for _, e := range c.exact {
		if strings.EqualFold(origin, e) {
			return true
		}
	}
	for _, s := range c.suffixes {
		if s.match(origin) {
			return true
		}
	}
	return false
}

func (s *originSuffix) match(origin string) bool {
	if len(origin) < len(s.scheme) || !strings.EqualFold(origin[:len(s.scheme)], s.scheme) {
		return false
	}
	hostport := origin[len(s.scheme):]
	host, ok := strings.CutSuffix(strings.ToLower(hostport), s.port)
	if !ok || (s.port == "" && strings.Contains(host, ":")) {
		return false
	}
	// What comes before the suffix must be whole labels: "evil-example.com"
	// does not end in ".example.com", and ".example.com" alone is no host.
	labels, ok := strings.CutSuffix(host, s.suffix)
	return ok && hostLabels(labels)
}

// hostLabels reports whether s is dot-separated DNS labels of letters,
// digits and hyphens (already lowercase): nothing else is reflected.
func hostLabels(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Handle runs the CORS step. A preflight (OPTIONS with
// Access-Control-Request-Method) is answered here and never reaches the
// upstream: 204 with the allowed methods, headers and max-age for an
// allowed origin, 403 with the JSON body otherwise. Other requests go on
// (done false) through the returned writer, which sets the headers on
// whatever answers them, edge's own refusals included, so a page can read
// a 401 or 429. A disallowed origin is passed on without CORS headers, as
// nginx does: the browser then keeps the answer from the page.
func (c *CORS) Handle(w http.ResponseWriter, r *http.Request) (_ http.ResponseWriter, done bool) {
	origins := r.Header["Origin"]
	if len(origins) == 0 {
		if c.vary != nil {
			addVary(w.Header(), c.vary)
		}
		return w, false
	}
	origin := origins[0]
	allowed := len(origins) == 1 && c.Allowed(origin)
	if r.Method == http.MethodOptions && len(r.Header["Access-Control-Request-Method"]) > 0 {
		h := w.Header()
		if c.vary != nil {
			addVary(h, c.vary)
		}
		if !allowed {
			if info := reqctx.FromRequest(r); info != nil {
				info.Reason = "cors_origin"
			}
			apierror.Write(w, r, apierror.Forbidden, "origin not allowed")
			return w, true
		}
		c.set(h, origin)
		h["Access-Control-Allow-Methods"] = c.methods
		if c.headers != nil {
			h["Access-Control-Allow-Headers"] = c.headers
		} else if req := r.Header["Access-Control-Request-Headers"]; len(req) > 0 {
			h["Access-Control-Allow-Headers"] = req
		}
		h["Access-Control-Max-Age"] = c.maxAge
		w.WriteHeader(http.StatusNoContent)
		return w, true
	}
	cw := &corsWriter{ResponseWriter: w, c: c}
	if allowed {
		cw.origin = origin
	}
	return cw, false
}

// set puts the headers of an allowed origin's answer.
func (c *CORS) set(h http.Header, origin string) {
	if c.any && c.creds == nil {
		h["Access-Control-Allow-Origin"] = []string{"*"}
	} else {
		h["Access-Control-Allow-Origin"] = []string{origin}
	}
	if c.creds != nil {
		h["Access-Control-Allow-Credentials"] = c.creds
	}
	if c.expose != nil {
		h["Access-Control-Expose-Headers"] = c.expose
	}
}

// corsWriter replaces the Access-Control-* headers just before the
// status goes out, whoever wrote the answer.
type corsWriter struct {
	http.ResponseWriter
	c      *CORS
	origin string // "" when not allowed
	sent   bool
}

func (w *corsWriter) WriteHeader(code int) {
	if !w.sent && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.sent = true
		h := w.ResponseWriter.Header()
		for k := range h {
			if strings.HasPrefix(k, "Access-Control-") {
				delete(h, k)
			}
		}
		if w.c.vary != nil {
			addVary(h, w.c.vary)
		}
		if w.origin != "" {
			w.c.set(h, w.origin)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *corsWriter) Write(p []byte) (int, error) {
	if !w.sent {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Flush keeps streaming answers streaming.
func (w *corsWriter) Flush() {
	if !w.sent {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap is for http.ResponseController (hijack, deadlines).
func (w *corsWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// addVary adds v to Vary unless a value already names it.
func addVary(h http.Header, v []string) {
	for _, have := range h["Vary"] {
		for part := range strings.SplitSeq(have, ",") {
			if p := strings.TrimSpace(part); p == "*" || strings.EqualFold(p, v[0]) {
				return
			}
		}
	}
	if len(h["Vary"]) == 0 {
		h["Vary"] = v
		return
	}
	h["Vary"] = append(h["Vary"], v[0])
}
