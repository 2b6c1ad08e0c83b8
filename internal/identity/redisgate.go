package identity

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// RedisGate keeps a Redis that stopped answering from costing every signed
// request redis_timeout, twice (revocation, then nonce): after a failure,
// identity's calls skip Redis and the failure policies answer
// (revocation_failure, nonce_failure), and one request per probe
// interval tries Redis again. Each change of state is logged once, not one
// line per request. One gate serves the process, across reloads.
type RedisGate struct {
	log   *slog.Logger
	probe time.Duration
	down  atomic.Bool
	// retryAt is when the next request may try Redis while it is down
	// (Unix nanoseconds).
	retryAt atomic.Int64
}

// NewRedisGate returns a gate that retries a failed Redis every probe.
func NewRedisGate(log *slog.Logger, probe time.Duration) *RedisGate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RedisGate{log: log, probe: probe}
}

// allow reports whether a call may go to Redis now: always while it
// answers, and for one caller per probe interval while it does not. A nil
// gate always allows.
func (g *RedisGate) allow(now time.Time) bool {
	if g == nil || !g.down.Load() {
		return true
	}
	at := g.retryAt.Load()
	return now.UnixNano() >= at && g.retryAt.CompareAndSwap(at, now.Add(g.probe).UnixNano())
}

// result records how a call went. A call the client abandoned (its request
// context ended) says nothing about Redis.
func (g *RedisGate) result(ctx context.Context, now time.Time, err error) {
	if g == nil || ctx.Err() != nil && err != nil && context.Cause(ctx) == context.Canceled {
		return
	}
	if err == nil {
		if g.down.CompareAndSwap(true, false) {
			g.log.Info("identity: redis answers again; revocations and nonces are shared again")
		}
		return
	}
	g.retryAt.Store(now.Add(g.probe).UnixNano())
	if g.down.CompareAndSwap(false, true) {
		g.log.Warn("identity: redis unavailable; until it answers, tokens and nonces are checked as [sessions] revocation_failure and nonce_failure say (open: this replica's copy of the revocations, nonces on this replica only; closed: 50301)",
			"error", err.Error())
	}
}
