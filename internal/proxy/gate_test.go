package proxy

import (
	"sync/atomic"
	"testing"
	"time"
)

type testGate struct{ open atomic.Bool }

func (g *testGate) Open() bool { return g.open.Load() }

// TestGateDecidesForSupervisedTargets: a gated target is up exactly when
// its gate is open; the active check's verdict, which a reload may carry
// from before the instance died, does not count, while passive health
// still takes it out.
func TestGateDecidesForSupervisedTargets(t *testing.T) {
	now := time.Now()
	tg := &Target{Upstream: "api", Addr: "127.0.0.1:1"}
	g := &testGate{}
	tg.SetGate(g)
	if tg.Available(now) {
		t.Fatal("available behind a closed gate")
	}
	g.open.Store(true)
	tg.activeDown.Store(true)
	if !tg.Available(now) {
		t.Fatal("an open gate is overruled by the active check")
	}
	tg.downUntil.Store(now.Add(time.Minute).UnixNano())
	if tg.Available(now) {
		t.Fatal("passive health no longer takes a gated target out")
	}
	ref := tg.gate.Load()
	tg.SetGate(g)
	if tg.gate.Load() != ref {
		t.Fatal("setting the same gate again replaced it")
	}
}
