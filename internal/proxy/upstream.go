package proxy

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"edge/internal/logsample"
	"edge/internal/reqctx"
)

// Target is one backend address of one upstream. It outlives config reloads
// (the Registry hands the same Target to the next snapshot), so its health
// and its idle connections survive a reload that did not change it.
type Target struct {
	Upstream string
	Addr     string

	transport atomic.Pointer[connTransport]
	// inflight counts requests until their response body is done, so
	// least_conn sees long streams as load; the transport keeps it.
	inflight atomic.Int64
	// latency is a moving average of the time to the answer's headers
	// (ns), for the dashboard: two atomic operations per exchange, and an
	// update lost to a concurrent one only shifts an average.
	latency atomic.Int64

	activeDown atomic.Bool // set by the active health check
	// gate, when set, is the owner of a target edge runs itself (a
	// supervised instance): it alone says whether the target is up, from
	// its own health check and the process's life.
	gate      atomic.Pointer[gateRef]
	downUntil atomic.Int64 // unix nanos; passive health cooldown

	mu         sync.Mutex
	failCount  int
	failWindow time.Time // start of the current passive-failure window
	// failTotal counts every passive failure, for the dashboard.
	failTotal uint64
	// checkOK and checkBad are the active check's run of consecutive
	// results. They live here, not in the checker, because every reload
	// starts a new checker: a count that restarted with it would never
	// reach the threshold while reloads come faster than interval ×
	// threshold, and a target that is down would never come back.
	checkOK, checkBad int

	// warnings bound the lines a failing target writes, whatever the
	// number of requests that meet the failure; kept across reloads like
	// the rest of the target.
	warnings [nWarnings]logsample.Sampler
}

// warning is a kind of line every request that meets a failing target
// would otherwise write.
type warning int

const (
	warnUpstreamError warning = iota
	warnBodyBroken
	nWarnings
)

// Gate holds a target out of service while its process is not ready.
type Gate interface{ Open() bool }

type gateRef struct{ Gate }

// SetGate hands the target's health to g. A target keeps one gate for its
// life: its address belongs to one supervised instance.
func (t *Target) SetGate(g Gate) {
	if r := t.gate.Load(); r == nil || r.Gate != g {
		t.gate.Store(&gateRef{g})
	}
}

func (t *Target) gated() bool { return t.gate.Load() != nil }

// Available reports whether the target may receive requests now.
func (t *Target) Available(now time.Time) bool {
	if r := t.gate.Load(); r != nil {
		return r.Open() && now.UnixNano() >= t.downUntil.Load()
	}
	return !t.activeDown.Load() && now.UnixNano() >= t.downUntil.Load()
}

// InFlight is the number of requests the target is answering.
func (t *Target) InFlight() int64 { return t.inflight.Load() }

// Latency is the moving average of the time the target took to send an
// answer's headers over about its last eight answers; 0 before any.
func (t *Target) Latency() time.Duration { return time.Duration(t.latency.Load()) }

func (t *Target) observeLatency(d time.Duration) {
	old := t.latency.Load()
	if old == 0 {
		t.latency.Store(int64(d))
		return
	}
	t.latency.Store(old + (int64(d)-old)/8)
}

// Failures is the number of passive health failures counted against the
// target since edge started (answers retried on, connections refused,
// timeouts).
func (t *Target) Failures() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failTotal
}

// recordFailure counts one failure; tookOut is true only when it takes an
// available target out. A target already out that fails again (tried because
// no other was available) has its cooldown renewed, and that is no news.
func (t *Target) recordFailure(now time.Time, p PassiveOptions) (tookOut bool) {
	if p.MaxFails <= 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failTotal++
	if now.Sub(t.failWindow) > p.Window {
		t.failWindow = now
		t.failCount = 0
	}
	t.failCount++
	if t.failCount < p.MaxFails {
		return false
	}
	t.failCount = 0
	wasOut := now.UnixNano() < t.downUntil.Load()
	t.downUntil.Store(now.Add(p.Cooldown).UnixNano())
	return !wasOut
}

// recordCheck counts one active check result; changed is true when it
// brings the target back or takes it out.
func (t *Target) recordCheck(ok bool, o HealthOptions) (changed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok {
		t.checkOK++
		t.checkBad = 0
		if t.activeDown.Load() && t.checkOK >= o.HealthyThreshold {
			t.activeDown.Store(false)
			return true
		}
		return false
	}
	t.checkBad++
	t.checkOK = 0
	if !t.activeDown.Load() && t.checkBad >= o.UnhealthyThreshold {
		t.activeDown.Store(true)
		return true
	}
	return false
}

// forgetChecks puts the target back in service as far as the active check
// is concerned, for an upstream that no longer has one.
func (t *Target) forgetChecks() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checkOK, t.checkBad = 0, 0
	t.activeDown.Store(false)
}

// Registry keeps Targets across snapshots, keyed by upstream name and address.
type Registry struct {
	mu      sync.Mutex
	targets map[string]*Target
	options map[string]TransportOptions
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{targets: map[string]*Target{}, options: map[string]TransportOptions{}}
}

// Stage collects the targets of a config being compiled. Targets that
// already exist are shared (their health and counters survive the reload);
// new targets and new connection pools for changed transport options stay
// private to the stage until Commit, so a config that fails to compile
// changes nothing.
type Stage struct {
	reg     *Registry
	targets map[string]*Target
	options map[string]TransportOptions
	pools   map[*Target]*connTransport // replacements for existing targets
}

// Stage starts collecting the targets of a new config.
func (reg *Registry) Stage() *Stage {
	return &Stage{reg: reg, targets: map[string]*Target{}, options: map[string]TransportOptions{}, pools: map[*Target]*connTransport{}}
}

// Target returns the target for (upstream, addr): the registry's, or a new
// one that joins the registry on Commit.
func (s *Stage) Target(upstream, addr string, o TransportOptions) *Target {
	key := upstream + "\x00" + addr
	if t, ok := s.targets[key]; ok {
		return t
	}
	s.reg.mu.Lock()
	t, existing := s.reg.targets[key]
	same := existing && s.reg.options[key] == o
	s.reg.mu.Unlock()
	switch {
	case !existing:
		t = &Target{Upstream: upstream, Addr: addr}
		t.transport.Store(newTargetTransport(t, o))
	case !same:
		s.pools[t] = newTargetTransport(t, o)
	}
	s.targets[key], s.options[key] = t, o
	return t
}

func newTargetTransport(t *Target, o TransportOptions) *connTransport {
	ct := newConnTransport(t.Addr, o)
	ct.inflight = &t.inflight
	return ct
}

// Commit makes the stage the registry's content: new targets join, changed
// pools replace the old ones (whose idle connections close; requests in
// flight on them finish), and targets the new config no longer names are
// dropped.
func (s *Stage) Commit() {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	for t, ct := range s.pools {
		t.transport.Swap(ct).closeIdle(false)
	}
	for key, t := range s.reg.targets {
		if s.targets[key] != t {
			t.transport.Load().closeIdle(true)
		}
	}
	s.reg.targets, s.reg.options = s.targets, s.options
}

// Close closes every pooled connection.
func (reg *Registry) Close() {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	for _, t := range reg.targets {
		t.transport.Load().closeIdle(true)
	}
	clear(reg.targets)
	clear(reg.options)
}

// Balance names a load-balancing policy.
type Balance int

// The policies of upstreams.balance.
const (
	RoundRobin Balance = iota
	LeastConn
	RandomTwo
	Hash
)

// PassiveOptions: MaxFails failures within Window take a target out for
// Cooldown. MaxFails 0 disables passive health.
type PassiveOptions struct {
	MaxFails int
	Window   time.Duration
	Cooldown time.Duration
}

// UpstreamOptions describe one upstream pool.
type UpstreamOptions struct {
	Name       string
	Balance    Balance
	HashHeader string // for Hash: the header whose value is hashed; "" = client IP
	// Retries is how many other targets a request may try: after a failed
	// connection (see mayResend), or after an answer with a status in
	// RetryOn (see mayRetryAnswer).
	Retries int
	RetryOn []int
	// RetryTimeout, when set, is the time from the first try after which no
	// other target is tried.
	RetryTimeout time.Duration
	// ReadTimeout is the longest pause between two reads of an answer
	// (nginx proxy_read_timeout); routes may override it. 0: no limit.
	ReadTimeout time.Duration
	Passive     PassiveOptions
	Health      HealthOptions
}

// Member is one target of an upstream. A backup member gets requests
// only while no other member is available (nginx backup).
type Member struct {
	Target *Target
	Weight int
	Backup bool
}

type member struct {
	t      *Target
	weight int
	backup bool
}

// Upstream is one compiled [[upstreams]] entry. It is an http.RoundTripper
// that picks a target per request and retries idempotent requests on another
// target when connecting fails or the target answers with a status in
// RetryOn.
type Upstream struct {
	opts    UpstreamOptions
	members []member
	// orders are the smooth weighted round-robin sequences of member
	// indexes: of the primary members, and of the backups.
	orders    [2][]uint16
	hasBackup bool
	next      atomic.Uint64
	checker   *healthChecker

	// OnPassiveDown is called when passive health takes a target out.
	OnPassiveDown func(t *Target)
	// OnRetry is called when a request goes to another target, with the
	// status that made it (0: the connection failed).
	OnRetry func(status int)
}

// Targets is the list of targets, in config order.
func (u *Upstream) Targets() []*Target {
	ts := make([]*Target, len(u.members))
	for i, m := range u.members {
		ts[i] = m.t
	}
	return ts
}

// allowWarning reports whether a line of kind w about the target at addr
// may be written now, and how many like it were left out before it. A
// request outside edge's chain names no target; its lines are not sampled.
func (u *Upstream) allowWarning(addr string, w warning, now time.Time) (bool, int64) {
	for _, m := range u.members {
		if m.t.Addr == addr {
			return m.t.warnings[w].Allow(now)
		}
	}
	return true, 0
}

// Name is the upstream's name.
func (u *Upstream) Name() string { return u.opts.Name }

// NewUpstream builds a pool over its members. The active health check, if
// configured, starts with Start.
func NewUpstream(o UpstreamOptions, members []Member) *Upstream {
	u := &Upstream{opts: o}
	for _, m := range members {
		u.members = append(u.members, member{t: m.Target, weight: max(m.Weight, 1), backup: m.Backup})
		u.hasBackup = u.hasBackup || m.Backup
	}
	u.orders[0] = smoothWeightedOrder(u.members, false)
	u.orders[1] = smoothWeightedOrder(u.members, true)
	return u
}

// smoothWeightedOrder precomputes nginx's smooth weighted round robin over
// the primary or the backup members, so the request path only does an
// atomic increment.
func smoothWeightedOrder(ms []member, backup bool) []uint16 {
	sum := 0
	for _, m := range ms {
		if m.backup == backup {
			sum += m.weight
		}
	}
	total := min(sum, 4096) // keep the table small; proportions stay close enough
	current := make([]int, len(ms))
	order := make([]uint16, 0, total)
	for len(order) < total {
		best := -1
		for i, m := range ms {
			if m.backup != backup {
				continue
			}
			current[i] += m.weight
			if best < 0 || current[i] > current[best] {
				best = i
			}
		}
		current[best] -= sum
		order = append(order, uint16(best))
	}
	return order
}

// Start runs the active health check until ctx ends or Stop is called. The
// previous snapshot's check of the same targets must have stopped. Without
// a check, what an earlier one decided no longer holds: nothing would ever
// bring a target it took out back.
func (u *Upstream) Start(ctx context.Context, onChange func(t *Target, healthy bool)) {
	if u.opts.Health.Path == "" {
		for _, m := range u.members {
			m.t.forgetChecks()
		}
		return
	}
	if len(u.members) == 0 {
		return
	}
	u.checker = newHealthChecker(u.opts.Health, u.Targets(), onChange)
	u.checker.start(ctx)
}

// Stop ends the active health check.
func (u *Upstream) Stop() {
	if u.checker != nil {
		u.checker.stop()
	}
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// mayRetryAnswer reports whether a request the upstream answered may go
// to another target: it must be idempotent, as for mayResend, and have no
// body, since the first target consumed it. The upstream has acted on the
// request, so a request that is not idempotent never goes twice.
func mayRetryAnswer(req *http.Request, w requestWriter) bool {
	return (idempotent(req.Method) || req.Header["Idempotency-Key"] != nil) && !w.hasBody()
}

// maxDiscard bounds what is read of an answer that is retried, to keep its
// connection: a longer one is cut off with its connection.
const maxDiscard = 64 << 10

// mayResend reports whether a request that failed with err may be sent
// again, on a fresh connection or to another target: only when it is
// idempotent by method or carries an Idempotency-Key, and only when nothing
// of it can have reached the upstream (the connection failed, or not one
// byte was written, and its body can be had again). An upstream that read a
// request and then dropped the connection may have acted on it.
func mayResend(req *http.Request, err error) bool {
	if !idempotent(req.Method) && req.Header["Idempotency-Key"] == nil {
		return false
	}
	var de *dialError
	if errors.As(err, &de) {
		return true
	}
	var ns *notSentError
	return errors.As(err, &ns) && replayable(req)
}

// countsAgainstTarget reports whether a failed exchange was the target's
// fault, for passive health. A client that left, or broke its own body
// (too large, stalled, cut off, malformed), says nothing about the target.
func countsAgainstTarget(req *http.Request, err error) bool {
	if req.Context().Err() != nil {
		return false
	}
	var cb *clientBodyError
	return !errors.As(err, &cb)
}

// RoundTrip sends req to a target chosen by the balancer.
func (u *Upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	return u.exchange(req, stdRequest{req}, u.opts.ReadTimeout)
}

// exchange is RoundTrip with the request written by w and a read timeout
// (the route's, or the upstream's).
func (u *Upstream) exchange(req *http.Request, w requestWriter, readTimeout time.Duration) (*http.Response, error) {
	if len(u.members) == 0 {
		return nil, &dialError{errors.New("upstream has no targets")}
	}
	info := reqctx.FromRequest(req)
	var tried uint64
	var first time.Time
	for attempt := 0; ; attempt++ {
		now := time.Now()
		if attempt == 0 {
			first = now
		}
		i := u.pick(req, info, tried, now)
		tried |= 1 << (uint(i) % 64)
		t := u.members[i].t
		if info != nil {
			info.Upstream = u.opts.Name
			info.Target = t.Addr
		}
		resp, err := t.transport.Load().exchange(req, w, readTimeout)
		took := time.Since(now)
		if info != nil {
			info.UpstreamDuration += took
		}
		if err == nil {
			t.observeLatency(took)
			if len(u.opts.RetryOn) == 0 || !slices.Contains(u.opts.RetryOn, resp.StatusCode) {
				return resp, nil
			}
			// The target answered that it cannot serve: a failure for
			// passive health, as nginx counts the statuses it retries on.
			u.failed(t)
			if !u.mayTryAgain(attempt, tried, first) || !mayRetryAnswer(req, w) {
				return resp, nil
			}
			_, _ = io.CopyN(io.Discard, resp.Body, maxDiscard)
			resp.Body.Close()
			if u.OnRetry != nil {
				u.OnRetry(resp.StatusCode)
			}
			continue
		}
		if !countsAgainstTarget(req, err) {
			return nil, err
		}
		u.failed(t)
		if !u.mayTryAgain(attempt, tried, first) || !mayResend(req, err) {
			return nil, err
		}
		if u.OnRetry != nil {
			u.OnRetry(0)
		}
	}
}

// failed counts a failure of t for passive health.
func (u *Upstream) failed(t *Target) {
	if t.recordFailure(time.Now(), u.opts.Passive) && u.OnPassiveDown != nil {
		u.OnPassiveDown(t)
	}
}

// mayTryAgain reports whether the bounds of retries leave another try: in
// number, in targets not yet tried, and in time since the first.
func (u *Upstream) mayTryAgain(attempt int, tried uint64, first time.Time) bool {
	return attempt < u.opts.Retries && bitsCount(tried) < len(u.members) &&
		(u.opts.RetryTimeout <= 0 || time.Since(first) < u.opts.RetryTimeout)
}

func bitsCount(x uint64) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// pick chooses a member index not yet tried, preferring available targets,
// and primary targets to backups; when none is available it still tries
// one (as nginx does) rather than fail without asking.
func (u *Upstream) pick(req *http.Request, info *reqctx.Info, tried uint64, now time.Time) int {
	for _, needAvailable := range [2]bool{true, false} {
		if i := u.pickWith(req, info, tried, now, needAvailable, false); i >= 0 {
			return i
		}
		if !u.hasBackup {
			continue
		}
		if i := u.pickWith(req, info, tried, now, needAvailable, true); i >= 0 {
			return i
		}
	}
	return 0
}

func (u *Upstream) usable(i int, tried uint64, now time.Time, needAvailable, backup bool) bool {
	if tried&(1<<(uint(i)%64)) != 0 || u.members[i].backup != backup {
		return false
	}
	return !needAvailable || u.members[i].t.Available(now)
}

func (u *Upstream) pickWith(req *http.Request, info *reqctx.Info, tried uint64, now time.Time, needAvailable, backup bool) int {
	n := len(u.members)
	switch u.opts.Balance {
	case LeastConn:
		best := -1
		start := int(u.next.Add(1) % uint64(n))
		for k := 0; k < n; k++ {
			i := (start + k) % n
			if !u.usable(i, tried, now, needAvailable, backup) {
				continue
			}
			if best < 0 || lessLoaded(u.members[i], u.members[best]) {
				best = i
			}
		}
		return best
	case RandomTwo:
		a, b := u.randomUsable(tried, now, needAvailable, backup), u.randomUsable(tried, now, needAvailable, backup)
		if a < 0 || b < 0 {
			return max(a, b)
		}
		if lessLoaded(u.members[b], u.members[a]) {
			return b
		}
		return a
	case Hash:
		return u.rendezvous(hashKey(req, info, u.opts.HashHeader), tried, now, needAvailable, backup)
	default:
		order := u.orders[0]
		if backup {
			order = u.orders[1]
		}
		start := u.next.Add(1)
		for k := uint64(0); k < uint64(len(order)); k++ {
			i := int(order[(start+k)%uint64(len(order))])
			if u.usable(i, tried, now, needAvailable, backup) {
				return i
			}
		}
		return -1
	}
}

func lessLoaded(a, b member) bool {
	return a.t.inflight.Load()*int64(b.weight) < b.t.inflight.Load()*int64(a.weight)
}

// randomUsable draws a usable member with probability proportional to weight.
func (u *Upstream) randomUsable(tried uint64, now time.Time, needAvailable, backup bool) int {
	total := 0
	for i, m := range u.members {
		if u.usable(i, tried, now, needAvailable, backup) {
			total += m.weight
		}
	}
	if total == 0 {
		return -1
	}
	r := rand.IntN(total)
	for i, m := range u.members {
		if !u.usable(i, tried, now, needAvailable, backup) {
			continue
		}
		if r < m.weight {
			return i
		}
		r -= m.weight
	}
	return -1
}

func hashKey(req *http.Request, info *reqctx.Info, header string) uint64 {
	h := uint64(fnvOffset)
	switch {
	case header != "":
		for _, v := range req.Header.Values(header) {
			h = fnvString(h, v)
		}
	case info != nil:
		b := info.ClientIP.As16()
		h = fnvString(h, string(b[:]))
	}
	return h
}

// rendezvous is weighted highest-random-weight hashing: a key keeps its target
// while that target is up, and only the keys of a removed target move.
func (u *Upstream) rendezvous(key uint64, tried uint64, now time.Time, needAvailable, backup bool) int {
	best, bestScore := -1, math.Inf(-1)
	for i, m := range u.members {
		if !u.usable(i, tried, now, needAvailable, backup) {
			continue
		}
		h := mix64(key ^ mix64(uint64(i)+0x9e3779b97f4a7c15) ^ addrHash(m.t.Addr))
		// Map the hash to (0,1) and weight it: -w / ln(x) grows with w.
		x := (float64(h>>11) + 0.5) / (1 << 53)
		score := -float64(m.weight) / math.Log(x)
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

const fnvOffset = 14695981039346656037

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func addrHash(s string) uint64 { return fnvString(fnvOffset, s) }

func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
