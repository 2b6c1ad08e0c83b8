package identity

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/testpeer"
)

// stubFeed is a bus whose vouching the test sets.
type stubFeed struct{ current atomic.Bool }

func (*stubFeed) Envelope(kind string) (string, string) {
	return "edge:events", "test " + kind + " "
}
func (f *stubFeed) Current() bool { return f.current.Load() }

// zscores counts the ZSCORE commands a client sends.
type zscores struct{ n atomic.Int64 }

func (h *zscores) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *zscores) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "zscore") {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *zscores) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRevocationCheckedInACompleteCopy: with revocation_check = "local" and
// a feed that vouches for the copy, a token route asks Redis nothing and
// refuses what the copy holds; without the vouching, with "redis", or
// once the cap made the copy drop a revocation, it asks Redis (one ZSCORE
// per request) and refuses a token revoked only there.
func TestRevocationCheckedInACompleteCopy(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	calls := &zscores{}
	rdb.AddHook(calls)
	ctx := context.Background()
	now := time.Now()
	feed := &stubFeed{}
	feed.current.Store(true)
	held := NewRevocations(rdb, feed, nil, nil)

	service := func(check string) *Service {
		cfg := testConfig()
		cfg.Sessions.RevocationCheck = check
		return newService(t, cfg, Options{Redis: rdb, Revocations: held})
	}
	local, remote := service(config.RevocationCheckLocal), service(config.RevocationCheckRedis)
	issue := func() (string, Session) {
		tok, sess, err := local.Sealer().Issue(testAppID, "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "")
		if err != nil {
			t.Fatal(err)
		}
		return tok, sess
	}
	// status checks tok on a token route of s and returns the HTTP status
	// and the ZSCOREs it cost.
	status := func(s *Service, tok string) (int, int64) {
		t.Helper()
		before := calls.n.Load()
		req := httptest.NewRequest(http.MethodGet, "/x", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		rec, _ := serveThrough(t, s, testRoute(config.AuthToken), req, false)
		return rec.Code, calls.n.Load() - before
	}
	good, _ := issue()
	byBus, busSess := issue()
	held.HandleEvent(hex.EncodeToString(busSess.ID[:]) + " " + strconv.FormatInt(busSess.Expires.Unix(), 10))
	inRedisOnly, redisSess := issue()
	if err := rdb.ZAdd(ctx, RevokedKey, redis.Z{Score: float64(redisSess.Expires.Unix()), Member: hex.EncodeToString(redisSess.ID[:])}).Err(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		s       *Service
		current bool
		tok     string
		status  int
		zscores int64
	}{
		{"local, complete: a good token costs no redis call", local, true, good, http.StatusNoContent, 0},
		{"local, complete: a token revoked through the bus is refused", local, true, byBus, http.StatusUnauthorized, 0},
		{"local, complete: a token revoked in redis alone passes (the copy is trusted)", local, true, inRedisOnly, http.StatusNoContent, 0},
		{"local, not complete: redis is asked", local, false, good, http.StatusNoContent, 1},
		{"local, not complete: a token revoked in redis alone is refused", local, false, inRedisOnly, http.StatusUnauthorized, 1},
		{"redis, complete: redis is asked", remote, true, good, http.StatusNoContent, 1},
		{"redis, complete: a token revoked in redis alone is refused", remote, true, inRedisOnly, http.StatusUnauthorized, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			feed.current.Store(tc.current)
			if code, n := status(tc.s, tc.tok); code != tc.status || n != tc.zscores {
				t.Errorf("HTTP %d after %d ZSCORE, want %d after %d", code, n, tc.status, tc.zscores)
			}
		})
	}

	t.Run("a copy that dropped a revocation asks redis for good", func(t *testing.T) {
		feed.current.Store(true)
		exp := now.Add(time.Hour).Unix()
		for i := range maxHeldRevocations + 1 {
			var id TokenID
			id[0], id[1], id[2], id[11] = byte(i), byte(i>>8), byte(i>>16), 0xee
			held.add(id, exp)
		}
		if code, n := status(local, inRedisOnly); code != http.StatusUnauthorized || n != 1 {
			t.Errorf("HTTP %d after %d ZSCORE, want 401 after 1", code, n)
		}
	})
}

// TestRevocationAnnouncedWithTheWrite: the announcement of a revocation
// goes out in the same script as the list's write (the feed itself sends
// nothing), so no replica that trusts its copy can miss a revocation Redis
// has taken: a second publish that could fail on its own would leave the
// others accepting the token for as long as their buses stay live.
func TestRevocationAnnouncedWithTheWrite(t *testing.T) {
	rdb, sub := listening(t)
	ctx := context.Background()
	held := NewRevocations(rdb, &stubFeed{}, nil, nil)
	s := newService(t, testConfig(), Options{Redis: rdb, Revocations: held})
	_, sess, err := s.Sealer().Issue(testAppID, "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sealer().Revoke(ctx, sess); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := sub.ReceiveMessage(rctx)
	if err != nil {
		t.Fatalf("no announcement of the revocation: %v", err)
	}
	want := " " + EventRevoke + " " + hex.EncodeToString(sess.ID[:]) + " " + strconv.FormatInt(sess.Expires.Unix(), 10)
	if !strings.HasSuffix(msg.Payload, want) {
		t.Fatalf("announced %q, want a message ending in %q", msg.Payload, want)
	}
}

// TestRevocationsWrittenBackAreAnnounced: a replica that writes its copy
// back into an emptied Redis (or moves an earlier version's keys) announces
// each revocation as it writes it: another replica that read the empty
// list and trusts its copy would otherwise never learn them, and accept
// the tokens for as long as its bus stays live.
func TestRevocationsWrittenBackAreAnnounced(t *testing.T) {
	rdb, sub := listening(t)
	ctx := context.Background()
	held := NewRevocations(rdb, &stubFeed{}, nil, nil)
	var id TokenID
	id[0] = 7
	exp := time.Now().Add(time.Hour).Unix()
	held.add(id, exp)
	if err := held.Republish(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := sub.ReceiveMessage(rctx)
	if err != nil {
		t.Fatalf("the revocation written back was not announced: %v", err)
	}
	if want := " " + EventRevoke + " " + hex.EncodeToString(id[:]) + " " + strconv.FormatInt(exp, 10); !strings.HasSuffix(msg.Payload, want) {
		t.Fatalf("announced %q, want a message ending in %q", msg.Payload, want)
	}
}

// TestRevocationCopyReconciled: a revocation that reached the list without
// an announcement the copy heard (written by a replica of an earlier
// version whose separate PUBLISH failed, or a message lost on the way) is
// taken into the copy at the next reconciliation, which reads a count
// from Redis and the whole list only when the list holds more.
func TestRevocationCopyReconciled(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	ctx := context.Background()
	held := NewRevocations(rdb, &stubFeed{}, nil, nil)
	if err := held.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	var id TokenID
	id[0] = 9
	exp := time.Now().Add(time.Hour).Unix()
	if err := rdb.ZAdd(ctx, RevokedKey, redis.Z{Score: float64(exp), Member: hex.EncodeToString(id[:])}).Err(); err != nil {
		t.Fatal(err)
	}
	if held.has(id) {
		t.Fatal("the copy holds a revocation it was never told of")
	}
	if err := held.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !held.has(id) {
		t.Fatal("after reconciling, the copy still lacks the revocation the list holds")
	}
}

// TestRevocationReconcileSeesPastEqualCounts: a copy holding a revocation
// Redis did not take (it was down when the token was revoked) and lacking
// one Redis holds has the same count as Redis: reconciling writes the copy
// back first, so that the counts tell the missing one.
func TestRevocationReconcileSeesPastEqualCounts(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr, DialerRetries: 1})
	defer rdb.Close()
	ctx := context.Background()
	held := NewRevocations(rdb, &stubFeed{}, nil, nil)
	s := newService(t, testConfig(), Options{Redis: rdb, Revocations: held})
	_, onlyHere, err := s.Sealer().Issue(testAppID, "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "")
	if err != nil {
		t.Fatal(err)
	}
	rds.Stop()
	if err := s.Sealer().Revoke(ctx, onlyHere); !errors.Is(err, ErrRevokedHereOnly) {
		t.Fatalf("revoking with Redis stopped: %v, want ErrRevokedHereOnly", err)
	}
	rds.Start()
	var onlyThere TokenID
	onlyThere[0] = 2
	exp := time.Now().Add(time.Hour).Unix()
	if err := rdb.ZAdd(ctx, RevokedKey, redis.Z{Score: float64(exp), Member: hex.EncodeToString(onlyThere[:])}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := held.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !held.has(onlyThere) {
		t.Fatal("the copy still lacks the revocation only Redis held")
	}
	if _, err := rdb.ZScore(ctx, RevokedKey, hex.EncodeToString(onlyHere.ID[:])).Result(); err != nil {
		t.Fatalf("Redis still lacks the revocation only the copy held: %v", err)
	}
}

// TestRevocationLoadDropsForeignMembers: a member of the list that is no
// token id (written by hand, or by something else) is removed when the
// list is read, so that the counts reconciliation compares stay equal and
// the list is not read again at every check.
func TestRevocationLoadDropsForeignMembers(t *testing.T) {
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	ctx := context.Background()
	exp := float64(time.Now().Add(time.Hour).Unix())
	if err := rdb.ZAdd(ctx, RevokedKey, redis.Z{Score: exp, Member: "not-a-token-id"}).Err(); err != nil {
		t.Fatal(err)
	}
	held := NewRevocations(rdb, &stubFeed{}, nil, nil)
	if err := held.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.ZCard(ctx, RevokedKey).Result(); err != nil || n != 0 {
		t.Fatalf("the list holds %d members after loading (%v), want the foreign one gone", n, err)
	}
}

// TestRevocationKeepsTheLaterExpiry: the list keeps the later of two
// expiries of one token, and so do the copies: the announcement of a
// shorter one (a replica writing back an older copy) carries the one the
// list kept, and a copy never shortens a revocation it holds.
func TestRevocationKeepsTheLaterExpiry(t *testing.T) {
	rdb, sub := listening(t)
	ctx := context.Background()
	var id TokenID
	id[0] = 3
	late, early := time.Now().Add(2*time.Hour).Unix(), time.Now().Add(time.Hour).Unix()
	if err := writeRevocations(ctx, rdb, &stubFeed{}, time.Now().Unix(), []any{late, hex.EncodeToString(id[:])}); err != nil {
		t.Fatal(err)
	}
	if err := writeRevocations(ctx, rdb, &stubFeed{}, time.Now().Unix(), []any{early, hex.EncodeToString(id[:])}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last string
	for range 2 {
		msg, err := sub.ReceiveMessage(rctx)
		if err != nil {
			t.Fatal(err)
		}
		last = msg.Payload
	}
	if want := hex.EncodeToString(id[:]) + " " + strconv.FormatInt(late, 10); !strings.HasSuffix(last, want) {
		t.Fatalf("the second announcement is %q, want it to end in the expiry the list kept: %q", last, want)
	}
	clock := time.Now()
	held := NewRevocations(rdb, nil, nil, func() time.Time { return clock })
	held.add(id, late)
	held.add(id, early)
	clock = time.Unix(early+1, 0)
	if !held.has(id) {
		t.Fatal("a copy shortened a revocation it held to an earlier expiry")
	}
}

// listening is a client of a new Redis and a subscription of it to the
// bus's channel, confirmed.
func listening(t *testing.T) (*redis.Client, *redis.PubSub) {
	t.Helper()
	rds := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	sub := rdb.Subscribe(context.Background(), "edge:events")
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	return rdb, sub
}
