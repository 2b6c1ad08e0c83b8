package process

import (
	"testing"
	"time"
)

func TestPolicyBackoffAndCrashLoop(t *testing.T) {
	for _, tc := range []struct {
		name string
		rand float64
		want []time.Duration // waits after each short run, until failed
	}{
		{"lowest jitter", 0, []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}},
		{"highest jitter", 0.999999, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultPolicy
			p.Rand = func() float64 { return tc.rand }
			var c crashes
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			for i, want := range tc.want {
				wait, failed := p.exited(&c, start, start.Add(time.Second))
				if failed {
					t.Fatalf("exit %d: failed too soon", i+1)
				}
				if d := wait - want; d < -time.Millisecond || d > time.Millisecond {
					t.Fatalf("exit %d: wait %v, want %v", i+1, wait, want)
				}
				start = start.Add(time.Second + wait)
			}
			wait, failed := p.exited(&c, start, start.Add(time.Second))
			if !failed || wait != p.FailedRetry {
				t.Fatalf("exit %d: got wait %v failed %v, want the slow retry", len(tc.want)+1, wait, failed)
			}
			// After the slow retry the count starts over.
			if wait, failed := p.exited(&c, start, start.Add(time.Second)); failed || wait > time.Second {
				t.Fatalf("after the retry: wait %v failed %v, want a short backoff", wait, failed)
			}
		})
	}
}

func TestPolicyLongRunResets(t *testing.T) {
	p := DefaultPolicy
	p.Rand = func() float64 { return 0 }
	var c crashes
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 4 {
		p.exited(&c, now, now.Add(time.Second))
	}
	// A run of a minute or more is a healthy run that ended: the backoff
	// and the crash count start over.
	wait, failed := p.exited(&c, now, now.Add(p.ShortRun))
	if failed || wait != p.Base/2 {
		t.Fatalf("wait %v failed %v, want %v and not failed", wait, failed, p.Base/2)
	}
}

func TestPolicyDelayCaps(t *testing.T) {
	p := DefaultPolicy
	p.Rand = func() float64 { return 0.999999 }
	for _, n := range []int{5, 6, 40, 100} {
		if d := p.delay(n); d > p.Cap || d < p.Cap-time.Millisecond {
			t.Errorf("delay(%d) = %v, want the cap %v", n, d, p.Cap)
		}
	}
}
