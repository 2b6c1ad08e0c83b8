package identity

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/redisconn"
	"edge/internal/testpeer"
)

func newSealer(t testing.TB, now *testpeer.Clock, rdb redis.Cmdable, secrets ...string) *Sealer {
	t.Helper()
	var raw [][]byte
	for _, s := range secrets {
		raw = append(raw, []byte(s))
	}
	s, err := NewSealer(raw, 2*time.Hour, rdb, now.Now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealerRoundTrip(t *testing.T) {
	now := testpeer.NewClock(time.Unix(1772538184, 0))
	s := newSealer(t, now, nil, testSecret1)
	for _, tc := range []struct{ appid, openid, unionid string }{
		{testAppID, "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "o6_bmasdasdsad6_2sgVt7hMZOPfL"},
		{testAppID, "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", ""},
		{"", strings.Repeat("o", 255), strings.Repeat("u", 255)},
	} {
		tok, issued, err := s.Issue(tc.appid, tc.openid, tc.unionid)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Open(tok)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if got.OpenID != tc.openid || got.UnionID != tc.unionid || got.AppID != tc.appid || got.SignKey() != issued.SignKey() ||
			got.ID != issued.ID || !got.Expires.Equal(now.Now().Add(2*time.Hour)) {
			t.Errorf("round trip: got %+v, issued %+v", got, issued)
		}
		if raw, err := base64.RawURLEncoding.DecodeString(issued.SignKey()); err != nil || len(raw) != 32 {
			t.Errorf("sign_key %q is not 32 bytes of base64url", issued.SignKey())
		}
	}
	if _, _, err := s.Issue(testAppID, "", ""); err == nil {
		t.Error("an empty openid was sealed")
	}
	if _, _, err := s.Issue(testAppID, strings.Repeat("o", 256), ""); err == nil {
		t.Error("an oversized openid was sealed")
	}
}

func TestSealerRotationAndSecondReplica(t *testing.T) {
	now := testpeer.NewClock(time.Unix(1772538184, 0))
	old := newSealer(t, now, nil, testSecret1)
	tokOld, _, _ := old.Issue(testAppID, "openid-1", "")

	// Another replica with the same secret accepts it.
	replica := newSealer(t, now, nil, testSecret1)
	if _, err := replica.Open(tokOld); err != nil {
		t.Fatalf("second replica: %v", err)
	}
	// After rotation the new secret issues and both open.
	rotated := newSealer(t, now, nil, testSecret2, testSecret1)
	tokNew, _, _ := rotated.Issue(testAppID, "openid-2", "")
	for _, tok := range []string{tokOld, tokNew} {
		if _, err := rotated.Open(tok); err != nil {
			t.Errorf("rotated sealer: %v", err)
		}
	}
	if _, err := old.Open(tokNew); !errors.Is(err, ErrTokenMalformed) {
		t.Errorf("a token of an unknown secret: %v", err)
	}
	// Once the old secret is dropped its tokens stop working.
	if _, err := newSealer(t, now, nil, testSecret2).Open(tokOld); !errors.Is(err, ErrTokenMalformed) {
		t.Errorf("token of a removed secret: %v", err)
	}
}

func TestSealerExpiry(t *testing.T) {
	now := testpeer.NewClock(time.Unix(1772538184, 0))
	s := newSealer(t, now, nil, testSecret1)
	tok, _, _ := s.Issue(testAppID, "openid-1", "")
	now.Advance(2*time.Hour - time.Second)
	if _, err := s.Open(tok); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	now.Advance(time.Second)
	if sess, err := s.Open(tok); !errors.Is(err, ErrTokenExpired) || sess.OpenID != "openid-1" {
		t.Fatalf("at expiry: %v", err)
	}
}

func TestSealerRefusesTampering(t *testing.T) {
	now := testpeer.NewClock(time.Unix(1772538184, 0))
	s := newSealer(t, now, nil, testSecret1)
	tok, _, _ := s.Issue(testAppID, "openid-1", "")
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	for i := range raw {
		b := append([]byte(nil), raw...)
		b[i] ^= 1
		if _, err := s.Open(base64.RawURLEncoding.EncodeToString(b)); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	for _, bad := range []string{"", "!", tok + "A", tok[:len(tok)-1], tok + "=", strings.Repeat("A", maxTokenLen+1)} {
		if _, err := s.Open(bad); !errors.Is(err, ErrTokenMalformed) {
			t.Errorf("Open(%.20q...): %v", bad, err)
		}
	}
}

func TestNewSealerRefusesShortSecrets(t *testing.T) {
	if _, err := NewSealer([][]byte{[]byte("short")}, time.Hour, nil, nil); err == nil {
		t.Error("a 5-byte secret was accepted")
	}
	if _, err := NewSealer(nil, time.Hour, nil, nil); err == nil {
		t.Error("no secret was accepted")
	}
}

func TestRevocationInRedis(t *testing.T) {
	srv := testpeer.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	now := testpeer.NewClock(time.Now())
	a := newSealer(t, now, rdb, testSecret1)
	b := newSealer(t, now, rdb, testSecret1)
	ctx := context.Background()
	tok, sess, _ := a.Issue(testAppID, "openid-1", "")
	other, otherSess, _ := a.Issue(testAppID, "openid-1", "")
	if err := a.Revoke(ctx, sess); err != nil {
		t.Fatal(err)
	}
	got, err := b.Open(tok)
	if err != nil {
		t.Fatal(err)
	}
	if revoked, err := b.Revoked(ctx, &got); err != nil || !revoked {
		t.Errorf("revoked token on another replica: %v %v", revoked, err)
	}
	if _, err := b.Open(other); err != nil {
		t.Fatal(err)
	}
	if revoked, _ := b.Revoked(ctx, &otherSess); revoked {
		t.Error("another token of the same user was revoked too")
	}
	if exp, err := rdb.ZScore(ctx, RevokedKey, hex.EncodeToString(sess.ID[:])).Result(); err != nil || int64(exp) != sess.Expires.Unix() {
		t.Errorf("revocation entry scored %v (%v); it should end with the token at %d", exp, err, sess.Expires.Unix())
	}
	// Redis gone: tokens are accepted and the error reported.
	srv.Stop()
	if revoked, err := b.Revoked(ctx, &got); revoked || err == nil {
		t.Errorf("with Redis down: revoked %v err %v", revoked, err)
	}
}

// TestRevocationOnCluster: a token revoked through one replica's client
// of a real Redis Cluster is revoked for another's.
func TestRevocationOnCluster(t *testing.T) {
	target, err := redisconn.Parse(testpeer.RedisCluster(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	now := testpeer.NewClock(time.Now())
	var sealers [2]*Sealer
	for i := range sealers {
		rdb := redisconn.NewClient(target, nil)
		t.Cleanup(func() { rdb.Close() })
		sealers[i] = newSealer(t, now, rdb, testSecret1)
	}
	ctx := context.Background()
	for i := range 5 {
		tok, sess, _ := sealers[0].Issue(testAppID, fmt.Sprintf("openid-%d", i), "")
		if err := sealers[0].Revoke(ctx, sess); err != nil {
			t.Fatal(err)
		}
		got, err := sealers[1].Open(tok)
		if err != nil {
			t.Fatal(err)
		}
		if revoked, err := sealers[1].Revoked(ctx, &got); err != nil || !revoked {
			t.Errorf("token %d revoked on the other replica: %v %v", i, revoked, err)
		}
	}
}

func FuzzOpenToken(f *testing.F) {
	now := testpeer.NewClock(time.Unix(1772538184, 0))
	s := newSealer(f, now, nil, testSecret1)
	// Fixed id and key: fuzz workers are other processes and must seal the
	// same seed token.
	sess := Session{ID: TokenID{1, 2, 3}, AppID: testAppID, OpenID: "openid-1", UnionID: "union",
		Issued: now.Now(), Expires: now.Now().Add(time.Hour), signKey: [32]byte{4, 5, 6}}
	tok := s.seal(&sess)
	f.Add(tok)
	f.Add("")
	f.Add("AQ")
	f.Add(strings.Repeat("_", 200))
	f.Fuzz(func(t *testing.T, in string) {
		sess, err := s.Open(in)
		if err == nil && in != tok {
			t.Fatalf("a token that was never issued opened: %q -> %+v", in, sess)
		}
	})
}
