package limits_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"edge/internal/testpeer"
)

// BenchmarkRedisRoundTrip is one PING to a real redis-server over loopback
// with the same client: the floor under BenchmarkDecisionRedis, measured in
// the same run so the two can be compared on a shared machine.
func BenchmarkRedisRoundTrip(b *testing.B) {
	srv := testpeer.Redis(b)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	b.Cleanup(func() { _ = rc.Close() })
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := rc.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
