package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/apierror"
	"edge/internal/config"
	"edge/internal/identity"
	"edge/internal/limits"
	"edge/internal/logsample"
	"edge/internal/metrics"
	edgetls "edge/internal/tls"
)

// features is the per-process state of identity, limits and the cluster
// link: it outlives snapshots (nonces, limiter buckets, bans, the Redis
// connection pool), while each snapshot compiles its own identity service
// and route chains from it.
type features struct {
	redis  *redis.Client // nil: one machine
	limits *limits.Engine
	nonces identity.NonceStore
}

// nonceCacheSize is the cap of the in-memory nonce store, from the first
// config (the store outlives reloads).
func newFeatures(cfg *config.Config, m *metrics.Metrics, log *slog.Logger) (*features, error) {
	f := &features{}
	if url := cfg.Cluster.Redis.Value(); url != "" {
		opts, err := redis.ParseURL(url)
		if err != nil {
			// The URL may hold a password: never echo it.
			return nil, fmt.Errorf("cluster.redis: not a valid redis:// or rediss:// URL")
		}
		// Without it go-redis ignores deadlines and waits out its own read
		// timeout (5 s), or as long as a frozen Redis sleeps: the limiter's
		// redis_timeout, and every caller's deadline, must bound the call.
		opts.ContextTimeoutEnabled = true
		f.redis = redis.NewClient(opts)
		// go-redis has one logger per process, and edge one Redis client.
		redis.SetLogger(&redisLog{log: log})
	}
	var scripter redis.Scripter
	var identityRedis identity.Redis
	if f.redis != nil {
		scripter, identityRedis = f.redis, f.redis
	}
	var err error
	f.limits, err = limits.New(cfg, limits.Options{Redis: scripter, Metrics: m.Limits, Logger: log})
	if err != nil {
		f.close()
		return nil, fmt.Errorf("limits: %w", err)
	}
	f.nonces = identity.NewNonceStore(identityRedis, cfg.Sessions.NonceCacheSize)
	return f, nil
}

// redisLog makes go-redis' own lines (a dial that failed, a connection it
// dropped) records of the error log, sampled per kind: a Redis that is away
// would otherwise add one per call. Its kinds are go-redis' format strings,
// a fixed set, so the samplers are bounded.
type redisLog struct {
	log      *slog.Logger
	samplers sync.Map // format → *logsample.Sampler
}

func (l *redisLog) Printf(ctx context.Context, format string, v ...any) {
	s, ok := l.samplers.Load(format)
	if !ok {
		s, _ = l.samplers.LoadOrStore(format, new(logsample.Sampler))
	}
	allow, suppressed := s.(*logsample.Sampler).Allow(time.Now())
	if !allow {
		return
	}
	l.log.LogAttrs(ctx, slog.LevelWarn, "redis client",
		slog.String("detail", fmt.Sprintf(format, v...)), logsample.Suppressed(suppressed))
}

func (f *features) tlsOptions(m *metrics.Metrics) []edgetls.Option {
	// Orders wait until the listeners are bound: the CA validates against them.
	opts := []edgetls.Option{edgetls.WithRecorder(m.TLS), edgetls.WithDeferredOrders()}
	if f.redis != nil {
		opts = append(opts, edgetls.WithRedis(f.redis))
	}
	return opts
}

func (f *features) close() {
	if f.limits != nil {
		_ = f.limits.Close()
	}
	if f.redis != nil {
		_ = f.redis.Close()
	}
}

// violationKind maps an auth rejection to the kind [bans].count names, or
// "" for rejections that are no sign of abuse: an expired token is a normal
// event for a real user, and Referer or body-size refusals are not auth
// failures.
func violationKind(code apierror.Code) string {
	switch code {
	case apierror.AuthMissing:
		return config.ViolationToken
	case apierror.BadSignature:
		return config.ViolationSignature
	case apierror.StaleTimestamp, apierror.Replayed:
		return config.ViolationReplay
	}
	return ""
}

// identityService compiles the snapshot's identity policies. Rejections
// count towards bans.
func (g *Gateway) identityService(cfg *config.Config) (*identity.Service, error) {
	return identity.New(cfg, identity.Options{
		Nonces:       g.features.nonces,
		Redis:        g.identityRedis(),
		RedisTimeout: cfg.LimitSections.Limiter.RedisTimeout.Std(),
		Metrics:      g.metrics.Identity,
		Log:          g.log,
		OnReject: func(r *http.Request, code apierror.Code) {
			if kind := violationKind(code); kind != "" {
				g.features.limits.ReportViolation(r, kind)
			}
		},
	})
}

// identityRedis is the shared Redis as identity sees it; a nil interface,
// not a typed nil pointer, when there is none.
func (g *Gateway) identityRedis() identity.Redis {
	if g.features.redis == nil {
		return nil
	}
	return g.features.redis
}

// loginRoute is an app's login endpoint, served at its exact path on any
// host, with the route name "login_<app>" (for metrics and [[limits]]).
func (g *Gateway) loginRoutes(svc *identity.Service) (map[string]*route, error) {
	logins, err := svc.Logins()
	if err != nil {
		return nil, err
	}
	out := make(map[string]*route, len(logins))
	for _, l := range logins {
		name := config.LoginRouteName(l.App)
		out[l.Path] = &route{
			name:    name,
			metrics: g.metrics.Route(name),
			maxBody: loginMaxBody,
			handler: g.features.limits.Guard(name, g.features.limits.Limit(name, l.Handler)),
		}
	}
	return out, nil
}

// loginMaxBody bounds a login request: {"code": "..."} is a few dozen bytes.
const loginMaxBody = 16 << 10

// port80 is the HTTP listener's handler for one snapshot: ACME challenges,
// then the redirect to HTTPS (or the routes, for exempt hosts and when
// redirect_http is off). It is built on first use because the HTTPS port is
// known only once the listener is bound.
type port80 struct {
	once    sync.Once
	handler http.Handler
}

func (g *Gateway) servePort80(w http.ResponseWriter, r *http.Request) {
	s := g.snap.Load()
	s.port80.once.Do(func() {
		var h http.Handler = g
		if s.cfg.Server.RedirectHTTP {
			h = edgetls.RedirectHandler(g.httpsPort.Load().(string), s.cfg.TLS.HTTPRedirectExempt, g)
		}
		s.port80.handler = g.tlsm.HTTPHandler(h)
	})
	s.port80.handler.ServeHTTP(w, r)
}
