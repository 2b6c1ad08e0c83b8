package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"edge/internal/proxy"
	"edge/internal/redisconn"
)

// validate checks every section after decoding; each section has its own
// function so the features that add sections add one hook each.
func (cfg *Config) validate(c *checker) {
	cfg.Server.validate(c)
	cfg.TLS.validate(c)
	cfg.Log.validate(c)
	cfg.Cluster.validate(c)
	validateUpstreams(c, cfg.Upstreams)
	validateRoutes(c, cfg.Routes, cfg.Upstreams)
	cfg.IdentitySections.validate(c)
	cfg.LimitSections.validate(c)
	cfg.validateWechatAPI(c)
	cfg.WAF.validate(c)
	cfg.Cache.validate(c)
}

func (s *Server) validate(c *checker) {
	checkListen(c, "server.listen_https", s.ListenHTTPS, false)
	checkListen(c, "server.listen_http", s.ListenHTTP, true)
	adminOK := checkListen(c, "server.listen_admin", s.ListenAdmin, true)
	// Port 0 asks the kernel for a free port, so equal ":0" addresses differ.
	if s.ListenHTTP != "off" && s.ListenHTTP == s.ListenHTTPS && !ephemeral(s.ListenHTTP) {
		c.add("server.listen_http", "%q is also server.listen_https; each listener needs its own address", s.ListenHTTP)
	}
	if s.ListenAdmin != "off" && !ephemeral(s.ListenAdmin) && (s.ListenAdmin == s.ListenHTTPS || s.ListenAdmin == s.ListenHTTP) {
		c.add("server.listen_admin", "%q is also used by another listener; give the admin listener its own address", s.ListenAdmin)
	}
	if s.StateDir == "" {
		c.add("server.state_dir", `must not be empty; leave it out to use "edge-state" beside the config file`)
	}
	c.resolve(&s.StateDir)
	if s.ReadHeaderTimeout == 0 {
		c.add("server.read_header_timeout", `must be more than 0: without it a client holds a connection forever by sending headers slowly; the default is "10s"`)
	}
	if s.MaxHeaderBytes == 0 {
		c.add("server.max_header_bytes", `must be more than 0; the default is "64KB"`)
	}
	s.validateAdmin(c, adminOK)
	for i, p := range s.ProxyProtocolFrom {
		if p.Bits() == 0 {
			c.warn(indexKey("server.proxy_protocol_from", i), "%s lets every peer send a PROXY protocol header and choose the client address that rate limits, bans and IP lists see, and demands the header from every client; list your load balancers' addresses instead", p)
		}
	}
	for i, p := range s.TrustedProxies {
		if p.Bits() == 0 {
			c.warn(indexKey("server.trusted_proxies", i), "%s trusts every peer: any client can set X-Forwarded-For and choose the IP that rate limits, bans and IP lists see; list your load balancers' addresses instead", p)
		}
	}
}

// validateAdmin checks the admin listener's guard: a token that cannot be
// guessed, demanded when the listener is reachable from other machines
// (listenOK: its address is valid), and the host names it answers.
func (s *Server) validateAdmin(c *checker, listenOK bool) {
	if tok := s.AdminToken.Value(); tok != "" {
		if len(tok) < 16 {
			c.add("server.admin_token", "is shorter than 16 characters and can be guessed; generate one with `openssl rand -hex 32`")
		}
		if !validBearer(tok) {
			c.add("server.admin_token", "must be one word of letters, digits and -._~+/= (it is sent as \"Authorization: Bearer <token>\"); generate one with `openssl rand -hex 32`")
		}
	} else if listenOK {
		if msg := s.AdminUnguarded(); msg != "" {
			c.add("server.listen_admin", "%s", msg)
		}
	}
	for i, h := range s.AdminHosts {
		if !validHostName(h) {
			c.add(indexKey("server.admin_hosts", i), `%q is not a host name; write a lowercase name like "edge-admin.internal" (IP addresses and localhost are always answered)`, h)
		}
	}
}

// AdminUnguarded says why the admin listener would be open to other
// machines without a token, or "" when it is not. A reload checks it again
// with the running listen_admin, which only a restart changes: a new file
// that moves the listener to loopback and drops the token must not remove
// the token from a listener still open to the network.
func (s *Server) AdminUnguarded() string {
	if s.AdminToken.Value() != "" || s.ListenAdmin == "off" || onLoopback(s.ListenAdmin) {
		return ""
	}
	return fmt.Sprintf(`%q is not on loopback: anyone who reaches it could reload edge, lift bans or read profiles; set server.admin_token = "${EDGE_ADMIN_TOKEN}" (callers send "Authorization: Bearer <token>"), or listen on "127.0.0.1:9180"`, s.ListenAdmin)
}

// validBearer reports whether s can be sent as a bearer token: token68
// characters (RFC 9110 section 11.2), the alphabets of hex and base64.
func validBearer(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/=", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// onLoopback reports whether a valid listen address accepts only local
// connections.
func onLoopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkListen checks a listener address; "off" disables the optional ones.
// It reports whether the address is valid.
func checkListen(c *checker, key, addr string, offOK bool) bool {
	example := `write it like ":443" or "127.0.0.1:8443"`
	if offOK {
		example += `, or "off" to disable this listener`
	}
	if addr == "off" {
		if !offOK {
			c.add(key, `cannot be "off": HTTPS is edge's front door; %s`, example)
		}
		return offOK
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		c.add(key, "%q is not host:port; %s", addr, example)
		return false
	}
	ok := true
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		c.add(key, "%q has port %q; the port must be a number from 1 to 65535", addr, port)
		ok = false
	}
	if host != "" && !validHostName(host) && !validIP(host) {
		c.add(key, "%q has host %q, which is neither an IP address nor a host name; leave it empty (\":443\") to listen on every address", addr, host)
		ok = false
	}
	return ok
}

func (t *TLS) validate(c *checker) {
	c.oneOf("tls.mode", t.Mode, "internal", "files", "acme")
	c.oneOf("tls.min_version", t.MinVersion, "1.2", "1.3")
	switch {
	case t.Mode == "files" && len(t.Certificates) == 0:
		c.add("tls.mode", `"files" needs at least one certificate; add [[tls.certificates]] with cert = "fullchain.pem" and key = "privkey.pem"`)
	case t.Mode == "internal" && len(t.Certificates) > 0:
		c.add("tls.certificates", `are only used with tls.mode = "files" or "acme" (mode is %q); set the mode or remove them`, t.Mode)
	}
	t.validateACME(c)
	for i := range t.Certificates {
		cf := &t.Certificates[i]
		key := indexKey("tls.certificates", i)
		c.resolve(&cf.Cert)
		c.resolve(&cf.Key)
		checkReadable(c, key+".cert", cf.Cert, "the PEM certificate chain")
		checkReadable(c, key+".key", cf.Key, "the PEM private key")
	}
	for i, h := range t.Hosts {
		if !validIP(h) && !validHostPattern(h) {
			c.add(indexKey("tls.hosts", i), `%q is not a host name or IP address; write it like "dev.example.test", "*.example.test" or "192.168.1.20"`, h)
		}
	}
}

// checkReadable checks that a file the process will read at start exists,
// is a regular file and opens, so a typo is caught at validate time.
func checkReadable(c *checker, key, path, what string) bool {
	if path == "" {
		c.add(key, "is missing; write the path to %s", what)
		return false
	}
	st, err := os.Stat(path)
	if err != nil {
		c.add(key, "cannot read %q: %v; write the path to %s (relative paths start at the config file's directory)", path, unwrapPath(err), what)
		return false
	}
	if !st.Mode().IsRegular() {
		c.add(key, "%q is not a regular file; write the path to %s", path, what)
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		c.add(key, "cannot open %q: %v; let edge's user read it", path, unwrapPath(err))
		return false
	}
	f.Close()
	return true
}

func (l *Log) validate(c *checker) {
	c.oneOf("log.level", l.Level, "debug", "info", "warn", "error")
	c.oneOf("log.format", l.Format, "json", "text")
	if l.AccessFile != "" {
		c.resolve(&l.AccessFile)
		if fi, err := os.Stat(filepath.Dir(l.AccessFile)); err != nil || !fi.IsDir() {
			c.add("log.access_file", "the directory of %q does not exist; create it or write the log elsewhere", l.AccessFile)
		}
	}
	if l.AccessMaxSize < 1<<20 {
		c.add("log.access_max_size", "must be at least 1MB, like \"100MB\"")
	}
	if l.AccessMaxBackups < 0 {
		c.add("log.access_max_backups", "must be 0 (keep every rotated file) or more")
	}
	if len(l.AccessFields) == 0 {
		c.add("log.access_fields", "is empty; list the fields a line carries, or set access = false")
	}
	for i, f := range l.AccessFields {
		key := fmt.Sprintf("log.access_fields[%d]", i)
		if c.oneOf(key, f, AccessFields...) && slices.Contains(l.AccessFields[:i], f) {
			c.add(key, "%q is listed twice; remove one", f)
		}
	}
	if l.AccessFormat != "" {
		if c.has("log.access_fields") {
			c.add("log.access_format", "and access_fields both say what a line holds; keep access_format for text lines, or access_fields for JSON")
		}
		if _, err := ParseAccessFormat(l.AccessFormat); err != nil {
			c.add("log.access_format", "%v", err)
		}
	}
	for i, n := range l.MaskQuery {
		if n == "" {
			c.add(fmt.Sprintf("log.mask_query[%d]", i), "is empty; remove it or write a query name like \"code\"")
		}
	}
}

func (cl *Cluster) validate(c *checker) {
	c.resolve(&cl.RedisCA)
	c.resolve(&cl.RedisClientCert)
	c.resolve(&cl.RedisClientKey)
	if cl.Redis == "" {
		for key, v := range map[string]string{"cluster.redis_ca": cl.RedisCA, "cluster.redis_client_cert": cl.RedisClientCert, "cluster.redis_client_key": cl.RedisClientKey} {
			if v != "" {
				c.add(key, "is set but cluster.redis is not; set redis = \"rediss://...\" or remove it")
			}
		}
		return
	}
	// The URL may hold a password: redisconn's errors never quote it, nor
	// does this message.
	t, err := redisconn.Parse(cl.Redis.Value())
	if err != nil {
		c.add("cluster.redis", `%v; it must be a URL like "redis://:PASSWORD@10.0.0.5:6379/0", "redis-sentinel://:PASSWORD@10.0.0.5:26379,10.0.0.6:26379?master_name=mymaster" or "redis+cluster://:PASSWORD@10.0.0.5:6379,10.0.0.6:6379" (the value is not shown: it may hold a password); use "${REDIS_URL}" to keep it out of the file`, err)
		return
	}
	tlsSet := cl.RedisCA != "" || cl.RedisClientCert != ""
	if tlsSet && !t.TLS {
		c.add("cluster.redis", "is not a TLS URL but redis_ca or redis_client_cert is set; write rediss:// (rediss-sentinel://, rediss+cluster://) or remove them")
		return
	}
	if cl.RedisClientKey != "" && cl.RedisClientCert == "" {
		c.add("cluster.redis_client_key", "needs redis_client_cert, the certificate of this key; set it or remove the key")
		return
	}
	// Each file on its own, so the problem names the key that is wrong.
	if _, err := redisconn.TLSConfig(redisconn.TLSFiles{CA: cl.RedisCA}); err != nil {
		c.add("cluster.redis_ca", "%v; point it at the PEM file of the CA that signed Redis' certificate", err)
	}
	if _, err := redisconn.TLSConfig(redisconn.TLSFiles{Cert: cl.RedisClientCert, Key: cl.RedisClientKey}); err != nil {
		c.add("cluster.redis_client_cert", "%v; point redis_client_cert and redis_client_key at the PEM certificate and its key", err)
	}
}

func validateUpstreams(c *checker, ups []Upstream) {
	seen := make(map[string]int)
	for i := range ups {
		u := &ups[i]
		key := indexKey("upstreams", i)
		checkName(c, key, u.Name, "upstream", seen, i)
		if len(u.Targets) == 0 && u.Run == nil {
			c.add(key+".targets", `needs at least one target; write targets = ["127.0.0.1:3000"], or [upstreams.run] for edge to start the app itself`)
		}
		if u.Run != nil {
			validateRun(c, key, u)
		}
		for j, t := range u.Targets {
			tk := indexKey(key+".targets", j)
			if c.has(tk + ".address") {
				checkTargetAddress(c, tk+".address", t.Address)
			} else {
				checkTargetAddress(c, tk, t.Address)
			}
			if t.Weight < 1 {
				c.add(tk+".weight", "must be 1 or more, not %d; the weight is the target's share of requests (default 1)", t.Weight)
			}
		}
		c.oneOf(key+".balance", u.Balance, "round_robin", "least_conn", "random_two", "hash")
		if c.has(key+".hash_key") && u.Balance != "hash" {
			c.add(key+".hash_key", `is only used with balance = "hash" (balance is %q); set balance = "hash" or remove it`, u.Balance)
		}
		if name, ok := strings.CutPrefix(u.HashKey, "header:"); !(u.HashKey == "ip" || ok && validToken(name)) {
			c.add(key+".hash_key", `%q is not valid; write "ip" or "header:<Name>", like "header:X-User-Id"`, u.HashKey)
		}
		if u.Keepalive < 0 {
			c.add(key+".keepalive", "must be 0 or more, not %d; it is the number of idle connections kept per target (default 64)", u.Keepalive)
		}
		if u.ReadTimeout == 0 {
			c.add(key+".read_timeout", `must be more than 0, like "60s"; it is the longest pause between two reads of an answer (nginx proxy_read_timeout), so raise it, like "1h", for streams that pause long`)
		}
		if u.Retries < 0 {
			c.add(key+".retries", "must be 0 or more, not %d; 0 disables retries (default 1)", u.Retries)
		}
		validateRetryOn(c, key, u)
		validateUpstreamTLS(c, key, u)
		u.HealthCheck.validate(c, key+".health_check")
		u.Passive.validate(c, key+".passive_health")
	}
}

// checkName checks the name of an upstream or route: it is how other keys
// refer to the entry and it becomes a metric label.
func checkName(c *checker, key, name, what string, seen map[string]int, i int) {
	key += ".name"
	switch {
	case name == "":
		c.add(key, "is missing; every %s needs a unique name, like name = \"api\"", what)
	case !validName(name):
		c.add(key, "%q may only hold letters, digits, '-', '_' and '.'; it is used in metrics and logs", name)
	}
	if name == "" {
		return
	}
	if prev, dup := seen[name]; dup {
		c.add(key, "%q is already the name of the %s on line %d; %s names must be unique", name, what, c.line(prevKey(key, prev)), what)
		return
	}
	seen[name] = i
}

// prevKey is the name key of an earlier entry of the same array as key.
func prevKey(key string, i int) string {
	arr := parentKey(parentKey(key))
	return indexKey(arr, i) + ".name"
}

func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return s != ""
}

func checkTargetAddress(c *checker, key, addr string) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !filepath.IsAbs(path) {
			c.add(key, `%q: a Unix socket target is "unix:" and the socket's absolute path, like "unix:/run/app/app.sock"`, addr)
		}
		return
	}
	if rest, ok := strings.CutPrefix(addr, "http://"); ok {
		c.add(key, "%q has a scheme; write host:port only, like %q", addr, strings.TrimSuffix(rest, "/"))
		return
	}
	if rest, ok := strings.CutPrefix(addr, "https://"); ok {
		c.add(key, "%q has a scheme; write host:port only, like %q, and tls = true in the upstream for HTTPS", addr, strings.TrimSuffix(rest, "/"))
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		c.add(key, `%q is not host:port; write it like "127.0.0.1:3000" or "app.internal:8080"`, addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		c.add(key, "%q has port %q; the port must be a number from 1 to 65535", addr, port)
	}
	if !validHostName(host) && !validIP(host) {
		c.add(key, "%q has host %q, which is neither an IP address nor a host name", addr, host)
	}
}

func (h *HealthCheck) validate(c *checker, key string) {
	if h.Path == "" {
		if c.has(key) {
			c.add(key+".path", `is missing; the active health check runs only when path is set, like path = "/healthz"`)
		}
		return
	}
	if !strings.HasPrefix(h.Path, "/") {
		c.add(key+".path", "%q must start with \"/\", like \"/healthz\"", h.Path)
	}
	if h.Interval == 0 {
		c.add(key+".interval", `must be more than 0, like "5s"`)
	}
	if h.Timeout == 0 {
		c.add(key+".timeout", `must be more than 0, like "2s"`)
	}
	if h.HealthyThreshold < 1 {
		c.add(key+".healthy_threshold", "must be 1 or more, not %d; it is how many passing checks bring a target back", h.HealthyThreshold)
	}
	if h.UnhealthyThreshold < 1 {
		c.add(key+".unhealthy_threshold", "must be 1 or more, not %d; it is how many failing checks take a target out", h.UnhealthyThreshold)
	}
	for i, s := range h.ExpectStatus {
		if s < 100 || s > 599 {
			c.add(indexKey(key+".expect_status", i), "%d is not an HTTP status; write codes from 100 to 599, like [200, 204]", s)
		}
	}
}

func (p *Passive) validate(c *checker, key string) {
	if p.MaxFails < 0 {
		c.add(key+".max_fails", "must be 0 or more, not %d; 0 disables passive health checks", p.MaxFails)
	}
	if p.MaxFails > 0 && p.Window == 0 {
		c.add(key+".window", `must be more than 0, like "10s"; or set max_fails = 0 to disable passive health checks`)
	}
	if p.MaxFails > 0 && p.Cooldown == 0 {
		c.add(key+".cooldown", `must be more than 0, like "30s"; or set max_fails = 0 to disable passive health checks`)
	}
}

func validateRoutes(c *checker, routes []Route, ups []Upstream) {
	if len(routes) == 0 {
		// An empty or half-written file would otherwise go live and answer
		// every request 404; refusing it keeps the running config serving.
		c.add("routes", `the config has no [[routes]] (is the file empty or still being written?); without one edge answers every request 404 "no route". Add at least one [[routes]] table with a name, a path and an upstream, static root or respond`)
	}
	var upNames []string
	for _, u := range ups {
		if u.Name != "" && !slices.Contains(upNames, u.Name) {
			upNames = append(upNames, u.Name)
		}
	}
	seen := make(map[string]int)
	matches := make(map[string]int)
	for i := range routes {
		r := &routes[i]
		key := indexKey("routes", i)
		checkName(c, key, r.Name, "route", seen, i)
		r.validate(c, key, upNames)
		r.validateRelease(c, key, upNames)
		mk := matchKey(r)
		if prev, dup := matches[mk]; dup {
			c.add(key, "matches the same hosts, path and methods as routes[%d] (%q, line %d), so it can never be chosen; change its hosts, path or methods, or remove one of them",
				prev, routes[prev].Name, c.line(indexKey("routes", prev)))
		} else {
			matches[mk] = i
		}
		r.RouteAuth.validate(c, key)
		r.RouteCallback.validate(c, key)
		r.RouteAccess.validate(c, key)
		r.validateAnswers(c, key)
		r.validateWAF(c, key)
		r.validateCache(c, key)
	}
}

func (r *Route) validate(c *checker, key string, upNames []string) {
	var given []string
	for _, h := range []string{"upstream", "static", "respond", "redirect"} {
		if c.has(key + "." + h) {
			given = append(given, h)
		}
	}
	switch len(given) {
	case 0:
		c.add(key, `needs one of upstream, static, respond or redirect to say what answers it, like upstream = "api"`)
	case 1:
	default:
		c.add(key, "has %s; a route takes exactly one of upstream, static, respond or redirect, so split it into one route each", strings.Join(given, " and "))
	}
	if c.has(key+".upstream") && !slices.Contains(upNames, r.Upstream) {
		if len(upNames) == 0 {
			c.add(key+".upstream", "no upstream named %q; define it under [[upstreams]] (none are defined yet)", r.Upstream)
		} else {
			c.add(key+".upstream", "no upstream named %q; define it under [[upstreams]] or use one of: %s", r.Upstream, quoteList(upNames))
		}
	}
	if c.has(key + ".static") {
		r.checkStatic(c, key+".static")
	}
	if r.Respond != nil && (r.Respond.Status < 100 || r.Respond.Status > 599) {
		c.add(key+".respond.status", "%d is not an HTTP status; write a code from 100 to 599, like 200", r.Respond.Status)
	}
	for j, h := range r.Hosts {
		checkRouteHost(c, indexKey(key+".hosts", j), h)
	}
	groups := r.validateMatch(c, key)
	for j, m := range r.Methods {
		if !validToken(m) {
			c.add(indexKey(key+".methods", j), `%q is not an HTTP method; write methods like ["GET", "POST"]`, m)
		}
		r.Methods[j] = strings.ToUpper(m)
	}
	if r.StripPrefix && r.Upstream == "" {
		c.add(key+".strip_prefix", "only applies to routes with an upstream; remove it")
	} else if r.StripPrefix && r.Path == "" {
		c.add(key+".strip_prefix", "only applies to path (prefix) routes; use rewrite = { from = ..., to = ... } to change the path of an exact or regex route")
	}
	r.validateRewrite(c, key)
	r.validateRedirect(c, key, groups)
	if r.WebSocket && r.Upstream == "" {
		c.add(key+".websocket", "only applies to routes with an upstream; remove it")
	}
	if r.UpstreamReadTimeout != nil {
		switch {
		case r.Upstream == "":
			c.add(key+".upstream_read_timeout", "only applies to routes with an upstream; remove it")
		case *r.UpstreamReadTimeout == 0:
			c.add(key+".upstream_read_timeout", `must be more than 0, like "5m"; remove it to keep the upstream's read_timeout`)
		}
	}
	if r.SPA && r.Static == "" {
		c.add(key+".spa", "only applies to static routes; remove it")
	}
	if c.has(key+".index") && r.Static == "" {
		c.add(key+".index", "only applies to static routes; remove it")
	} else if r.Index == "" || strings.ContainsAny(r.Index, `/\`) {
		c.add(key+".index", "%q must be a file name in the directory, like \"index.html\"", r.Index)
	}
	checkHeaderMap(c, key+".set_request_headers", r.SetRequestHeaders)
	checkHeaderMap(c, key+".set_response_headers", r.SetResponseHeaders)
	checkHeaderList(c, key+".remove_request_headers", r.RemoveRequestHeaders)
	checkHeaderList(c, key+".remove_response_headers", r.RemoveResponseHeaders)
}

func (r *Route) checkStatic(c *checker, key string) {
	if r.Static == "" {
		c.add(key, "must name a directory of files to serve, like \"site\"")
		return
	}
	c.resolve(&r.Static)
	st, err := os.Stat(r.Static)
	switch {
	case err != nil:
		c.add(key, "cannot use directory %q: %v; create it or fix the path (relative paths start at the config file's directory)", r.Static, unwrapPath(err))
	case !st.IsDir():
		c.add(key, "%q is not a directory; static names a directory of files to serve", r.Static)
	}
}

// checkHeaderMap checks header names; values are not quoted back, since
// they often come from ${ENV} secrets.
func checkHeaderMap(c *checker, key string, m map[string]string) {
	for name, v := range m {
		k := joinKey(key, name)
		if !validToken(name) {
			c.add(k, "%q is not a valid header name; use letters, digits and '-', like \"X-Request-Source\"", name)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			c.add(k, "the value has a line break or NUL, which would split the header; remove it")
		}
	}
}

func checkHeaderList(c *checker, key string, names []string) {
	for i, name := range names {
		if !validToken(name) {
			c.add(indexKey(key, i), "%q is not a valid header name; use letters, digits and '-', like \"X-Powered-By\"", name)
		}
	}
}

// checkRouteHost explains the usual ways a route host goes wrong, since an
// unmatchable host shows up only as a 404 at run time.
func checkRouteHost(c *checker, key, h string) {
	if _, rest, ok := strings.Cut(h, "://"); ok {
		c.add(key, "%q has a scheme; write the host name only, like %q", h, strings.TrimSuffix(rest, "/"))
		return
	}
	if strings.Contains(h, "/") {
		c.add(key, "%q has a path; write the host name only and put the path in path = ...", h)
		return
	}
	if host, _, err := net.SplitHostPort(h); err == nil {
		c.add(key, "%q has a port; write %q: routes match a host on every port", h, host)
		return
	}
	if lower := strings.ToLower(h); lower != h {
		c.add(key, "%q must be lowercase; write %q", h, lower)
		return
	}
	if !validIP(h) && !validHostPattern(h) {
		c.add(key, `%q is not a host name; write an exact name like "api.example.com" or a wildcard like "*.example.com"`, h)
	}
}

// matchKey is what decides whether two routes can match the same requests:
// hosts and methods as sets, and the path, exact path or regex.
func matchKey(r *Route) string {
	hosts := slices.Clone(r.Hosts)
	slices.Sort(hosts)
	methods := slices.Clone(r.Methods)
	slices.Sort(methods)
	path := "prefix " + r.Path
	switch {
	case r.Regex != "":
		path = "regex " + r.RegexSource()
	case r.Exact != "":
		path = "exact " + r.Exact
	}
	return fmt.Sprintf("%q %q %q", slices.Compact(hosts), path, slices.Compact(methods))
}

func validIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// validHostPattern accepts an exact host name or one leading "*." wildcard.
func validHostPattern(s string) bool {
	return validHostName(strings.TrimPrefix(s, "*."))
}

// validHostName accepts a lowercase DNS name (RFC 1123 labels).
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func ephemeral(addr string) bool { return strings.HasSuffix(addr, ":0") }

// validateMatch checks how the route matches paths and returns the number
// of groups in its regex (0 without one), which a redirect may refer to.
func (r *Route) validateMatch(c *checker, key string) (groups int) {
	var given []string
	for _, k := range []string{"path", "exact", "regex"} {
		if c.has(key + "." + k) {
			given = append(given, k)
		}
	}
	if len(given) > 1 {
		c.add(key+"."+given[1], "a route matches by exactly one of path (a prefix), exact (the whole path) or regex, and this one has %s; keep one, or split it into one route each", strings.Join(given, " and "))
	}
	if c.has(key+".exact") || c.has(key+".regex") {
		// path's default "/" is for routes that name none of the three.
		r.Path = ""
	}
	if r.BeforeRegex && r.Path == "" {
		c.add(key+".before_regex", "only applies to path (prefix) routes; remove it")
	}
	if r.RegexIgnoreCase && r.Regex == "" {
		c.add(key+".regex_ignore_case", "only applies to regex routes; remove it or add regex = ...")
	}
	switch {
	case c.has(key + ".regex"):
		re, err := regexp.Compile(r.RegexSource())
		if err != nil {
			c.add(key+".regex", "%q is not a valid regular expression (Go RE2 syntax; no look-around or backreferences): %v", r.Regex, regexErr(err))
			return 0
		}
		return re.NumSubexp()
	case c.has(key + ".exact"):
		checkPathKey(c, key+".exact", r.Exact, "a plain path", "/healthz")
	default:
		checkPathKey(c, key+".path", r.Path, "a plain path prefix", "/api/")
	}
	return 0
}

func checkPathKey(c *checker, key, p, what, example string) {
	if !strings.HasPrefix(p, "/") {
		c.add(key, "%q must start with \"/\", like %q", p, example)
	} else if strings.ContainsAny(p, "?# \t") {
		c.add(key, "%q must be %s, without query, fragment or spaces, like %q", p, what, example)
	}
}

// regexErr drops the "error parsing regexp: " that every message would
// otherwise repeat.
func regexErr(err error) string {
	return strings.TrimPrefix(err.Error(), "error parsing regexp: ")
}

func (r *Route) validateRewrite(c *checker, key string) {
	if r.Rewrite == nil {
		return
	}
	key += ".rewrite"
	switch {
	case r.Upstream == "":
		c.add(key, "only applies to routes with an upstream; remove it")
		return
	case r.StripPrefix:
		c.add(key, "cannot be combined with strip_prefix; remove strip_prefix and write the stripped path into rewrite.to")
		return
	}
	if r.Rewrite.From == "" {
		c.add(key+".from", `must be a regular expression, like "^/v1/(.*)$"`)
		return
	}
	re, err := regexp.Compile(r.Rewrite.From)
	if err != nil {
		c.add(key+".from", "%q is not a valid regular expression (Go RE2 syntax; no look-around or backreferences): %v", r.Rewrite.From, regexErr(err))
		return
	}
	if !strings.HasPrefix(r.Rewrite.To, "/") {
		c.add(key+".to", `%q must be a path starting with "/", like "/api/$1"; to send the client elsewhere, use redirect`, r.Rewrite.To)
		return
	}
	checkTemplate(c, key+".to", r.Rewrite.To, re.NumSubexp(), "rewrite.from")
	// Every request would be refused at run time, as CleanPath refuses
	// these in any path.
	path, _, _ := strings.Cut(r.Rewrite.To, "?")
	if p, err := url.PathUnescape(path); err != nil || strings.ContainsAny(p, ";\\") {
		c.add(key+".to", `%q holds ';', '\' or a broken %%-escape in its path, which edge refuses in any path; remove it`, r.Rewrite.To)
	}
}

var redirectStatuses = []int{301, 302, 307, 308}

func (r *Route) validateRedirect(c *checker, key string, groups int) {
	if r.Redirect == nil {
		return
	}
	key += ".redirect"
	if !slices.Contains(redirectStatuses, r.Redirect.Status) {
		c.add(key+".status", "%d is not a redirect status edge sends; write 301, 302, 307 or 308 (307 and 308 keep the method and body)", r.Redirect.Status)
	}
	to := r.Redirect.To
	if !strings.HasPrefix(to, "/") && !strings.HasPrefix(to, "https://") && !strings.HasPrefix(to, "http://") {
		c.add(key+".to", `%q must be a path ("/new/$1") or an http:// or https:// URL ("https://new.example.com$request_uri")`, to)
		return
	}
	from := "the route's regex"
	if r.Regex == "" {
		from = "a route without regex = ..."
	}
	checkTemplate(c, key+".to", to, groups, from)
}

func checkTemplate(c *checker, key, to string, groups int, from string) {
	t, err := proxy.ParseTemplate(to)
	switch {
	case err != nil:
		c.add(key, "%q: %v", to, err)
	case t.MaxGroup() > groups && groups == 0:
		c.add(key, "%q uses $%d, but %s has no groups; add a group in parentheses, like \"^/v1/(.*)$\"", to, t.MaxGroup(), from)
	case t.MaxGroup() > groups:
		c.add(key, "%q uses $%d, but %s has only %d group(s); refer to $1..$%d", to, t.MaxGroup(), from, groups, groups)
	}
	if strings.ContainsAny(to, " \t\r\n\x00") {
		c.add(key, "%q holds a space or control character; escape it (%%20)", to)
	}
}
