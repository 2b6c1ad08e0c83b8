package limits

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// In memory, every key is a golang.org/x/time/rate token bucket: rate one
// token per interval, burst tolerance ÷ interval tokens. Redis runs the
// same bucket as GCRA (limitScript), which keeps the time the bucket will
// be full again instead of the tokens; for equal rate and burst the two
// decide alike. To make that hold request by request, rules' intervals
// are whole microseconds, Redis' resolution, and a request is decided at
// its time floored to the microsecond, as the script reads TIME. The
// script's integer arithmetic then only ever meets whole microseconds,
// while the limiter counts tokens in a float64 whose rounding grows with
// burst × interval. So the limiter is asked half a microsecond past the
// request's microsecond, every request alike (a shift no decision
// depends on): a request GCRA allows exactly on time then has half a
// microsecond to spare, one it refuses lacks at least half a microsecond,
// and neither verdict turns on the float's last bits. TestMemoryMatchesRedis
// and FuzzBucketMatchesGCRA hold the two to that.

// verdict is one rule's answer: allowed or not, and how far ahead of now
// the bucket's GCRA time is after the decision ((burst − tokens) ×
// interval), from which the RateLimit numbers follow alike for both
// backends.
type verdict struct {
	ok    bool
	ahead int64 // ns
}

// remaining is how many more requests would be allowed right now.
func (v verdict) remaining(interval, tolerance int64) int64 {
	if v.ahead >= tolerance {
		return 0
	}
	return (tolerance - v.ahead) / interval
}

// wait is how long until one more request would be allowed.
func (v verdict) wait(interval, tolerance int64) int64 {
	return max(0, v.ahead+interval-tolerance)
}

// hold is an allowed request's token of one rule, kept until the route's
// later rules have decided: cancelled at the instant it was taken, it puts
// the token back as if the request had never come (see cancel).
type hold struct {
	r  rate.Reservation
	at time.Time
}

// cancel gives the token back. At the reservation's own instant the
// limiter adds back exactly one token, and for a count of at least one
// token the float subtraction and addition are exact: the bucket is as it
// was. (Should a request for the same key be decided in between, at a
// later time, the limiter restores that much less and counts that time
// again, which nets out.)
func (h *hold) cancel() { h.r.CancelAt(h.at) }

// micro floors engine time (ns) to its microsecond.
func micro(ns int64) int64 { return ns - ns%int64(time.Microsecond) }

// limiterTime is the time the limiter is asked at for the request
// microsecond at (engine ns, floored): half a microsecond into it, on a
// fixed base so that the limiter's time arithmetic stays in integer
// nanoseconds.
func limiterTime(at int64) time.Time {
	return time.Time{}.Add(time.Duration(at + int64(time.Microsecond/2)))
}

const shardCount = 64

// evictSample is how many keys a full shard looks at to choose the one to
// forget; sampling keeps an insert O(1) without an LRU list.
const evictSample = 8

// sampleVictim picks, of the first evictSample keys of m in Go's random
// map order, the one whose entry has the lowest age: the key a full map
// gives up. m must not be empty.
func sampleVictim[V any](m map[string]V, age func(V) int64) string {
	var victim string
	var lowest int64
	n := 0
	for k, v := range m {
		if a := age(v); n == 0 || a < lowest {
			victim, lowest = k, a
		}
		if n++; n == evictSample {
			break
		}
	}
	return victim
}

type entry struct {
	key string
	lim *rate.Limiter
}

type shard struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
	// keys lists the map's entries so that eviction can sample them at a
	// moving hand instead of starting a map iteration per insert.
	keys []entry
	hand int
	peak int
	// last is the latest decision time of the shard (floored engine ns).
	// rate.Limiter takes an earlier time than its last one as its new
	// last, crediting the gap twice; requests that read the clock in one
	// order and reach the shard in another are decided at the later time
	// instead, as GCRA's max(tat, now) would.
	last int64
	// pad keeps two shards' locks off one cache line.
	_ [40]byte
}

// buckets is one rule's in-memory state: a token bucket per key, in shards
// so that requests for different keys rarely share a lock. Each shard holds
// at most perShard keys, so a rule never holds more than shardCount ×
// perShard.
type buckets struct {
	seed     maphash.Seed
	perShard int
	limit    rate.Limit
	burst    int
	interval int64
	size     atomic.Int64
	evicted  prometheus.Counter
	shards   [shardCount]shard
}

// newBuckets holds buckets of one token per interval and tolerance ÷
// interval tokens; both are whole microseconds (compileRule).
func newBuckets(maxKeys int, interval, tolerance int64, evicted prometheus.Counter) *buckets {
	b := &buckets{
		seed:     maphash.MakeSeed(),
		perShard: max(1, maxKeys/shardCount),
		limit:    rate.Every(time.Duration(interval)),
		burst:    int(tolerance / interval),
		interval: interval,
		evicted:  evicted,
	}
	for i := range b.shards {
		b.shards[i].m = make(map[string]*rate.Limiter)
	}
	return b
}

func (b *buckets) shard(key []byte) *shard {
	return &b.shards[maphash.Bytes(b.seed, key)%shardCount]
}

// take decides one request for key at now. With keep, an allowed request's
// token comes back as a hold for the caller to cancel if a later rule
// refuses the request; without, the limiter decides and keeps nothing. The
// verdict's ahead is filled in for a refusal, and for an allowed request
// only when headers asks for it: reading the tokens takes the limiter's
// lock once more. A known key allocates nothing: the map lookup with
// string(key) does not copy, and the reservation stays on the stack.
func (b *buckets) take(key []byte, now int64, keep, headers bool) (verdict, hold) {
	s := b.shard(key)
	s.mu.Lock()
	now = max(micro(now), s.last)
	s.last = now
	t := limiterTime(now)
	lim := s.m[string(key)]
	if lim == nil {
		if len(s.keys) >= b.perShard {
			b.evictLocked(s, t)
		}
		k := string(key)
		lim = rate.NewLimiter(b.limit, b.burst)
		s.m[k] = lim
		s.keys = append(s.keys, entry{k, lim})
		b.size.Add(1)
		s.peak = max(s.peak, len(s.keys))
	}
	var h hold
	var ok bool
	if keep {
		// A refused reservation is cancelled at once; its token count,
		// under one, comes back to within a float's last bit.
		r := lim.ReserveN(t, 1)
		if ok = r.DelayFrom(t) == 0; ok {
			h = hold{r: *r, at: t}
		} else {
			r.CancelAt(t)
		}
	} else {
		ok = lim.AllowN(t, 1)
	}
	v := verdict{ok: ok}
	if !ok || headers {
		v.ahead = b.ahead(lim.TokensAt(t))
	}
	s.mu.Unlock()
	return v, h
}

// ahead turns a token count into GCRA's distance of the full-again time
// from now (a distance, so the half-microsecond shift does not show).
// GCRA's distance is whole microseconds, so rounding to the microsecond
// removes the float's error, and the headers derived from it are Redis'.
func (b *buckets) ahead(tokens float64) int64 {
	us := (float64(b.burst) - tokens) * float64(b.interval) / float64(time.Microsecond)
	return int64(math.Round(us)) * int64(time.Microsecond)
}

// removeLocked forgets the key at position i, moving the last key there.
func (b *buckets) removeLocked(s *shard, i int) {
	k := s.keys[i].key
	last := len(s.keys) - 1
	if i != last {
		s.keys[i] = s.keys[last]
	}
	s.keys[last] = entry{}
	s.keys = s.keys[:last]
	delete(s.m, k)
	b.size.Add(-1)
}

// evictLocked makes room in a full shard: it forgets a full bucket when the
// sample has one (no information lost), else the one closest to full.
func (b *buckets) evictLocked(s *shard, t time.Time) {
	n := len(s.keys)
	if n == 0 {
		return
	}
	victim, most, full := -1, 0.0, false
	for j := range min(evictSample, n) {
		i := (s.hand + j) % n
		tokens := s.keys[i].lim.TokensAt(t)
		if tokens >= float64(b.burst) {
			victim, full = i, true
			break
		}
		if victim < 0 || tokens > most {
			victim, most = i, tokens
		}
	}
	s.hand = (s.hand + evictSample) % n
	if !full {
		b.evicted.Inc()
	}
	b.removeLocked(s, victim)
}

// sweep forgets every full bucket, and rebuilds a shard's map once it has
// shrunk well below its peak, since a Go map never gives memory back.
func (b *buckets) sweep(now int64) {
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		t := limiterTime(max(micro(now), s.last))
		for j := len(s.keys) - 1; j >= 0; j-- {
			if s.keys[j].lim.TokensAt(t) >= float64(b.burst) {
				b.removeLocked(s, j)
			}
		}
		if s.peak > 1024 && len(s.keys) < s.peak/4 {
			m := make(map[string]*rate.Limiter, len(s.keys))
			for _, e := range s.keys {
				m[e.key] = e.lim
			}
			s.m = m
			s.keys = append(make([]entry, 0, len(s.keys)), s.keys...)
			s.peak = len(s.keys)
		}
		s.mu.Unlock()
	}
}

// len is the number of keys held.
func (b *buckets) len() int { return int(b.size.Load()) }
