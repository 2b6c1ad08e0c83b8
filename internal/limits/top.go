package limits

import (
	"slices"
	"strings"
	"sync"

	"edge/internal/reqctx"
)

// maxLimited bounds the subjects the limited tally remembers: it is keyed
// by client input, and an attack from many addresses must not grow it.
const maxLimited = 256

// LimitedKey is a subject the rate limits refused, for the dashboard.
type LimitedKey struct {
	Kind  string `json:"kind"` // "openid" or "ip"
	Key   string `json:"key"`
	Count uint64 `json:"count"`
}

// limitedTally counts the refusals of each subject. Only refused
// requests reach it, and a refusal already writes an error answer, so its
// lock is no cost to the requests that pass.
type limitedTally struct {
	mu sync.Mutex
	m  map[string]*limitedCount
}

type limitedCount struct {
	n    uint64
	last int64 // engine ns of the latest refusal
}

func (t *limitedTally) add(info *reqctx.Info, now int64) {
	var key string
	switch ip := info.ClientIP.Unmap(); {
	case info.OpenID != "":
		key = banKindOpenID + ":" + info.OpenID
	case ip.IsValid():
		key = banKindIP + ":" + ip.String()
	default:
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*limitedCount)
	}
	c := t.m[key]
	if c == nil {
		if len(t.m) >= maxLimited {
			// The subject refused longest ago makes room: an old burst
			// matters less than the one under way.
			delete(t.m, sampleVictim(t.m, func(x *limitedCount) int64 { return x.last }))
		}
		c = &limitedCount{}
		t.m[key] = c
	}
	c.n++
	c.last = now
}

// TopLimited returns up to n subjects with the most refusals since edge
// started (of those it still remembers), most first.
func (e *Engine) TopLimited(n int) []LimitedKey {
	t := &e.limited
	t.mu.Lock()
	out := make([]LimitedKey, 0, len(t.m))
	for k, c := range t.m {
		kind, subject, _ := strings.Cut(k, ":")
		out = append(out, LimitedKey{Kind: kind, Key: subject, Count: c.n})
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b LimitedKey) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Kind+":"+a.Key, b.Kind+":"+b.Key)
	})
	return out[:min(n, len(out))]
}
