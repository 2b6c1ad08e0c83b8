package config

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// LimitSections are the top-level sections of rate limits, bans and access
// rules. An nginx user reads [[limits]] as limit_req_zone + limit_req,
// [access] as allow/deny + limit_conn, and [bans] as what fail2ban would add.
type LimitSections struct {
	Limits  []LimitRule `toml:"limits"`
	Limiter Limiter     `toml:"limiter"`
	Bans    Bans        `toml:"bans"`
	Access  Access      `toml:"access"`
}

// Key parts of a [[limits]] rule; a composite joins them with "+"
// ("openid+route"). "header:<Name>" is the value of one request header.
const (
	LimitKeyOpenID = "openid"
	LimitKeyIP     = "ip"
	LimitKeyRoute  = "route"
	LimitKeyAppID  = "appid"
	LimitKeyHeader = "header:"
)

// What a rule does when a request lacks a part of its key.
const (
	OnMissingIP     = "ip"     // count the request under its client IP instead
	OnMissingReject = "reject" // answer 403 without counting
)

// What the limiter does while Redis does not answer.
const (
	RedisFailOpen   = "fail_open"   // allow every request
	RedisFailClosed = "fail_closed" // refuse every limited request (429)
	RedisFailLocal  = "local"       // each replica enforces rate/replicas in memory
)

// Violation kinds that can count towards a ban.
const (
	ViolationRateLimit = "rate_limit" // a [[limits]] rule refused the request
	ViolationSignature = "signature"  // a bad request signature (40103)
	ViolationToken     = "token"      // a forged or malformed session token (40101)
	ViolationReplay    = "replay"     // a replayed or stale signed request (40104, 40105)
)

// ViolationKinds lists every kind [bans].count accepts.
var ViolationKinds = []string{ViolationRateLimit, ViolationSignature, ViolationToken, ViolationReplay}

// LimitRule is one [[limits]] table: a GCRA bucket per key (nginx
// limit_req_zone), enforced on the routes it names.
type LimitRule struct {
	// Name labels metrics and the RateLimit headers; letters, digits, "_",
	// "-" and "." only. Unique.
	Name string `toml:"name"`
	// Key says whose bucket a request draws from: openid, ip, route, appid,
	// header:<Name>, or a composite such as "openid+route". Default "ip".
	Key string `toml:"key"`
	// Rate is the sustained rate: "N/s", "N/m", "N/h" or "N/d".
	Rate Rate `toml:"rate"`
	// Burst is how many requests may be made at once from a full bucket.
	// Default: the N of Rate, so "1000/d" is a rolling daily quota of 1000.
	Burst int `toml:"burst"`
	// Routes are the route names the rule applies to; empty means every route.
	Routes []string `toml:"routes"`
	// OnMissingKey is "ip" (default: count under the client IP, never one
	// bucket shared by everyone) or "reject" (403).
	OnMissingKey string `toml:"on_missing_key"`
}

func (r *LimitRule) setDefaults() {
	r.Key = LimitKeyIP
	r.OnMissingKey = OnMissingIP
}

// Limiter holds the settings shared by every rule.
type Limiter struct {
	// OnRedisFailure is fail_open, fail_closed or local (default): what the
	// rules do while [cluster] redis does not answer.
	OnRedisFailure string `toml:"on_redis_failure"`
	// Replicas is how many replicas share the limits; with on_redis_failure
	// = "local" each one allows rate/replicas while Redis is away. Default 1.
	Replicas int `toml:"replicas"`
	// RedisTimeout bounds one limiter call to Redis. Default 100ms.
	RedisTimeout Duration `toml:"redis_timeout"`
	// ProbeInterval is how often, while Redis is failing, one request tries
	// it again. Default 1s.
	ProbeInterval Duration `toml:"probe_interval"`
	// MaxKeys caps the keys one rule keeps in memory (about 120 bytes
	// each); idle keys expire on their own. Default 250000.
	MaxKeys int `toml:"max_keys"`
	// AlwaysSendHeaders adds RateLimit-Policy / RateLimit to allowed
	// responses too, not only to 429s. Default false.
	AlwaysSendHeaders bool `toml:"always_send_headers"`
	// Leases lets a replica take several requests' worth of a hot key's
	// Redis bucket at once and answer from it in memory (docs/limits.md,
	// "Leases"). Default true; only rules with a burst of 40 or more
	// lease.
	Leases bool `toml:"leases"`
}

func (l *Limiter) setDefaults() {
	l.OnRedisFailure = RedisFailLocal
	l.Replicas = 1
	l.RedisTimeout = Duration(100 * time.Millisecond)
	l.ProbeInterval = Duration(time.Second)
	l.MaxKeys = 250000
	l.Leases = true
}

// Bans block a key (the openid when known, else the IP) for Duration after
// Threshold violations within Window: 403 without reaching the upstream.
type Bans struct {
	// Threshold is the number of violations that earn a ban; 0 (default)
	// turns bans off.
	Threshold int `toml:"threshold"`
	// Window is how long violations are remembered. Default 1m.
	Window Duration `toml:"window"`
	// Duration is how long a ban lasts. Default 15m.
	Duration Duration `toml:"duration"`
	// Count lists the violation kinds that count: rate_limit, signature,
	// token, replay. Default all of them.
	Count []string `toml:"count"`
	// BanIP allows banning an IP for violations of anonymous requests.
	// Default true; turn it off where carrier NAT puts many users behind
	// one address.
	BanIP bool `toml:"ban_ip"`
	// MaxBans caps the bans kept at once; the soonest to expire gives way.
	// Default 100000.
	MaxBans int `toml:"max_bans"`
	// SyncInterval is how often a replica reads the bans the others issued
	// through Redis. Default 1s.
	SyncInterval Duration `toml:"sync_interval"`
}

func (b *Bans) setDefaults() {
	b.Window = Duration(time.Minute)
	b.Duration = Duration(15 * time.Minute)
	b.Count = append([]string(nil), ViolationKinds...)
	b.BanIP = true
	b.MaxBans = 100000
	b.SyncInterval = Duration(time.Second)
}

// Access holds the connection and client rules applied to every route.
type Access struct {
	// IPAllow, when not empty, admits only these networks (nginx allow).
	IPAllow []netip.Prefix `toml:"ip_allow"`
	// IPDeny refuses these networks (nginx deny); deny wins over allow.
	IPDeny []netip.Prefix `toml:"ip_deny"`
	// IPAllowFiles and IPDenyFiles add one CIDR or IP a line, "#" starts a
	// comment; they are read again on every reload.
	IPAllowFiles []string `toml:"ip_allow_files"`
	IPDenyFiles  []string `toml:"ip_deny_files"`
	// UserAgentDeny are regular expressions (Go syntax); a request whose
	// User-Agent matches one is refused.
	UserAgentDeny []string `toml:"user_agent_deny"`
	// MaxConnsPerIP caps a client IP's open connections (nginx limit_conn
	// per $binary_remote_addr); 0 (default) is no cap. Trusted proxies are
	// exempt.
	MaxConnsPerIP int `toml:"max_conns_per_ip"`
	// MaxConns caps all open connections; 0 (default) is no cap.
	MaxConns int `toml:"max_conns"`
	// MaxInflightPerOpenID caps one user's requests in progress at once on
	// one replica; 0 (default) is no cap.
	MaxInflightPerOpenID int `toml:"max_inflight_per_openid"`
}

// RouteAccess is a route's own IP lists, applied after the global [access]
// lists, and its cap on one client's requests in progress. A route's rate
// limits are the [[limits]] rules naming it.
type RouteAccess struct {
	IPAllow      []netip.Prefix `toml:"ip_allow"`
	IPDeny       []netip.Prefix `toml:"ip_deny"`
	IPAllowFiles []string       `toml:"ip_allow_files"`
	IPDenyFiles  []string       `toml:"ip_deny_files"`
	// MaxInflightPerIP caps one client IP's requests in progress on this
	// route on one replica (nginx limit_conn in a location, keyed by
	// $binary_remote_addr); 0 (default) is no cap.
	MaxInflightPerIP int `toml:"max_inflight_per_ip"`
}

// Rate is N requests per Per, written "N/s", "N/m", "N/h" or "N/d".
type Rate struct {
	N   int64
	Per time.Duration
}

// Interval is the time one request's share of the rate takes to come back.
func (r Rate) Interval() time.Duration {
	if r.N <= 0 {
		return 0
	}
	return r.Per / time.Duration(r.N)
}

// String writes the rate back as "N/unit".
func (r Rate) String() string {
	if r.N == 0 {
		return ""
	}
	unit := "s"
	switch r.Per {
	case time.Minute:
		unit = "m"
	case time.Hour:
		unit = "h"
	case 24 * time.Hour:
		unit = "d"
	}
	return strconv.FormatInt(r.N, 10) + "/" + unit
}

// MaxRateCount bounds N so that one interval is at least a microsecond,
// the resolution of the Redis limiter.
const MaxRateCount = 1000000

// ParseRate reads "N/s", "N/m", "N/h" or "N/d" with 1 <= N <= 1000000 per
// second (so one interval is never below a microsecond).
func ParseRate(s string) (Rate, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("%q is not a rate; write it like \"10/s\", \"600/m\", \"5000/h\" or \"100000/d\"", s)
	}
	var per time.Duration
	switch strings.TrimSpace(unit) {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	case "h":
		per = time.Hour
	case "d":
		per = 24 * time.Hour
	default:
		return Rate{}, fmt.Errorf("%q has unit %q; use s, m, h or d (as in \"10/s\")", s, unit)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 1 {
		return Rate{}, fmt.Errorf("%q must start with a whole number of requests of 1 or more, as in \"10/s\"", s)
	}
	if per/time.Duration(n) < time.Microsecond {
		return Rate{}, fmt.Errorf("%q is too fast; at most %d per second can be limited", s, MaxRateCount)
	}
	return Rate{N: n, Per: per}, nil
}

// UnmarshalText parses a rate string.
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// MarshalText writes the rate string.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// ParseCIDR reads one network, "10.0.0.0/8" or "2001:db8::/32", or a bare
// address meaning that address alone. Host bits are cleared, as nginx does.
func ParseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network; write it like \"10.0.0.0/8\" or \"2001:db8::/32\"", s)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or network; write it like \"192.0.2.7\" or \"10.0.0.0/8\"", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// MaxCIDRLine bounds one line of a CIDR file; a longer line is not a CIDR.
const MaxCIDRLine = 4096

// ParseCIDRList reads a CIDR file: one network or address a line; "#"
// starts a comment; blank lines are ignored. The error names the first bad
// line.
func ParseCIDRList(r io.Reader) ([]netip.Prefix, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), MaxCIDRLine)
	var out []netip.Prefix
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		p, err := ParseCIDR(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading CIDR list: %w", err)
	}
	return out, nil
}

// ReadCIDRFile reads a CIDR file (see ParseCIDRList).
func ReadCIDRFile(path string) ([]netip.Prefix, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening CIDR file: %w", err)
	}
	defer f.Close()
	ps, err := ParseCIDRList(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ps, nil
}

// MaxKeyParts bounds a composite key; more parts only spread one client
// over more buckets.
const MaxKeyParts = 4

// ParseLimitKey splits a rule key into its parts, in order, with header
// names in canonical form ("header:X-Api-Key").
func ParseLimitKey(s string) ([]string, error) {
	fields := strings.Split(s, "+")
	if len(fields) > MaxKeyParts {
		return nil, fmt.Errorf("%q has %d parts; combine at most %d", s, len(fields), MaxKeyParts)
	}
	parts := make([]string, 0, len(fields))
	for _, f := range fields {
		f = strings.TrimSpace(f)
		switch {
		case f == LimitKeyOpenID, f == LimitKeyIP, f == LimitKeyRoute, f == LimitKeyAppID:
		case strings.HasPrefix(f, LimitKeyHeader):
			name := strings.TrimSpace(strings.TrimPrefix(f, LimitKeyHeader))
			if !validToken(name) {
				return nil, fmt.Errorf("%q: %q is not a header name; write it like \"header:X-Api-Key\"", s, name)
			}
			f = LimitKeyHeader + http.CanonicalHeaderKey(name)
		default:
			return nil, fmt.Errorf("%q: unknown key part %q; use openid, ip, route, appid or header:<Name>, joined with \"+\"", s, f)
		}
		for _, p := range parts {
			if strings.EqualFold(p, f) {
				return nil, fmt.Errorf("%q names %q twice", s, f)
			}
		}
		parts = append(parts, f)
	}
	return parts, nil
}
