package process

import (
	"math/rand/v2"
	"time"
)

// Policy decides what follows an instance's exit: how long to wait before
// starting it again, and whether it is crashing in a loop. It is plain
// arithmetic over the times it is given, so it is tested without sleeping.
type Policy struct {
	// Base is the first delay; each further short run doubles it up to Cap.
	Base, Cap time.Duration
	// ShortRun is how long an instance must stay up for its exit not to
	// count towards a crash loop; a run that long also resets the backoff.
	ShortRun time.Duration
	// MaxShortRuns exits in a row, each within ShortRun of its start, mark
	// the instance failed.
	MaxShortRuns int
	// FailedRetry is how long a failed instance waits before edge tries it
	// again from scratch.
	FailedRetry time.Duration
	// Rand returns a number in [0, 1); nil uses math/rand/v2.
	Rand func() float64
}

// DefaultPolicy restarts after about 1 s, 2 s, 4 s ... at most 30 s, and
// gives up on an instance after 5 exits in a row within a minute of their
// start, trying it again every 5 minutes.
var DefaultPolicy = Policy{
	Base:         time.Second,
	Cap:          30 * time.Second,
	ShortRun:     60 * time.Second,
	MaxShortRuns: 5,
	FailedRetry:  5 * time.Minute,
}

// crashes is one instance's run of short-lived exits.
type crashes struct{ short int }

// exited records a run from started to ended and returns the wait before
// the next start; failed means the instance is crash-looping and the wait
// is FailedRetry, after which the count starts over.
func (p Policy) exited(c *crashes, started, ended time.Time) (wait time.Duration, failed bool) {
	if ended.Sub(started) >= p.ShortRun {
		c.short = 0
	}
	c.short++
	if c.short >= p.MaxShortRuns {
		c.short = 0
		return p.FailedRetry, true
	}
	return p.delay(c.short - 1), false
}

// delay is the n-th backoff (n from 0): Base·2ⁿ capped at Cap, with
// "equal jitter" (half fixed, half random) so instances that crashed
// together do not restart in step, yet never restart at once.
func (p Policy) delay(n int) time.Duration {
	d := p.Cap
	if n < 30 && p.Base<<n < p.Cap {
		d = p.Base << n
	}
	r := rand.Float64
	if p.Rand != nil {
		r = p.Rand
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}
