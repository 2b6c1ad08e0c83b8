// Package redisbus owns what replicas must learn from each other at once
// (a ban issued or lifted, a session token revoked), carried over Redis
// pub/sub, and the detection of a Redis that lost its data (restarted
// without persistence, flushed, evicted), after which every replica puts
// back what it holds. The periodic syncs of the packages that publish stay
// the safety net for messages lost while a replica was disconnected:
// pub/sub delivers to whoever listens at that moment, and no one else.
package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Channel is the one pub/sub channel of a cluster of replicas. Classic
// pub/sub (not sharded) reaches every node of a Redis Cluster, so a
// subscriber on any node hears a message published on any other.
const Channel = "edge:events"

// MarkerKey holds the generation of the Redis dataset: set by the first
// replica that finds it missing, it disappears with the data, and a new
// value tells each replica to republish. It has no expiry; with a
// maxmemory-policy that evicts keys without one (allkeys-*), losing it
// makes replicas republish, which is harmless.
const MarkerKey = "edge:marker"

// Client is what the bus asks of Redis; redis.UniversalClient (a single
// node, Sentinel or Cluster) is one.
type Client interface {
	Publish(ctx context.Context, channel string, message any) *redis.IntCmd
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
	Get(ctx context.Context, key string) *redis.StringCmd
	SetNX(ctx context.Context, key string, value any, expiration time.Duration) *redis.BoolCmd
}

// Handler applies one message of its kind. It runs on the bus goroutine
// and must not block on Redis.
type Handler func(payload string)

// Republisher writes back into an emptied Redis what this replica holds.
type Republisher func(ctx context.Context) error

// Options configure a Bus; the handlers and hooks are fixed for its life.
type Options struct {
	Log *slog.Logger
	// Handlers by message kind.
	Handlers map[string]Handler
	// OnConnect runs after every subscription, the first and each one
	// that follows a reconnect: messages of the gap may be lost, so the
	// callee schedules its full sync.
	OnConnect []func()
	// Republish runs when the dataset's generation changed since this
	// replica last looked.
	Republish []Republisher
	// Received, when set, counts the applied messages of each kind.
	Received func(kind string) prometheus.Counter
	// Republished, when set, counts the republishings.
	Republished prometheus.Counter
	// CheckEvery is how often the marker is read besides at each
	// reconnect (a FLUSHALL drops no connection). Default 5s.
	CheckEvery time.Duration
}

// Bus publishes this replica's news and applies the others'. Start it once;
// Close stops its goroutine.
type Bus struct {
	c      Client
	o      Options
	origin string
	gen    string // generation last seen; only the bus goroutine uses it
	// received are the counters of the handled kinds, resolved once.
	received map[string]prometheus.Counter

	started  atomic.Bool
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// callTimeout bounds a Redis call of the bus itself. Republishing has its
// own, longer budget: it writes everything the replica holds.
const (
	callTimeout      = 2 * time.Second
	republishTimeout = 30 * time.Second
)

// New returns a bus on c. Nothing is sent before Start.
func New(c Client, o Options) *Bus {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.CheckEvery <= 0 {
		o.CheckEvery = 5 * time.Second
	}
	b := &Bus{c: c, o: o, origin: randomID(), stop: make(chan struct{}), done: make(chan struct{})}
	if o.Received != nil {
		b.received = make(map[string]prometheus.Counter, len(o.Handlers))
		for kind := range o.Handlers {
			b.received[kind] = o.Received(kind)
		}
	}
	return b
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Publish sends one message of kind to the other replicas; this replica has
// applied it already and skips its own. A message is "origin kind payload".
func (b *Bus) Publish(ctx context.Context, kind, payload string) error {
	if err := b.c.Publish(ctx, Channel, b.origin+" "+kind+" "+payload).Err(); err != nil {
		return fmt.Errorf("publishing %s: %w", kind, err)
	}
	return nil
}

// Start subscribes and runs the bus until Close; a second call does
// nothing.
func (b *Bus) Start() {
	if b.started.CompareAndSwap(false, true) {
		go b.run()
	}
}

// Close stops the bus and waits for its goroutine.
func (b *Bus) Close() {
	b.stopOnce.Do(func() { close(b.stop) })
	if b.started.Load() {
		<-b.done
	}
}

func (b *Bus) run() {
	defer close(b.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps := b.c.Subscribe(ctx, Channel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions()
	tick := time.NewTicker(b.o.CheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
			b.checkMarker(ctx)
		case m, ok := <-ch:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					b.checkMarker(ctx)
					for _, f := range b.o.OnConnect {
						f()
					}
				}
			case *redis.Message:
				b.dispatch(m.Payload)
			}
		}
	}
}

func (b *Bus) dispatch(msg string) {
	origin, rest, ok1 := strings.Cut(msg, " ")
	kind, payload, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || origin == b.origin {
		return
	}
	if h := b.o.Handlers[kind]; h != nil {
		h(payload)
		if c := b.received[kind]; c != nil {
			c.Inc()
		}
	}
}

// checkMarker reads the dataset's generation, setting a new one when it is
// missing, and republishes when it changed since the last look. The first
// look only remembers it: a replica that just started holds nothing that
// Redis lacks.
func (b *Bus) checkMarker(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	gen, err := b.c.Get(cctx, MarkerKey).Result()
	if errors.Is(err, redis.Nil) {
		_, err = b.c.SetNX(cctx, MarkerKey, randomID(), 0).Result()
		if err == nil {
			gen, err = b.c.Get(cctx, MarkerKey).Result()
		}
	}
	if err != nil {
		// Redis is away: the next subscription, once it is back, looks
		// again.
		return
	}
	if gen == b.gen {
		return
	}
	first := b.gen == ""
	b.gen = gen
	if first {
		return
	}
	b.o.Log.Warn("redis: the dataset is new (the marker key was gone); republishing the bans and revocations this replica holds",
		"marker", MarkerKey)
	if b.o.Republished != nil {
		b.o.Republished.Inc()
	}
	rctx, rcancel := context.WithTimeout(ctx, republishTimeout)
	defer rcancel()
	for _, f := range b.o.Republish {
		if err := f(rctx); err != nil {
			b.o.Log.Error("redis: republishing after an empty restart failed", "error", err.Error())
		}
	}
}
