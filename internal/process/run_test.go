package process

import (
	"os"
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

func TestCPUSeconds(t *testing.T) {
	before, err := cpuSeconds(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	// Busy for a while, so the kernel's 10 ms ticks must have counted some.
	x := 0
	for start := time.Now(); time.Since(start) < 200*time.Millisecond; {
		x++
	}
	after, err := cpuSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 0.05 || after > 1e6 {
		t.Fatalf("CPU seconds %v then %v after 200ms of work (%d loops)", before, after, x)
	}
}
