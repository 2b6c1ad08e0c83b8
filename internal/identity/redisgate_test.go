package identity

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// TestRedisGate: while Redis answers every call goes to it; after a
// failure, calls skip it (the caller's fallback answers) until the probe
// interval has passed, when exactly one caller tries again; a success ends
// the outage. Each change is logged once, and a call the client abandoned
// says nothing about Redis.
func TestRedisGate(t *testing.T) {
	var log testpeer.SyncBuffer
	g := NewRedisGate(slog.New(slog.NewTextHandler(&log, nil)), time.Second)
	clock := testpeer.NewClock(time.Unix(1_700_000_000, 0))
	ctx := context.Background()
	down := errors.New("i/o timeout")

	for range 3 {
		if !g.allow(clock.Now()) {
			t.Fatal("a call was kept from a Redis that answers")
		}
		g.result(ctx, clock.Now(), nil)
	}
	abandoned, cancel := context.WithCancel(ctx)
	cancel()
	g.result(abandoned, clock.Now(), context.Canceled)
	if !g.allow(clock.Now()) {
		t.Fatal("a call the client abandoned took Redis out")
	}

	g.result(ctx, clock.Now(), down)
	for i := range 5 {
		if g.allow(clock.Now()) {
			t.Fatalf("call %d went to a Redis that just failed", i)
		}
		clock.Advance(100 * time.Millisecond)
	}
	clock.Advance(500 * time.Millisecond)
	allowed := 0
	for range 5 {
		if g.allow(clock.Now()) {
			allowed++
		}
	}
	if allowed != 1 {
		t.Fatalf("%d callers probed Redis after the interval, want 1", allowed)
	}
	g.result(ctx, clock.Now(), nil)
	if !g.allow(clock.Now()) {
		t.Fatal("calls still skip Redis after a successful probe")
	}
	out := log.String()
	if n := strings.Count(out, "redis unavailable"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "redis answers again"); n != 1 {
		t.Errorf("recovery logged %d times, want once:\n%s", n, out)
	}
}
