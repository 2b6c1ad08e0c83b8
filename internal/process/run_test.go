package process

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestResidentBytes(t *testing.T) {
	n, err := residentBytes(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if n < 1<<20 || n > 1<<40 {
		t.Fatalf("resident memory of the test process: %d bytes", n)
	}
}

// TestCPUSeconds: the reading grows as this process works, and never
// beyond the wall time that passed on every core. The work goes on until
// the reading moves (on a busy machine the process may get little of the
// CPU), bounded by a generous deadline.
func TestCPUSeconds(t *testing.T) {
	start := time.Now()
	before, err := cpuSeconds(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	deadline := start.Add(60 * time.Second)
	x := 0
	for {
		for range 1_000_000 {
			x++
		}
		after, err := cpuSeconds(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if limit := before + time.Since(start).Seconds()*float64(runtime.NumCPU()) + 2.0/clockTicks; after > limit {
			t.Fatalf("CPU seconds %v then %v: more than the %v the cores could give", before, after, limit)
		}
		if after-before >= 0.05 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU seconds %v then %v after %d loops in %s", before, after, x, time.Since(start))
		}
	}
}
