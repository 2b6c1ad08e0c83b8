package identity_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// TestE2EFrozenRedisCostsSignedRequestsAtMostRedisTimeout: a signed request
// checks the token's revocation and records its nonce in Redis. With Redis
// frozen (SIGSTOP: connections open, no answers), each call must give up
// after redis_timeout and fall back (token accepted, nonce checked on this
// replica), not wait out go-redis' own 5 s read timeout twice. The client's
// 4 s budget is far above two 200 ms timeouts and below one read timeout.
func TestE2EFrozenRedisCostsSignedRequestsAtMostRedisTimeout(t *testing.T) {
	t.Parallel()
	rds := testpeer.Redis(t)
	plat, up := startFakePlatform(t), startUpstream(t)
	e := testpeer.StartEdge(t, "", edgeConfig(plat, up, fmt.Sprintf(`
[cluster]
redis = %q

[limiter]
redis_timeout = "200ms"
`, rds.URL())))
	c := e.Client(t, false)
	token, signKey := login(t, e, c, "frozen.1")

	rds.Pause()
	defer rds.Resume()
	bounded := *c
	bounded.Timeout = 4 * time.Second
	status, got, ans := call(t, &bounded, signedGet(t, e, "/api/frozen?n=1", token, signKey))
	if status != http.StatusOK || got.OpenID != openidFor("frozen") {
		t.Fatalf("signed request with Redis frozen: HTTP %d %+v, upstream saw openid %q", status, ans, got.OpenID)
	}
	// The fallback still refuses a replay to this replica.
	replay := signedGet(t, e, "/api/frozen?n=2", token, signKey)
	first := replay.Clone(replay.Context())
	if status, _, ans := call(t, &bounded, first); status != http.StatusOK {
		t.Fatalf("second signed request: HTTP %d %+v", status, ans)
	}
	again := newRequest(t, http.MethodGet, replay.URL.String(), nil)
	again.Header = replay.Header.Clone()
	if status, _, ans := call(t, &bounded, again); status != http.StatusUnauthorized || ans.Code != 40105 {
		t.Fatalf("replay with Redis frozen: HTTP %d %+v, want 401 / 40105", status, ans)
	}
	for i := range 5 {
		if status, _, ans := call(t, &bounded, signedGet(t, e, fmt.Sprintf("/api/frozen?n=%d", 10+i), token, signKey)); status != http.StatusOK {
			t.Fatalf("signed request %d with Redis frozen: HTTP %d %+v", i, status, ans)
		}
	}
	// One line for the outage, not one or two per request.
	if n := strings.Count(e.Stderr(), "identity: redis unavailable"); n != 1 {
		t.Errorf("the outage was logged %d times over 8 requests, want once:\n%s", n, e.Stderr())
	}
	rds.Resume()
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; !strings.Contains(e.Stderr(), "identity: redis answers again"); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery logged after Redis resumed:\n%s", e.Stderr())
		}
		call(t, c, signedGet(t, e, fmt.Sprintf("/api/frozen?n=%d", 100+i), token, signKey))
		time.Sleep(100 * time.Millisecond)
	}
}
