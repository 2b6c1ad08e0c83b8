package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"time"
)

// NonceKey identifies one nonce of one token: a truncated SHA-256 of the
// token id and the nonce, so that every entry has the same small size
// whatever the client sent.
type NonceKey [16]byte

func nonceKey(id TokenID, nonce string) NonceKey {
	var b [len(TokenID{}) + maxNonceLen]byte
	copy(b[:], id[:])
	n := copy(b[len(id):], nonce)
	sum := sha256.Sum256(b[:len(id)+n])
	return NonceKey(sum[:16])
}

// NonceStore remembers the nonces of signed requests. A store outlives
// config reloads (a reload must not forget the nonces just seen), so the
// gateway creates one per process and passes it to every Service.
type NonceStore interface {
	// Record remembers key for ttl and reports whether it is new. A key
	// already remembered and not yet expired returns false.
	Record(ctx context.Context, key NonceKey, now time.Time, ttl time.Duration) (fresh bool, err error)
}

var (
	_ NonceStore = (*MemoryNonces)(nil)
	_ NonceStore = (*RedisNonces)(nil)
)

// MemoryNonces is a NonceStore for one replica: a map for lookups and a ring
// in insertion order for expiry, so every operation is O(1) and memory is
// bounded by the cap. It needs no background goroutine: expired entries are
// dropped as new ones arrive. When the cap is reached the oldest entry is
// forgotten even if it has not expired; size the cap for the request rate
// times twice the skew window.
type MemoryNonces struct {
	mu   sync.Mutex
	cap  int
	seen map[NonceKey]int64 // expiry, Unix nanoseconds
	ring []nonceEntry       // grows up to cap
	head int
	size int
}

type nonceEntry struct {
	key NonceKey
	exp int64
}

// NewMemoryNonces returns an empty store holding at most cap nonces.
func NewMemoryNonces(cap int) *MemoryNonces {
	if cap < 1 {
		cap = 1
	}
	return &MemoryNonces{cap: cap, seen: make(map[NonceKey]int64)}
}

// Len is the number of nonces held, expired ones not yet dropped included.
func (m *MemoryNonces) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seen)
}

// Record implements NonceStore.
func (m *MemoryNonces) Record(_ context.Context, key NonceKey, now time.Time, ttl time.Duration) (bool, error) {
	t := now.UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	if exp, ok := m.seen[key]; ok && exp > t {
		return false, nil
	}
	for m.size > 0 && m.ring[m.head].exp <= t {
		m.popOldest()
	}
	if m.size == m.cap {
		m.popOldest()
	}
	if m.size == len(m.ring) {
		m.grow()
	}
	exp := t + int64(ttl)
	m.ring[(m.head+m.size)%len(m.ring)] = nonceEntry{key: key, exp: exp}
	m.size++
	m.seen[key] = exp
	return true, nil
}

func (m *MemoryNonces) popOldest() {
	e := m.ring[m.head]
	// A key recorded again after it expired has a newer entry further on;
	// only the entry matching the map's expiry may delete it.
	if m.seen[e.key] == e.exp {
		delete(m.seen, e.key)
	}
	m.head = (m.head + 1) % len(m.ring)
	m.size--
}

func (m *MemoryNonces) grow() {
	n := max(64, 2*len(m.ring))
	n = min(n, m.cap)
	ring := make([]nonceEntry, n)
	for i := 0; i < m.size; i++ {
		ring[i] = m.ring[(m.head+i)%len(m.ring)]
	}
	m.ring, m.head = ring, 0
}

// ErrNoncesHereOnly is RedisNonces' answer while Redis is skipped: the
// nonce was checked on this replica only.
var ErrNoncesHereOnly = errors.New("redis is unavailable; the nonce was checked on this replica only")

// RedisNonces is a NonceStore shared by every replica using the same Redis,
// so a nonce replayed to another replica is caught. When Redis cannot
// answer, it falls back to its in-memory store (replays to the same replica
// are still caught) and returns the error, for the caller's nonce_failure
// policy.
type RedisNonces struct {
	rdb      Redis
	gate     *RedisGate
	fallback *MemoryNonces
}

// NewRedisNonces returns a store in rdb with an in-memory fallback of cap
// entries; gate (may be nil) skips Redis while it does not answer.
func NewRedisNonces(rdb Redis, cap int, gate *RedisGate) *RedisNonces {
	return &RedisNonces{rdb: rdb, gate: gate, fallback: NewMemoryNonces(cap)}
}

const noncePrefix = "edge:nonce:"

// Record implements NonceStore with SET NX PX.
func (r *RedisNonces) Record(ctx context.Context, key NonceKey, now time.Time, ttl time.Duration) (bool, error) {
	var b [len(noncePrefix) + 2*len(NonceKey{})]byte
	copy(b[:], noncePrefix)
	hex.Encode(b[len(noncePrefix):], key[:])
	if !r.gate.allow(now) {
		fresh, _ := r.fallback.Record(ctx, key, now, ttl)
		return fresh, ErrNoncesHereOnly
	}
	fresh, err := r.rdb.SetNX(ctx, string(b[:]), 1, ttl).Result()
	r.gate.result(ctx, now, err)
	if err != nil {
		fresh, _ = r.fallback.Record(ctx, key, now, ttl)
		return fresh, err
	}
	return fresh, nil
}
