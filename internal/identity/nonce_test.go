package identity

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/apierror"
	"edge/internal/testpeer"
)

func key(i int) NonceKey { return nonceKey(TokenID{byte(i), byte(i >> 8)}, "nonce-nonce-nonce-1") }

func TestMemoryNoncesExpire(t *testing.T) {
	m := NewMemoryNonces(100)
	ctx := context.Background()
	t0 := time.Unix(1000, 0)
	ttl := 10 * time.Minute
	for _, step := range []struct {
		at    time.Duration
		key   int
		fresh bool
	}{
		{0, 1, true},
		{time.Second, 1, false},
		{time.Second, 2, true},
		{ttl - time.Nanosecond, 1, false},
		{ttl, 1, true}, // expired: recorded anew
		{ttl + time.Second, 1, false},
		{ttl + time.Second, 2, true},
	} {
		fresh, err := m.Record(ctx, key(step.key), t0.Add(step.at), ttl)
		if err != nil || fresh != step.fresh {
			t.Fatalf("key %d at +%s: fresh %v, want %v", step.key, step.at, fresh, step.fresh)
		}
	}
	// Everything expires and is dropped as new entries arrive.
	if _, err := m.Record(ctx, key(3), t0.Add(3*ttl), ttl); err != nil {
		t.Fatal(err)
	}
	if n := m.Len(); n != 1 {
		t.Errorf("%d entries after everything expired, want 1", n)
	}
}

func TestMemoryNoncesBounded(t *testing.T) {
	const limit = 1000
	m := NewMemoryNonces(limit)
	ctx := context.Background()
	t0 := time.Unix(1000, 0)
	for i := range 3 * limit {
		if fresh, _ := m.Record(ctx, key(i), t0, time.Hour); !fresh {
			t.Fatalf("key %d not fresh", i)
		}
		if m.Len() > limit {
			t.Fatalf("%d entries above the cap of %d", m.Len(), limit)
		}
	}
	// The newest are remembered, the oldest forgotten first.
	if fresh, _ := m.Record(ctx, key(3*limit-1), t0, time.Hour); fresh {
		t.Error("the newest nonce was forgotten")
	}
	if fresh, _ := m.Record(ctx, key(0), t0, time.Hour); !fresh {
		t.Error("the oldest nonce is still held beyond the cap")
	}
}

// TestNonceReplayedToSecondReplica: two gateways with the same session
// secret and one Redis; a signed request accepted by the first is refused
// by the second.
func TestNonceReplayedToSecondReplica(t *testing.T) {
	srv := testpeer.Redis(t)
	vec := loadVectors(t)
	now := testpeer.NewClock(time.Unix(vec.Now, 0))
	replica := func() *Service {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { rdb.Close() })
		return newService(t, testConfig(), Options{Now: now.Now, Nonces: NewNonceStore(rdb, 1024, nil), Redis: rdb})
	}
	a, b := replica(), replica()
	token, _ := sessionWithKey(t, a.Sealer(), vec.SignKey)
	v := vec.Valid[2]
	if rec, got := serveThrough(t, a, testRoute("signed"), v.request(t, token), false); !got.called {
		t.Fatalf("first replica refused: %s", rec.Body.String())
	}
	rec, got := serveThrough(t, b, testRoute("signed"), v.request(t, token), false)
	if got.called || errorCode(t, rec) != int(apierror.Replayed) {
		t.Fatalf("replay to the second replica answered %d %s", rec.Code, rec.Body.String())
	}
	// Redis remembers it for twice the skew window.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), noncePrefix+"*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("nonce keys in redis: %v %v", keys, err)
	}
	if pttl := rdb.PTTL(context.Background(), keys[0]).Val(); pttl <= 9*time.Minute || pttl > 10*time.Minute {
		t.Errorf("nonce kept for %s, want 10m (twice the skew)", pttl)
	}
}

func TestRedisNoncesFallBackToMemory(t *testing.T) {
	srv := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	store := NewRedisNonces(rdb, 1024, nil)
	srv.Stop()
	ctx := context.Background()
	t0 := time.Unix(1000, 0)
	fresh, err := store.Record(ctx, key(1), t0, time.Minute)
	if err == nil || !fresh {
		t.Fatalf("first record with Redis down: fresh %v err %v", fresh, err)
	}
	if fresh, _ := store.Record(ctx, key(1), t0, time.Minute); fresh {
		t.Error("a replay to the same replica went unnoticed while Redis was down")
	}
}
