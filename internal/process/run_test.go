package process

import (
	"os"
	"testing"
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
