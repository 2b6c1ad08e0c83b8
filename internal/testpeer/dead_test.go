package testpeer

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestDeadAddrRefusesAndCannotBeTaken: the address refuses connections, and
// no listener can take its port while the test runs.
func TestDeadAddrRefusesAndCannotBeTaken(t *testing.T) {
	addr := DeadAddr(t)
	if _, err := net.DialTimeout("tcp", addr, 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("a listener took %s", addr)
	}
}
