package wechatapi

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/redisconn"
	"edge/internal/testpeer"
)

// newTestService is a Service for the fake's one app, on clock; rdb may be
// nil (one machine).
func newTestService(t *testing.T, f *fakeWechat, clock *testpeer.Clock, rdb Redis) (*Service, *appToken) {
	t.Helper()
	w := config.Defaults().WechatAPI
	w.BaseURL = f.URL()
	w.Timeout = config.Duration(10 * time.Second)
	cfg := &config.Config{}
	cfg.Apps = []config.App{{Name: "shop", Platform: config.PlatformWechat, AppID: testAppID, Secret: testSecret}}
	s := New(cfg, Options{Config: w, Redis: rdb, Now: clock.Now})
	t.Cleanup(s.Close)
	return s, s.apps.Load().byID[testAppID]
}

func testRedis(t *testing.T) *redis.Client {
	t.Helper()
	srv := testpeer.Redis(t)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// clusterRedis is a client of a real three-master Redis Cluster, made as
// edge run makes it.
func clusterRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	target, err := redisconn.Parse(testpeer.RedisCluster(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redisconn.NewClient(target, nil)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The token is renewed from ten minutes before its expiry; answers that
// bring the same token back (too early for WeChat) are not asked again for
// a minute, and the token WeChat issues in its own window replaces it.
func TestTokenRenewedBeforeExpiry(t *testing.T) {
	clock := testpeer.NewClock(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC))
	f := newFakeWechat(t, clock.Now)
	s, a := newTestService(t, f, clock, nil)
	ctx := ctx10(t)
	get := func() string {
		t.Helper()
		tok, err := s.Token(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Value
	}
	wantCalls := func(n int) {
		t.Helper()
		if got, _ := f.Counts(); got != n {
			t.Fatalf("stable_token calls: %d, want %d", got, n)
		}
	}
	first := get()
	wantCalls(1)
	clock.Advance(fakeLifetime - renewAhead - time.Second)
	if get() != first {
		t.Fatal("token changed before it was due")
	}
	wantCalls(1)
	clock.Advance(2 * time.Second) // due; WeChat answers the same token
	if get() != first {
		t.Fatal("token changed while WeChat hands out the same one")
	}
	wantCalls(2)
	clock.Advance(30 * time.Second)
	get()
	wantCalls(2)
	clock.Advance(31 * time.Second)
	get()
	wantCalls(3)
	clock.Advance(5 * time.Minute) // inside WeChat's last 5 minutes
	second := get()
	wantCalls(4)
	if second == first {
		t.Fatal("no new token inside WeChat's renewal window")
	}
	for range 10 {
		get()
	}
	wantCalls(4)
}

// A renewal that fails leaves the valid token in use, and is tried again
// after failBackoff, not by every call.
func TestFailedRenewalKeepsToken(t *testing.T) {
	clock := testpeer.NewClock(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC))
	f := newFakeWechat(t, clock.Now)
	s, a := newTestService(t, f, clock, nil)
	ctx := ctx10(t)
	first, err := s.Token(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	f.Busy(true)
	clock.Advance(fakeLifetime - renewAhead)
	for range 5 {
		tok, err := s.Token(ctx, a)
		if err != nil || tok.Value != first.Value {
			t.Fatalf("while WeChat is busy: %v, %v", tok, err)
		}
	}
	if stable, _ := f.Counts(); stable != 2 {
		t.Fatalf("stable_token calls: %d, want 2 (the fetch, one failed renewal)", stable)
	}
	f.Busy(false)
	clock.Advance(6 * time.Minute) // past failBackoff, inside WeChat's window
	if tok, err := s.Token(ctx, a); err != nil || tok.Value == first.Value {
		t.Fatalf("after WeChat recovered: %v, %v", tok, err)
	}
}

// force_refresh is spent only when stable_token hands back the refused
// token, at most once per 30 s and 20 times per Beijing day, whether the
// limits are kept in memory or in Redis across replicas.
func TestForceRefreshLimits(t *testing.T) {
	// On a Redis Cluster the script's two keys must share a slot.
	for _, name := range []string{"memory", "redis", "cluster"} {
		withRedis := name != "memory"
		t.Run(name, func(t *testing.T) {
			// 16:00 UTC is 00:00 in Beijing: the day starts with the test.
			clock := testpeer.NewClock(time.Date(2026, 11, 30, 16, 0, 0, 0, time.UTC))
			f := newFakeWechat(t, clock.Now)
			var rdb Redis
			switch name {
			case "redis":
				rdb = testRedis(t)
			case "cluster":
				rdb = clusterRedis(t)
			}
			s, a := newTestService(t, f, clock, rdb)
			// A second replica on the same Redis shares the limits.
			other, oa := s, a
			if withRedis {
				other, oa = newTestService(t, f, clock, rdb)
			}
			ctx := ctx10(t)
			tok, err := s.Token(ctx, a)
			if err != nil {
				t.Fatal(err)
			}
			for i := range forceDaily {
				f.Revoke()
				nt, err := s.Rejected(ctx, a, tok)
				if err != nil {
					t.Fatalf("force %d: %v", i+1, err)
				}
				if _, forced := f.Counts(); forced != i+1 || nt.Value == tok.Value {
					t.Fatalf("force %d: %d forced calls, new token %v", i+1, forced, nt.Value != tok.Value)
				}
				tok = nt
				clock.Advance(10 * time.Second)
				f.Revoke()
				if _, err := other.Rejected(ctx, oa, tok); !errors.Is(err, errLimited) {
					t.Fatalf("a second force 10 s after the last: %v, want the 30 s limit", err)
				}
				clock.Advance(21 * time.Second)
			}
			f.Revoke()
			if _, err := s.Rejected(ctx, a, tok); !errors.Is(err, errLimited) {
				t.Fatalf("force 21 in a day: %v, want the daily limit", err)
			}
			if _, forced := f.Counts(); forced != forceDaily {
				t.Fatalf("forced calls: %d, want %d", forced, forceDaily)
			}
			clock.Advance(24 * time.Hour)
			if _, err := s.Rejected(ctx, a, tok); err != nil {
				t.Fatalf("first force of the next day: %v", err)
			}
		})
	}
}

// Replicas sharing Redis fetch once: the first takes the lock and fetches,
// the others wait and read; after a rejection only one of them asks
// WeChat again, and no force_refresh is spent when WeChat has a new token.
func TestReplicasShareOneFetch(t *testing.T) {
	clock := testpeer.NewClock(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC))
	f := newFakeWechat(t, clock.Now)
	rdb := testRedis(t)
	type replica struct {
		s *Service
		a *appToken
	}
	var rs []replica
	for range 3 {
		s, a := newTestService(t, f, clock, rdb)
		rs = append(rs, replica{s, a})
	}
	ctx := ctx10(t)
	all := func(do func(r replica) (*token, error)) []string {
		var mu sync.Mutex
		var got []string
		var wg sync.WaitGroup
		for _, r := range rs {
			for range 5 {
				wg.Go(func() {
					tok, err := do(r)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					got = append(got, tok.Value)
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		return got
	}
	first := all(func(r replica) (*token, error) { return r.s.Token(ctx, r.a) })
	if stable, _ := f.Counts(); stable != 1 {
		t.Fatalf("stable_token calls by 3 replicas: %d, want 1", stable)
	}
	bad := rs[0].a.cur.Load()
	f.Expire()
	second := all(func(r replica) (*token, error) { return r.s.Rejected(ctx, r.a, bad) })
	stable, forced := f.Counts()
	if stable != 2 || forced != 0 {
		t.Fatalf("after an expiry: %d stable_token calls, %d forced; want 2 and 0", stable, forced)
	}
	for i := range first {
		if first[i] != first[0] || second[i] != second[0] || second[i] == first[0] {
			t.Fatalf("replicas disagree: %v then %v", first, second)
		}
	}
}

// Errors from stable_token name the app and WeChat's errcode, never the
// secret; calls right after a failure get the error without asking WeChat
// again.
func TestStableTokenErrorHidesSecret(t *testing.T) {
	clock := testpeer.NewClock(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC))
	f := newFakeWechat(t, clock.Now)
	w := config.Defaults().WechatAPI
	w.BaseURL = f.URL()
	cfg := &config.Config{}
	cfg.Apps = []config.App{{Name: "shop", Platform: config.PlatformWechat, AppID: testAppID, Secret: "wrong-secret-value"}}
	s := New(cfg, Options{Config: w, Now: clock.Now})
	a := s.apps.Load().byID[testAppID]
	_, err := s.Token(ctx10(t), a)
	if err == nil || !strings.Contains(err.Error(), "errcode 40125") || !strings.Contains(err.Error(), `"shop"`) {
		t.Fatalf("error: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-value") {
		t.Fatalf("the secret reached the error: %v", err)
	}
	for range 5 {
		if _, err := s.Token(ctx10(t), a); err == nil {
			t.Fatal("a token after a failure")
		}
	}
	if stable, _ := f.Counts(); stable != 1 {
		t.Fatalf("stable_token calls within %s of a failure: %d, want 1", failBackoff, stable)
	}
	clock.Advance(failBackoff)
	_, _ = s.Token(ctx10(t), a)
	if stable, _ := f.Counts(); stable != 2 {
		t.Fatalf("stable_token calls after the backoff: %d, want 2", stable)
	}
}
