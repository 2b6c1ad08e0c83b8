// Package limits owns edge's anti-abuse machinery: GCRA rate limits keyed by
// openid, IP, route, app or header (in memory, or shared by replicas through
// one atomic Redis script), bans earned by repeated violations, IP allow and
// deny lists, User-Agent deny patterns, per-IP and global connection caps,
// and per-openid requests in flight. State that must outlive a reload
// (buckets of unchanged rules, bans, open connections) lives in the Engine;
// each config compiles to an immutable snapshot swapped atomically.
package limits

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/metrics"
)

// Options are the Engine's collaborators, fixed for its life.
type Options struct {
	// Redis is the gateway's shared client for [cluster] redis; nil means
	// one machine, everything in memory (pass a nil interface, not a typed
	// nil pointer). A *redis.ClusterClient makes the engine group a route's
	// keys by slot.
	Redis redis.Scripter
	// Publisher sends ban changes to the other replicas at once; nil:
	// they learn them at their next sync.
	Publisher Publisher
	// Metrics must not be nil.
	Metrics *metrics.Limits
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock; tests inject one. Defaults to time.Now.
	Now func() time.Time
}

// Engine enforces the limits of the current config. Create one per process
// with New, feed every reloaded config to Update, and Close it at shutdown.
type Engine struct {
	clock func() time.Time
	epoch time.Time
	log   *slog.Logger
	m     *metrics.Limits
	be    *backend
	// batch sends concurrent decisions to Redis together; nil without
	// Redis.
	batch *batcher

	snap atomic.Pointer[snapshot]

	// mu guards the state kept across reloads, keyed by rule identity.
	mu    sync.Mutex
	state map[string]*buckets
	// retired are the lease tables of replaced configs, whose unused
	// requests the next sweep gives back.
	retired []*leaseTable

	// scriptClock, set only by tests, is the time the limit script decides
	// at instead of Redis' TIME, so that a test drives Redis and memory on
	// one injected clock. It must not be behind Redis' own clock, on which
	// the buckets' keys expire.
	scriptClock func() time.Time

	bans     *banStore
	viol     *violations
	limited  limitedTally
	inflight *inflight[string]
	// inflightIP counts each route's requests in progress per client IP
	// (max_inflight_per_ip), across reloads like inflight.
	inflightIP *inflight[routeIP]
	conns      *connTracker
	pub        Publisher
	// kick asks the background goroutine for a sync now (Resync).
	kick chan struct{}

	stop chan struct{}
	done chan struct{}
}

// New compiles cfg and starts the engine's one background goroutine
// (sweeping idle keys, and reading bans from Redis); Close stops it.
func New(cfg *config.Config, opts Options) (*Engine, error) {
	if opts.Metrics == nil {
		return nil, fmt.Errorf("limits: metrics are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &Engine{
		clock:      opts.Now,
		log:        opts.Logger,
		m:          opts.Metrics,
		state:      make(map[string]*buckets),
		inflight:   newInflight(maphash.String),
		inflightIP: newInflight(hashRouteIP),
		conns:      newConnTracker(opts.Metrics),
		pub:        opts.Publisher,
		kick:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	e.epoch = e.clock()
	e.be = newBackend(opts.Redis, e.log, e.m)
	if opts.Redis != nil {
		e.batch = newBatcher(opts.Redis)
	}
	e.bans = newBanStore(e.m)
	e.viol = newViolations()
	if err := e.Update(cfg); err != nil {
		if e.batch != nil {
			e.batch.close()
		}
		return nil, err
	}
	go e.run()
	return e, nil
}

// now is the engine's monotonic time in nanoseconds.
func (e *Engine) now() int64 { return int64(e.clock().Sub(e.epoch)) }

// Close stops the background goroutine. Handlers keep working (on memory
// only for bans) but nothing is swept any more.
func (e *Engine) Close() error {
	select {
	case <-e.stop:
	default:
		close(e.stop)
		<-e.done
		// A replica that stops gives back what it held, for the others.
		e.giveBackLeases(true)
		if e.batch != nil {
			e.batch.close()
		}
	}
	<-e.done
	return nil
}

// sweepEvery is how often idle keys, expired bans and old violation counts
// are dropped.
const sweepEvery = 10 * time.Second

func (e *Engine) run() {
	defer close(e.done)
	lastSweep := time.Now()
	for {
		s := e.snap.Load()
		t := time.NewTimer(s.bans.syncInterval)
		select {
		case <-e.stop:
			t.Stop()
			return
		case <-t.C:
		case <-e.kick:
			t.Stop()
		}
		if s.bans.threshold > 0 {
			e.syncBans(s)
		}
		// Every sync interval, not every sweep: a busy route's table
		// holds an entry per key seen within leaseTTL, most of them keys
		// that never lease, and should not grow for ten seconds.
		e.giveBackLeases(false)
		if time.Since(lastSweep) >= sweepEvery {
			lastSweep = time.Now()
			e.sweep()
		}
	}
}

// sweep drops what no longer carries information.
func (e *Engine) sweep() {
	now := e.now()
	e.mu.Lock()
	all := make([]*buckets, 0, len(e.state))
	for _, b := range e.state {
		all = append(all, b)
	}
	e.mu.Unlock()
	for _, b := range all {
		b.sweep(now)
	}
	e.bans.sweep(now)
	e.viol.sweep(now, e.snap.Load().bans.window)
}

// Size is the number of keys every rule holds in memory, for tests and the
// documented cap (limiter.max_keys per rule).
func (e *Engine) Size() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, b := range e.state {
		n += b.len()
	}
	return n
}

// Rejection reasons, the reason label of edge_access_rejections_total.
const (
	reasonIPDenied     = "ip_denied"
	reasonIPNotAllowed = "ip_not_allowed"
	reasonUserAgent    = "user_agent"
	reasonBanned       = "banned"
	reasonInflight     = "inflight"
	reasonInflightIP   = "inflight_per_ip"
)

var reasons = []string{reasonIPDenied, reasonIPNotAllowed, reasonUserAgent, reasonBanned, reasonInflight, reasonInflightIP}

// Decision results, the result label of edge_limit_decisions_total.
const (
	resAllowed = iota
	resLimited
	resNoKey
	resFailOpen
	resFailClosed
	nResults
)

var resultNames = [nResults]string{"allowed", "limited", "no_key", "fail_open", "fail_closed"}

// rule is one compiled [[limits]] table.
type rule struct {
	name      string
	parts     []keyPart
	fallback  bool // on_missing_key = "ip"
	interval  int64
	tolerance int64
	mem       *buckets
	// local is the share of this replica while Redis is away (policy
	// "local"): interval × replicas, burst ÷ replicas.
	local                    *buckets
	localInterval, localTol  int64
	redisPrefix              string
	redisInterval, redisTol  string // microseconds, as script arguments
	policyItem, rateLimitTag string // `"name";q=N;w=S` and `"name";r=`
}

// ruleSlot is a rule as seen from one route, with that route's counters.
type ruleSlot struct {
	*rule
	count [nResults]prometheus.Counter
}

// plan is everything one route checks.
type plan struct {
	route  string
	access ipRules
	// maxInflightIP is the route's max_inflight_per_ip; 0 is no cap.
	maxInflightIP int
	rules         []ruleSlot
	// leases holds the route's leases of Redis buckets; nil: every
	// decision asks Redis.
	leases *leaseTable
	// policy is the RateLimit-Policy value of the route's rules, built once.
	policy   []string
	rejected map[string]prometheus.Counter
}

type banPolicy struct {
	threshold    int
	window       int64
	duration     int64
	count        map[string]bool
	banIP        bool
	maxBans      int
	syncInterval time.Duration
}

// snapshot is one compiled config; it is never mutated once published.
type snapshot struct {
	routes        map[string]*plan
	access        ipRules
	trusted       ipSet
	uaDeny        []*regexp.Regexp
	maxConns      int
	maxConnsPerIP int
	maxInflight   int
	bans          banPolicy
	policy        string
	probeInterval int64
	redisTimeout  time.Duration
	alwaysHeaders bool
}

// plan returns the route's plan; a route the config does not name gets the
// global rules only, counted under the name it was given.
func (s *snapshot) plan(route string) *plan {
	if p := s.routes[route]; p != nil {
		return p
	}
	return s.routes[""]
}

// Update compiles cfg and makes it current; on error nothing changes.
func (e *Engine) Update(cfg *config.Config) error {
	p, err := e.Prepare(cfg)
	if err != nil {
		return err
	}
	p.Commit()
	return nil
}

// Prepared is a compiled limits config that is not live yet: a reload
// prepares every part of a config (limits, routes, TLS) before committing
// any, so a failure in one leaves all of them as they were.
type Prepared struct {
	e     *Engine
	snap  *snapshot
	state map[string]*buckets
}

// Commit makes the prepared config current. Reloads are serialised by the
// caller, so nothing changed the engine since Prepare.
func (p *Prepared) Commit() {
	p.e.mu.Lock()
	defer p.e.mu.Unlock()
	p.e.state = p.state
	if old := p.e.snap.Swap(p.snap); old != nil {
		p.e.retired = append(p.e.retired, old.leaseTables()...)
	}
}

// Prepare compiles cfg without making it current. Buckets of rules whose
// key, rate and burst did not change are carried over; IP list files are
// read again.
func (e *Engine) Prepare(cfg *config.Config) (*Prepared, error) {
	ls := cfg.LimitSections
	dir := ""
	if cfg.Path != "" {
		dir = filepath.Dir(cfg.Path)
	}
	s := &snapshot{
		routes:        make(map[string]*plan, len(cfg.Routes)+1),
		trusted:       newIPSet(slices.Concat(cfg.Server.TrustedProxies, cfg.Server.ProxyProtocolFrom)),
		maxConns:      ls.Access.MaxConns,
		maxConnsPerIP: ls.Access.MaxConnsPerIP,
		maxInflight:   ls.Access.MaxInflightPerOpenID,
		policy:        orDefault(ls.Limiter.OnRedisFailure, config.RedisFailLocal),
		probeInterval: int64(orDefaultDur(ls.Limiter.ProbeInterval, time.Second)),
		redisTimeout:  orDefaultDur(ls.Limiter.RedisTimeout, 100*time.Millisecond),
		alwaysHeaders: ls.Limiter.AlwaysSendHeaders,
	}
	var err error
	if s.access, err = compileIPRules(dir, ls.Access.IPAllow, ls.Access.IPDeny, ls.Access.IPAllowFiles, ls.Access.IPDenyFiles); err != nil {
		return nil, fmt.Errorf("compiling [access]: %w", err)
	}
	for i, pat := range ls.Access.UserAgentDeny {
		re, err := regexp.Compile(pat)
		if err != nil {
			return nil, fmt.Errorf("compiling access.user_agent_deny[%d]: %w", i, err)
		}
		s.uaDeny = append(s.uaDeny, re)
	}
	s.bans = banPolicy{
		threshold:    ls.Bans.Threshold,
		window:       int64(orDefaultDur(ls.Bans.Window, time.Minute)),
		duration:     int64(orDefaultDur(ls.Bans.Duration, 15*time.Minute)),
		count:        make(map[string]bool),
		banIP:        ls.Bans.BanIP,
		maxBans:      orDefaultInt(ls.Bans.MaxBans, 100000),
		syncInterval: orDefaultDur(ls.Bans.SyncInterval, time.Second),
	}
	for _, k := range ls.Bans.Count {
		s.bans.count[k] = true
	}

	replicas := int64(orDefaultInt(ls.Limiter.Replicas, 1))
	maxKeys := orDefaultInt(ls.Limiter.MaxKeys, 250000)
	e.mu.Lock()
	defer e.mu.Unlock()
	state := make(map[string]*buckets)
	keep := func(id string, interval, tolerance int64) *buckets {
		b := e.state[id]
		if b == nil {
			b = newBuckets(maxKeys, interval, tolerance, e.m.Evictions())
		}
		state[id] = b
		return b
	}
	rules := make([]*rule, 0, len(ls.Limits))
	for i, lc := range ls.Limits {
		r, err := compileRule(lc, replicas)
		if err != nil {
			return nil, fmt.Errorf("compiling limits[%d] %q: %w", i, lc.Name, err)
		}
		id := r.redisPrefix + "/" + strconv.Itoa(maxKeys)
		r.mem = keep(id, r.interval, r.tolerance)
		if e.be.client != nil && s.policy == config.RedisFailLocal {
			r.local = keep(id+"/local/"+strconv.FormatInt(replicas, 10), r.localInterval, r.localTol)
		}
		rules = append(rules, r)
	}
	names := []string{""}
	access := make([]config.RouteAccess, 1, len(cfg.Routes)+1)
	for _, rt := range cfg.Routes {
		names = append(names, rt.Name)
		access = append(access, rt.RouteAccess)
	}
	for i, name := range names {
		ra := access[i]
		p := &plan{route: name, maxInflightIP: ra.MaxInflightPerIP, rejected: make(map[string]prometheus.Counter, len(reasons))}
		if p.access, err = compileIPRules(dir, ra.IPAllow, ra.IPDeny, ra.IPAllowFiles, ra.IPDenyFiles); err != nil {
			return nil, fmt.Errorf("compiling route %q access: %w", name, err)
		}
		for _, reason := range reasons {
			p.rejected[reason] = e.m.Rejection(name, reason)
		}
		var items []string
		for j, r := range rules {
			if len(ls.Limits[j].Routes) > 0 && !slices.Contains(ls.Limits[j].Routes, name) {
				continue
			}
			slot := ruleSlot{rule: r}
			for res := range slot.count {
				slot.count[res] = e.m.Decision(name, r.name, resultNames[res])
			}
			p.rules = append(p.rules, slot)
			items = append(items, r.policyItem)
		}
		if len(items) > 0 {
			p.policy = []string{strings.Join(items, ", ")}
		}
		// On a Redis Cluster a route of several rules may span slots,
		// which one lease cannot charge at once.
		if most := leaseSize(p.rules); most > 0 && ls.Limiter.Leases && e.be.client != nil && !(e.be.cluster && len(p.rules) > 1) {
			p.leases = newLeaseTable(most, maxKeys, p.rules)
		}
		s.routes[name] = p
	}
	return &Prepared{e: e, snap: s, state: state}, nil
}

// compileRule turns one [[limits]] table into its arithmetic. Its identity
// (and Redis prefix) is a hash of everything that shapes its buckets, so a
// changed rule starts afresh and an unchanged one keeps its state.
func compileRule(lc config.LimitRule, replicas int64) (*rule, error) {
	if lc.Rate.N <= 0 || lc.Rate.Per <= 0 {
		return nil, fmt.Errorf("a rate like \"10/s\" is required")
	}
	parts, err := parseParts(orDefault(lc.Key, config.LimitKeyIP))
	if err != nil {
		return nil, err
	}
	burst := int64(lc.Burst)
	if burst <= 0 {
		burst = lc.Rate.N
	}
	// Whole microseconds, as Redis counts, so that memory and Redis
	// decide alike (see buckets.go).
	interval := int64(lc.Rate.Interval().Truncate(time.Microsecond))
	if interval <= 0 {
		return nil, fmt.Errorf("rate %s is too fast to limit", lc.Rate)
	}
	// The tolerance is capped so that no arithmetic overflows, in
	// nanoseconds here or in the doubles of Redis' Lua; it stays a whole
	// number of intervals, a token bucket's burst.
	const maxTolerance int64 = 1000 << 50
	tolerance := min(burst, maxTolerance/interval) * interval
	id := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d\x00%d", lc.Name, lc.Key, interval, tolerance)))
	r := &rule{
		name:          lc.Name,
		parts:         parts,
		fallback:      orDefault(lc.OnMissingKey, config.OnMissingIP) == config.OnMissingIP,
		interval:      interval,
		tolerance:     tolerance,
		localInterval: interval * replicas,
		localTol:      max(tolerance/interval/replicas, 1) * interval * replicas,
		redisPrefix:   redisRatePrefix + hex.EncodeToString(id[:6]) + ":",
		redisInterval: strconv.FormatInt(interval/1000, 10),
		redisTol:      strconv.FormatInt(tolerance/1000, 10),
		policyItem:    fmt.Sprintf("%q;q=%d;w=%d", lc.Name, lc.Rate.N, int64(lc.Rate.Per/time.Second)),
		rateLimitTag:  fmt.Sprintf("%q;r=", lc.Name),
	}
	return r, nil
}

func compileIPRules(dir string, allow, deny []netip.Prefix, allowFiles, denyFiles []string) (ipRules, error) {
	load := func(files []string) ([]netip.Prefix, error) {
		var out []netip.Prefix
		for _, f := range files {
			if dir != "" && !filepath.IsAbs(f) {
				f = filepath.Join(dir, f)
			}
			ps, err := config.ReadCIDRFile(f)
			if err != nil {
				return nil, err
			}
			out = append(out, ps...)
		}
		return out, nil
	}
	af, err := load(allowFiles)
	if err != nil {
		return ipRules{}, err
	}
	df, err := load(denyFiles)
	if err != nil {
		return ipRules{}, err
	}
	return ipRules{allow: newIPSet(allow, af), deny: newIPSet(deny, df)}, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orDefaultInt(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

func orDefaultDur(d config.Duration, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d.Std()
}
