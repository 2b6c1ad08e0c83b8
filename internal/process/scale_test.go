package process

import (
	"io"
	"log/slog"
	"os/exec"
	"testing"
	"time"
)

type noEvents struct{}

func (noEvents) Restarted(string, string) {}
func (noEvents) Deployed(string, string)  {}

// TestChangeOfInstancesUndoneWhileWaiting: a reload changes the number of
// instances while a rollout runs, so the change waits; another reload
// brings the number back before the rollout ends. The group must end with
// the slots of the last config (the ones its snapshot routes to), not
// make the change the second reload undid.
func TestChangeOfInstancesUndoneWhileWaiting(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, via int }{{1, 2}, {2, 1}} {
		spec := Spec{Upstream: "api", Command: sleep, Args: []string{"3600"}, Instances: tc.from, PortEnv: "PORT",
			StopGrace: time.Second, Health: Health{Path: "/", Interval: time.Hour, Timeout: time.Second,
				Expect: func(int) bool { return true }, HealthyThreshold: 1, UnhealthyThreshold: 1},
			Policy: DefaultPolicy}
		g, err := Start(spec, slog.New(slog.NewTextHandler(io.Discard, nil)), noEvents{})
		if err != nil {
			t.Fatal(err)
		}
		start := g.Slots()
		o := DeployOptions{Timeout: time.Second, Grace: 0, Surge: 1}
		// A rollout runs: every change waits for it.
		g.deploying.Lock()
		via, err := g.Plan(tc.via)
		if err != nil {
			t.Fatal(err)
		}
		if a, err := g.Apply(Change{Spec: spec, Options: o, Slots: via}); a != AppliedLater || err != nil {
			t.Fatalf("%d→%d: the change to %d: %v %v, want it to wait", tc.from, tc.via, tc.via, a, err)
		}
		back, err := g.Plan(tc.from)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Apply(Change{Spec: spec, Options: o, Slots: back}); err != nil {
			t.Fatal(err)
		}
		g.deploying.Unlock()
		g.startPending()
		deadline := time.Now().Add(20 * time.Second)
		for g.Deploying() || g.hasPending() {
			if time.Now().After(deadline) {
				t.Fatalf("%d→%d→%d: the waiting change did not end", tc.from, tc.via, tc.from)
			}
			time.Sleep(10 * time.Millisecond)
		}
		got := g.Slots()
		same := len(got) == len(start)
		for i := range got {
			same = same && got[i] == start[i]
		}
		if !same || len(g.Instances()) != tc.from {
			t.Errorf("%d→%d→%d: %d slots (the first ones: %t) and %d instances, want the %d the group started with",
				tc.from, tc.via, tc.from, len(got), same, len(g.Instances()), tc.from)
		}
		g.Stop()
	}
}

func (g *Group) hasPending() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pending != nil
}
