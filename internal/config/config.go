// Package config owns edge's TOML schema as plain data: strict decoding (every
// unknown key, wrong type and impossible value is reported with its key path and
// line, all at once), defaults, validation, and secrets from ${ENV} or files.
// It has no side effects beyond reading the files a config names.
package config

import (
	"net/netip"

	"edge/internal/redisconn"
)

// Config is the whole file. Sections an operator does not write keep their
// defaults (see Defaults).
type Config struct {
	Server    Server     `toml:"server"`
	TLS       TLS        `toml:"tls"`
	Log       Log        `toml:"log"`
	Cluster   Cluster    `toml:"cluster"`
	WechatAPI WechatAPI  `toml:"wechat_api"`
	Cache     CacheStore `toml:"cache"`
	Upstreams []Upstream `toml:"upstreams"`
	Routes    []Route    `toml:"routes"`
	WAF       WAF        `toml:"waf"`

	// Sections of the identity, callback and limits features, inlined: their
	// keys sit at the top level of the file.
	IdentitySections
	LimitSections

	// Path is the file the config was read from (not a TOML key); relative
	// paths inside the config are resolved against its directory.
	Path string `toml:"-"`
	// Warnings are valid but dangerous settings (not TOML keys): edge
	// validate prints them, edge run logs them.
	Warnings []Problem `toml:"-"`
}

// Server holds the listeners and connection-level limits.
type Server struct {
	// ListenHTTPS is the front door (TLS, HTTP/1.1 and HTTP/2). Default ":443".
	ListenHTTPS string `toml:"listen_https"`
	// ListenHTTP answers ACME HTTP-01 and redirects everything else to HTTPS.
	// Default ":80"; "off" disables it.
	ListenHTTP string `toml:"listen_http"`
	// RedirectHTTP makes the HTTP listener answer 308 to HTTPS (default
	// true). Set it to false behind a load balancer that terminates TLS and
	// forwards plain HTTP: the HTTP listener then serves the routes too.
	// ACME HTTP-01 challenges are answered either way.
	RedirectHTTP bool `toml:"redirect_http"`
	// ListenAdmin serves /metrics, /healthz, /readyz and POST /reload.
	// Default "127.0.0.1:9180"; "off" disables it.
	ListenAdmin string `toml:"listen_admin"`
	// AdminToken, when set, must come as "Authorization: Bearer <token>" on
	// every admin request but /healthz, /readyz and /metrics. Required when
	// ListenAdmin is not on loopback.
	AdminToken Secret `toml:"admin_token"`
	// AdminHosts are the names the admin listener answers in the Host
	// header besides IP literals and localhost: a browser page that
	// rebinds its own name to the admin address sends that name.
	AdminHosts []string `toml:"admin_hosts"`
	// ListenWechatAPI is the egress listener for WeChat server API calls
	// and GET /wechat/token (see [wechat_api]). Default "off"; loopback
	// only unless wechat_api.allow_remote is set.
	ListenWechatAPI string `toml:"listen_wechat_api"`
	// StateDir keeps certificates and other state. Default: "edge-state"
	// beside the config file.
	StateDir string `toml:"state_dir"`

	ReadHeaderTimeout Duration `toml:"read_header_timeout"` // default 10s
	ReadTimeout       Duration `toml:"read_timeout"`        // default 60s; longest pause while a body arrives (nginx client_body_timeout)
	WriteTimeout      Duration `toml:"write_timeout"`       // default 0 (off): streams and SSE run long
	IdleTimeout       Duration `toml:"idle_timeout"`        // default 75s (nginx keepalive_timeout)
	MaxHeaderBytes    ByteSize `toml:"max_header_bytes"`    // default 64KiB
	ShutdownGrace     Duration `toml:"shutdown_grace"`      // default 30s
	// ShutdownDelay is how long, after SIGTERM, /readyz answers 503 while
	// the listeners still accept and serve, so a load balancer that polls
	// readiness stops sending before they close. Default 0.
	ShutdownDelay Duration `toml:"shutdown_delay"`

	// TrustedProxies are the peers whose X-Forwarded-For / X-Real-IP are
	// believed. A bare IP means a single address.
	TrustedProxies []netip.Prefix `toml:"trusted_proxies"`

	// ProxyProtocolFrom are the load balancers that open each connection to
	// the HTTPS and HTTP listeners with a PROXY protocol (v1 or v2) header
	// carrying the client's address. A connection from one of them must
	// send the header (as on an nginx `listen ... proxy_protocol`); a
	// connection from anyone else is read as plain TLS or HTTP, so a header
	// it sends is garbage and fails the handshake or the request. Empty
	// (the default): no listener reads PROXY protocol. Needs a restart.
	ProxyProtocolFrom []netip.Prefix `toml:"proxy_protocol_from"`
}

// TLS selects where certificates come from.
type TLS struct {
	// Mode is "internal" (a local development CA in state_dir), "files"
	// (certificate files chosen by SNI) or "acme". Default "internal".
	Mode string `toml:"mode"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `toml:"min_version"`
	// Certificates are cert/key pairs for mode "files"; SNI picks among them
	// by the names in each certificate.
	Certificates []CertificateFiles `toml:"certificates"`
	// Hosts are extra names for the internal CA's leaf certificate (route
	// hosts, localhost and 127.0.0.1 are always included).
	Hosts []string `toml:"hosts"`

	// ACME settings (mode "acme"), the default name and the HSTS header:
	// see tls.go.
	TLSACME
}

// CertificateFiles is one PEM certificate chain and its private key.
type CertificateFiles struct {
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

// Log controls the error log and the access log.
type Log struct {
	Level  string `toml:"level"`  // debug, info (default), warn, error
	Format string `toml:"format"` // json (default) or text; the error log's format
	Access *bool  `toml:"access"` // access log on (default) or off
	// AccessFile writes the access log (JSON lines) to this file instead of
	// standard output; the error log stays on standard error. The file is
	// rotated when it reaches AccessMaxSize, keeping AccessMaxBackups old
	// files, and reopened on SIGUSR1 (for logrotate's "create" mode).
	AccessFile       string   `toml:"access_file"`
	AccessMaxSize    ByteSize `toml:"access_max_size"`    // default 100MB
	AccessMaxBackups int      `toml:"access_max_backups"` // default 10; 0 keeps all
	// MaskQuery are query names whose values the access log writes as ***
	// (any case, percent-decoded). Default DefaultMaskQuery; [] masks none.
	MaskQuery []string `toml:"mask_query"`
	// AccessFields are the access log line's fields, in order, from
	// AccessFields; default DefaultAccessFields.
	AccessFields []string `toml:"access_fields"`
	// AccessFormat, when set, writes each line from this template (nginx's
	// log_format: text with $variables) instead of JSON.
	AccessFormat string `toml:"access_format"`
}

// AccessFields are the fields an access log line can carry (see
// docs/configuration.md for their meaning).
var AccessFields = []string{
	"time", "request_id", "client_ip", "method", "host", "path", "query", "proto",
	"status", "bytes", "duration_ms", "route", "upstream", "target", "upstream_ms",
	"openid", "reason", "waf", "waf_rules", "cache", "user_agent", "referer",
}

// DefaultAccessFields are every field but user_agent and referer, which
// are long and rarely read on an API gateway.
var DefaultAccessFields = AccessFields[:len(AccessFields)-2]

// Cluster joins several replicas through Redis. Empty Redis: one machine.
type Cluster struct {
	// Redis is the URL of one node (redis://, rediss://), of Sentinels
	// (redis-sentinel://, or ?master_name=) or of Cluster seeds
	// (redis+cluster://); see internal/redisconn. May use ${ENV} for the
	// password.
	Redis Secret `toml:"redis"`
	// RedisCA is a PEM file of the CA that signed Redis' certificate, for
	// rediss:// with a private CA; empty: the system's roots.
	RedisCA string `toml:"redis_ca"`
	// RedisClientCert and RedisClientKey are the PEM certificate and key
	// edge shows a Redis with tls-auth-clients.
	RedisClientCert string `toml:"redis_client_cert"`
	RedisClientKey  string `toml:"redis_client_key"`
}

// RedisTLS is the TLS files of [cluster], resolved against the config's
// directory by validation.
func (cl *Cluster) RedisTLS() redisconn.TLSFiles {
	return redisconn.TLSFiles{CA: cl.RedisCA, Cert: cl.RedisClientCert, Key: cl.RedisClientKey}
}

// Upstream is a named pool of targets.
type Upstream struct {
	Name    string   `toml:"name"`
	Targets []Target `toml:"targets"`
	// Run makes edge start the upstream's targets itself (see Run); its
	// instances join Targets, if any are listed too.
	Run *Run `toml:"run"`
	// Balance is round_robin (default), least_conn, random_two or hash.
	Balance string `toml:"balance"`
	// HashKey for balance = "hash": "ip" (default) or "header:<Name>".
	HashKey string `toml:"hash_key"`
	// Keepalive is the number of idle connections kept per target. Default 64.
	Keepalive             int      `toml:"keepalive"`
	ConnectTimeout        Duration `toml:"connect_timeout"`         // default 3s
	ResponseHeaderTimeout Duration `toml:"response_header_timeout"` // default 60s
	// ReadTimeout is the longest pause between two reads of an answer
	// (nginx proxy_read_timeout). Default 60s. Named as the other keys of
	// an upstream are; under [[routes]] it is upstream_read_timeout, since
	// a route's read_timeout would read as the client's.
	ReadTimeout Duration `toml:"read_timeout"`
	// Retries is how many other targets an idempotent request may try when
	// the connection to a target fails, or when a target answers with a
	// status in RetryOn (nginx proxy_next_upstream_tries is Retries + 1).
	// Default 1; 0 disables.
	Retries int `toml:"retries"`
	// RetryOn lists the statuses (502, 503, 504) on which an idempotent
	// request without a body goes to the next target (nginx
	// proxy_next_upstream http_502 ...). Default empty: an answer is
	// always passed on.
	RetryOn []int `toml:"retry_on"`
	// RetryTimeout bounds the time from the first try after which no
	// other target is tried (nginx proxy_next_upstream_timeout). Default
	// 0: no bound but Retries.
	RetryTimeout Duration `toml:"retry_timeout"`
	// TLS makes edge speak HTTPS to every target, verifying its
	// certificate against TLSCA (default: the system roots) for
	// TLSServerName (default: the target's host).
	TLS           bool   `toml:"tls"`
	TLSCA         string `toml:"tls_ca"`
	TLSServerName string `toml:"tls_server_name"`
	// TLSClientCert and TLSClientKey are PEM files of the certificate edge
	// presents to targets that ask for one (mutual TLS).
	TLSClientCert string `toml:"tls_client_cert"`
	TLSClientKey  string `toml:"tls_client_key"`

	HealthCheck HealthCheck `toml:"health_check"`
	Passive     Passive     `toml:"passive_health"`
}

// Run is how edge runs an upstream's instances: each is the command on a
// loopback port of its own, given in the PortEnv variable (or a Unix
// socket, given in SocketEnv), and gets traffic once it answers the
// upstream's health check. A reload that changes how instances run
// deploys them (see RedeployNeeded), one that changes Instances starts or
// stops some; adding or removing a run, the log settings and a switch
// between ports and sockets take a restart.
type Run struct {
	Command string   `toml:"command"` // a name looked up in PATH, or a path (relative to dir)
	Args    []string `toml:"args"`
	// Dir is the working directory; relative to the config file's.
	// Default: the config file's directory.
	Dir string `toml:"dir"`
	// Env is added to edge's own environment; values may be "${ENV}" or
	// "file:/path", as other secrets are, and are never logged.
	Env       map[string]Secret `toml:"env"`
	Instances int               `toml:"instances"` // default 1
	PortEnv   string            `toml:"port_env"`  // default "PORT"
	// SocketEnv, when set, gives each instance the path of a Unix socket
	// to listen on in this variable, instead of a port in PortEnv.
	SocketEnv string `toml:"socket_env"`
	// StopGrace is how long an instance has to exit after SIGTERM before
	// its process group gets SIGKILL. Default 10s.
	StopGrace Duration `toml:"stop_grace"`
	// MaxMemory restarts an instance whose resident memory exceeds it
	// (pm2's max_memory_restart). Default 0: no limit.
	MaxMemory ByteSize `toml:"max_memory"`
	// DeployTimeout is how long a deploy's new instance has to pass its
	// health check; past it the deploy stops and the old instances keep
	// serving. Default 60s.
	DeployTimeout Duration `toml:"deploy_timeout"`
	// DeployGrace is how long a replaced instance's requests and
	// WebSockets have to finish before it is stopped. Default 30s.
	DeployGrace Duration `toml:"deploy_grace"`
	// MaxSurge is how many instances a deploy replaces at once. Default 1.
	MaxSurge int `toml:"max_surge"`
	// LogFile, when set, receives each instance's stdout and stderr
	// instead of edge's log, rotated at 100 MB; "{instance}" in it is the
	// instance's number (required with more than one). Relative to the
	// config file's directory. A change takes a restart.
	LogFile string `toml:"log_file"`
	// LogEdge sends the output to edge's log as well as to LogFile.
	// Without LogFile the output always goes to edge's log. A change takes
	// a restart.
	LogEdge bool `toml:"log_edge"`
}

// Target is one backend address. In TOML either "host:port" or
// { address = "host:port", weight = 2, backup = true }.
type Target struct {
	Address string `toml:"address"`
	Weight  int    `toml:"weight"` // default 1
	// Backup targets get requests only while no other target is
	// available (nginx backup).
	Backup bool `toml:"backup"`
}

// HealthCheck is the active check; it runs when Path is set.
type HealthCheck struct {
	Path               string   `toml:"path"`
	Interval           Duration `toml:"interval"`            // default 5s
	Timeout            Duration `toml:"timeout"`             // default 2s
	ExpectStatus       []int    `toml:"expect_status"`       // default any 2xx/3xx
	HealthyThreshold   int      `toml:"healthy_threshold"`   // default 2
	UnhealthyThreshold int      `toml:"unhealthy_threshold"` // default 2
}

// Passive takes a target out after MaxFails failures within Window, for
// Cooldown (nginx max_fails / fail_timeout).
type Passive struct {
	MaxFails int      `toml:"max_fails"` // default 3; 0 disables
	Window   Duration `toml:"window"`    // default 10s
	Cooldown Duration `toml:"cooldown"`  // default 30s
}

// Route matches requests and says what answers them: exactly one of
// Upstream, Static, Respond or Redirect. It matches paths by exactly one of
// Path, Exact or Regex; see proxy.Router for which route wins.
type Route struct {
	Name  string   `toml:"name"`
	Hosts []string `toml:"hosts"` // exact or "*.example.com"; empty = any host
	Path  string   `toml:"path"`  // prefix; default "/" unless exact or regex is set
	// BeforeRegex makes this prefix, when it is the longest that matches,
	// win over regex routes (nginx "location ^~").
	BeforeRegex bool   `toml:"before_regex"`
	Exact       string `toml:"exact"` // the whole path (nginx "location =")
	// Regex is an RE2 expression matched against the cleaned path (nginx
	// "location ~"); RegexIgnoreCase makes it case-insensitive ("~*").
	Regex           string   `toml:"regex"`
	RegexIgnoreCase bool     `toml:"regex_ignore_case"`
	Methods         []string `toml:"methods"` // empty = any method

	Upstream string    `toml:"upstream"`
	Static   string    `toml:"static"`
	Respond  *Respond  `toml:"respond"`
	Redirect *Redirect `toml:"redirect"`

	// Rewrite changes the path sent upstream (nginx "rewrite ... break").
	Rewrite *Rewrite `toml:"rewrite"`

	// StripPrefix removes Path from the request path before proxying.
	StripPrefix bool `toml:"strip_prefix"`
	// Index is served for a directory on static routes. Default "index.html".
	Index string `toml:"index"`
	// SPA serves the index for paths that do not exist (single-page apps).
	SPA bool `toml:"spa"`

	SetRequestHeaders     map[string]string `toml:"set_request_headers"`
	RemoveRequestHeaders  []string          `toml:"remove_request_headers"`
	SetResponseHeaders    map[string]string `toml:"set_response_headers"`
	RemoveResponseHeaders []string          `toml:"remove_response_headers"`

	MaxBody *ByteSize `toml:"max_body"` // default 1MiB (nginx client_max_body_size)
	// UpstreamReadTimeout overrides the upstream's read_timeout for this
	// route (a streaming endpoint that pauses longer than the rest).
	UpstreamReadTimeout *Duration `toml:"upstream_read_timeout"`
	WebSocket           bool      `toml:"websocket"` // allow Upgrade: websocket
	Gzip                bool      `toml:"gzip"`      // compress compressible responses
	// Access turns the access log off (or on) for this route alone (nginx
	// "access_log off" in a location); unset follows log.access.
	Access *bool `toml:"access"`
	// Release sends a share of the requests to a second upstream (see
	// Release).
	Release *Release `toml:"release"`
	// WAF runs the requests through the OWASP Core Rule Set with the [waf]
	// settings: "off" (default), "detect" (log and count what would be
	// refused) or "block" (refuse it with 403, code 40302).
	WAF string `toml:"waf"`
	// Cache stores the route's GET and HEAD answers (see RouteCache).
	Cache *RouteCache `toml:"cache"`

	// Per-route keys of the identity, callback and limits features, inlined.
	RouteAuth
	RouteCallback
	RouteAccess
	RouteAnswers
}

// Rewrite replaces a path that From matches with To, where $1..$9 are
// From's groups (see proxy.Template for the variables). A To with a query
// replaces the client's; without one the client's query is kept.
type Rewrite struct {
	From string `toml:"from"`
	To   string `toml:"to"`
}

// Redirect answers with Status and a Location built from To, where $1..$9
// are the groups of the route's regex.
type Redirect struct {
	To     string `toml:"to"`
	Status int    `toml:"status"` // 301, 302 (default), 307 or 308
}

// RegexSource is the expression a regex route is compiled from.
func (r *Route) RegexSource() string {
	if r.RegexIgnoreCase {
		return "(?i)" + r.Regex
	}
	return r.Regex
}

// Respond is a fixed answer.
type Respond struct {
	Status      int    `toml:"status"` // default 200
	Body        string `toml:"body"`
	ContentType string `toml:"content_type"` // default text/plain; charset=utf-8
}
