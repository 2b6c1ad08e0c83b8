// Package redisconn owns the link to the shared Redis of [cluster]: the URL
// read into one of go-redis' three clients (one node, a master found through
// Sentinel, a Redis Cluster), TLS with a private CA and a client
// certificate, and the connection check that tells a wrong password or a
// refused certificate (a config error) from a Redis that is merely away.
// `edge validate` and `edge run` both read the URL here, so what one accepts
// the other runs.
package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Mode is the topology a URL names.
type Mode string

const (
	Single   Mode = "single"
	Sentinel Mode = "sentinel"
	Cluster  Mode = "cluster"
)

// schemes maps each accepted scheme to its topology and whether it speaks
// TLS. redis:// with ?master_name= is Sentinel too, as go-redis reads it.
var schemes = map[string]struct {
	mode Mode
	tls  bool
}{
	"redis":           {Single, false},
	"rediss":          {Single, true},
	"redis-sentinel":  {Sentinel, false},
	"rediss-sentinel": {Sentinel, true},
	"redis+sentinel":  {Sentinel, false},
	"rediss+sentinel": {Sentinel, true},
	"redis+cluster":   {Cluster, false},
	"rediss+cluster":  {Cluster, true},
}

// options are the query parameters a URL may carry; anything else is
// refused rather than ignored, so a typo cannot silently drop a setting.
var options = []string{"addr", "master_name", "sentinel_username", "sentinel_password", "dial_timeout", "pool_size"}

// Target is a parsed [cluster] redis URL. It holds the password: never
// print it.
type Target struct {
	Mode Mode
	TLS  bool
	opts redis.UniversalOptions
}

// Addrs are the addresses the client starts from: the node, the sentinels,
// or the cluster's seeds.
func (t *Target) Addrs() []string { return t.opts.Addrs }

// MasterName is the Sentinel master's name; empty in the other modes.
func (t *Target) MasterName() string { return t.opts.MasterName }

// Parse reads a [cluster] redis URL. Its errors quote nothing of the URL
// but option names: a malformed URL may put its password anywhere. They
// name the part that is wrong and how to fix it.
func Parse(raw string) (*Target, error) {
	// url.Parse takes one host; the list of a Sentinel or Cluster URL is
	// cut out first, and a placeholder parsed in its place.
	raw, hostList := cutHosts(raw)
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New(`is not a URL; write "redis://:PASSWORD@HOST:6379/0"`)
	}
	sc, ok := schemes[u.Scheme]
	if !ok {
		return nil, errors.New("its scheme is not one of redis://, rediss:// (TLS), redis-sentinel://, rediss-sentinel://, redis+cluster://, rediss+cluster://")
	}
	t := &Target{Mode: sc.mode, TLS: sc.tls}
	q := u.Query()
	for k := range q {
		if !slices.Contains(options, k) {
			// Not quoted back: a password holding an unencoded '?' lands
			// here, and its rest would be printed.
			return nil, fmt.Errorf("has an option edge does not know; the options are %s (a '?', '#' or '/' in the password must be percent-encoded: %%3F, %%23, %%2F)", strings.Join(options, ", "))
		}
	}
	if name := q.Get("master_name"); name != "" {
		if t.Mode == Cluster {
			return nil, errors.New("master_name names a Sentinel master; a redis+cluster:// URL lists cluster nodes and takes none")
		}
		t.Mode, t.opts.MasterName = Sentinel, name
	}
	if t.Mode == Sentinel && t.opts.MasterName == "" {
		return nil, errors.New(`a Sentinel URL needs the master's name: add "?master_name=mymaster" (as in sentinel.conf's "sentinel monitor mymaster ...")`)
	}
	defPort := "6379"
	if t.Mode == Sentinel {
		defPort = "26379"
	}
	var hosts []string
	if hostList != "" {
		hosts = strings.Split(hostList, ",")
	}
	hosts = append(hosts, q["addr"]...)
	if len(hosts) == 0 {
		return nil, errors.New(`names no host; write "redis://HOST:6379"`)
	}
	for i, h := range hosts {
		addr, err := hostPort(h, defPort)
		if err != nil {
			return nil, fmt.Errorf("address %d of the host list %s", i+1, err)
		}
		t.opts.Addrs = append(t.opts.Addrs, addr)
	}
	if t.Mode == Single && len(t.opts.Addrs) > 1 {
		return nil, errors.New(`lists several addresses: for Sentinel add "?master_name=NAME" (or write redis-sentinel://), for a Redis Cluster write redis+cluster://`)
	}
	if u.User != nil {
		t.opts.Username = u.User.Username()
		t.opts.Password, _ = u.User.Password()
	}
	t.opts.SentinelUsername = q.Get("sentinel_username")
	t.opts.SentinelPassword = q.Get("sentinel_password")
	if t.Mode != Sentinel && (t.opts.SentinelUsername != "" || t.opts.SentinelPassword != "") {
		return nil, errors.New("sentinel_username and sentinel_password are for Sentinel URLs only")
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return nil, errors.New("its path is not a database number; write /0 or leave the path out")
		}
		if n != 0 && t.Mode == Cluster {
			return nil, errors.New("a Redis Cluster has database 0 only; leave the path out")
		}
		t.opts.DB = n
	}
	if v := q.Get("dial_timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, errors.New("dial_timeout is not a positive duration like 2s")
		}
		t.opts.DialTimeout = d
	}
	if v := q.Get("pool_size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, errors.New("pool_size is not a positive number")
		}
		t.opts.PoolSize = n
	}
	return t, nil
}

// hostPlaceholder stands for the host list while url.Parse reads the rest.
const hostPlaceholder = "hosts.invalid"

// cutHosts replaces the host list of raw (after "scheme://" and any
// "userinfo@", up to the path or query) with hostPlaceholder.
func cutHosts(raw string) (rest, hosts string) {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw, ""
	}
	start := i + 3
	end := len(raw)
	if j := strings.IndexAny(raw[start:], "/?#"); j >= 0 {
		end = start + j
	}
	if at := strings.LastIndex(raw[start:end], "@"); at >= 0 {
		start += at + 1
	}
	hosts = raw[start:end]
	if hosts == "" {
		return raw, ""
	}
	return raw[:start] + hostPlaceholder + raw[end:], hosts
}

func hostPort(h, defPort string) (string, error) {
	if h == "" {
		return "", errors.New("is empty")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port: the whole is the host (brackets kept off an IPv6 one).
		host, port = strings.Trim(h, "[]"), defPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", errors.New("has no valid port (a password needs an @ after it: redis://:PASSWORD@HOST:6379)")
	}
	if host == "" {
		return "", errors.New("has no host")
	}
	return net.JoinHostPort(host, port), nil
}

// TLSFiles are the PEM files of [cluster] redis_ca, redis_client_cert and
// redis_client_key; each may be empty.
type TLSFiles struct {
	CA, Cert, Key string
}

// TLSConfig builds the client's TLS settings: the system roots, or only
// the CA file's certificates when one is given (a private CA need not be
// trusted by the whole machine), and the client certificate when Redis asks
// for one (tls-auth-clients). The server name is left to crypto/tls, which
// takes it from each address dialled: a Cluster or Sentinel client talks
// to several nodes.
func TLSConfig(f TLSFiles) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", f.CA)
		}
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("a client certificate needs both redis_client_cert and redis_client_key")
	}
	if f.Cert != "" {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("loading the client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// NewClient makes the client for t; tlsConf is used only by TLS schemes.
// Deadlines of the caller's context bound every call.
func NewClient(t *Target, tlsConf *tls.Config) redis.UniversalClient {
	o := t.opts
	if t.TLS {
		o.TLSConfig = tlsConf
		if o.TLSConfig == nil {
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	// Without it go-redis ignores deadlines and waits out its own read
	// timeout (5 s), or as long as a frozen Redis sleeps: the limiter's
	// redis_timeout, and every caller's deadline, must bound the call.
	o.ContextTimeoutEnabled = true
	switch t.Mode {
	case Sentinel:
		return redis.NewFailoverClient(o.Failover())
	case Cluster:
		return redis.NewClusterClient(o.Cluster())
	}
	return redis.NewClient(o.Simple())
}

// Problem classes of a failed connection check.
const (
	// Unreachable: nothing answered (refused, timed out, reset). Redis may
	// come back; the limiters' failure policy covers the meantime.
	Unreachable = "unreachable"
	// Auth: Redis answered and refused the credentials.
	Auth = "auth"
	// TLS: the handshake failed (an unknown CA, a name mismatch, a
	// plaintext server, a refused client certificate).
	TLS = "tls"
)

// CheckError is a failed connection check. Its message never holds the
// password.
type CheckError struct {
	Kind string
	msg  string
}

func (e *CheckError) Error() string { return e.msg }

// Check asks Redis for PING, through the whole topology: a Sentinel client
// first asks the sentinels for the master, a Cluster client loads the slot
// map from a seed.
func Check(ctx context.Context, c redis.UniversalClient, t *Target) error {
	err := c.Ping(ctx).Err()
	if err == nil {
		return nil
	}
	kind, hint := classify(err)
	if kind == Unreachable && t.TLS && errors.Is(err, context.DeadlineExceeded) {
		hint += " (a plain-text port reached with rediss:// looks the same: it waits for a command the TLS handshake never sends)"
	}
	msg := err.Error()
	for _, secret := range []string{t.opts.Password, t.opts.SentinelPassword} {
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "<password>")
		}
	}
	return &CheckError{Kind: kind, msg: fmt.Sprintf("redis at %s (%s): %s: %s", strings.Join(t.opts.Addrs, ","), t.Mode, hint, msg)}
}

func classify(err error) (kind, hint string) {
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var header tls.RecordHeaderError
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknownCA):
		return TLS, "its certificate is signed by a CA not trusted here: set [cluster] redis_ca to the CA's PEM file"
	case errors.As(err, &host):
		return TLS, "its certificate is not for the address dialled: connect by a name or IP its certificate lists"
	case errors.As(err, &invalid), errors.As(err, &verify):
		return TLS, "its certificate is not valid"
	case errors.As(err, &header):
		return TLS, "it does not speak TLS on this port: use redis:// or Redis' tls-port"
	case errors.As(err, &alert):
		return TLS, "it refused the TLS handshake (a missing or untrusted client certificate? set redis_client_cert and redis_client_key)"
	}
	s := err.Error()
	switch {
	case strings.HasPrefix(s, "WRONGPASS"), strings.HasPrefix(s, "NOAUTH"), strings.HasPrefix(s, "NOPERM"),
		strings.Contains(s, "invalid password"), strings.Contains(s, "invalid username-password"),
		strings.Contains(s, "AUTH <password> called without any password configured"):
		return Auth, "it refused the credentials: check the user and password of the URL"
	case strings.Contains(s, "tls:"), strings.Contains(s, "x509:"):
		return TLS, "the TLS handshake failed"
	case strings.Contains(s, "EOF") || strings.Contains(s, "connection reset"):
		return Unreachable, "it closed the connection (a TLS-only port reached with redis://? then use rediss://)"
	}
	return Unreachable, "it does not answer"
}
