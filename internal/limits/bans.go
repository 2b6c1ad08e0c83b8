package limits

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/apierror"
	"edge/internal/metrics"
	"edge/internal/reqctx"
)

// Ban subjects: the openid when the request carried a verified one, else
// the client IP.
const (
	banKindIP     = "ip"
	banKindOpenID = "openid"
)

type ban struct {
	until  int64 // engine ns
	reason string
	// remote marks a ban read from (or written to) Redis; a sync replaces
	// those, and keeps the ones issued here while Redis was away.
	remote bool
}

// banStore holds the bans this replica enforces, keyed "kind:subject". In
// cluster mode it mirrors Redis (refreshed every bans.sync_interval), so a
// ban check never leaves the process.
type banStore struct {
	mu     sync.RWMutex
	m      map[string]ban
	ver    string // version of the Redis bans last read
	n      atomic.Int64
	active map[string]prometheus.Gauge
}

func newBanStore(m *metrics.Limits) *banStore {
	return &banStore{
		m:      make(map[string]ban),
		active: map[string]prometheus.Gauge{banKindIP: m.BansActive(banKindIP), banKindOpenID: m.BansActive(banKindOpenID)},
	}
}

func banKind(key string) string {
	if strings.HasPrefix(key, banKindIP+":") {
		return banKindIP
	}
	return banKindOpenID
}

// bannedKey checks one "kind:subject" key built by the caller on its stack.
func (b *banStore) bannedKey(key []byte, now int64) bool {
	if b.n.Load() == 0 {
		return false
	}
	b.mu.RLock()
	v, ok := b.m[string(key)]
	b.mu.RUnlock()
	return ok && v.until > now
}

func (b *banStore) bannedIP(ip netip.Addr, now int64) bool {
	if !ip.IsValid() || b.n.Load() == 0 {
		return false
	}
	var arr [64]byte
	k := append(arr[:0], banKindIP+":"...)
	return b.bannedKey(ip.AppendTo(k), now)
}

func (b *banStore) bannedOpenID(openid string, now int64) bool {
	if openid == "" || b.n.Load() == 0 {
		return false
	}
	var arr [96]byte
	k := append(arr[:0], banKindOpenID+":"...)
	return b.bannedKey(append(k, openid...), now)
}

// putLocked adds or extends a ban; a full store first gives up the ban
// closest to its end.
func (b *banStore) putLocked(key string, v ban, maxBans int) {
	old, ok := b.m[key]
	if ok {
		v.until = max(v.until, old.until)
		b.m[key] = v
		return
	}
	if len(b.m) >= maxBans {
		b.deleteLocked(sampleVictim(b.m, func(x ban) int64 { return x.until }))
	}
	b.m[key] = v
	b.n.Add(1)
	b.active[banKind(key)].Inc()
}

func (b *banStore) put(key string, v ban, maxBans int) {
	b.mu.Lock()
	b.putLocked(key, v, maxBans)
	b.mu.Unlock()
}

func (b *banStore) deleteLocked(key string) bool {
	if _, ok := b.m[key]; !ok {
		return false
	}
	delete(b.m, key)
	b.n.Add(-1)
	b.active[banKind(key)].Dec()
	return true
}

func (b *banStore) remove(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.deleteLocked(key)
}

func (b *banStore) sweep(now int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, v := range b.m {
		if v.until <= now {
			b.deleteLocked(k)
		}
	}
}

// replaceRemote installs the bans read from Redis at version ver.
func (b *banStore) replaceRemote(ver string, remote map[string]int64, maxBans int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, v := range b.m {
		if _, still := remote[k]; v.remote && !still {
			b.deleteLocked(k)
		}
	}
	for k, until := range remote {
		v := b.m[k]
		v.until, v.remote = until, true
		if _, ok := b.m[k]; ok {
			b.m[k] = v
			continue
		}
		b.putLocked(k, v, maxBans)
	}
	b.ver = ver
}

func (b *banStore) version() string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.ver
}

// violations counts each subject's violations in a fixed window starting
// at its first one. It is the memory backend of bans, and the fallback
// while Redis is away; it holds at most max subjects.
type violations struct {
	mu sync.Mutex
	m  map[string]*vcount
}

type vcount struct {
	n     int
	start int64
}

func newViolations() *violations { return &violations{m: make(map[string]*vcount)} }

// add counts one violation and reports whether it reaches threshold (the
// count then starts over).
func (v *violations) add(key string, now, window int64, threshold, maxKeys int) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := v.m[key]
	if c == nil || now-c.start >= window {
		if c == nil && len(v.m) >= maxKeys {
			delete(v.m, sampleVictim(v.m, func(x *vcount) int64 { return x.start }))
		}
		c = &vcount{start: now}
		v.m[key] = c
	}
	c.n++
	if c.n < threshold {
		return false
	}
	delete(v.m, key)
	return true
}

func (v *violations) sweep(now, window int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, c := range v.m {
		if now-c.start >= window {
			delete(v.m, k)
		}
	}
}

func (v *violations) reset(key string) {
	v.mu.Lock()
	delete(v.m, key)
	v.mu.Unlock()
}

// ReportViolation counts a violation of kind (config.ViolationSignature,
// ViolationToken, ViolationReplay; rate_limit is counted by the limiter
// itself) against the request's openid, or its IP when it has none. The
// gateway calls it on every signature or token failure of an identity
// check. Kinds not listed in [bans].count are ignored.
func (e *Engine) ReportViolation(r *http.Request, kind string) {
	s := e.snap.Load()
	if s.bans.threshold <= 0 || !s.bans.count[kind] {
		return
	}
	info := reqctx.FromRequest(r)
	if info == nil {
		return
	}
	e.violate(r.Context(), s, kind, info)
}

// violate counts one violation of the request described by info, issuing a
// ban at the threshold.
func (e *Engine) violate(ctx context.Context, s *snapshot, reason string, info *reqctx.Info) {
	var member string
	switch ip := info.ClientIP.Unmap(); {
	case info.OpenID != "":
		member = banKindOpenID + ":" + info.OpenID
	case s.bans.banIP && ip.IsValid():
		member = banKindIP + ":" + ip.String()
	default:
		return
	}
	now := e.now()
	if e.be.use(now, s.probeInterval) {
		// A client hanging up must not spare it the count.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.redisTimeout)
		res, err := violationScript.Run(ctx, e.be.client,
			[]string{redisViolPrefix + member, redisBansKey, redisBansVerKey, redisBansIDKey, redisLiftedKey},
			s.bans.window/int64(time.Millisecond), s.bans.threshold, s.bans.duration/int64(time.Millisecond),
			member, s.bans.maxBans).Result()
		cancel()
		if err == nil {
			e.be.ok(now)
			out, perr := ints(res, 2)
			if perr == nil && out[0] == 1 {
				e.issue(s, member, reason, now, true)
				e.publish(ctx, s.redisTimeout, EventBan,
					strconv.FormatInt(s.bans.duration/int64(time.Millisecond), 10)+" "+reason+" "+member)
			}
			return
		}
		e.be.failed("violation", err, now, s.probeInterval, s.policy)
	}
	if e.viol.add(member, now, s.bans.window, s.bans.threshold, s.bans.maxBans) {
		e.issue(s, member, reason, now, false)
	}
}

func (e *Engine) issue(s *snapshot, member, reason string, now int64, remote bool) {
	e.bans.put(member, ban{until: now + s.bans.duration, reason: reason, remote: remote}, s.bans.maxBans)
	kind := banKind(member)
	e.m.BanIssued(kind).Inc()
	// The subject stays out of the log; GET /bans on the admin listener
	// names it.
	e.log.Info("limiter: ban issued", "kind", kind, "reason", reason,
		"duration", time.Duration(s.bans.duration).String(), "shared", remote)
}

// syncBans reads the bans of every replica from Redis when they changed.
// When Redis holds another dataset than the one last read (it restarted
// empty or was flushed, and the version's dataset id is new), Redis is not
// the whole truth: the replica first writes back the bans it holds, then
// reads the merged set.
func (e *Engine) syncBans(s *snapshot) {
	now := e.now()
	if !e.be.use(now, s.probeInterval) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.redisTimeout)
	defer cancel()
	last := e.bans.version()
	arr, err := e.readBans(ctx, last)
	if err != nil {
		e.be.failed("ban_sync", err, now, s.probeInterval, s.policy)
		return
	}
	e.be.ok(now)
	if arr == nil {
		return
	}
	ver, _ := arr[0].(string)
	if len(arr) == 2 {
		return
	}
	if last != "" && datasetOf(ver) != datasetOf(last) {
		e.log.Warn("limiter: redis holds a new ban dataset (restarted empty or flushed?); writing back the bans this replica holds")
		rctx, rcancel := context.WithTimeout(context.Background(), adminRedisTimeout)
		defer rcancel()
		if err := e.Republish(rctx); err != nil {
			// The version stays the old one: the next sync tries again.
			e.log.Error("limiter: republishing bans failed", "error", err.Error())
			return
		}
		// Read from the start: what the others wrote meanwhile counts too.
		// A failure leaves the old version, and the next sync merges again.
		if arr, err = e.readBans(rctx, ""); err != nil {
			e.log.Error("limiter: reading the bans after writing them back failed", "error", err.Error())
			return
		}
		if len(arr) < 3 {
			return
		}
		ver, _ = arr[0].(string)
		now = e.now()
	}
	redisNow, err := toInt64(arr[1])
	items, _ := arr[2].([]any)
	if err != nil || len(items)%2 != 0 {
		e.log.Error("limiter: unexpected ban sync answer from redis")
		return
	}
	remote := make(map[string]int64, len(items)/2)
	for i := 0; i < len(items); i += 2 {
		member, _ := items[i].(string)
		score, _ := items[i+1].(string)
		ms, err := strconv.ParseFloat(score, 64)
		if member == "" || err != nil {
			continue
		}
		remote[member] = now + (int64(ms)-redisNow)*int64(time.Millisecond)
	}
	e.bans.replaceRemote(ver, remote, s.bans.maxBans)
}

// readBans runs syncScript: nil with no error for an answer of the wrong
// shape (logged).
func (e *Engine) readBans(ctx context.Context, since string) ([]any, error) {
	res, err := syncScript.Run(ctx, e.be.client, []string{redisBansKey, redisBansVerKey, redisBansIDKey}, since).Result()
	if err != nil {
		return nil, err
	}
	arr, ok := res.([]any)
	if !ok || len(arr) < 2 {
		e.log.Error("limiter: unexpected ban sync answer from redis", "type", fmt.Sprintf("%T", res))
		return nil, nil
	}
	return arr, nil
}

// datasetOf is the dataset id of a bans' version "<id>:<counter>".
func datasetOf(ver string) string {
	id, _, _ := strings.Cut(ver, ":")
	return id
}

// adminRedisTimeout bounds a Redis call made for the admin API.
// limiter.redis_timeout is sized for the request path, where every request
// waits on the call; an operator lifting a ban would rather wait than be
// told the lift only held on one replica, and on a busy machine the request
// path's budget can run out before the call is even sent.
const adminRedisTimeout = 5 * time.Second

// lift removes a ban here and, in cluster mode, for every replica.
func (e *Engine) lift(ctx context.Context, member string) (found, shared bool) {
	found = e.bans.remove(member)
	e.viol.reset(member)
	if e.be.client == nil {
		return found, false
	}
	// Redis is asked even between probes while it is marked down: a ban
	// left in Redis comes back on every replica at its next sync, and one
	// operator call cannot hammer a dead Redis.
	s := e.snap.Load()
	now := e.now()
	ctx, cancel := context.WithTimeout(ctx, adminRedisTimeout)
	defer cancel()
	n, err := liftScript.Run(ctx, e.be.client, []string{redisBansKey, redisBansVerKey, redisViolPrefix + member, redisLiftedKey},
		member, s.bans.duration/int64(time.Millisecond), s.bans.maxBans).Int64()
	if err != nil {
		e.be.failed("ban_lift", err, now, s.probeInterval, s.policy)
		return found, false
	}
	// Only an answer within the request path's budget says Redis is fit
	// for it again; a slow one, fine for an operator, is left to the probe.
	if time.Duration(e.now()-now) <= s.redisTimeout {
		e.be.ok(now)
	}
	e.publish(ctx, adminRedisTimeout, EventUnban, member)
	return found || n > 0, true
}

// BanView is one ban as the admin API lists it.
type BanView struct {
	Kind    string    `json:"kind"`
	Key     string    `json:"key"`
	Reason  string    `json:"reason,omitempty"`
	Expires time.Time `json:"expires"`
	Shared  bool      `json:"shared"`
}

// AdminHandler serves the bans on the admin listener (never the public
// one): GET /bans lists them as JSON, DELETE /bans/{kind}/{key} lifts one
// (kind is "openid" or "ip"). Mount it at "/bans" and "/bans/".
func (e *Engine) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bans", e.listBans)
	mux.HandleFunc("DELETE /bans/{kind}/{key}", e.liftBan)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierror.Write(w, r, apierror.NotFound, "bans: GET /bans lists them, DELETE /bans/{ip|openid}/{key} lifts one")
	})
	return mux
}

// Bans lists the bans in force, sorted by kind and subject.
func (e *Engine) Bans() []BanView {
	now := e.now()
	wall := e.clock()
	out := []BanView{}
	e.bans.mu.RLock()
	for k, v := range e.bans.m {
		if v.until <= now {
			continue
		}
		kind, subject, _ := strings.Cut(k, ":")
		out = append(out, BanView{Kind: kind, Key: subject, Reason: v.reason,
			Expires: wall.Add(time.Duration(v.until - now)).UTC().Truncate(time.Second), Shared: v.remote})
	}
	e.bans.mu.RUnlock()
	slices.SortFunc(out, func(a, b BanView) int {
		return strings.Compare(a.Kind+":"+a.Key, b.Kind+":"+b.Key)
	})
	return out
}

func (e *Engine) listBans(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string][]BanView{"bans": e.Bans()})
}

func (e *Engine) liftBan(w http.ResponseWriter, r *http.Request) {
	kind, key := r.PathValue("kind"), r.PathValue("key")
	switch kind {
	case banKindIP:
		ip, err := netip.ParseAddr(key)
		if err != nil {
			apierror.Write(w, r, apierror.BadRequest, "not an IP address")
			return
		}
		key = ip.Unmap().String()
	case banKindOpenID:
	default:
		apierror.Write(w, r, apierror.BadRequest, `kind must be "ip" or "openid"`)
		return
	}
	found, shared := e.lift(r.Context(), kind+":"+key)
	if !found {
		apierror.Write(w, r, apierror.NotFound, "no such ban")
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"lifted": true, "shared": shared})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding answer", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
