package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"edge/internal/apierror"
	"edge/internal/cache"
	"edge/internal/config"
	"edge/internal/identity"
	"edge/internal/limits"
	"edge/internal/logsample"
	"edge/internal/metrics"
	"edge/internal/process"
	"edge/internal/proxy"
	"edge/internal/redisbus"
	"edge/internal/redisconn"
	edgetls "edge/internal/tls"
	"edge/internal/wechatapi"
)

// lasting is the state that outlives a snapshot, in one place: the Redis
// link, limiter buckets and bans, nonces, and the upstream targets with their
// health, counters and connection pools. A reload compiles a new snapshot
// against it; only a restart replaces it.
type lasting struct {
	redis  redis.UniversalClient // nil: one machine
	limits *limits.Engine
	nonces identity.NonceStore
	// bus carries bans and revocations between replicas at once; nil
	// without Redis.
	bus *redisbus.Bus
	// revocations is this replica's copy of the revocation list; nil
	// without Redis.
	revocations *identity.Revocations
	// redisGate is identity's view of whether Redis answers; nil without
	// Redis.
	redisGate *identity.RedisGate
	targets   *proxy.Registry
	// wechat is the access_token service; nil when
	// server.listen_wechat_api is off.
	wechat *wechatapi.Service
	// procs are the instance groups of upstreams with [upstreams.run], by
	// upstream name, started from the first config.
	procs map[string]*process.Group
	// cache is the response cache's memory; a reload changes its bound.
	cache *cache.Store
}

// newLasting sets up the lasting state from the first config; the nonce
// store's cap (sessions.nonce_cache_size) is read from it once.
func newLasting(cfg *config.Config, m *metrics.Metrics, log *slog.Logger) (*lasting, error) {
	l := &lasting{targets: proxy.NewRegistry()}
	l.cache = cache.NewStore(cache.StoreOptions{MaxSize: int64(cfg.Cache.MaxSize), Bytes: m.Cache.Bytes, Entries: m.Cache.Entries})
	if url := cfg.Cluster.Redis.Value(); url != "" {
		// go-redis has one logger per process, and edge one Redis client;
		// set first, so the start-up check's lines are records too.
		redis.SetLogger(&redisLog{log: log})
		c, err := connectRedis(&cfg.Cluster, log)
		if err != nil {
			return nil, err
		}
		l.redis = c
	}
	var scripter redis.Scripter
	var identityRedis identity.Redis
	var publisher limits.Publisher
	if l.redis != nil {
		scripter, identityRedis = l.redis, l.redis
		l.bus = newBus(l, m.Cluster, log)
		publisher = l.bus
		l.revocations = identity.NewRevocations(l.redis, l.bus, log, nil)
	}
	var err error
	l.limits, err = limits.New(cfg, limits.Options{Redis: scripter, Publisher: publisher, Metrics: m.Limits, Logger: log})
	if err != nil {
		l.close()
		return nil, fmt.Errorf("limits: %w", err)
	}
	if identityRedis != nil {
		l.redisGate = identity.NewRedisGate(log, time.Second)
	}
	l.nonces = identity.NewNonceStore(identityRedis, cfg.Sessions.NonceCacheSize, l.redisGate)
	if cfg.Server.WechatAPIOn() {
		o := wechatapi.Options{Config: cfg.WechatAPI, Metrics: m.WechatAPI, Log: log}
		if l.redis != nil {
			o.Redis = l.redis
		}
		l.wechat = wechatapi.New(cfg, o)
	}
	if l.procs, err = startProcesses(cfg, m, log); err != nil {
		l.close()
		return nil, err
	}
	if l.bus != nil {
		l.bus.Start()
	}
	return l, nil
}

// newBus routes the bus's messages to the lasting state; the handlers read
// l's fields, all set before the bus starts.
func newBus(l *lasting, m *metrics.Cluster, log *slog.Logger) *redisbus.Bus {
	return redisbus.New(l.redis, redisbus.Options{
		Log:         log,
		Received:    m.Received,
		Republished: m.Republished(),
		Live:        m.Live(),
		Handlers: map[string]redisbus.Handler{
			limits.EventBan:      func(p string) { l.limits.HandleBanEvent(p) },
			limits.EventUnban:    func(p string) { l.limits.HandleUnbanEvent(p) },
			identity.EventRevoke: func(p string) { l.revocations.HandleEvent(p) },
		},
		OnConnect: []func(){func() { l.limits.Resync() }},
		Load:      []redisbus.Loader{func(ctx context.Context) error { return l.revocations.Load(ctx) }},
		Reconcile: []redisbus.Loader{func(ctx context.Context) error { return l.revocations.Reconcile(ctx) }},
		// The revocation list is one hash-tagged key: its own marker, in
		// its slot, sees its Cluster node restart empty.
		Markers: []string{redisbus.MarkerKey, identity.RevokedMarkerKey},
		Republish: []redisbus.Republisher{
			func(ctx context.Context) error { return l.limits.Republish(ctx) },
			func(ctx context.Context) error { return l.revocations.Republish(ctx) },
		},
	})
}

// redisCheckTimeout bounds the connection check of start-up and of
// edge validate: long enough for a TLS handshake and a Sentinel or Cluster
// discovery across a data centre, short enough not to hold up a start.
const redisCheckTimeout = 5 * time.Second

// connectRedis makes the [cluster] redis client and checks it answers.
// Credentials Redis refuses and a failed TLS handshake are config errors and
// stop the start: every shared limit, ban and revocation would fail until
// the config is fixed. A Redis that does not answer does not: it may be
// restarting, go-redis reconnects by itself, and the limiters' failure
// policy (on_redis_failure) covers the meantime, so it is logged at error
// level and edge starts.
func connectRedis(cl *config.Cluster, log *slog.Logger) (redis.UniversalClient, error) {
	t, tlsConf, err := redisTarget(cl)
	if err != nil {
		return nil, err
	}
	c := redisconn.NewClient(t, tlsConf)
	ctx, cancel := context.WithTimeout(context.Background(), redisCheckTimeout)
	defer cancel()
	err = redisconn.Check(ctx, c, t)
	var ce *redisconn.CheckError
	switch {
	case err == nil:
		log.Info("redis connected", "mode", string(t.Mode), "addrs", strings.Join(t.Addrs(), ","), "tls", t.TLS)
	case errors.As(err, &ce) && ce.Kind == redisconn.Unreachable:
		log.Error("redis does not answer at start-up; starting anyway: shared limits, bans, revocations and nonces apply their failure policies (limiter.on_redis_failure) until it answers",
			"mode", string(t.Mode), "err", err)
	default:
		_ = c.Close()
		return nil, fmt.Errorf("cluster.redis: %w", err)
	}
	return c, nil
}

// redisTarget reads [cluster] as validation checked it.
func redisTarget(cl *config.Cluster) (*redisconn.Target, *tls.Config, error) {
	t, err := redisconn.Parse(cl.Redis.Value())
	if err != nil {
		// The URL may hold a password: Parse never echoes it.
		return nil, nil, fmt.Errorf("cluster.redis: %w", err)
	}
	var tlsConf *tls.Config
	if t.TLS {
		if tlsConf, err = redisconn.TLSConfig(cl.RedisTLS()); err != nil {
			return nil, nil, fmt.Errorf("cluster: %w", err)
		}
	}
	return t, tlsConf, nil
}

// CheckRedis connects to the config's [cluster] redis, as edge validate
// does, and reports what is wrong: an error for refused credentials or a
// failed TLS handshake, a warning (and no error) when Redis does not
// answer from where validate runs, which may be a build machine.
func CheckRedis(ctx context.Context, cfg *config.Config) (warning string, err error) {
	if cfg.Cluster.Redis == "" {
		return "", nil
	}
	t, tlsConf, err := redisTarget(&cfg.Cluster)
	if err != nil {
		return "", err
	}
	c := redisconn.NewClient(t, tlsConf)
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, redisCheckTimeout)
	defer cancel()
	err = redisconn.Check(ctx, c, t)
	var ce *redisconn.CheckError
	if errors.As(err, &ce) && ce.Kind == redisconn.Unreachable {
		return "cluster.redis: not checked: " + err.Error(), nil
	}
	if err != nil {
		return "", fmt.Errorf("cluster.redis: %w", err)
	}
	return "", nil
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

func (l *lasting) tlsOptions(m *metrics.Metrics) []edgetls.Option {
	// Orders wait until the listeners are bound: the CA validates against them.
	opts := []edgetls.Option{edgetls.WithRecorder(m.TLS), edgetls.WithDeferredOrders()}
	if l.redis != nil {
		opts = append(opts, edgetls.WithRedis(l.redis))
	}
	return opts
}

// close runs after the drain, so the app instances it stops first have no
// request left to answer.
func (l *lasting) close() {
	if l.bus != nil {
		l.bus.Close()
	}
	stopProcesses(l.procs)
	if l.wechat != nil {
		l.wechat.Close()
	}
	l.targets.Close()
	if l.limits != nil {
		_ = l.limits.Close()
	}
	if l.redis != nil {
		_ = l.redis.Close()
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
		Nonces:       g.lasting.nonces,
		Revocations:  g.lasting.revocations,
		Redis:        g.identityRedis(),
		RedisTimeout: cfg.LimitSections.Limiter.RedisTimeout.Std(),
		RedisGate:    g.lasting.redisGate,
		Metrics:      g.metrics.Identity,
		Log:          g.log,
		OnReject: func(r *http.Request, code apierror.Code) {
			if kind := violationKind(code); kind != "" {
				g.lasting.limits.ReportViolation(r, kind)
			}
		},
	})
}

// identityRedis is the shared Redis as identity sees it; a nil interface,
// not a typed nil pointer, when there is none.
func (g *Gateway) identityRedis() identity.Redis {
	if g.lasting.redis == nil {
		return nil
	}
	return g.lasting.redis
}

// loginRoute is an app's login endpoint, served at its exact path on any
// host, with the route name "login_<app>" (for metrics and [[limits]]).
func (g *Gateway) loginRoutes(svc *identity.Service, lim *limits.Prepared) (map[string]*route, error) {
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
			limits:  lim.Route(name),
			final:   l.Handler,
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

// buildCache compiles a route's cache step against the lasting store.
func (g *Gateway) buildCache(route, gen string, rc *config.RouteCache, store config.CacheStore) *cache.Policy {
	return cache.New(cache.Options{
		Store:           g.lasting.cache,
		Route:           route,
		Generation:      gen,
		TTL:             rc.TTL.Std(),
		Public:          rc.Public,
		IdentityHeaders: store.IdentityHeaders,
		StaleIfError:    rc.StaleIfError.Std(),
		LockTimeout:     rc.LockTimeout.Std(),
		MaxEntry:        int64(store.MaxEntrySize),
		Now:             g.cacheClock,
		Requests:        func(result string) prometheus.Counter { return g.metrics.Cache.Requests(route, result) },
	})
}

// cacheGeneration fingerprints what shapes a cached route's answers: the
// route's settings, the upstreams it sends to (targets, TLS, the program
// it runs) and [cache] identity_headers. Stored answers are kept by it
// (cache.Store.Retain), so a reload that fixes a route made public by
// mistake, points it at another upstream or changes its rewriting,
// headers or auth starts it empty, and one that changes nothing of it
// keeps its answers. Settings of who may reach the route (IP lists, the
// firewall, callbacks' verification) and lock_timeout are left out:
// changed under attack, they must not empty the cache that shields the
// upstream. Anything else counts, a harmless change included: an answer
// fetched again costs less than one served under settings it was not
// fetched with.
func cacheGeneration(cfg *config.Config, rc *config.Route) string {
	shape := *rc
	shape.Access = nil
	shape.RouteAccess = config.RouteAccess{}
	shape.WAF = ""
	shape.RouteCallback = config.RouteCallback{}
	c := *rc.Cache
	c.LockTimeout = 0
	shape.Cache = &c
	var ups []config.Upstream
	for _, u := range cfg.Upstreams {
		if u.Name == rc.Upstream || rc.Release != nil && u.Name == rc.Release.Upstream {
			ups = append(ups, u)
		}
	}
	b, err := json.Marshal(struct {
		Route           config.Route
		Upstreams       []config.Upstream
		IdentityHeaders []string
	}{shape, ups, cfg.Cache.IdentityHeaders})
	if err != nil {
		// Config is plain data and encodes; should it not, a generation
		// of its own is the safe side: the route starts empty.
		return "unencodable " + strconv.FormatUint(rand.Uint64(), 16)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
