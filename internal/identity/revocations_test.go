package identity

import (
	"context"
	"encoding/hex"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/testpeer"
)

// TestRevocationEvents: a message from another replica revokes until the
// token's expiry; malformed ones change nothing; the copy stays bounded.
func TestRevocationEvents(t *testing.T) {
	clock := testpeer.NewClock(time.Unix(1_700_000_000, 0))
	r := NewRevocations(nil, nil, nil, clock.Now)
	id := TokenID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	exp := strconv.FormatInt(clock.Now().Add(time.Hour).Unix(), 10)
	for _, bad := range []string{"", hex.EncodeToString(id[:]), "zz " + exp, hex.EncodeToString(id[:]) + "00 " + exp,
		hex.EncodeToString(id[:4]) + " " + exp, hex.EncodeToString(id[:]) + " soon"} {
		r.HandleEvent(bad)
	}
	if r.Len() != 0 {
		t.Fatalf("malformed messages left %d revocations", r.Len())
	}
	r.HandleEvent(hex.EncodeToString(id[:]) + " " + exp)
	if !r.has(id) {
		t.Fatal("a revocation message did not revoke")
	}
	clock.Advance(time.Hour)
	if r.has(id) {
		t.Error("a revocation outlived its token")
	}
	r.HandleEvent(hex.EncodeToString(id[:]) + " " + strconv.FormatInt(clock.Now().Unix()-1, 10))
	if r.has(id) {
		t.Error("an already expired revocation was taken")
	}
}

// TestRevocationsBounded: past the cap, the revocation closest to its
// expiry gives way.
func TestRevocationsBounded(t *testing.T) {
	clock := testpeer.NewClock(time.Unix(1_700_000_000, 0))
	r := NewRevocations(nil, nil, nil, clock.Now)
	base := clock.Now().Unix() + 3600
	for i := range maxHeldRevocations + 10 {
		var id TokenID
		id[0], id[1], id[2] = byte(i), byte(i>>8), byte(i>>16)
		r.add(id, base+int64(i))
	}
	if r.Len() != maxHeldRevocations {
		t.Fatalf("held %d revocations, cap %d", r.Len(), maxHeldRevocations)
	}
	if r.has(TokenID{0}) {
		t.Error("the revocation closest to its expiry was kept past the cap")
	}
}

// FuzzRevocationEvent: whatever Redis carries, a message never panics.
func FuzzRevocationEvent(f *testing.F) {
	f.Add("0102030405060708090a0b0c 1700003600")
	f.Add("zz 1")
	r := NewRevocations(nil, nil, nil, nil)
	f.Fuzz(func(t *testing.T, msg string) {
		r.HandleEvent(msg)
		if r.Len() > maxHeldRevocations {
			t.Fatal("over the cap")
		}
	})
}

// roundTrips counts the calls a client makes to Redis, a pipeline as one.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// TestRevocationsRepublishAndLoad: a copy writes itself back into an empty
// Redis a few hundred revocations per round trip, and a new copy (a
// replica that started since) reads the list back, without the ended ones.
func TestRevocationsRepublishAndLoad(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	hook := new(roundTrips)
	rdb.AddHook(hook)
	ctx := context.Background()
	clock := testpeer.NewClock(time.Unix(1_700_000_000, 0))
	const n = 1200
	held := NewRevocations(rdb, nil, nil, clock.Now)
	for i := range n {
		var id TokenID
		id[0], id[1] = byte(i), byte(i>>8)
		held.add(id, clock.Now().Unix()+3600+int64(i%2)*3600)
	}
	before := hook.n.Load()
	if err := held.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	if trips := hook.n.Load() - before; trips > n/100 {
		t.Errorf("republishing %d revocations took %d round trips", n, trips)
	}
	if got := rdb.ZCard(ctx, RevokedKey).Val(); got != n {
		t.Fatalf("redis holds %d revocations, want %d", got, n)
	}
	// An ended one in Redis is dropped when the list is read.
	if err := rdb.ZAdd(ctx, RevokedKey, redis.Z{Score: float64(clock.Now().Unix() - 1), Member: "0102030405060708090a0b0c"}).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := NewRevocations(rdb, nil, nil, clock.Now)
	if err := fresh.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if fresh.Len() != n {
		t.Fatalf("loaded %d revocations, want %d", fresh.Len(), n)
	}
	if rdb.ZScore(ctx, RevokedKey, "0102030405060708090a0b0c").Err() != redis.Nil {
		t.Error("an ended revocation was left in redis")
	}
	clock.Advance(90 * time.Minute)
	if err := NewRevocations(rdb, nil, nil, clock.Now).Load(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rdb.ZCard(ctx, RevokedKey).Val(); got != n/2 {
		t.Errorf("after half of them ended redis holds %d, want %d", got, n/2)
	}
}

// TestRevocationRevivedByCopy: a replica that took a revocation and a
// Redis restarted empty: the replica's Republish puts it back for a replica
// that holds no copy; Revoked answers from one ZSCORE.
func TestRevocationRevivedByCopy(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	ctx := context.Background()
	clock := testpeer.NewClock(time.Now())
	a := newSealer(t, clock, rdb, testSecret1)
	a.held = NewRevocations(rdb, nil, nil, clock.Now)
	b := newSealer(t, clock, rdb, testSecret1)
	_, sess, _ := a.Issue(testAppID, "openid-1", "")
	if err := a.Revoke(ctx, sess); err != nil {
		t.Fatal(err)
	}
	rds.Stop()
	rds.Start()
	if revoked, err := b.Revoked(ctx, &sess); err != nil || revoked {
		t.Fatalf("after the empty restart, before republishing: %v %v", revoked, err)
	}
	if err := a.held.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	hook := new(roundTrips)
	rdb.AddHook(hook)
	if revoked, err := b.Revoked(ctx, &sess); err != nil || !revoked {
		t.Errorf("after republishing: %v %v", revoked, err)
	}
	if hook.n.Load() != 1 {
		t.Errorf("the check took %d round trips, want 1", hook.n.Load())
	}
}

// TestLegacyRevocationsMoveIntoTheList: a token an earlier version revoked
// (a key of its own, edge:revoked:<id>, living as long as the token) is
// still revoked after the upgrade: loading the list takes it in, into
// this replica's copy and into the list every replica checks.
func TestLegacyRevocationsMoveIntoTheList(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	ctx := context.Background()
	clock := testpeer.NewClock(time.Unix(1_700_000_000, 0))
	var id TokenID
	copy(id[:], "legacy-token")
	if err := rdb.Set(ctx, "edge:revoked:"+hex.EncodeToString(id[:]), 1, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	// Not a revocation: the list's own keys and a malformed legacy one.
	if err := rdb.Set(ctx, "edge:revoked:nothex", 1, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	r := NewRevocations(rdb, nil, nil, clock.Now)
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.has(id) || r.Len() != 1 {
		t.Fatalf("after loading: held %t, %d held; want the legacy revocation alone", r.has(id), r.Len())
	}
	score, err := rdb.ZScore(ctx, RevokedKey, hex.EncodeToString(id[:])).Result()
	if err != nil || int64(score) < clock.Now().Unix()+3500 {
		t.Fatalf("in the list: %v %v, want an expiry about an hour ahead", score, err)
	}
}
