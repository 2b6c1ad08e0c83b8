package limits

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// GCRA (the generic cell rate algorithm) keeps one number per key: the
// theoretical arrival time (TAT) of the next request at the sustained rate.
// A request is allowed when, after adding one interval, the TAT is no more
// than tolerance (burst × interval) ahead of now. A TAT at or before now
// carries no information: the bucket is full, and the key may be forgotten.
// The same arithmetic runs in memory (nanoseconds) and in Redis' Lua
// (microseconds), so both backends answer alike.

// gcra applies one request; it returns the TAT after the decision (the old
// one, clamped to now, when the request is refused).
func gcra(tat, now, interval, tolerance int64) (int64, bool) {
	if tat < now {
		tat = now
	}
	next := tat + interval
	if next-now > tolerance {
		return tat, false
	}
	return next, true
}

// verdict is one rule's answer: allowed or not, and how far the bucket's
// TAT is ahead of now after the decision, from which the RateLimit numbers
// follow.
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

const shardCount = 64

// evictSample is how many keys a full shard looks at to choose the one to
// forget; sampling keeps an insert O(1) without an LRU list.
const evictSample = 8

type cell struct {
	tat int64
	idx int32 // position in the shard's keys
}

type entry struct {
	key string
	c   *cell
}

type shard struct {
	mu sync.Mutex
	m  map[string]*cell
	// keys lists the map's entries so that eviction can sample them at a
	// moving hand instead of starting a map iteration per insert.
	keys []entry
	hand int
	peak int
	// pad keeps two shards' locks off one cache line.
	_ [40]byte
}

// buckets is one rule's in-memory state: a GCRA TAT per key, in shards so
// that requests for different keys rarely share a lock. Each shard holds at
// most perShard keys, so a rule never holds more than shardCount × perShard.
type buckets struct {
	seed     maphash.Seed
	perShard int
	size     atomic.Int64
	evicted  prometheus.Counter
	shards   [shardCount]shard
}

func newBuckets(maxKeys int, evicted prometheus.Counter) *buckets {
	b := &buckets{seed: maphash.MakeSeed(), perShard: max(1, maxKeys/shardCount), evicted: evicted}
	for i := range b.shards {
		b.shards[i].m = make(map[string]*cell)
	}
	return b
}

func (b *buckets) shard(key []byte) *shard {
	return &b.shards[maphash.Bytes(b.seed, key)%shardCount]
}

// take decides one request for key. A known key allocates nothing: the map
// lookup with string(key) does not copy.
func (b *buckets) take(key []byte, now, interval, tolerance int64) verdict {
	s := b.shard(key)
	s.mu.Lock()
	c := s.m[string(key)]
	if c == nil {
		if len(s.keys) >= b.perShard {
			b.evictLocked(s, now)
		}
		k := string(key)
		c = &cell{tat: now, idx: int32(len(s.keys))}
		s.m[k] = c
		s.keys = append(s.keys, entry{k, c})
		b.size.Add(1)
		s.peak = max(s.peak, len(s.keys))
	}
	tat, ok := gcra(c.tat, now, interval, tolerance)
	c.tat = tat
	s.mu.Unlock()
	return verdict{ok: ok, ahead: tat - now}
}

// refund gives back the interval a request took when a later rule refused
// it, so a refused request costs no rule anything.
func (b *buckets) refund(key []byte, interval int64) {
	s := b.shard(key)
	s.mu.Lock()
	if c := s.m[string(key)]; c != nil {
		c.tat -= interval
	}
	s.mu.Unlock()
}

// removeLocked forgets the key at position i, moving the last key there.
func (b *buckets) removeLocked(s *shard, i int) {
	k := s.keys[i].key
	last := len(s.keys) - 1
	if i != last {
		s.keys[i] = s.keys[last]
		s.keys[i].c.idx = int32(i)
	}
	s.keys[last] = entry{}
	s.keys = s.keys[:last]
	delete(s.m, k)
	b.size.Add(-1)
}

// evictLocked makes room in a full shard: it forgets a full bucket when the
// sample has one (no information lost), else the one closest to full.
func (b *buckets) evictLocked(s *shard, now int64) {
	n := len(s.keys)
	if n == 0 {
		return
	}
	victim := -1
	var oldest int64
	for j := range min(evictSample, n) {
		i := (s.hand + j) % n
		tat := s.keys[i].c.tat
		if tat <= now {
			victim = i
			break
		}
		if victim < 0 || tat < oldest {
			victim, oldest = i, tat
		}
	}
	s.hand = (s.hand + evictSample) % n
	if s.keys[victim].c.tat > now {
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
		for j := len(s.keys) - 1; j >= 0; j-- {
			if s.keys[j].c.tat <= now {
				b.removeLocked(s, j)
			}
		}
		if s.peak > 1024 && len(s.keys) < s.peak/4 {
			m := make(map[string]*cell, len(s.keys))
			for _, e := range s.keys {
				m[e.key] = e.c
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
