package limits

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/testpeer"
)

// flushReplicas is two engines on one real Redis, as two replicas, each
// syncing only when a test says so.
func flushReplicas(t *testing.T) (rc *redis.Client, a, b *harness) {
	t.Helper()
	srv := testpeer.Redis(t)
	cfg := cfgWith(config.LimitSections{
		Bans: config.Bans{Threshold: 3, Window: config.Duration(time.Minute), Duration: config.Duration(time.Hour),
			Count: config.ViolationKinds, BanIP: true, MaxBans: 1000, SyncInterval: config.Duration(time.Hour)},
		Limiter: config.Limiter{RedisTimeout: patientRedis},
	})
	rc = redisClient(t, srv)
	a = newHarness(t, cfg, harnessOpt{redis: redisClient(t, srv)})
	b = newHarness(t, cfg, harnessOpt{redis: redisClient(t, srv)})
	return rc, a, b
}

// banVia issues a shared ban on subject openid from h's violations.
func banVia(t *testing.T, h *harness, openid string) {
	t.Helper()
	c := client{ip: "192.0.2.9", openid: openid}
	for range 3 {
		h.e.ReportViolation(newRequest(c), config.ViolationSignature)
	}
	if !h.e.bans.bannedOpenID(openid, h.e.now()) {
		t.Fatalf("%s not banned after three violations", openid)
	}
}

func flush(t *testing.T, rc *redis.Client) {
	t.Helper()
	if err := rc.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func inRedis(t *testing.T, rc *redis.Client, member string) bool {
	t.Helper()
	_, err := rc.ZScore(context.Background(), redisBansKey, member).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	return err == nil
}

// TestBanSyncMergesIntoAnEmptiedRedis: replica a holds ban X, read from
// Redis; Redis is flushed and b bans Y before a's next sync. a's sync must
// find a new dataset, not a newer version of the old one: it writes X back
// and reads Y, where it used to take the new dataset as the whole truth
// and forget X.
func TestBanSyncMergesIntoAnEmptiedRedis(t *testing.T) {
	rc, a, b := flushReplicas(t)
	banVia(t, b, "o-x")
	a.e.syncBans(a.e.snap.Load())
	if !a.e.bans.bannedOpenID("o-x", a.e.now()) {
		t.Fatal("a did not read X")
	}
	flush(t, rc)
	banVia(t, b, "o-y")
	a.e.syncBans(a.e.snap.Load())
	if !a.e.bans.bannedOpenID("o-x", a.e.now()) {
		t.Error("a forgot X after the flush")
	}
	if !a.e.bans.bannedOpenID("o-y", a.e.now()) {
		t.Error("a did not read Y, issued after the flush")
	}
	if !inRedis(t, rc, "openid:o-x") {
		t.Error("X was not written back into Redis")
	}
	b.e.syncBans(b.e.snap.Load())
	if !b.e.bans.bannedOpenID("o-x", b.e.now()) || !b.e.bans.bannedOpenID("o-y", b.e.now()) {
		t.Error("b does not hold both bans after its sync")
	}
}

// TestBanVersionUniqueToTheDataset: a last read version 2; Redis is
// flushed, b republishes (version 1) and bans Y (version 2 again). The
// version must tell the datasets apart, or a never reads Y.
func TestBanVersionUniqueToTheDataset(t *testing.T) {
	rc, a, b := flushReplicas(t)
	banVia(t, b, "o-x")
	banVia(t, b, "o-z")
	a.e.syncBans(a.e.snap.Load())
	flush(t, rc)
	if err := b.e.Republish(context.Background()); err != nil {
		t.Fatal(err)
	}
	banVia(t, b, "o-y")
	a.e.syncBans(a.e.snap.Load())
	if !a.e.bans.bannedOpenID("o-y", a.e.now()) {
		t.Error("a did not read Y: the flushed dataset's version repeated")
	}
	for _, m := range []string{"openid:o-x", "openid:o-y", "openid:o-z"} {
		if !inRedis(t, rc, m) {
			t.Errorf("%s not in Redis", m)
		}
	}
}

// TestLiftedBanNotRepublished: Redis is flushed; an operator lifts X on b
// (finding nothing in Redis) while a, which has not heard of the lift,
// writes back what it holds. X must stay lifted, everywhere; a ban of the
// same subject issued after the lift is written back as any other.
func TestLiftedBanNotRepublished(t *testing.T) {
	rc, a, b := flushReplicas(t)
	banVia(t, b, "o-x")
	a.e.syncBans(a.e.snap.Load())
	flush(t, rc)
	if found, shared := b.e.lift(context.Background(), "openid:o-x"); !found || !shared {
		t.Fatalf("lift on b: found %v shared %v", found, shared)
	}
	if err := a.e.Republish(context.Background()); err != nil {
		t.Fatal(err)
	}
	if inRedis(t, rc, "openid:o-x") {
		t.Error("a's republish wrote the lifted ban back")
	}
	if a.e.bans.bannedOpenID("o-x", a.e.now()) {
		t.Error("a still enforces the lifted ban after its republish")
	}
	b.e.syncBans(b.e.snap.Load())
	if b.e.bans.bannedOpenID("o-x", b.e.now()) {
		t.Error("the lifted ban came back on b")
	}

	// Banned again after the lift: that ban is a new one.
	a.clock.Advance(time.Second)
	b.clock.Advance(time.Second)
	banVia(t, b, "o-x")
	a.e.syncBans(a.e.snap.Load())
	flush(t, rc)
	if err := a.e.Republish(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !inRedis(t, rc, "openid:o-x") || !a.e.bans.bannedOpenID("o-x", a.e.now()) {
		t.Error("a ban issued after the lift was not written back")
	}
}
