package identity

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Feed carries this replica's revocations to the others and theirs here,
// and vouches for the copy it feeds; the gateway's redisbus.Bus is one.
type Feed interface {
	// Envelope is the pub/sub channel, and the head of the message, that
	// announce a payload of kind to the other replicas (the message is
	// the head and the payload): the revocation script publishes it
	// itself, with its write, so that Redis never holds a revocation the
	// others were not told about.
	Envelope(kind string) (channel, head string)
	// Current reports whether every revocation Redis published up to a
	// bound of about a second ago has reached this replica and the list
	// was read since the subscription began: then the copy holds every
	// revocation older than that bound. Called per request.
	Current() bool
}

// EventRevoke is the bus message of a revocation: "<token id hex> <expiry
// Unix seconds>".
const EventRevoke = "revoke"

// maxHeldRevocations caps the revocations a replica holds (about 100 bytes
// each): far more than the logouts of one token lifetime of any app edge
// serves. When full, the one closest to its expiry gives way, and the copy
// is no longer complete.
const maxHeldRevocations = 100000

// Revocations is this replica's copy of the revocation list, fed by its own
// revocations and the bus. Redis holds the list of record; while the feed
// vouches for the copy, a token route checks the copy alone
// (revocation_check = "local"), otherwise Redis. The copy also keeps a
// token revoked before an outage refused during it (whatever
// revocation_failure says), and lets the replica put the list back into a
// Redis that restarted empty. One per process, across reloads.
type Revocations struct {
	rdb  Redis
	feed Feed
	log  *slog.Logger
	now  func() time.Time

	mu sync.RWMutex
	m  map[TokenID]int64 // expiry, Unix seconds
	// n mirrors len(m) so that the check every token request makes costs
	// no lock while nothing is held, the usual case.
	n atomic.Int64
	// legacyMoved is set once the keys of an earlier version were moved
	// into the list (moveLegacy).
	legacyMoved atomic.Bool
	// unsynced is set while the copy may hold a revocation the list lacks
	// (Redis did not take one); a Republish that succeeds clears it.
	unsynced atomic.Bool
	// dropped is set once the cap made the copy give up a revocation still
	// in force: the copy can no longer answer alone, for the process's
	// life.
	dropped atomic.Bool
}

// NewRevocations returns an empty copy. rdb holds the shared list; feed
// (may be nil: the copy is never complete) announces new revocations and
// vouches for the copy; now nil is time.Now.
func NewRevocations(rdb Redis, feed Feed, log *slog.Logger, now func() time.Time) *Revocations {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Revocations{rdb: rdb, feed: feed, log: log, now: now, m: make(map[TokenID]int64)}
}

// complete reports whether the copy holds every revocation in force but
// the last second's: the feed vouches for it and the cap never dropped
// one.
func (r *Revocations) complete() bool {
	return r != nil && r.feed != nil && !r.dropped.Load() && r.feed.Current()
}

// Len is the number of revocations held, expired ones not yet dropped
// included.
func (r *Revocations) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.m)
}

func (r *Revocations) has(id TokenID) bool {
	if r == nil || r.n.Load() == 0 {
		return false
	}
	r.mu.RLock()
	exp, ok := r.m[id]
	r.mu.RUnlock()
	return ok && exp > r.now().Unix()
}

func (r *Revocations) add(id TokenID, exp int64) {
	if r == nil {
		return
	}
	now := r.now().Unix()
	if exp <= now {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, held := r.m[id]
	if held && cur >= exp {
		// The later expiry stands, as in the list.
		return
	}
	if !held && len(r.m) >= maxHeldRevocations {
		for k, e := range r.m {
			if e <= now {
				delete(r.m, k)
			}
		}
		if len(r.m) >= maxHeldRevocations {
			var victim TokenID
			soonest := int64(-1)
			for k, e := range r.m {
				if soonest < 0 || e < soonest {
					victim, soonest = k, e
				}
			}
			delete(r.m, victim)
			if !r.dropped.Swap(true) {
				r.log.Warn("identity: the revocation copy is full and dropped a revocation still in force; tokens are checked in redis per request until this process restarts",
					"cap", maxHeldRevocations)
			}
		}
	}
	r.m[id] = exp
	r.n.Store(int64(len(r.m)))
}

// HandleEvent applies the revocations another replica wrote (EventRevoke):
// "<token id hex> <expiry>", one pair or several, space separated.
func (r *Revocations) HandleEvent(payload string) {
	fields := strings.Fields(payload)
	if len(fields) == 0 || len(fields)%2 != 0 {
		r.log.Warn("identity: ignored a malformed revocation message")
		return
	}
	for i := 0; i < len(fields); i += 2 {
		exp, err := strconv.ParseInt(fields[i+1], 10, 64)
		var id TokenID
		if err != nil || len(fields[i]) != 2*len(id) {
			r.log.Warn("identity: ignored a malformed revocation message")
			return
		}
		if _, err := hex.Decode(id[:], []byte(fields[i])); err != nil {
			r.log.Warn("identity: ignored a malformed revocation message")
			return
		}
		r.add(id, exp)
	}
}

// revocationChunk bounds the revocations of one Redis call when the list is
// written back or read: one round trip each, not one per revocation.
const revocationChunk = 500

// write adds the revocations of args (pairs of expiry, token id hex) to
// the list, a chunk per call (see writeRevocations).
func (r *Revocations) write(ctx context.Context, now int64, args []any) error {
	return writeRevocations(ctx, r.rdb, r.feedOf(), now, args)
}

// markUnsynced records that the copy holds a revocation the list lacks.
func (r *Revocations) markUnsynced() {
	if r != nil {
		r.unsynced.Store(true)
	}
}

// feedOf is the copy's feed; nil for no copy or no feed.
func (r *Revocations) feedOf() Feed {
	if r == nil {
		return nil
	}
	return r.feed
}

// writeRevocations adds the revocations of args (pairs of expiry, token id
// hex) to the list in rdb, a chunk per call, each call announcing what it
// writes through feed (when not nil) in the same script: a revocation
// written back into an emptied Redis reaches a replica that read the list
// while it was empty, as a new one does.
func writeRevocations(ctx context.Context, rdb Redis, feed Feed, now int64, args []any) error {
	var channel, head string
	if feed != nil {
		channel, head = feed.Envelope(EventRevoke)
	}
	for len(args) > 0 {
		c := min(len(args), 2*revocationChunk)
		chunk := append([]any{now, channel, head}, args[:c]...)
		if err := revokeScript.Run(ctx, rdb, []string{RevokedKey}, chunk...).Err(); err != nil {
			return err
		}
		args = args[c:]
	}
	return nil
}

// Republish writes every revocation held back into Redis, for a Redis that
// came back empty: a few hundred per call.
func (r *Revocations) Republish(ctx context.Context) error {
	now := r.now().Unix()
	r.mu.RLock()
	args := make([]any, 0, 2*len(r.m))
	for k, e := range r.m {
		if e > now {
			args = append(args, e, hex.EncodeToString(k[:]))
		}
	}
	r.mu.RUnlock()
	n := len(args) / 2
	// Cleared before writing: a revocation Redis refuses meanwhile sets it
	// again.
	r.unsynced.Store(false)
	if err := r.write(ctx, now, args); err != nil {
		r.unsynced.Store(true)
		return fmt.Errorf("republishing revocations: %w", err)
	}
	if n > 0 {
		r.log.Info("identity: revocations republished", "count", n)
	}
	return nil
}

// Reconcile reloads the copy when the list in Redis holds more revocations
// in force than the copy does: the copy missed one without its
// subscription breaking (a replica of an earlier version, whose write and
// announcement were two calls, lost the second; go-redis dropped a
// message). The bus runs it at each check, so such a miss lasts a check
// interval at most. It costs a count (ZCOUNT, logarithmic) while nothing
// is missing. The counts mean something because the copy is kept a subset
// of the list: a copy holding more is written back first. A copy that overflowed is never complete and is not
// reconciled.
func (r *Revocations) Reconcile(ctx context.Context) error {
	if r.dropped.Load() {
		return nil
	}
	now := r.now().Unix()
	n, err := r.rdb.ZCount(ctx, RevokedKey, "("+strconv.FormatInt(now, 10), "+inf").Result()
	if err != nil {
		return fmt.Errorf("counting revocations: %w", err)
	}
	held := r.inForce(now)
	if n < held || r.unsynced.Load() {
		// The copy holds revocations the list may lack (Redis did not take
		// them, or came back empty and is not written back yet): put them
		// back first, or they would hide as many the copy lacks.
		if err := r.Republish(ctx); err != nil {
			return err
		}
		if n, err = r.rdb.ZCount(ctx, RevokedKey, "("+strconv.FormatInt(now, 10), "+inf").Result(); err != nil {
			return fmt.Errorf("counting revocations: %w", err)
		}
	}
	if n <= held {
		return nil
	}
	return r.Load(ctx)
}

// inForce is how many revocations the copy holds that end after now.
func (r *Revocations) inForce(now int64) int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var n int64
	for _, exp := range r.m {
		if exp > now {
			n++
		}
	}
	return n
}

// Load reads the list in Redis into this replica's copy, dropping the ended
// revocations there: at start, the copy holds nothing, and after a
// reconnect it may lack what was announced while the subscription was
// down. Without that, a replica started after a revocation could not put it
// back into a Redis that restarted empty. The bus runs it (a Loader).
func (r *Revocations) Load(ctx context.Context) error {
	if err := r.moveLegacy(ctx); err != nil {
		return fmt.Errorf("loading revocations kept by an earlier version: %w", err)
	}
	now := strconv.FormatInt(r.now().Unix(), 10)
	if err := r.rdb.ZRemRangeByScore(ctx, RevokedKey, "-inf", now).Err(); err != nil {
		return fmt.Errorf("loading revocations: %w", err)
	}
	n := 0
	var foreign []any
	for off := int64(0); ; off += revocationChunk {
		page, err := r.rdb.ZRangeByScoreWithScores(ctx, RevokedKey, &redis.ZRangeBy{
			Min: "(" + now, Max: "+inf", Offset: off, Count: revocationChunk,
		}).Result()
		if err != nil {
			return fmt.Errorf("loading revocations: %w", err)
		}
		for _, z := range page {
			var id TokenID
			m, _ := z.Member.(string)
			if _, err := hex.Decode(id[:], []byte(m)); err != nil || len(m) != 2*len(id) {
				foreign = append(foreign, z.Member)
				continue
			}
			r.add(id, int64(z.Score))
			n++
		}
		if len(page) < revocationChunk {
			break
		}
	}
	// Members that are no token id would keep the list's count above the
	// copy's, and reconciliation reading the list at every check.
	if len(foreign) > 0 {
		if err := r.rdb.ZRem(ctx, RevokedKey, foreign...).Err(); err != nil {
			return fmt.Errorf("loading revocations: %w", err)
		}
		r.log.Warn("identity: removed members of the revocation list that are no token id", "count", len(foreign))
	}
	if n > 0 {
		r.log.Info("identity: revocations loaded from redis", "count", n)
	}
	return nil
}

// legacyRevokedPrefix is how earlier versions kept revocations: a key per
// token, living as long as the token.
const legacyRevokedPrefix = "edge:revoked:"

// legacyKeys is what moving those keys asks of a Redis node.
type legacyKeys interface {
	Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
	PTTL(ctx context.Context, key string) *redis.DurationCmd
}

// moveLegacy takes the revocations an earlier version kept into this
// replica's copy and into the list, once per process (on every master of
// a Cluster), so that a token revoked before the upgrade stays revoked
// after it. The old keys are left to expire.
func (r *Revocations) moveLegacy(ctx context.Context) error {
	if r.legacyMoved.Load() {
		return nil
	}
	var err error
	switch c := r.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return r.moveLegacyFrom(ctx, m) })
	case legacyKeys:
		err = r.moveLegacyFrom(ctx, c)
	}
	if err == nil {
		r.legacyMoved.Store(true)
	}
	return err
}

func (r *Revocations) moveLegacyFrom(ctx context.Context, c legacyKeys) error {
	now := r.now()
	var args []any
	iter := c.Scan(ctx, 0, legacyRevokedPrefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		h := strings.TrimPrefix(iter.Val(), legacyRevokedPrefix)
		var id TokenID
		if len(h) != 2*len(id) {
			continue
		}
		if _, err := hex.Decode(id[:], []byte(h)); err != nil {
			continue
		}
		ttl, err := c.PTTL(ctx, iter.Val()).Result()
		if err != nil {
			return err
		}
		if ttl <= 0 {
			// Gone meanwhile, or never given an expiry (not edge's).
			continue
		}
		exp := now.Add(ttl).Unix() + 1
		r.add(id, exp)
		args = append(args, exp, h)
	}
	if err := iter.Err(); err != nil {
		return err
	}
	n := len(args) / 2
	if err := r.write(ctx, now.Unix(), args); err != nil {
		return err
	}
	if n > 0 {
		r.log.Info("identity: revocations kept by an earlier version moved into the list", "count", n)
	}
	return nil
}
