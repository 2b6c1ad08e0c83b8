package limits

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Publisher tells the other replicas at once what this one decided; the
// gateway's redisbus.Bus is one. Without it, bans travel by the periodic
// sync alone.
type Publisher interface {
	Publish(ctx context.Context, kind, payload string) error
}

// The kinds of the messages bans send on the bus.
const (
	// EventBan is "<ms left> <reason> <kind:subject>".
	EventBan = "ban"
	// EventUnban is "<kind:subject>".
	EventUnban = "unban"
)

// maxEventBan bounds the duration a message can ask for: no configured ban
// is longer than a year, and a bad message must not ban forever.
const maxEventBan = 366 * 24 * time.Hour

func (e *Engine) publish(ctx context.Context, timeout time.Duration, kind, payload string) {
	if e.pub == nil {
		return
	}
	// The caller's context may be done (a client that hung up, the
	// script's own deadline spent): the change is made and still must be
	// told.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := e.pub.Publish(ctx, kind, payload); err != nil {
		// The ban is in Redis already; the others read it at their next
		// sync.
		e.log.Warn("limiter: publishing a ban change failed; the other replicas get it at their next sync", "error", err.Error())
	}
}

// HandleBanEvent applies a ban another replica issued (EventBan).
func (e *Engine) HandleBanEvent(payload string) {
	msStr, rest, ok1 := strings.Cut(payload, " ")
	reason, member, ok2 := strings.Cut(rest, " ")
	ms, err := strconv.ParseInt(msStr, 10, 64)
	if !ok1 || !ok2 || err != nil || ms <= 0 || ms > maxEventBan.Milliseconds() || !validMember(member) {
		e.log.Warn("limiter: ignored a malformed ban message")
		return
	}
	s := e.snap.Load()
	e.bans.put(member, ban{until: e.now() + ms*int64(time.Millisecond), reason: reason, remote: true}, s.bans.maxBans)
}

// HandleUnbanEvent applies a ban another replica lifted (EventUnban).
func (e *Engine) HandleUnbanEvent(member string) {
	if !validMember(member) {
		e.log.Warn("limiter: ignored a malformed unban message")
		return
	}
	e.bans.remove(member)
	e.viol.reset(member)
}

func validMember(m string) bool {
	kind, subject, ok := strings.Cut(m, ":")
	return ok && subject != "" && (kind == banKindIP || kind == banKindOpenID)
}

// Resync makes the background goroutine read the bans from Redis now, not
// at the next sync_interval: after a reconnect, messages of the gap may be
// lost.
func (e *Engine) Resync() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// republishScript writes bans back: KEYS bans, bans version, dataset id,
// lifted; ARGV pairs of (ms left, member). A ban already there keeps the
// later expiry (compared here rather than with ZADD GT, which Redis before
// 6.2 lacks and managed editions still run). A ban that ends no later than
// a lift's tombstone was issued before the lift and is not written; the
// script answers those members, which the replica drops too. A minute of
// slack covers the time between the replica reading its clock and the
// script running (a republish of many chunks takes a while); a ban issued
// through Redis since the lift has removed the tombstone anyway.
var republishScript = redis.NewScript(datasetLua + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
dataset(KEYS[3], t)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%d', now))
local lifted = {}
for i = 1, #ARGV, 2 do
  local exp = now + tonumber(ARGV[i])
  local tomb = redis.call('ZSCORE', KEYS[4], ARGV[i + 1])
  if tomb and exp <= tonumber(tomb) + 60000 then
    lifted[#lifted + 1] = ARGV[i + 1]
  else
    local cur = redis.call('ZSCORE', KEYS[1], ARGV[i + 1])
    if not cur or tonumber(cur) < exp then
      redis.call('ZADD', KEYS[1], string.format('%d', exp), ARGV[i + 1])
    end
  end
end
redis.call('INCR', KEYS[2])
return lifted
`)

// republishChunk bounds one script call's arguments.
const republishChunk = 500

// Republish writes every ban this replica holds into Redis, for a Redis
// that came back empty. The bans become shared ones; those lifted since
// this replica learnt of them (see liftScript) are dropped instead.
func (e *Engine) Republish(ctx context.Context) error {
	if e.be.client == nil {
		return nil
	}
	now := e.now()
	var args []any
	e.bans.mu.RLock()
	for k, v := range e.bans.m {
		if left := (v.until - now) / int64(time.Millisecond); left > 0 {
			args = append(args, left, k)
		}
	}
	e.bans.mu.RUnlock()
	for len(args) > 0 {
		n := min(len(args), 2*republishChunk)
		res, err := republishScript.Run(ctx, e.be.client,
			[]string{redisBansKey, redisBansVerKey, redisBansIDKey, redisLiftedKey}, args[:n]...).Result()
		if err != nil {
			return fmt.Errorf("republishing bans: %w", err)
		}
		lifted, _ := res.([]any)
		for _, m := range lifted {
			if m, ok := m.(string); ok {
				e.bans.remove(m)
				e.viol.reset(m)
			}
		}
		args = args[n:]
	}
	e.bans.markRemote()
	return nil
}

// markRemote makes every ban a shared one once Redis holds it.
func (b *banStore) markRemote() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, v := range b.m {
		v.remote = true
		b.m[k] = v
	}
}
