// Package identity owns who a mini-program request comes from: the login
// endpoint (WeChat's code2Session, Alipay's alipay.system.oauth.token),
// session tokens sealed with AES-GCM, the EDGE-HMAC-SHA256 request
// signature with its replay protection, JWT and trusted-header identities,
// the Referer check, and the stripping and injecting of the identity
// headers the upstream reads.
package identity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/apierror"
	"edge/internal/config"
	"edge/internal/metrics"
)

// Options are what a Service takes from the process rather than from the
// config; they outlive reloads.
type Options struct {
	// Nonces remembers the nonces of signed requests. Create it once per
	// process with NewNonceStore so a reload does not forget them; nil gives
	// the Service a private in-memory store.
	Nonces NonceStore
	// Redis keeps the token revocation list; nil: no revocation.
	Redis Redis
	// Revocations is this replica's copy of the list (NewRevocations),
	// kept across reloads; nil: Redis alone.
	Revocations *Revocations
	// RedisTimeout bounds each Redis call of a request (the revocation
	// check, the shared nonce store): a Redis that stops answering costs a
	// request at most this, then the local fallback applies. 0: unbounded.
	RedisTimeout time.Duration
	// RedisGate skips Redis while it does not answer; one per process,
	// shared with the nonce store. nil: every call tries Redis.
	RedisGate *RedisGate
	// Client calls code2Session, Alipay's gateway and login hooks; nil: a
	// client that follows no redirects. Each call is bounded by the app's
	// login_timeout.
	Client *http.Client
	// Metrics counts logins and rejections; nil: not counted.
	Metrics *metrics.Identity
	// Log receives what the client is not told; nil: discarded.
	Log *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// OnReject, when set, is called for every request an auth policy
	// refuses (before the answer is written), so bans can count repeated
	// signature and token failures per client.
	OnReject func(r *http.Request, code apierror.Code)
}

// Service is the identity part of one compiled config. It is immutable once
// built and safe for concurrent use.
type Service struct {
	opts   Options
	sealer *Sealer
	skew   time.Duration
	// revocationClosed and nonceClosed refuse what cannot be checked
	// while Redis is away ([sessions] revocation_failure, nonce_failure).
	revocationClosed bool
	nonceClosed      bool
	// revocationLocal lets a complete copy of the revocation list answer
	// alone ([sessions] revocation_check).
	revocationLocal bool
	apps            []*app
	byName          map[string]*app
}

type app struct {
	cfg config.App
}

// Redis is what identity asks of Redis: the shared nonce store (SetNX) and
// the revocation list (a script writes it, ZScore checks it, the others
// read it back). Any redis.UniversalClient is one.
type Redis interface {
	redis.Scripter
	SetNX(ctx context.Context, key string, value any, expiration time.Duration) *redis.BoolCmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
	Exists(ctx context.Context, keys ...string) *redis.IntCmd
	ZScore(ctx context.Context, key, member string) *redis.FloatCmd
	ZCount(ctx context.Context, key, min, max string) *redis.IntCmd
	ZRem(ctx context.Context, key string, members ...any) *redis.IntCmd
	ZRemRangeByScore(ctx context.Context, key, min, max string) *redis.IntCmd
	ZRangeByScoreWithScores(ctx context.Context, key string, opt *redis.ZRangeBy) *redis.ZSliceCmd
}

// redisContext bounds one Redis call made for req by RedisTimeout.
func (s *Service) redisContext(req *http.Request) (context.Context, context.CancelFunc) {
	if s.opts.Redis == nil || s.opts.RedisTimeout <= 0 {
		return req.Context(), func() {}
	}
	return context.WithTimeout(req.Context(), s.opts.RedisTimeout)
}

// NewNonceStore returns the store a process keeps across reloads: in Redis
// when rdb is set, so replicas share it, otherwise in memory with cap
// entries (sessions.nonce_cache_size).
func NewNonceStore(rdb Redis, cap int, gate *RedisGate) NonceStore {
	if rdb != nil {
		return NewRedisNonces(rdb, cap, gate)
	}
	return NewMemoryNonces(cap)
}

// New builds the Service of a validated config.
func New(cfg *config.Config, opts Options) (*Service, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Client == nil {
		opts.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if opts.Nonces == nil {
		opts.Nonces = NewMemoryNonces(cfg.Sessions.NonceCacheSize)
	}
	s := &Service{opts: opts, skew: cfg.Sessions.Skew.Std(), byName: make(map[string]*app, len(cfg.Apps)),
		revocationClosed: cfg.Sessions.RevocationFailure == config.FailClosed,
		nonceClosed:      cfg.Sessions.NonceFailure == config.FailClosed,
		revocationLocal:  cfg.Sessions.RevocationCheck == config.RevocationCheckLocal}
	if len(cfg.Sessions.Secrets) > 0 {
		secrets := make([][]byte, len(cfg.Sessions.Secrets))
		for i, sec := range cfg.Sessions.Secrets {
			secrets[i] = []byte(sec.Value())
		}
		sealer, err := NewSealer(secrets, cfg.Sessions.TTL.Std(), opts.Redis, opts.Now)
		if err != nil {
			return nil, fmt.Errorf("sessions: %w", err)
		}
		sealer.held = opts.Revocations
		s.sealer = sealer
	}
	for _, c := range cfg.Apps {
		a := &app{cfg: c}
		s.apps = append(s.apps, a)
		s.byName[c.Name] = a
	}
	if len(s.apps) > 0 && s.sealer == nil {
		return nil, errors.New("apps are configured but sessions.secrets is empty")
	}
	return s, nil
}

// Sealer issues and opens the session tokens (for an admin endpoint that
// revokes them, or tests). Nil when no session secret is configured.
func (s *Service) Sealer() *Sealer { return s.sealer }

// Login is one app's login endpoint, to be routed as POST Path.
type Login struct {
	App     string
	Path    string
	Handler http.Handler
}

// Logins returns the login endpoints of every app.
func (s *Service) Logins() ([]Login, error) {
	var out []Login
	for _, a := range s.apps {
		h, err := s.newLoginHandler(a)
		if err != nil {
			return nil, fmt.Errorf("app %q: %w", a.cfg.Name, err)
		}
		out = append(out, Login{App: a.cfg.Name, Path: a.cfg.LoginPath, Handler: h})
	}
	return out, nil
}
