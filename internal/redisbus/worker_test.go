package redisbus

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/testpeer"
)

// failing returns a hook that counts its calls and fails the first n.
func failing(n int32, calls *atomic.Int32) func(context.Context) error {
	return func(context.Context) error {
		if calls.Add(1) <= n {
			return errors.New("refused")
		}
		return nil
	}
}

// emptyAfterLook flushes Redis once the bus subscribed and set the marker:
// its first look only remembers the generation, the next finds a new one.
func emptyAfterLook(t *testing.T, rdb *redis.Client, connects *atomic.Int32) {
	t.Helper()
	waitFor(t, "the bus to subscribe", func() bool { return connects.Load() == 1 })
	waitFor(t, "the marker to be set", func() bool { return rdb.Exists(context.Background(), MarkerKey).Val() == 1 })
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestBusRetriesFailedRepublish: a Republisher that fails after an empty
// restart is run again at the next check, until it succeeds; only then is
// the republishing counted done.
func TestBusRetriesFailedRepublish(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	var calls, connects atomic.Int32
	b := New(rdb, Options{
		OnConnect:  []func(){func() { connects.Add(1) }},
		Republish:  []Republisher{failing(2, &calls)},
		CheckEvery: 50 * time.Millisecond,
	})
	b.Start()
	defer b.Close()
	emptyAfterLook(t, rdb, &connects)
	waitFor(t, "the republishing to be tried until it succeeds", func() bool { return calls.Load() >= 3 })
	// Once it succeeded, the generation is seen: no more republishing.
	got := calls.Load()
	for range 5 {
		b.wake()
		time.Sleep(60 * time.Millisecond)
	}
	if calls.Load() != got {
		t.Errorf("republished %d more times after it succeeded", calls.Load()-got)
	}
}

// TestBusDeliversWhileRepublishing: a long republishing does not hold up
// the messages of the other replicas.
func TestBusDeliversWhileRepublishing(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	release := make(chan struct{})
	defer close(release)
	var started atomic.Bool
	got := make(chan string, 4)
	var connects atomic.Int32
	b := New(rdb, Options{
		Handlers:  map[string]Handler{"ban": func(s string) { got <- s }},
		OnConnect: []func(){func() { connects.Add(1) }},
		Republish: []Republisher{func(ctx context.Context) error {
			started.Store(true)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}},
		CheckEvery: 50 * time.Millisecond,
	})
	b.Start()
	defer b.Close()
	emptyAfterLook(t, rdb, &connects)
	waitFor(t, "the republishing to start", started.Load)
	if err := rdb.Publish(context.Background(), Channel, "other ban during").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "during" {
			t.Fatalf("received %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a message waited for the republishing (10s)")
	}
}

// TestBusLoadsOnEverySubscription: the Loaders run after the first
// subscription and after a reconnect, and a failed load is tried again at
// the next check.
func TestBusLoadsOnEverySubscription(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	var loads atomic.Int32
	b := New(rdb, Options{
		Load:       []Loader{failing(1, &loads)},
		CheckEvery: 50 * time.Millisecond,
	})
	b.Start()
	defer b.Close()
	waitFor(t, "the load to be tried again after a failure", func() bool { return loads.Load() == 2 })
	for range 5 {
		b.wake()
		time.Sleep(60 * time.Millisecond)
	}
	if n := loads.Load(); n != 2 {
		t.Fatalf("loaded %d times without a new subscription, want 2", n)
	}
	rds.Stop()
	rds.Start()
	waitFor(t, "a load after the reconnect", func() bool { return loads.Load() == 3 })
}
