package tls

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/acme/autocert"

	"edge/internal/redisconn"
	"edge/internal/testpeer"
)

func TestStoreRedisAndDirectory(t *testing.T) {
	rs := testpeer.Redis(t)
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	dir := filepath.Join(t.TempDir(), "acme")
	s := &store{dir: autocert.DirCache(dir), redis: &redisCache{c: rc}, logger: slog.New(slog.DiscardHandler)}
	ctx := context.Background()

	if _, err := s.Get(ctx, "a.example.com"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("empty store: %v, want ErrCacheMiss", err)
	}
	if err := s.Put(ctx, "a.example.com", []byte("cert")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "a.example.com+token", []byte("token")); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]time.Duration{"a.example.com": -1, "a.example.com+token": challengeTTL} {
		ttl, err := rc.TTL(ctx, redisCachePrefix+key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if (want < 0) != (ttl < 0) || ttl > want {
			t.Errorf("TTL of %s = %s, want %s", key, ttl, want)
		}
	}
	for path, perm := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "a.example.com"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s mode %o, want %o", path, fi.Mode().Perm(), perm)
		}
	}

	// Redis down: the directory still answers.
	rs.Stop()
	got, err := s.Get(ctx, "a.example.com")
	if err != nil || !bytes.Equal(got, []byte("cert")) {
		t.Fatalf("with redis down: %q, %v", got, err)
	}
	if err := s.Put(ctx, "b.example.com", []byte("b")); err != nil {
		t.Fatalf("Put with redis down: %v", err)
	}
	rs.Start()

	if err := s.Delete(ctx, "a.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "a.example.com"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("after Delete: %v", err)
	}
}

func TestIssueLock(t *testing.T) {
	rs := testpeer.Redis(t)
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	issueLockOn(t, rc)
}

// TestStoreAndLockOnCluster: the certificate cache and the issuance lock
// on a real Redis Cluster, through a client made as edge run makes it.
func TestStoreAndLockOnCluster(t *testing.T) {
	target, err := redisconn.Parse(testpeer.RedisCluster(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	rc := redisconn.NewClient(target, nil)
	defer rc.Close()
	issueLockOn(t, rc)
	c := &redisCache{c: rc}
	ctx := context.Background()
	for _, name := range []string{"a.example.com", "b.example.com", "c.example.com+token"} {
		if err := c.Put(ctx, name, []byte(name)); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Get(ctx, name); err != nil || string(got) != name {
			t.Fatalf("Get %s: %q %v", name, got, err)
		}
		if err := c.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
}

func issueLockOn(t *testing.T, rc redis.UniversalClient) {
	ctx := context.Background()
	l := issueLock{c: rc, ttl: time.Minute}

	tok, ok, err := l.tryAcquire(ctx, "a.example.com")
	if err != nil || !ok {
		t.Fatalf("first acquire: %v %v", ok, err)
	}
	if _, ok, _ := l.tryAcquire(ctx, "a.example.com"); ok {
		t.Fatal("second acquire succeeded while held")
	}
	if _, ok, _ := l.tryAcquire(ctx, "b.example.com"); !ok {
		t.Fatal("lock of another name is blocked")
	}
	if ttl := rc.PTTL(ctx, redisLockPrefix+"a.example.com").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("lock TTL %s, want (0, 1m]", ttl)
	}
	// Someone else's token must not release it.
	if err := l.release(ctx, "a.example.com", "not-the-token"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := l.tryAcquire(ctx, "a.example.com"); ok {
		t.Fatal("a foreign token released the lock")
	}
	if err := l.release(ctx, "a.example.com", tok); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := l.tryAcquire(ctx, "a.example.com"); !ok {
		t.Fatal("lock not free after release")
	}

	none := issueLock{}
	if _, ok, err := none.tryAcquire(ctx, "x"); !ok || err != nil {
		t.Fatal("without redis every acquire must succeed")
	}
}
