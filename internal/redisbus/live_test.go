package redisbus

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/testpeer"
)

// forwarder relays TCP connections to a target and can stall them: a
// stalled connection stays open and relays nothing either way, as a
// half-open connection behind a dead NAT or a frozen peer looks to the
// kernel of the side that still writes.
type forwarder struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*relay
}

type relay struct {
	a, b    net.Conn
	stalled atomic.Bool
	cut     chan struct{}
	once    sync.Once
}

func (r *relay) close() {
	r.once.Do(func() {
		close(r.cut)
		_ = r.a.Close()
		_ = r.b.Close()
	})
}

func newForwarder(t *testing.T, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln, target: target}
	go f.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		f.cut(true)
	})
	return f
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }

func (f *forwarder) accept() {
	for {
		a, err := f.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", f.target)
		if err != nil {
			_ = a.Close()
			continue
		}
		r := &relay{a: a, b: b, cut: make(chan struct{})}
		f.mu.Lock()
		f.conns = append(f.conns, r)
		f.mu.Unlock()
		go r.pipe(a, b)
		go r.pipe(b, a)
	}
}

// pipe copies src to dst until either side ends; once stalled, what it
// reads is held back until the relay is cut.
func (r *relay) pipe(dst, src net.Conn) {
	defer r.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if r.stalled.Load() {
				<-r.cut
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// stall freezes every connection open now; later ones relay normally.
func (f *forwarder) stall() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.conns {
		r.stalled.Store(true)
	}
}

// cut closes every stalled connection, or all of them.
func (f *forwarder) cut(all bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	kept := f.conns[:0]
	for _, r := range f.conns {
		if all || r.stalled.Load() {
			r.close()
			continue
		}
		kept = append(kept, r)
	}
	f.conns = kept
}

// splitClient subscribes through one client and makes every other call
// through another: the bus's heartbeats go out directly while what it hears
// comes through the forwarder.
type splitClient struct {
	*redis.Client
	sub *redis.Client
}

func (c splitClient) Subscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return c.sub.Subscribe(ctx, channels...)
}

// TestBusCurrentFollowsASilentlyStalledSubscription: Current turns true
// once the bus subscribed, loaded and heard its heartbeat; false when the
// subscription silently stops delivering (go-redis notices nothing); and
// true again only after go-redis resubscribed and a load after that
// succeeded, though the heartbeat is heard again before.
func TestBusCurrentFollowsASilentlyStalledSubscription(t *testing.T) {
	rds := testpeer.Redis(t)
	fwd := newForwarder(t, rds.Addr)
	direct := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer direct.Close()
	viaFwd := redis.NewClient(&redis.Options{Addr: fwd.addr()})
	defer viaFwd.Close()

	var loads atomic.Int32
	var holdLoads atomic.Bool
	release := make(chan struct{})
	b := New(splitClient{Client: direct, sub: viaFwd}, Options{
		Load: []Loader{func(ctx context.Context) error {
			if holdLoads.Load() {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			loads.Add(1)
			return nil
		}},
		CheckEvery: 50 * time.Millisecond,
		PingEvery:  20 * time.Millisecond,
		LiveFor:    200 * time.Millisecond,
	})
	if b.Current() {
		t.Fatal("current before Start")
	}
	b.Start()
	defer b.Close()
	waitFor(t, "the bus to be current after start", b.Current)

	fwd.stall()
	waitFor(t, "the bus to notice the stalled subscription", func() bool { return !b.Current() })

	holdLoads.Store(true)
	atCut := loads.Load()
	epoch := b.epoch.Load()
	heard := b.heard.Load()
	fwd.cut(false)
	waitFor(t, "go-redis to resubscribe and the bus to hear its heartbeat again", func() bool {
		return b.epoch.Load() > epoch && b.heard.Load() > heard && int64(time.Since(b.t0))-b.heard.Load() < int64(b.o.LiveFor)
	})
	if b.Current() {
		t.Fatal("current after a resubscription whose load has not finished")
	}
	close(release)
	waitFor(t, "the bus to be current after the load", b.Current)
	if loads.Load() <= atCut {
		t.Fatal("current again without a load after the resubscription")
	}

	b.Close()
	if b.Current() {
		t.Fatal("current after Close")
	}
}

// TestBusNotCurrentWithoutALoad: a bus whose Loader fails, or that has
// none, hears its heartbeat but is never current.
func TestBusNotCurrentWithoutALoad(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	var tries atomic.Int32
	failing := New(rdb, Options{
		Load:       []Loader{func(context.Context) error { tries.Add(1); return errors.New("refused") }},
		CheckEvery: 20 * time.Millisecond,
		PingEvery:  20 * time.Millisecond,
	})
	none := New(rdb, Options{PingEvery: 20 * time.Millisecond})
	for _, b := range []*Bus{failing, none} {
		b.Start()
		defer b.Close()
	}
	waitFor(t, "both buses to hear their heartbeat and the failing load to be retried", func() bool {
		return failing.heard.Load() > 0 && none.heard.Load() > 0 && tries.Load() >= 3
	})
	if failing.Current() {
		t.Error("current though its Loader never succeeded")
	}
	if none.Current() {
		t.Error("current without Loaders")
	}
}

// TestBusIgnoresOtherHeartbeats: the heartbeats of another replica reach no
// handler, are not counted, and do not vouch for this bus's subscription.
func TestBusIgnoresOtherHeartbeats(t *testing.T) {
	b := New(nil, Options{Handlers: map[string]Handler{kindPing: func(string) { t.Error("a heartbeat reached a handler") }}})
	b.dispatch("someone-else " + kindPing + " 1")
	b.dispatch(b.origin + " " + kindPing + " 99999999999999999")
	if b.heard.Load() != 0 {
		t.Fatalf("heard %d from another replica's or a future heartbeat", b.heard.Load())
	}
	b.dispatch(b.origin + " " + kindPing + " 1")
	if b.heard.Load() != 1 {
		t.Fatalf("own heartbeat not recorded: %d", b.heard.Load())
	}
}

// TestBusReconcilesAtEachCheck: once the Loaders have succeeded for the
// current subscription, the reconcilers run at every check, so that a
// message the copy missed without the subscription breaking is made up
// for within CheckEvery.
func TestBusReconcilesAtEachCheck(t *testing.T) {
	srv := testpeer.Redis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = c.Close() })
	var runs atomic.Int64
	b := New(c, Options{
		CheckEvery: 50 * time.Millisecond,
		Load:       []Loader{func(context.Context) error { return nil }},
		Reconcile:  []Loader{func(context.Context) error { runs.Add(1); return nil }},
	})
	b.Start()
	t.Cleanup(b.Close)
	deadline := time.Now().Add(10 * time.Second)
	for runs.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d reconciliations in 10 s at a check every 50 ms", runs.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
