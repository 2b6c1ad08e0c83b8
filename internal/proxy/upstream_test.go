package proxy

import (
	"net/http"
	"testing"
	"time"
)

// TestPickPrefersPrimaries: backups are picked only when no primary is
// available or untried, available before unavailable, and weights share
// requests among the primaries alone.
func TestPickPrefersPrimaries(t *testing.T) {
	p1, p2, b1 := &Target{Addr: "p1:1"}, &Target{Addr: "p2:1"}, &Target{Addr: "b1:1"}
	for _, bal := range []Balance{RoundRobin, LeastConn, RandomTwo, Hash} {
		u := NewUpstream(UpstreamOptions{Balance: bal}, []Member{{Target: p1, Weight: 3}, {Target: b1, Backup: true}, {Target: p2}})
		req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		now := time.Now()
		p1.activeDown.Store(false)
		p2.activeDown.Store(false)
		b1.activeDown.Store(false)
		for range 20 {
			if i := u.pick(req, nil, 0, now); u.members[i].backup {
				t.Fatalf("balance %d: picked the backup while primaries are up", bal)
			}
		}
		if i := u.pick(req, nil, 1<<0|1<<2, now); u.members[i].t != b1 {
			t.Errorf("balance %d: both primaries tried, picked %s, want the backup", bal, u.members[i].t.Addr)
		}
		p1.activeDown.Store(true)
		p2.activeDown.Store(true)
		if i := u.pick(req, nil, 0, now); u.members[i].t != b1 {
			t.Errorf("balance %d: primaries down, picked %s, want the backup", bal, u.members[i].t.Addr)
		}
		b1.activeDown.Store(true)
		if i := u.pick(req, nil, 0, now); u.members[i].backup {
			t.Errorf("balance %d: all down, picked the backup, want a primary", bal)
		}
	}
}

func TestSmoothWeightedOrderSeparatesBackups(t *testing.T) {
	ms := []member{{weight: 3}, {weight: 5, backup: true}, {weight: 1}}
	count := map[uint16]int{}
	for _, i := range smoothWeightedOrder(ms, false) {
		count[i]++
	}
	if count[0] != 3 || count[2] != 1 || count[1] != 0 {
		t.Errorf("primary order counts %v, want 3 of 0, 1 of 2, none of the backup", count)
	}
	clear(count)
	for _, i := range smoothWeightedOrder(ms, true) {
		count[i]++
	}
	if count[1] != 5 || len(count) != 1 {
		t.Errorf("backup order counts %v, want 5 of 1 only", count)
	}
}
