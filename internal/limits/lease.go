package limits

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"edge/internal/reqctx"
)

// Leases take the Redis round trip off most requests of a hot key. A
// replica asks Redis for several requests' worth of a route's buckets at
// once (limitScript with n > 1: charged to every rule, all or nothing,
// only what every bucket has room for) and answers the requests that
// follow from that lease in memory until it is used up; then one request
// asks again while the others of the key wait for its answer. Nothing is
// ever allowed that Redis did not grant, so the replicas together never
// exceed a limit. What a lease costs is the other way: requests a replica
// holds but has not served are missing from the other replicas' view of
// the bucket, at most burst ÷ leaseShare per replica and key. Unused
// requests are given back with the next lease or when the lease expires.
//
// A lease's size follows the key's demand on this replica: it starts at
// one request (exactly the decision without leases) and doubles while
// leases are used up within leaseHorizon, halves when one lasts over four
// times that, and is at least what the requests waiting for it need. A
// refusal is kept too, for up to leaseHorizon: Redis says how long until
// its bucket has room again, and no request of the key asks before then.

const (
	// leaseShare: a lease holds at most burst ÷ leaseShare requests, so
	// that what replicas hold stays a small part of any bucket; rules
	// whose burst is under 2 × leaseShare never lease.
	leaseShare = 20
	// leaseMax bounds a lease whatever the burst.
	leaseMax = 10000
	// leaseHorizon is how long a lease should last at the key's demand.
	leaseHorizon = int64(20 * time.Millisecond)
	// leaseTTL: requests of a lease older than this are not served (a
	// lease stands for requests charged when it came); they are given
	// back.
	leaseTTL = int64(time.Second)
	// leaseMaxRules: a route with more rules decides without leases.
	leaseMaxRules = 8
)

// leaseTable holds one route's leases, by the route's Redis keys.
type leaseTable struct {
	seed     maphash.Seed
	max      int64 // requests per lease at most, ≥ 2
	perShard int
	// micros are the rules' intervals in µs, what one request charged
	// each of the route's buckets.
	micros []int64
	// retired: the table's config was replaced (or the engine closed) and
	// its leases given back; requests still deciding on it go without.
	retired atomic.Bool
	shards  [shardCount]leaseShard
}

type leaseShard struct {
	mu sync.Mutex
	m  map[string]*lease
	// pad keeps two shards' locks off one cache line.
	_ [48]byte
}

// lease is a key's lease or refusal; its shard's lock guards it.
type lease struct {
	keys []string
	// left is how many requests of the lease remain.
	left int64
	// size is what the next lease asks for.
	size int64
	// at is the engine time the last answer came; answered says one did.
	at       int64
	answered bool
	// ahead is, per rule, how far the bucket's GCRA time was ahead of
	// Redis' clock after the last answer (ns).
	ahead []int64
	// refused is the refusing rule + 1, until engine time until; 0: none.
	refused int
	until   int64
	// fetch is the answer on its way, waited for by waiting requests.
	fetch   *leaseFetch
	waiting int64
	used    int64
	// dead: given back and out of the table; whoever holds it decides
	// without it.
	dead bool
}

type leaseFetch struct {
	done chan struct{}
	err  error
}

func newLeaseTable(most int64, maxKeys int, rules []ruleSlot) *leaseTable {
	t := &leaseTable{seed: maphash.MakeSeed(), max: most, perShard: max(1, maxKeys/shardCount)}
	for i := range rules {
		t.micros = append(t.micros, rules[i].interval/int64(time.Microsecond))
	}
	for i := range t.shards {
		t.shards[i].m = make(map[string]*lease)
	}
	return t
}

// leaseSize is the most a lease of the route's rules may hold: 0 when the
// route does not lease.
func leaseSize(rules []ruleSlot) int64 {
	if len(rules) == 0 || len(rules) > leaseMaxRules {
		return 0
	}
	most := int64(leaseMax)
	for i := range rules {
		most = min(most, rules[i].tolerance/rules[i].interval/leaseShare)
	}
	if most < 2 {
		return 0
	}
	return most
}

// decideLeased is decideRedis through the route's leases; handled is false
// when the table is full and the request must be decided on its own.
func (e *Engine) decideLeased(ctx context.Context, s *snapshot, p *plan, info *reqctx.Info, r *http.Request, now int64, vs []verdict) (d decision, asked, handled bool, err error) {
	var kb [2 * keyBufSize]byte
	var ends [leaseMaxRules]int
	buf := kb[:0]
	for i := range p.rules {
		slot := &p.rules[i]
		var ok bool
		buf, ok = appendKey(append(append(buf, slot.redisPrefix...), '{'), slot.parts, slot.fallback, info, r, p.route)
		if !ok {
			slot.count[resNoKey].Inc()
			return decision{result: resNoKey, rule: i, verdicts: vs}, false, true, nil
		}
		buf = append(buf, '}')
		ends[i] = len(buf)
	}
	t := p.leases
	sh := &t.shards[maphash.Bytes(t.seed, buf)%shardCount]
	sh.mu.Lock()
	// Under the lock: expire retires the table before it takes any shard's,
	// so a lease made here after it swept this shard cannot be.
	if t.retired.Load() {
		sh.mu.Unlock()
		return decision{}, false, false, nil
	}
	l := sh.m[string(buf)]
	if l == nil {
		if len(sh.m) >= t.perShard {
			sh.mu.Unlock()
			return decision{}, false, false, nil
		}
		all := string(buf)
		l = &lease{keys: make([]string, len(p.rules)), size: 1, ahead: make([]int64, len(p.rules))}
		start := 0
		for i := range l.keys {
			l.keys[i] = all[start:ends[i]]
			start = ends[i]
		}
		sh.m[all] = l
	}
	for {
		if l.left > 0 && now-l.at < leaseTTL {
			l.left--
			l.used = now
			vs = leasedVerdicts(p, l, now, vs)
			sh.mu.Unlock()
			for i := range p.rules {
				p.rules[i].count[resAllowed].Inc()
			}
			return decision{result: resAllowed, verdicts: vs}, false, true, nil
		}
		if l.refused > 0 && now < l.until {
			i := l.refused - 1
			ahead := l.ahead[i] - (now - l.at)
			sh.mu.Unlock()
			return refusedBy(p, i, ahead, vs), false, true, nil
		}
		if f := l.fetch; f != nil {
			l.waiting++
			sh.mu.Unlock()
			<-f.done
			sh.mu.Lock()
			l.waiting--
			if f.err != nil {
				sh.mu.Unlock()
				return decision{}, true, true, fmt.Errorf("%w: %w", errSharedFetch, f.err)
			}
			if l.dead {
				sh.mu.Unlock()
				return decision{}, false, false, nil
			}
			now = max(now, l.at)
			continue
		}
		break
	}
	// This request asks Redis; the key's other requests wait for it.
	back := int64(0)
	if l.left > 0 {
		back = l.left
		l.size = 1
	} else if l.answered {
		switch lasted := now - l.at; {
		case lasted < leaseHorizon:
			l.size = min(2*l.size, t.max)
		case lasted > 4*leaseHorizon:
			l.size = max(1, l.size/2)
		}
	}
	n := min(max(l.size, l.waiting+1), t.max)
	f := &leaseFetch{done: make(chan struct{})}
	l.fetch, l.left, l.refused = f, 0, 0
	keys := l.keys
	sh.mu.Unlock()

	args := make([]any, 0, 2*len(p.rules)+3)
	for i := range p.rules {
		args = append(args, p.rules[i].redisInterval, p.rules[i].redisTol)
	}
	args = append(args, n, back)
	if e.scriptClock != nil {
		args = append(args, e.scriptClock().UnixMicro())
	}
	callKeys := keys
	if back > 0 {
		callKeys = append(keys[:len(keys):len(keys)], onceKey(keys[0]))
	}
	// The answer serves every waiting request: no one client's leaving
	// may cut it short.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.redisTimeout)
	res, err := e.evalLimit(fctx, callKeys, args)
	cancel()
	var out []int64
	if err == nil {
		out, err = limitAnswer(res, len(p.rules))
	}

	sh.mu.Lock()
	defer sh.mu.Unlock()
	l.fetch = nil
	defer close(f.done)
	if err != nil {
		f.err = err
		return decision{}, true, true, err
	}
	if l.dead && out[0] > 1 {
		// Given back while the answer was on its way (a reload, edge
		// stopping): what this request does not use goes back too.
		sh.mu.Unlock()
		e.giveBack(ctx, s, []unused{{keys: keys, micros: t.micros, n: out[0] - 1}})
		sh.mu.Lock()
	}
	now = max(now, e.now())
	l.at, l.answered = now, true
	if out[0] == 0 {
		i := int(out[1]) - 1
		ahead := out[2] * int64(time.Microsecond)
		l.refused, l.ahead[i] = i+1, ahead
		// Kept no longer than leaseHorizon: a Redis that restarted empty,
		// or the failure policy of one that stopped answering, is heeded
		// that soon.
		l.until = now + min(p.rules[i].wait(ahead), leaseHorizon)
		l.used = now
		return refusedBy(p, i, ahead, vs), true, true, nil
	}
	for i := range p.rules {
		l.ahead[i] = out[i+2] * int64(time.Microsecond)
	}
	if !l.dead {
		l.left = out[0] - 1
	}
	l.used = now
	vs = leasedVerdicts(p, l, now, vs)
	for i := range p.rules {
		p.rules[i].count[resAllowed].Inc()
	}
	return decision{result: resAllowed, verdicts: vs}, true, true, nil
}

// leasedVerdicts are an allowed request's verdicts from its lease: the
// requests the lease still holds count as room, as they would had they
// not been taken yet.
func leasedVerdicts(p *plan, l *lease, now int64, vs []verdict) []verdict {
	for i := range p.rules {
		ahead := l.ahead[i] - (now - l.at) - l.left*p.rules[i].interval
		vs = append(vs, verdict{ok: true, ahead: max(0, ahead)})
	}
	return vs
}

// refusedBy is the decision of rule i refusing with its bucket ahead of
// now by ahead; the rules before it had room.
func refusedBy(p *plan, i int, ahead int64, vs []verdict) decision {
	for range i {
		vs = append(vs, verdict{ok: true})
	}
	vs = append(vs, verdict{ahead: max(0, ahead)})
	p.rules[i].count[resLimited].Inc()
	return decision{result: resLimited, rule: i, verdicts: vs}
}

// wait is how long after a refusal with the bucket ahead by ahead it has
// room for one request.
func (r *rule) wait(ahead int64) int64 {
	return verdict{ahead: ahead}.wait(r.interval, r.tolerance)
}

// unused is a lease's requests to give back: n of each of keys, whose
// rules charge micros µs per request.
type unused struct {
	keys   []string
	micros []int64
	n      int64
}

// errSharedFetch marks the error a request met waiting for another's
// lease: that other request's failure, already counted once.
var errSharedFetch = errors.New("the lease this request waited for failed")

// expire drops the leases not used for leaseTTL and returns their unused
// requests; with all set, every lease, and the table is retired: a lease
// whose answer is on its way is given back by the request that asked.
func (t *leaseTable) expire(now int64, all bool) []unused {
	if all {
		t.retired.Store(true)
	}
	var out []unused
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, l := range sh.m {
			if !all && (l.fetch != nil || now-l.used < leaseTTL) {
				continue
			}
			if l.left > 0 {
				out = append(out, unused{keys: l.keys, micros: t.micros, n: l.left})
			}
			l.left, l.dead = 0, true
			delete(sh.m, k)
		}
		sh.mu.Unlock()
	}
	return out
}

func (s *snapshot) leaseTables() []*leaseTable {
	var out []*leaseTable
	for _, p := range s.routes {
		if p.leases != nil {
			out = append(out, p.leases)
		}
	}
	return out
}

// giveBackLeases returns to Redis the unused requests of the leases not
// used for leaseTTL and of every lease of a replaced config; with all
// set (at shutdown), of every lease. What is lost on the way leaves those
// buckets short until they refill, never over.
func (e *Engine) giveBackLeases(all bool) {
	if e.be.client == nil {
		return
	}
	now := e.now()
	e.mu.Lock()
	tables := e.retired
	e.retired = nil
	e.mu.Unlock()
	var back []unused
	for _, t := range tables {
		back = append(back, t.expire(now, true)...)
	}
	s := e.snap.Load()
	for _, t := range s.leaseTables() {
		back = append(back, t.expire(now, all)...)
	}
	e.giveBack(context.Background(), s, back)
}

// giveBack returns unused lease requests to Redis, within one
// redis_timeout for all of them.
func (e *Engine) giveBack(ctx context.Context, s *snapshot, back []unused) {
	if len(back) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.redisTimeout)
	defer cancel()
	for _, u := range back {
		args := make([]any, 0, len(u.keys)+2)
		args = append(args, len(u.keys))
		for _, m := range u.micros {
			args = append(args, m*u.n)
		}
		if e.scriptClock != nil {
			args = append(args, e.scriptClock().UnixMicro())
		}
		keys := append(u.keys[:len(u.keys):len(u.keys)], onceKey(u.keys[0]))
		if err := refundScript.Run(ctx, e.be.client, keys, args...).Err(); err != nil {
			e.m.BackendError("refund").Inc()
			if ctx.Err() != nil {
				return
			}
		}
	}
}
