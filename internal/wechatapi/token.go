package wechatapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
)

// Redis is what the service needs of the shared Redis.
type Redis interface {
	Get(ctx context.Context, key string) *redis.StringCmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
	SetNX(ctx context.Context, key string, value any, expiration time.Duration) *redis.BoolCmd
	Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
}

var _ Redis = (redis.UniversalClient)(nil)

const (
	// renewAhead: a token is renewed this long before it expires. WeChat's
	// stable_token answers the same token until about 5 minutes before
	// expiry and a new one after, while the old one stays valid to its end;
	// asking from 10 minutes before leaves room for WeChat or Redis being
	// away for a while.
	renewAhead = 10 * time.Minute
	// recheck spaces the renewal attempts that got the same token back (too
	// early for WeChat) or failed.
	recheck = time.Minute
	// failBackoff: after a failed fetch, calls go on with the token they
	// have, or get the same error, for this long instead of each asking
	// WeChat again (a wrong secret would otherwise cost one stable_token
	// call per API call).
	failBackoff = 5 * time.Second
	// expirySafety: a token this close to its expiry is not handed out; a
	// call may spend that long in flight.
	expirySafety = 30 * time.Second
	// forceSpacing and forceDaily are WeChat's limits on force_refresh.
	forceSpacing = 30 * time.Second
	forceDaily   = 20
	// lockTTL bounds how long a replica that died while fetching holds the
	// others back.
	lockTTL = 15 * time.Second
	// pollEvery is how often a replica waiting for another's fetch reads
	// Redis.
	pollEvery = 50 * time.Millisecond
)

// beijing is the zone WeChat's daily quotas reset in.
var beijing = time.FixedZone("CST", 8*3600)

// token is one access_token as kept in memory and in Redis.
type token struct {
	Value    string    `json:"v"`
	Obtained time.Time `json:"o"`
	Expires  time.Time `json:"e"`
	// Checked is the last time stable_token was asked, so replicas do not
	// each ask again when the answer was the same token.
	Checked time.Time `json:"c"`
}

func (t *token) valid(now time.Time) bool {
	return t != nil && now.Before(t.Expires.Add(-expirySafety))
}

// due reports whether a renewal should be tried now.
func (t *token) due(now time.Time) bool {
	ahead := min(renewAhead, t.Expires.Sub(t.Obtained)/4)
	return !now.Before(t.Expires.Add(-ahead)) && !now.Before(t.Checked.Add(min(recheck, ahead/2)))
}

// appToken is one app's token and the state of its renewals.
type appToken struct {
	name, appid, secret string
	// sem is the in-process renewal lock; a channel so waiting honours a
	// context.
	sem chan struct{}
	cur atomic.Pointer[token]
	// Force-refresh limits without Redis; guarded by sem.
	lastForce  time.Time
	forceDay   string
	forceCount int
	// The last failed fetch; guarded by sem.
	failed   error
	failedAt time.Time
}

func newAppToken(a config.App) *appToken {
	return &appToken{name: a.Name, appid: a.AppID, secret: a.Secret.Value(), sem: make(chan struct{}, 1)}
}

func (a *appToken) lock(ctx context.Context) error {
	select {
	case a.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *appToken) unlock() { <-a.sem }

func (a *appToken) key(suffix string) string { return "edge:wxtoken:" + a.appid + suffix }

// forceKey names the force_refresh counters, which forceScript reads and
// writes together: the app id as a hash tag puts them in one slot of a
// Redis Cluster.
func (a *appToken) forceKey(suffix string) string {
	return "edge:wxtoken:{" + a.appid + "}:force" + suffix
}

// errLimited is a forced refresh refused by WeChat's limits.
var errLimited = errors.New("force_refresh refused: at most one per 30 s and 20 a day per app")

// Token returns a valid token of the app, fetching one when there is none
// and renewing it when due. A renewal that fails leaves the still-valid
// token in use.
func (s *Service) Token(ctx context.Context, a *appToken) (*token, error) {
	now := s.opts.Now()
	t := a.cur.Load()
	if t.valid(now) && !t.due(now) {
		return t, nil
	}
	if t.valid(now) {
		// Due but valid: one caller renews, the others go on with it.
		select {
		case a.sem <- struct{}{}:
		default:
			return t, nil
		}
	} else if err := a.lock(ctx); err != nil {
		return nil, fmt.Errorf("waiting for app %q's token: %w", a.name, err)
	}
	defer a.unlock()
	now = s.opts.Now()
	if t = a.cur.Load(); t.valid(now) && !t.due(now) {
		return t, nil
	}
	if a.failed != nil && now.Sub(a.failedAt) < failBackoff {
		if t.valid(now) {
			return t, nil
		}
		return nil, a.failed
	}
	nt, err := s.renew(ctx, a, t, false)
	if err != nil {
		a.failed, a.failedAt = err, now
		s.opts.Log.Warn("access_token renewal failed", "app", a.name, "error", err.Error())
		if t.valid(now) {
			return t, nil
		}
		return nil, err
	}
	a.failed = nil
	return nt, nil
}

// Rejected replaces the token WeChat refused (40001, 40014, 42001) and
// returns the replacement: one another caller or replica got meanwhile, or
// one fetched now, with force_refresh if WeChat hands out the refused token
// again and the limits allow it.
func (s *Service) Rejected(ctx context.Context, a *appToken, bad *token) (*token, error) {
	if err := a.lock(ctx); err != nil {
		return nil, fmt.Errorf("waiting for app %q's token: %w", a.name, err)
	}
	defer a.unlock()
	if t := a.cur.Load(); t.valid(s.opts.Now()) && t.Value != bad.Value {
		return t, nil
	}
	nt, err := s.renew(ctx, a, bad, true)
	if err != nil && !errors.Is(err, errLimited) {
		s.opts.Log.Warn("access_token refresh after rejection failed", "app", a.name, "error", err.Error())
	}
	return nt, err
}

// renew gets a token to replace old (nil: none yet), with a.sem held: from
// Redis when another replica fetched one, else from WeChat under the Redis
// lock.
func (s *Service) renew(ctx context.Context, a *appToken, old *token, rejected bool) (*token, error) {
	usable := func(t *token) bool {
		now := s.opts.Now()
		if !t.valid(now) {
			return false
		}
		if rejected {
			return t.Value != old.Value
		}
		return !t.due(now)
	}
	if s.opts.Redis == nil {
		return s.fetch(ctx, a, old, rejected, s.forceLocal)
	}
	unlock, shared, err := s.redisLock(ctx, a, usable)
	switch {
	case shared != nil:
		s.adopt(a, shared, "shared")
		return shared, nil
	case err != nil && ctx.Err() != nil:
		return nil, err
	case err != nil:
		// Redis is away: a normal stable_token call is safe from every
		// replica (it does not invalidate the token); force_refresh is not,
		// as nothing keeps two replicas from doing it at once.
		s.opts.Log.Warn("redis unavailable for the access_token lock; fetching without it", "app", a.name, "error", err.Error())
		return s.fetch(ctx, a, old, rejected, func(*appToken) error { return errLimited })
	}
	defer unlock()
	t, err := s.fetch(ctx, a, old, rejected, s.forceRedis(ctx))
	if t != nil {
		if b, merr := json.Marshal(t); merr == nil {
			ttl := t.Expires.Sub(s.opts.Now())
			if serr := s.opts.Redis.Set(ctx, a.key(""), b, ttl).Err(); serr != nil {
				s.opts.Log.Warn("storing the access_token in redis failed; other replicas will fetch their own", "app", a.name, "error", serr.Error())
			}
		}
	}
	return t, err
}

// unlockScript deletes the lock only if this replica still holds it.
const unlockScript = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end return 0`

// redisLock takes the app's fetch lock, or waits while another replica
// holds it until Redis has a usable token (returned as shared).
func (s *Service) redisLock(ctx context.Context, a *appToken, usable func(*token) bool) (unlock func(), shared *token, err error) {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	id := hex.EncodeToString(nonce[:])
	lockKey := a.key(":lock")
	for {
		if t, err := s.stored(ctx, a); err != nil {
			return nil, nil, err
		} else if usable(t) {
			return nil, t, nil
		}
		ok, err := s.opts.Redis.SetNX(ctx, lockKey, id, lockTTL).Result()
		if err != nil {
			return nil, nil, err
		}
		if ok {
			// The token may have been stored between the read and the lock.
			if t, err := s.stored(ctx, a); err == nil && usable(t) {
				s.opts.Redis.Eval(context.WithoutCancel(ctx), unlockScript, []string{lockKey}, id)
				return nil, t, nil
			}
			return func() {
				s.opts.Redis.Eval(context.WithoutCancel(ctx), unlockScript, []string{lockKey}, id)
			}, nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// stored reads the app's token from Redis; nil when there is none.
func (s *Service) stored(ctx context.Context, a *appToken) (*token, error) {
	b, err := s.opts.Redis.Get(ctx, a.key("")).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var t token
	if json.Unmarshal(b, &t) != nil {
		return nil, nil
	}
	return &t, nil
}

// forceScript spends one force_refresh if the last was at least ARGV[2] ms
// before ARGV[1] (now, from edge's clock) and fewer than ARGV[3] were spent
// on the day of KEYS[2]; atomic, so replicas cannot both pass.
const forceScript = `
local last = tonumber(redis.call("get", KEYS[1]) or "0")
local now = tonumber(ARGV[1])
if last > 0 and now - last < tonumber(ARGV[2]) then return 0 end
if tonumber(redis.call("get", KEYS[2]) or "0") >= tonumber(ARGV[3]) then return 0 end
redis.call("set", KEYS[1], ARGV[1], "EX", 86400)
redis.call("incr", KEYS[2])
redis.call("expire", KEYS[2], 172800)
return 1`

// forceRedis spends one force_refresh of the cluster's: at least 30 s after
// the last, within the day's 20.
func (s *Service) forceRedis(ctx context.Context) func(*appToken) error {
	return func(a *appToken) error {
		now := s.opts.Now()
		keys := []string{a.forceKey(""), a.forceKey(":" + now.In(beijing).Format("20060102"))}
		ok, err := s.opts.Redis.Eval(ctx, forceScript, keys, now.UnixMilli(), forceSpacing.Milliseconds(), forceDaily).Int()
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		if ok != 1 {
			return errLimited
		}
		return nil
	}
}

// forceLocal is forceRedis for one machine.
func (s *Service) forceLocal(a *appToken) error {
	now := s.opts.Now()
	day := now.In(beijing).Format("20060102")
	if day != a.forceDay {
		a.forceDay, a.forceCount = day, 0
	}
	if !a.lastForce.IsZero() && now.Sub(a.lastForce) < forceSpacing || a.forceCount >= forceDaily {
		return errLimited
	}
	a.lastForce = now
	a.forceCount++
	return nil
}

// fetch asks stable_token. After a rejection it asks without force first:
// WeChat may already have a newer token (another party forced one); only
// when it hands back the refused token is a force_refresh spent, if allow
// says so.
func (s *Service) fetch(ctx context.Context, a *appToken, old *token, rejected bool, allow func(*appToken) error) (*token, error) {
	t, err := s.stableToken(ctx, a, false)
	if err != nil {
		s.metric(a, "error")
		return nil, err
	}
	if old != nil && t.Value == old.Value {
		// The same token: keep its first issue time.
		t.Obtained = old.Obtained
	}
	if !rejected || t.Value != old.Value {
		s.adopt(a, t, "fetched")
		return t, nil
	}
	if err := allow(a); err != nil {
		if errors.Is(err, errLimited) {
			s.metric(a, "limited")
		} else {
			s.metric(a, "error")
		}
		return nil, err
	}
	t, err = s.stableToken(ctx, a, true)
	if err != nil {
		s.metric(a, "error")
		return nil, err
	}
	s.adopt(a, t, "forced")
	return t, nil
}

func (s *Service) adopt(a *appToken, t *token, result string) {
	a.cur.Store(t)
	s.metric(a, result)
	if m := s.opts.Metrics; m != nil {
		m.Token(a.name, t.Obtained, t.Expires)
	}
}

func (s *Service) metric(a *appToken, result string) {
	if m := s.opts.Metrics; m != nil {
		m.Refresh(a.name, result)
	}
}

// maxTokenAnswer bounds stable_token's answer, about 200 bytes.
const maxTokenAnswer = 64 << 10

// stableToken calls POST {base}/cgi-bin/stable_token. Its errors name the
// app and WeChat's errcode, never the secret or a token.
func (s *Service) stableToken(ctx context.Context, a *appToken, force bool) (*token, error) {
	body, _ := json.Marshal(map[string]any{
		"grant_type": "client_credential", "appid": a.appid, "secret": a.secret, "force_refresh": force,
	})
	ctx, cancel := context.WithTimeout(ctx, s.opts.Config.Timeout.Std())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/cgi-bin/stable_token", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("stable_token for app %q: %w", a.name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	sent := s.opts.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("stable_token for app %q: %w", a.name, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenAnswer))
	if err != nil {
		return nil, fmt.Errorf("stable_token for app %q: reading the answer: %w", a.name, err)
	}
	var ans struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		Errcode     int    `json:"errcode"`
		Errmsg      string `json:"errmsg"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &ans) != nil {
		return nil, fmt.Errorf("stable_token for app %q: HTTP %d, not a JSON answer", a.name, resp.StatusCode)
	}
	if ans.Errcode != 0 || ans.AccessToken == "" || ans.ExpiresIn <= 0 {
		return nil, fmt.Errorf("stable_token for app %q: errcode %d: %.200s", a.name, ans.Errcode, ans.Errmsg)
	}
	return &token{
		Value:    ans.AccessToken,
		Obtained: sent,
		// Counted from when the call was sent: the answer may have been
		// on its way for a while.
		Expires: sent.Add(time.Duration(ans.ExpiresIn) * time.Second),
		Checked: sent,
	}, nil
}
