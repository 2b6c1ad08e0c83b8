// Package logsample bounds warnings that repeat: a fault that fails every
// request (an upstream down, Redis refusing connections) would otherwise
// write one line per request and bury everything else in the log. The first
// line of a kind is written at once; after it, at most one per Every, each
// carrying how many were left out since the previous one.
package logsample

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// Every is the spacing of one repeated line.
const Every = time.Second

// Sampler is the budget of one kind of line. The zero value is ready. It is
// safe for concurrent use and allocates nothing, so it may sit on a path
// every failing request takes.
type Sampler struct {
	next       atomic.Int64 // unix ns from which a line may be written again
	suppressed atomic.Int64
}

// Allow reports whether a line may be written at now and, when it may, how
// many lines were left out since the previous one written.
func (s *Sampler) Allow(now time.Time) (ok bool, suppressed int64) {
	t := now.UnixNano()
	next := s.next.Load()
	if t < next || !s.next.CompareAndSwap(next, t+int64(Every)) {
		s.suppressed.Add(1)
		return false, 0
	}
	return true, s.suppressed.Swap(0)
}

// Suppressed is the attribute a sampled line carries, one name for every
// sampled line so that one log query finds them all.
func Suppressed(n int64) slog.Attr { return slog.Int64("suppressed", n) }
