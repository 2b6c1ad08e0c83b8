package logsample

import (
	"sync"
	"testing"
	"time"
)

func TestSamplerSpacesLinesAndCountsTheRest(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	steps := []struct {
		at         time.Duration
		ok         bool
		suppressed int64
	}{
		{0, true, 0}, // the first line of a kind is written at once
		{0, false, 0},
		{100 * time.Millisecond, false, 0},
		{Every - time.Nanosecond, false, 0},
		{Every, true, 3}, // carries the three left out
		{Every + time.Millisecond, false, 0},
		{10 * Every, true, 1}, // a quiet spell: written at once again
		{10*Every + Every/2, false, 0},
		{10*Every + Every/2, false, 0},
		{11*Every + Every/2, true, 2}, // spacing counts from the last line written
	}
	var s Sampler
	for i, st := range steps {
		ok, n := s.Allow(t0.Add(st.at))
		if ok != st.ok || n != st.suppressed {
			t.Fatalf("step %d at +%s: Allow = %v, %d; want %v, %d", i, st.at, ok, n, st.ok, st.suppressed)
		}
	}
}

// TestSamplerConcurrentCallersLoseNoCount: of many callers at one instant
// exactly one writes, and the next line accounts for every other.
func TestSamplerConcurrentCallersLoseNoCount(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var s Sampler
	const callers = 64
	var mu sync.Mutex
	written := 0
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			if ok, _ := s.Allow(t0); ok {
				mu.Lock()
				written++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if written != 1 {
		t.Fatalf("%d of %d simultaneous lines written, want 1", written, callers)
	}
	if ok, n := s.Allow(t0.Add(Every)); !ok || n != callers-1 {
		t.Fatalf("next line: Allow = %v, %d; want true, %d", ok, n, callers-1)
	}
}

func TestSamplerAllocatesNothing(t *testing.T) {
	var s Sampler
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { s.Allow(now) }); n != 0 {
		t.Fatalf("Allow allocates %v times per call", n)
	}
}
