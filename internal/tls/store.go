package tls

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/acme/autocert"
)

// Keys in Redis are prefixed so edge can share a Redis with other users.
const (
	redisCachePrefix = "edge:tls:cache:"
	redisLockPrefix  = "edge:tls:lock:"
	// challengeTTL bounds how long a challenge token can stay in Redis if
	// the replica that wrote it dies before deleting it.
	challengeTTL = time.Hour
)

// Redis is what the certificate store asks of Redis: the cache (Get, Set,
// Del), the issuance lock (SetNX) and its release script. Any
// redis.UniversalClient (single, Sentinel or Cluster) is one.
type Redis interface {
	redis.Scripter
	Get(ctx context.Context, key string) *redis.StringCmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
	Del(ctx context.Context, keys ...string) *redis.IntCmd
	SetNX(ctx context.Context, key string, value any, expiration time.Duration) *redis.BoolCmd
}

// redisCache is an autocert.Cache on Redis, so every replica sees the
// certificates, the account key and the challenge tokens any of them wrote.
type redisCache struct {
	c Redis
}

var _ autocert.Cache = (*redisCache)(nil)

func (r *redisCache) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := r.c.Get(ctx, redisCachePrefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, autocert.ErrCacheMiss
	}
	if err != nil {
		return nil, fmt.Errorf("reading %q from redis: %w", key, err)
	}
	return b, nil
}

func (r *redisCache) Put(ctx context.Context, key string, data []byte) error {
	var ttl time.Duration
	if isChallengeKey(key) {
		ttl = challengeTTL
	}
	if err := r.c.Set(ctx, redisCachePrefix+key, data, ttl).Err(); err != nil {
		return fmt.Errorf("writing %q to redis: %w", key, err)
	}
	return nil
}

func (r *redisCache) Delete(ctx context.Context, key string) error {
	if err := r.c.Del(ctx, redisCachePrefix+key).Err(); err != nil {
		return fmt.Errorf("deleting %q from redis: %w", key, err)
	}
	return nil
}

// isChallengeKey reports autocert's keys for challenge answers (TLS-ALPN-01
// token certificates, HTTP-01 tokens), which live only for one order.
func isChallengeKey(key string) bool {
	return strings.HasSuffix(key, "+token") || strings.HasSuffix(key, "+http-01")
}

// store is the certificate storage: the state directory always (private
// files, survives a restart with or without Redis) and Redis when the
// cluster has one. Redis is read first because another replica may have
// renewed there; the directory answers when Redis misses or is down, so a
// Redis outage does not take certificates away.
type store struct {
	dir    autocert.DirCache
	redis  *redisCache
	logger *slog.Logger
}

var _ autocert.Cache = (*store)(nil)

func (s *store) Get(ctx context.Context, key string) ([]byte, error) {
	if s.redis != nil {
		b, err := s.redis.Get(ctx, key)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, autocert.ErrCacheMiss) {
			s.logger.Warn("certificate store: redis unavailable, using the state directory", "key", key, "error", err)
		}
	}
	return s.dir.Get(ctx, key)
}

// Put writes both; only the directory's failure is an error, since a
// replica that cannot reach Redis can still serve what it obtained.
func (s *store) Put(ctx context.Context, key string, data []byte) error {
	if err := s.dir.Put(ctx, key, data); err != nil {
		return fmt.Errorf("storing %q in the state directory: %w", key, err)
	}
	if s.redis != nil {
		if err := s.redis.Put(ctx, key, data); err != nil {
			s.logger.Warn("certificate store: cannot share with other replicas", "key", key, "error", err)
		}
	}
	return nil
}

func (s *store) Delete(ctx context.Context, key string) error {
	err := s.dir.Delete(ctx, key)
	if s.redis != nil {
		err = errors.Join(err, s.redis.Delete(ctx, key))
	}
	return err
}

// releaseScript deletes the lock only if it still holds our token, so a
// replica whose lock expired cannot release the next holder's.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// issueLock makes sure one replica at a time orders a certificate for a
// name. Without Redis there is one replica and autocert already orders
// once per name, so every acquire succeeds.
type issueLock struct {
	c   Redis
	ttl time.Duration
}

// tryAcquire takes the lock for name if it is free and returns the token
// that releases it.
func (l *issueLock) tryAcquire(ctx context.Context, name string) (string, bool, error) {
	if l.c == nil {
		return "", true, nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, fmt.Errorf("drawing a lock token: %w", err)
	}
	token := hex.EncodeToString(b[:])
	ok, err := l.c.SetNX(ctx, redisLockPrefix+name, token, l.ttl).Result()
	if err != nil {
		return "", false, fmt.Errorf("taking the issuance lock for %s: %w", name, err)
	}
	return token, ok, nil
}

// release gives the lock back if it is still ours.
func (l *issueLock) release(ctx context.Context, name, token string) error {
	if l.c == nil || token == "" {
		return nil
	}
	if err := releaseScript.Run(ctx, l.c, []string{redisLockPrefix + name}, token).Err(); err != nil {
		return fmt.Errorf("releasing the issuance lock for %s: %w", name, err)
	}
	return nil
}
