package limits

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"edge/internal/apierror"
	"edge/internal/config"
	"edge/internal/reqctx"
)

// Route is one route's limits as compiled with a config: the route's plan
// (IP lists, rules with their buckets) and the config-wide settings, bound
// once when the route is compiled, so a request looks nothing up by name.
// It is part of the gateway's snapshot and swapped with it.
type Route struct {
	e *Engine
	s *snapshot
	p *plan
}

// Route binds the prepared config's limits of the route named name (the
// config's route name; unknown names get the global rules only).
func (p *Prepared) Route(name string) Route {
	return Route{e: p.e, s: p.snap, p: p.snap.plan(name)}
}

// Guard runs the checks that need no identity: the global and the route's
// IP lists, User-Agent deny patterns, and IP bans. It reports whether the
// request may go on; if not, it has answered. It runs before the identity
// check so a denied client costs no signature check.
func (rt Route) Guard(w http.ResponseWriter, r *http.Request, info *reqctx.Info) bool {
	e, s, p := rt.e, rt.s, rt.p
	ip := info.ClientIP.Unmap()
	reason := s.access.check(ip)
	if reason == "" {
		reason = p.access.check(ip)
	}
	if reason == "" && len(s.uaDeny) > 0 {
		ua := r.Header.Get("User-Agent")
		for _, re := range s.uaDeny {
			if re.MatchString(ua) {
				reason = reasonUserAgent
				break
			}
		}
	}
	if reason == "" && e.bans.bannedIP(ip, e.now()) {
		reason = reasonBanned
	}
	if reason != "" {
		p.rejected[reason].Inc()
		apierror.Write(w, r, apierror.Forbidden, "forbidden")
		return false
	}
	return true
}

// Admission is an admitted request's hold on its in-flight counts (its
// client IP's on the route, its openid's); a value, so admitting a request
// allocates nothing.
type Admission struct {
	f      *inflight[string] // nil: no openid slot held
	openid string
	fIP    *inflight[routeIP] // nil: no route/IP slot held
	ip     routeIP
}

// Release gives the request's in-flight slots back once it has been
// served. Deferred by the caller, it also runs when the client went away
// or the upstream failed or broke off (a panic the caller passes on).
func (a Admission) Release() {
	if a.f != nil {
		a.f.release(a.openid)
	}
	if a.fIP != nil {
		a.fIP.release(a.ip)
	}
}

// Admit runs the checks that use the verified identity: openid bans, the
// client IP's requests in flight on the route (after the identity check, so
// that only requests that will reach the upstream hold a slot), the
// openid's requests in flight, then every [[limits]] rule of the route, all
// or nothing. It runs after the identity check. When it admits the request
// (true) it has set the RateLimit headers if configured, and the caller
// must Release the Admission once the request has been served; when not,
// it has answered and holds nothing.
func (rt Route) Admit(w http.ResponseWriter, r *http.Request, info *reqctx.Info) (Admission, bool) {
	e, s, p := rt.e, rt.s, rt.p
	openid := info.OpenID
	now := e.now()
	if e.bans.bannedOpenID(openid, now) {
		p.rejected[reasonBanned].Inc()
		apierror.Write(w, r, apierror.Forbidden, "forbidden")
		return Admission{}, false
	}
	var a Admission
	if p.maxInflightIP > 0 {
		k := routeIP{route: p.route, ip: info.ClientIP.Unmap()}
		if !e.inflightIP.acquire(k, p.maxInflightIP) {
			p.rejected[reasonInflightIP].Inc()
			w.Header()["Retry-After"] = retryOne
			apierror.Write(w, r, apierror.RateLimited, "too many requests in progress from this address")
			return Admission{}, false
		}
		a.fIP, a.ip = e.inflightIP, k
	}
	if s.maxInflight > 0 && openid != "" {
		if !e.inflight.acquire(openid, s.maxInflight) {
			a.Release()
			p.rejected[reasonInflight].Inc()
			w.Header()["Retry-After"] = retryOne
			apierror.Write(w, r, apierror.RateLimited, "too many requests in progress")
			return Admission{}, false
		}
		a.f, a.openid = e.inflight, openid
	}
	if len(p.rules) == 0 {
		return a, true
	}
	var buf [8]verdict
	d := e.decide(r.Context(), s, p, info, r, now, buf[:0])
	switch d.result {
	case resAllowed, resFailOpen:
		if s.alwaysHeaders && d.result == resAllowed {
			setAllowedHeaders(w.Header(), p, d)
		}
		return a, true
	case resNoKey:
		apierror.Write(w, r, apierror.Forbidden, "request lacks what its rate limit counts by")
	case resLimited:
		slot := &p.rules[d.rule]
		wait := d.verdicts[d.rule].wait(slot.interval, slot.tolerance)
		if d.local {
			wait = d.verdicts[d.rule].wait(slot.localInterval, slot.localTol)
		}
		writeLimited(w, r, p, slot.rule, wait)
		e.limited.add(info, now)
		e.countRateViolation(r.Context(), s, info)
	case resFailClosed:
		writeLimited(w, r, p, p.rules[d.rule].rule, s.probeInterval)
	}
	a.Release()
	return Admission{}, false
}

func (e *Engine) countRateViolation(ctx context.Context, s *snapshot, info *reqctx.Info) {
	if s.bans.threshold > 0 && s.bans.count[config.ViolationRateLimit] {
		e.violate(ctx, s, config.ViolationRateLimit, info)
	}
}

var retryOne = []string{"1"}

// decision is the outcome of a route's rules for one request.
type decision struct {
	result   int
	rule     int  // the rule that refused, or lacked its key
	local    bool // decided by this replica's share while Redis is away
	verdicts []verdict
}

// keyBufSize holds a typical composite key on the stack.
const keyBufSize = 192

// decide runs the route's rules: through Redis when it answers, else by
// the failure policy; in memory when there is no Redis.
func (e *Engine) decide(ctx context.Context, s *snapshot, p *plan, info *reqctx.Info, r *http.Request, now int64, vs []verdict) decision {
	if e.be.client == nil {
		return e.decideMemory(p, info, r, now, vs, false, s.alwaysHeaders)
	}
	if e.be.use(now, s.probeInterval) {
		d, asked, err := e.decideRedis(ctx, s, p, info, r, now, vs)
		if err == nil {
			if asked {
				e.be.ok(now)
			}
			return d
		}
		if !errors.Is(err, errSharedFetch) {
			e.be.failed("limit", err, now, s.probeInterval, s.policy)
		}
	}
	switch s.policy {
	case config.RedisFailOpen:
		for i := range p.rules {
			p.rules[i].count[resFailOpen].Inc()
		}
		return decision{result: resFailOpen}
	case config.RedisFailClosed:
		p.rules[0].count[resFailClosed].Inc()
		return decision{result: resFailClosed}
	}
	return e.decideMemory(p, info, r, now, vs, true, s.alwaysHeaders)
}

// decideMemory applies every rule in order and gives the earlier rules
// their tokens back when a later one refuses, so that only allowed
// requests are charged, as the Redis script does in one step. headers
// asks for the verdicts of an allowed request (always_send_headers).
func (e *Engine) decideMemory(p *plan, info *reqctx.Info, r *http.Request, now int64, vs []verdict, local, headers bool) decision {
	var kb [keyBufSize]byte
	var hb [8]hold
	holds := hb[:0]
	last := len(p.rules) - 1
	for i := range p.rules {
		slot := &p.rules[i]
		key, ok := appendKey(kb[:0], slot.parts, slot.fallback, info, r, p.route)
		if !ok {
			cancelHolds(holds)
			slot.count[resNoKey].Inc()
			return decision{result: resNoKey, rule: i, local: local, verdicts: vs}
		}
		b := slot.mem
		if local {
			b = slot.local
		}
		v, h := b.take(key, now, i < last, headers)
		vs = append(vs, v)
		if !v.ok {
			cancelHolds(holds)
			slot.count[resLimited].Inc()
			return decision{result: resLimited, rule: i, local: local, verdicts: vs}
		}
		holds = append(holds, h)
	}
	for i := range p.rules {
		p.rules[i].count[resAllowed].Inc()
	}
	return decision{result: resAllowed, local: local, verdicts: vs}
}

func cancelHolds(holds []hold) {
	for i := range holds {
		holds[i].cancel()
	}
}

// decideRedis runs every rule of the route in one atomic script; asked
// says whether Redis was called (a request lacking its key is answered
// without it, and proves nothing about Redis' health). A route that
// leases (see lease.go) is decided from its lease when it can be.
func (e *Engine) decideRedis(ctx context.Context, s *snapshot, p *plan, info *reqctx.Info, r *http.Request, now int64, vs []verdict) (d decision, asked bool, err error) {
	// The one request that probes a Redis found down asks it itself: a
	// lease would answer without telling whether Redis is back.
	if p.leases != nil && !e.be.down.Load() {
		var handled bool
		if d, asked, handled, err = e.decideLeased(ctx, s, p, info, r, now, vs); handled {
			return d, asked, err
		}
	}
	keys := make([]string, len(p.rules))
	args := make([]any, 0, 2*len(p.rules)+3)
	var kb [keyBufSize]byte
	for i := range p.rules {
		slot := &p.rules[i]
		key, ok := appendKey(append(append(kb[:0], slot.redisPrefix...), '{'), slot.parts, slot.fallback, info, r, p.route)
		if !ok {
			slot.count[resNoKey].Inc()
			return decision{result: resNoKey, rule: i, verdicts: vs}, false, nil
		}
		keys[i] = string(append(key, '}'))
		args = append(args, slot.redisInterval, slot.redisTol)
	}
	// One request's decision: n = 1, nothing to give back.
	args = append(args, 1, 0)
	if e.scriptClock != nil {
		args = append(args, e.scriptClock().UnixMicro())
	}
	ctx, cancel := context.WithTimeout(ctx, s.redisTimeout)
	defer cancel()
	if e.be.cluster && len(keys) > 1 {
		return e.decideSlots(ctx, s, p, keys, args, vs)
	}
	res, err := e.evalLimit(ctx, keys, args)
	if err != nil {
		return decision{}, true, err
	}
	out, err := limitAnswer(res, len(p.rules))
	if err != nil {
		return decision{}, true, err
	}
	if out[0] == 0 {
		return refusedBy(p, int(out[1])-1, out[2]*int64(time.Microsecond), vs), true, nil
	}
	for i := range p.rules {
		vs = append(vs, verdict{ok: true, ahead: out[i+2] * int64(time.Microsecond)})
		p.rules[i].count[resAllowed].Inc()
	}
	return decision{result: resAllowed, verdicts: vs}, true, nil
}

// evalLimit runs limitScript, in the next batch when there is a batcher.
func (e *Engine) evalLimit(ctx context.Context, keys []string, args []any) (any, error) {
	if e.batch != nil {
		return e.batch.eval(ctx, keys, args)
	}
	return limitScript.Run(ctx, e.be.client, keys, args...).Result()
}

// limitAnswer reads limitScript's answer for a route of rules rules:
// {granted ≥ 1, 0, ahead per rule} or {0, refusing rule (1-based), ahead}.
func limitAnswer(res any, rules int) ([]int64, error) {
	out, err := ints(res, 3)
	if err != nil {
		return nil, err
	}
	if out[0] == 0 && (out[1] < 1 || int(out[1]) > rules) || out[0] != 0 && (out[0] < 1 || len(out) != rules+2) {
		return nil, errBadAnswer
	}
	return out, nil
}

var errBadAnswer = errors.New("unexpected answer from the limit script")

// writeLimited answers 429 with Retry-After (whole seconds, rounded up,
// at least 1) and the IETF RateLimit headers of the refusing rule.
func writeLimited(w http.ResponseWriter, r *http.Request, p *plan, ru *rule, wait int64) {
	secs := max(1, (wait+int64(time.Second)-1)/int64(time.Second))
	h := w.Header()
	h["Retry-After"] = []string{strconv.FormatInt(secs, 10)}
	h["Ratelimit-Policy"] = p.policy
	h["Ratelimit"] = []string{ru.rateLimitTag + "0;t=" + strconv.FormatInt(secs, 10)}
	apierror.Write(w, r, apierror.RateLimited, "too many requests")
}

// setAllowedHeaders adds RateLimit-Policy and RateLimit to an allowed
// response: per rule the requests remaining and, in t, the seconds until
// the quota is whole again (or, with none remaining, until the next one).
func setAllowedHeaders(h http.Header, p *plan, d decision) {
	var b [256]byte
	out := b[:0]
	for i, v := range d.verdicts {
		ru := p.rules[i].rule
		interval, tolerance := ru.interval, ru.tolerance
		if d.local {
			interval, tolerance = ru.localInterval, ru.localTol
		}
		if i > 0 {
			out = append(out, ", "...)
		}
		rem := v.remaining(interval, tolerance)
		t := v.ahead
		if rem == 0 {
			t = v.wait(interval, tolerance)
		}
		out = append(out, ru.rateLimitTag...)
		out = strconv.AppendInt(out, rem, 10)
		out = append(out, ";t="...)
		out = strconv.AppendInt(out, (t+int64(time.Second)-1)/int64(time.Second), 10)
	}
	h["Ratelimit-Policy"] = p.policy
	h["Ratelimit"] = []string{string(out)}
}
