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
	"strconv"
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

// Loader reads into this replica what Redis holds, for the messages a gap
// in the subscription (or a start) made it miss.
type Loader func(ctx context.Context) error

// Options configure a Bus; the handlers and hooks are fixed for its life.
type Options struct {
	Log *slog.Logger
	// Handlers by message kind.
	Handlers map[string]Handler
	// OnConnect runs after every subscription, the first and each one
	// that follows a reconnect: messages of the gap may be lost, so the
	// callee schedules its full sync.
	OnConnect []func()
	// Load runs after every subscription, the first included, and at each
	// check until all of them succeeded since it; off the goroutine that
	// delivers messages.
	Load []Loader
	// Reconcile runs at every check once the Loaders have succeeded for
	// the current subscription: each compares what this replica holds
	// with Redis and reads what it missed without the subscription
	// breaking (a message lost on the way, or never sent), which bounds
	// such a miss by CheckEvery.
	Reconcile []Loader
	// Republish runs when the dataset's generation changed since this
	// replica last looked; until every one succeeded, each check runs
	// them all again.
	Republish []Republisher
	// Markers are the keys whose values make the dataset's generation;
	// default MarkerKey alone. On a Redis Cluster a marker only covers its
	// own node: a key kept in one hash-tagged slot adds a marker of that
	// slot (the same tag) so that its node restarting empty is seen too.
	Markers []string
	// Received, when set, counts the applied messages of each kind.
	Received func(kind string) prometheus.Counter
	// Republished, when set, counts the republishings.
	Republished prometheus.Counter
	// CheckEvery is how often the marker is read besides at each
	// reconnect (a FLUSHALL drops no connection). Default 5s.
	CheckEvery time.Duration
	// PingEvery is how often the bus publishes a heartbeat to itself.
	// go-redis does not notice a subscription that silently stopped
	// delivering (a half-open connection: its health check's write
	// succeeds into the void); only hearing its own heartbeat back proves
	// the subscription delivers. Default 250ms.
	PingEvery time.Duration
	// LiveFor is how long a heartbeat heard back vouches for the
	// subscription, counted from when it was sent (see Current). Default 1s.
	LiveFor time.Duration
	// Live, when set, is 1 while Current holds and 0 otherwise, updated
	// at each heartbeat.
	Live prometheus.Gauge
}

// Bus publishes this replica's news and applies the others'. Start it once;
// Close stops its goroutine.
type Bus struct {
	c      Client
	o      Options
	origin string
	gen    string // generation last seen; only the worker uses it
	// epoch counts the subscriptions (the run loop adds one at each);
	// loaded is the epoch for which the Loaders last all succeeded, the
	// worker's. A reconnect during a load leaves them different, so that
	// the load is run again.
	epoch, loaded atomic.Uint64
	// t0 anchors the heartbeat stamps: durations since it read the
	// monotonic clock, immune to the wall clock's steps.
	t0 time.Time
	// heard is the send stamp of the last own heartbeat heard back, in
	// nanoseconds since t0; 0: none yet.
	heard  atomic.Int64
	closed atomic.Bool
	// kick wakes the worker: a subscription or a tick.
	kick chan struct{}
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
	if len(o.Markers) == 0 {
		o.Markers = []string{MarkerKey}
	}
	if o.PingEvery <= 0 {
		o.PingEvery = 250 * time.Millisecond
	}
	if o.LiveFor <= 0 {
		o.LiveFor = time.Second
	}
	b := &Bus{c: c, o: o, origin: randomID(), t0: time.Now(), stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1)}
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
	channel, head := b.Envelope(kind)
	if err := b.c.Publish(ctx, channel, head+payload).Err(); err != nil {
		return fmt.Errorf("publishing %s: %w", kind, err)
	}
	return nil
}

// Envelope is the channel, and the head of the message, Publish uses for
// kind (the message is the head and the payload), for a caller that
// publishes from a script, atomically with the write the message
// announces.
func (b *Bus) Envelope(kind string) (channel, head string) {
	return Channel, b.origin + " " + kind + " "
}

// Start subscribes and runs the bus until Close; a second call does
// nothing.
func (b *Bus) Start() {
	if b.started.CompareAndSwap(false, true) {
		go b.run()
	}
}

// Close stops the bus and waits for its goroutines (a republishing under
// way ends with its context).
func (b *Bus) Close() {
	b.closed.Store(true)
	b.stopOnce.Do(func() { close(b.stop) })
	if b.started.Load() {
		<-b.done
	}
}

func (b *Bus) run() {
	defer close(b.done)
	ctx, cancel := context.WithCancel(context.Background())
	// The worker makes the bus's own Redis calls (the markers, loading,
	// republishing: up to everything the replica holds), one at a time,
	// so that they never hold up the delivery of messages: go-redis drops
	// them when its channel stays full.
	var wg sync.WaitGroup
	wg.Go(func() { b.work(ctx) })
	wg.Go(func() { b.heartbeat(ctx) })
	defer wg.Wait()
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
			b.wake()
		case m, ok := <-ch:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					b.epoch.Add(1)
					b.wake()
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

func (b *Bus) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// work runs the checks the run loop asks for until ctx ends: the markers
// (and republishing) first, so that a replica loads from a Redis that has
// what it holds, then the Loaders when a subscription asked for them.
func (b *Bus) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		}
		b.checkMarker(ctx)
		// Read before loading: a subscription that comes during the load
		// may have missed what the load read before it, so it needs its
		// own.
		if e := b.epoch.Load(); len(b.o.Load) > 0 && e != b.loaded.Load() && b.load(ctx) {
			b.loaded.Store(e)
		}
		if e := b.epoch.Load(); e != 0 && e == b.loaded.Load() {
			b.reconcile(ctx)
		}
	}
}

// reconcile runs every reconciler; a failure waits for the next check.
func (b *Bus) reconcile(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, republishTimeout)
	defer cancel()
	for _, f := range b.o.Reconcile {
		if err := f(cctx); err != nil {
			b.o.Log.Warn("redis: reconciling with what redis holds failed; trying again at the next check", "error", err.Error())
		}
	}
}

// load runs every Loader and reports whether all succeeded.
func (b *Bus) load(ctx context.Context) bool {
	lctx, cancel := context.WithTimeout(ctx, republishTimeout)
	defer cancel()
	ok := true
	for _, f := range b.o.Load {
		if err := f(lctx); err != nil {
			ok = false
			b.o.Log.Warn("redis: loading what redis holds failed; trying again at the next check", "error", err.Error())
		}
	}
	return ok
}

func (b *Bus) dispatch(msg string) {
	origin, rest, ok1 := strings.Cut(msg, " ")
	kind, payload, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return
	}
	if kind == kindPing {
		if origin == b.origin {
			b.heardPing(payload)
		}
		return
	}
	if origin == b.origin {
		return
	}
	if h := b.o.Handlers[kind]; h != nil {
		h(payload)
		if c := b.received[kind]; c != nil {
			c.Inc()
		}
	}
}

// checkMarker reads the dataset's generation, setting a new marker where
// one is missing, and republishes when it changed since the last look. The
// generation is taken as seen only once every Republisher succeeded: a
// failed one makes the next check try them all again. The first look only
// remembers it: a replica that just started holds nothing that Redis lacks
// (its Loaders read what Redis has).
func (b *Bus) checkMarker(ctx context.Context) {
	gen, err := b.generation(ctx)
	if err != nil {
		// Redis is away: the next check, once it is back, looks again.
		return
	}
	if gen == b.gen {
		return
	}
	if b.gen == "" {
		b.gen = gen
		return
	}
	b.o.Log.Warn("redis: the dataset is new (a marker key was gone); republishing the bans and revocations this replica holds",
		"markers", strings.Join(b.o.Markers, ","))
	rctx, rcancel := context.WithTimeout(ctx, republishTimeout)
	defer rcancel()
	ok := true
	for _, f := range b.o.Republish {
		if err := f(rctx); err != nil {
			ok = false
			b.o.Log.Error("redis: republishing after an empty restart failed; trying again at the next check", "error", err.Error())
		}
	}
	if !ok {
		return
	}
	b.gen = gen
	if b.o.Republished != nil {
		b.o.Republished.Inc()
	}
}

// generation reads every marker, setting a new value for a missing one, and
// joins their values. The markers may live on different Cluster nodes:
// one call each.
func (b *Bus) generation(ctx context.Context) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var gen strings.Builder
	for _, key := range b.o.Markers {
		v, err := b.c.Get(cctx, key).Result()
		if errors.Is(err, redis.Nil) {
			_, err = b.c.SetNX(cctx, key, randomID(), 0).Result()
			if err == nil {
				v, err = b.c.Get(cctx, key).Result()
			}
		}
		if err != nil {
			return "", err
		}
		gen.WriteString(v)
		gen.WriteByte(' ')
	}
	return gen.String(), nil
}

// kindPing is the heartbeat's message kind: "origin ping <stamp>". Replicas
// of earlier versions have no handler for it and drop it.
const kindPing = "ping"

// Current reports whether this replica holds everything Redis published
// up to LiveFor ago: the Loaders all succeeded since the current
// subscription, and a heartbeat sent less than LiveFor ago came back
// through it. Redis delivers a connection's pub/sub messages in the order
// it executed the publishes, so every message published before that
// heartbeat was delivered (and handled: handlers run in the order of
// delivery) before it. On a Redis Cluster, classic pub/sub crosses the
// cluster bus, which does not promise that order across nodes: there the
// bound adds the cluster bus's delivery delay. False before Start, after
// Close and without Loaders. Atomics only: it is called per request.
func (b *Bus) Current() bool {
	if len(b.o.Load) == 0 || b.closed.Load() {
		return false
	}
	e := b.epoch.Load()
	if e == 0 || b.loaded.Load() != e {
		return false
	}
	heard := b.heard.Load()
	return heard > 0 && int64(time.Since(b.t0))-heard < int64(b.o.LiveFor)
}

// heartbeat publishes the heartbeats until ctx ends and reports the
// changes of Current, once per episode. A heartbeat that cannot be
// published is simply not heard back: Current turns false after LiveFor.
func (b *Bus) heartbeat(ctx context.Context) {
	tick := time.NewTicker(b.o.PingEvery)
	defer tick.Stop()
	live := false
	if b.o.Live != nil {
		b.o.Live.Set(0)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if now := b.Current(); now != live {
			live = now
			b.reportLive(live)
		}
		// The stamp is taken before the publish: a heartbeat slow to go
		// out vouches only for what was published before it started.
		stamp := int64(time.Since(b.t0))
		pctx, cancel := context.WithTimeout(ctx, b.o.LiveFor)
		_ = b.c.Publish(pctx, Channel, b.origin+" "+kindPing+" "+strconv.FormatInt(stamp, 10)).Err()
		cancel()
	}
}

func (b *Bus) reportLive(live bool) {
	if b.o.Live != nil {
		g := 0.0
		if live {
			g = 1
		}
		b.o.Live.Set(g)
	}
	if live {
		b.o.Log.Info("redis: the bus hears its heartbeat and has loaded since it subscribed; revocations are checked in this replica's copy")
		return
	}
	b.o.Log.Warn("redis: the bus is not live (its heartbeat did not come back, or a load since it subscribed has not succeeded); revocations are checked in redis per request",
		"live_for", b.o.LiveFor.String())
}

// heardPing records one of this bus's own heartbeats heard back, on the
// run loop (the only writer). The stamp only moves forward, and one from
// the future (not this process's) is ignored.
func (b *Bus) heardPing(payload string) {
	stamp, err := strconv.ParseInt(payload, 10, 64)
	if err != nil || stamp <= b.heard.Load() || stamp > int64(time.Since(b.t0)) {
		return
	}
	b.heard.Store(stamp)
}
