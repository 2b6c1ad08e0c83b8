package redisbus

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/testpeer"
)

type probe struct {
	got        chan string
	connects   atomic.Int32
	republishs atomic.Int32
	// looked counts the loads, which follow the bus's look at the marker:
	// once it is 1, the bus knows the dataset a flush will replace (a bus
	// whose first look comes after the flush only remembers the new one,
	// having nothing to put back).
	looked atomic.Int32
}

func newProbe() *probe { return &probe{got: make(chan string, 16)} }

func (p *probe) bus(c Client) *Bus {
	b := New(c, Options{
		Handlers:   map[string]Handler{"ban": func(s string) { p.got <- s }},
		OnConnect:  []func(){func() { p.connects.Add(1) }},
		Republish:  []Republisher{func(context.Context) error { p.republishs.Add(1); return nil }},
		Load:       []Loader{func(context.Context) error { p.looked.Add(1); return nil }},
		CheckEvery: 50 * time.Millisecond,
	})
	b.Start()
	return b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBusOnRealRedis: a message reaches the other replica and not its
// sender; unknown kinds and malformed messages are dropped; a FLUSHALL (no
// reconnect) and a restart on an empty dataset make every replica
// republish, and the restart resubscribes.
func TestBusOnRealRedis(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	p1, p2 := newProbe(), newProbe()
	b1, b2 := p1.bus(rdb), p2.bus(rdb)
	defer b1.Close()
	defer b2.Close()
	waitFor(t, "both buses to subscribe and look at the marker", func() bool {
		return p1.connects.Load() == 1 && p2.connects.Load() == 1 && p1.looked.Load() >= 1 && p2.looked.Load() >= 1
	})
	ctx := context.Background()

	for _, raw := range []string{"no-spaces", "origin only-kind", "someone revoke x"} {
		if err := rdb.Publish(ctx, Channel, raw).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b1.Publish(ctx, "ban", "60000 token ip:192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-p2.got:
		if got != "60000 token ip:192.0.2.1" {
			t.Fatalf("received %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the other bus did not receive the message within 10s")
	}
	select {
	case got := <-p1.got:
		t.Fatalf("the sender applied its own message %q", got)
	case got := <-p2.got:
		t.Fatalf("a malformed or unknown message was applied: %q", got)
	case <-time.After(200 * time.Millisecond):
	}

	if p1.republishs.Load() != 0 || p2.republishs.Load() != 0 {
		t.Fatal("republished without a reason")
	}
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both buses to republish after FLUSHALL", func() bool { return p1.republishs.Load() == 1 && p2.republishs.Load() == 1 })

	rds.Stop()
	rds.Start()
	waitFor(t, "both buses to resubscribe and republish after an empty restart", func() bool {
		return p1.connects.Load() >= 2 && p2.connects.Load() >= 2 && p1.republishs.Load() == 2 && p2.republishs.Load() == 2
	})
	if err := b2.Publish(ctx, "ban", "1 token ip:192.0.2.2"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p1.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no message after the restart: not resubscribed")
	}
}
