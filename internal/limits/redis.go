package limits

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/metrics"
)

// Redis scripts. Every one reads Redis' own clock (TIME), so replicas agree
// on buckets and ban expiry without synchronised clocks; Redis 7 replicates
// scripts by their effects, which makes TIME inside a writing script safe.
// Every script's keys share a hash tag, so that on a Redis Cluster they
// live in one slot: a script's keys must (CROSSSLOT otherwise).

// limitScript runs the GCRA of every rule of a route, all or nothing: a
// request refused by one rule is charged to none. GCRA keeps one number
// per key, the time the bucket is full again (TAT); a request is allowed
// when, after adding one interval, the TAT is at most tolerance (burst ×
// interval) ahead of now: a token bucket of the same rate and burst, which
// is what the in-memory limiter runs. It takes up to n requests' worth at
// once (a lease, see lease.go): as many as every rule has room for, at
// most n, charged to every rule; n = 1 is one request's decision. Before
// taking, it gives back the unused requests of an earlier lease, back
// intervals per rule, as refundScript does. KEYS are the buckets, and
// with back > 0 one more: a key of the call's own (onceKey) that keeps the
// answer, so that the call go-redis sends again after a broken connection
// answers the same and changes nothing: the requests given back go back
// once, and those taken are taken once. ARGV holds interval and tolerance per rule, in
// microseconds, then n, then back, and after them, only from tests, the
// time to decide at (µs since the Unix epoch) instead of TIME. A key expires when its bucket is full
// again (PX, relative, which Redis before 6.2 has too; a key a test's
// clock has passed holds a TAT behind now, which reads as a full bucket
// all the same): a full bucket carries nothing. It answers {granted, 0,
// ahead...} when at least one request is granted, {0, i, ahead_i} when
// rule i has no room for one.
var limitScript = redis.NewScript(`
local k = #KEYS
if #ARGV < 2 * k + 2 then
  k = k - 1
end
local now
if #ARGV > 2 * k + 2 then
  now = tonumber(ARGV[#ARGV])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function store(key, tat)
  if tat <= now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%d', tat), 'PX', string.format('%d', math.floor((tat - now) / 1000) + 1))
  end
end
local once
if k < #KEYS then
  once = KEYS[k + 1]
  local prev = redis.call('GET', once)
  if prev then
    local out = {}
    for v in string.gmatch(prev, '%S+') do out[#out + 1] = tonumber(v) end
    return out
  end
end
local function answer(out)
  if once then
    local parts = {}
    for i = 1, #out do parts[i] = string.format('%d', out[i]) end
    redis.call('SET', once, table.concat(parts, ' '), 'PX', '60000')
  end
  return out
end
local n = tonumber(ARGV[2*k+1])
local back = tonumber(ARGV[2*k+2])
if back > 0 then
  for i = 1, k do
    local tat = tonumber(redis.call('GET', KEYS[i]))
    if tat then store(KEYS[i], tat - back * tonumber(ARGV[2*i-1])) end
  end
end
local tats = {}
for i = 1, k do
  local interval = tonumber(ARGV[2*i-1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local room = math.floor((tonumber(ARGV[2*i]) - (tat - now)) / interval)
  if room < 1 then
    return answer({0, i, tat - now})
  end
  if room < n then n = room end
  tats[i] = tat
end
local out = {n, 0}
for i = 1, k do
  local tat = tats[i] + n * tonumber(ARGV[2*i-1])
  store(KEYS[i], tat)
  out[i + 2] = tat - now
end
return answer(out)
`)

// datasetLua is the head of every ban script that reads or moves the bans'
// version: dataset(t) returns the id of this Redis dataset (KEYS id, given
// as the argument), creating it from Redis' clock when it is missing. The
// id disappears with the data (a restart without persistence, a flush), so
// a version, "<id>:<counter>", never repeats across datasets: the counter
// alone starts again at 1 and could land on the number a replica last
// read. The counter stays a plain integer key that older edges INCR too.
const datasetLua = `
local function dataset(idkey, t)
  local id = redis.call('GET', idkey)
  if not id then
    id = t[1] .. '.' .. t[2]
    redis.call('SET', idkey, id)
  end
  return id
end
`

// violationScript counts one violation of a subject within a window and
// issues the ban at the threshold. KEYS: counter, bans (zset of "kind:key"
// scored by expiry in Redis ms), bans version, dataset id, lifted (see
// liftScript). ARGV: window ms, threshold, ban ms, member, max bans. It
// answers {banned 0/1, count}. A ban issued after a lift is a new one: the
// lift's tombstone goes.
var violationScript = redis.NewScript(datasetLua + `
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if c < tonumber(ARGV[2]) then return {0, c} end
redis.call('DEL', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
dataset(KEYS[4], t)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now))
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then redis.call('ZPOPMIN', KEYS[2]) end
redis.call('ZADD', KEYS[2], string.format('%d', now + tonumber(ARGV[3])), ARGV[4])
redis.call('ZREM', KEYS[5], ARGV[4])
redis.call('INCR', KEYS[3])
return {1, c}
`)

// syncScript returns the bans when their version ("<dataset id>:<counter>",
// see datasetLua) differs from ARGV[1]: {version, now ms} or {version, now
// ms, {member, expiry ms, ...}}. KEYS: bans, bans version, dataset id.
var syncScript = redis.NewScript(datasetLua + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = dataset(KEYS[3], t) .. ':' .. (redis.call('GET', KEYS[2]) or '0')
if v == ARGV[1] then return {v, now} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
return {v, now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
`)

// liftScript removes one ban and its violation count, and leaves a
// tombstone: KEYS bans, bans version, counter, lifted; ARGV member, ban ms,
// max bans. It answers {removed 0/1}. A replica writing back what it holds
// (republishScript) may have read the ban before the lift, and in an
// emptied Redis the lift finds nothing to remove; the tombstone, scored
// lift time + ban ms, turns away every copy of a ban that ends by then,
// that is every copy issued before the lift, and expires when the last of
// them would have. The tombstones are as many as max bans at most.
var liftScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
if n > 0 then redis.call('INCR', KEYS[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%d', now))
if redis.call('ZSCORE', KEYS[4], ARGV[1]) == false and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[3]) then
  redis.call('ZPOPMIN', KEYS[4])
end
redis.call('ZADD', KEYS[4], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
return n
`)

// refundScript gives back the tokens limitScript took from the buckets:
// on a Redis Cluster a route's rules may live in several slots, hence
// several script calls, and a rule that refuses in a later call must leave
// the earlier calls' rules uncharged, as the single script does; a lease's
// unused requests go back the same way. ARGV: the number of buckets k,
// then the µs to take off each bucket's TAT, then, only from tests, the
// clock as in limitScript. KEYS: the k buckets, then a key of the call's
// own (onceKey): a call go-redis sends again after a broken connection
// gives back nothing the second time. Taking time off the TAT undoes the
// charge whatever was charged since; a TAT it brings to now or before is a
// full bucket, which needs no key.
var refundScript = redis.NewScript(`
local k = tonumber(ARGV[1])
local now
if #ARGV > k + 1 then
  now = tonumber(ARGV[#ARGV])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
if not redis.call('SET', KEYS[k+1], '1', 'NX', 'PX', '60000') then
  return 0
end
for i = 1, k do
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat then
    tat = tat - tonumber(ARGV[i + 1])
    if tat <= now then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', string.format('%d', math.floor((tat - now) / 1000) + 1))
    end
  end
end
return 1
`)

// onceKey names a key of one script call's own, in the slot of first (a
// key of that call): the call marks it, so that the same call sent again
// by go-redis after a broken connection knows it ran. It expires after a
// minute, far longer than go-redis retries for.
func onceKey(first string) string {
	return first + ":once:" + onceSeed + strconv.FormatUint(onceCount.Add(1), 36)
}

var (
	onceSeed  = randomHex(6) + ":"
	onceCount atomic.Uint64
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// The ban keys share the {bans} tag: the violation, sync, lift and republish scripts
// touch several of them at once. A rate key is its rule's prefix and the
// request's key in braces (see decideRedis): the rules of a route that
// count by the same thing (openid, IP) share a slot and one script call,
// and different clients spread over the cluster.
const (
	redisBansKey    = "edge:{bans}"
	redisBansVerKey = "edge:{bans}:ver"
	redisBansIDKey  = "edge:{bans}:id"
	// redisLiftedKey holds the tombstones of lifted bans (see liftScript).
	redisLiftedKey  = "edge:{bans}:lifted"
	redisViolPrefix = "edge:{bans}:viol:"
	redisRatePrefix = "edge:rl:"
)

// backend tracks whether Redis answers. While it does not, the failure
// policy applies and only one call per probe interval tries Redis again, so
// a dead Redis costs requests nothing and is not hammered; go-redis
// reconnects by itself when the probe finds it back.
type backend struct {
	client redis.Scripter
	// cluster: keys of one call must share a slot (a Redis Cluster).
	cluster bool
	log     *slog.Logger
	m       *metrics.Limits
	down    atomic.Bool
	probeAt atomic.Int64 // engine ns

	mu    sync.Mutex
	since int64 // engine ns the current episode began
}

func newBackend(c redis.Scripter, log *slog.Logger, m *metrics.Limits) *backend {
	_, cluster := c.(*redis.ClusterClient)
	return &backend{client: c, cluster: cluster, log: log, m: m}
}

// use reports whether a call should go to Redis now: always while it is up,
// and for one caller per probe interval while it is down.
func (b *backend) use(now, probeInterval int64) bool {
	if b.client == nil {
		return false
	}
	if !b.down.Load() {
		return true
	}
	at := b.probeAt.Load()
	return now >= at && b.probeAt.CompareAndSwap(at, now+probeInterval)
}

// failed records a failed call; the first failure of an episode is logged,
// every one is counted.
func (b *backend) failed(op string, err error, now, probeInterval int64, policy string) {
	b.m.BackendError(op).Inc()
	if errors.Is(err, context.Canceled) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down.Load() {
		return
	}
	b.probeAt.Store(now + probeInterval)
	b.since = now
	b.down.Store(true)
	b.m.BackendUp().Set(0)
	b.log.Warn("limiter: redis unavailable, applying on_redis_failure until it answers again",
		"op", op, "policy", policy, "err", err)
}

// ok records a successful call, ending an episode.
func (b *backend) ok(now int64) {
	if !b.down.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.down.Load() {
		return
	}
	b.down.Store(false)
	b.m.BackendUp().Set(1)
	b.log.Info("limiter: redis answers again", "down_for", time.Duration(now-b.since).Round(time.Millisecond).String())
}

// toInt64 reads one integer element of a script's answer.
func toInt64(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("script answer %q is not an integer: %w", x, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("script answer %T is not an integer", v)
}

// ints reads a script's answer as integers.
func ints(v any, want int) ([]int64, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) < want {
		return nil, fmt.Errorf("unexpected script answer %T of %d elements", v, len(arr))
	}
	out := make([]int64, len(arr))
	for i, x := range arr {
		n, err := toInt64(x)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}
