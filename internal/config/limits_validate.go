package config

import (
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// MaxBurst bounds a rule's burst; the Redis limiter keeps its arithmetic
// exact below it.
const MaxBurst = 1000000

func validRuleName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// validate is the hook for the limits sections: [[limits]], [limiter],
// [bans] and [access]. It reads every CIDR file the way the limiter will on
// reload, so a bad line is reported with the config, not at run time.
func (s *LimitSections) validate(c *checker) {
	routes := make([]string, 0, len(c.cfg.Routes))
	for _, r := range c.cfg.Routes {
		routes = append(routes, r.Name)
	}
	for _, a := range c.cfg.Apps {
		routes = append(routes, LoginRouteName(a.Name))
	}
	seen := make(map[string]bool, len(s.Limits))
	for i := range s.Limits {
		r := &s.Limits[i]
		key := indexKey("limits", i)
		switch {
		case !validRuleName(r.Name):
			c.add(joinKey(key, "name"), "%q is not a rule name; use 1 to 64 letters, digits, \"_\", \"-\" or \".\"", r.Name)
		case seen[r.Name]:
			c.add(joinKey(key, "name"), "another rule is already named %q; names must be unique", r.Name)
		}
		seen[r.Name] = true
		if _, err := ParseLimitKey(r.Key); err != nil {
			c.add(joinKey(key, "key"), "%v", err)
		}
		if r.Rate.N == 0 {
			c.add(joinKey(key, "rate"), "a rule needs a rate, like \"10/s\", \"600/m\" or \"1000/d\"")
		}
		if r.Burst < 0 || r.Burst > MaxBurst {
			c.add(joinKey(key, "burst"), "%d is out of range; write 1 to %d, or leave it out to use the rate's count", r.Burst, MaxBurst)
		} else if r.Burst == 0 && r.Rate.N > MaxBurst {
			c.add(joinKey(key, "burst"), "the rate's count %d is above %d; set burst explicitly", r.Rate.N, MaxBurst)
		}
		for j, name := range r.Routes {
			if !slices.Contains(routes, name) {
				hint := ""
				if m := closest(name, routes); m != "" {
					hint = " (did you mean " + strconv.Quote(m) + "?)"
				}
				c.add(indexKey(joinKey(key, "routes"), j), "no route named %q%s; name one of the [[routes]] or leave routes empty for all", name, hint)
			}
		}
		c.oneOf(joinKey(key, "on_missing_key"), r.OnMissingKey, OnMissingIP, OnMissingReject)
	}

	l := &s.Limiter
	c.oneOf("limiter.on_redis_failure", l.OnRedisFailure, RedisFailOpen, RedisFailClosed, RedisFailLocal)
	if l.Replicas < 1 || l.Replicas > 1000 {
		c.add("limiter.replicas", "%d is out of range; write how many replicas share the limits, 1 to 1000", l.Replicas)
	}
	positive(c, "limiter.redis_timeout", l.RedisTimeout)
	positive(c, "limiter.probe_interval", l.ProbeInterval)
	if l.MaxKeys < 1 {
		c.add("limiter.max_keys", "%d is too small; write the number of keys one rule may keep in memory, e.g. 250000", l.MaxKeys)
	}

	b := &s.Bans
	if b.Threshold < 0 {
		c.add("bans.threshold", "%d is negative; write 0 to turn bans off, or the number of violations that earn a ban", b.Threshold)
	}
	if b.Threshold > 0 {
		positive(c, "bans.window", b.Window)
		positive(c, "bans.duration", b.Duration)
		positive(c, "bans.sync_interval", b.SyncInterval)
		if b.MaxBans < 1 {
			c.add("bans.max_bans", "%d is too small; write how many bans may be held at once, e.g. 100000", b.MaxBans)
		}
		for i, k := range b.Count {
			c.oneOf(indexKey("bans.count", i), k, ViolationKinds...)
		}
	}

	a := &s.Access
	checkIPLists(c, "access", a.IPAllow, a.IPDeny, a.IPAllowFiles, a.IPDenyFiles)
	for i, pat := range a.UserAgentDeny {
		if _, err := regexp.Compile(pat); err != nil {
			c.add(indexKey("access.user_agent_deny", i), "not a regular expression: %v", err)
		}
	}
	for _, n := range []struct {
		key string
		v   int
	}{
		{"access.max_conns_per_ip", a.MaxConnsPerIP},
		{"access.max_conns", a.MaxConns},
		{"access.max_inflight_per_openid", a.MaxInflightPerOpenID},
	} {
		if n.v < 0 {
			c.add(n.key, "%d is negative; write 0 for no cap", n.v)
		}
	}
}

// validate is the hook for a route's IP lists and in-flight cap; key is
// the route's key path, like "routes[3]".
func (r *RouteAccess) validate(c *checker, key string) {
	checkIPLists(c, key, r.IPAllow, r.IPDeny, r.IPAllowFiles, r.IPDenyFiles)
	if r.MaxInflightPerIP < 0 {
		c.add(key+".max_inflight_per_ip", "%d is negative; write 0 for no cap", r.MaxInflightPerIP)
	}
}

// checkIPLists resolves and reads every CIDR file of one level.
func checkIPLists(c *checker, key string, allow, deny []netip.Prefix, allowFiles, denyFiles []string) {
	for _, l := range []struct {
		name string
		ps   []netip.Prefix
	}{{"ip_allow", allow}, {"ip_deny", deny}} {
		for i, p := range l.ps {
			if !p.IsValid() {
				c.add(indexKey(joinKey(key, l.name), i), "not a network; write it like \"10.0.0.0/8\" or \"192.0.2.7\"")
			}
		}
	}
	for _, l := range []struct {
		name  string
		files []string
	}{{"ip_allow_files", allowFiles}, {"ip_deny_files", denyFiles}} {
		for i := range l.files {
			c.resolve(&l.files[i])
			if _, err := ReadCIDRFile(l.files[i]); err != nil {
				c.add(indexKey(joinKey(key, l.name), i), "%v", err)
			}
		}
	}
}

func positive(c *checker, key string, d Duration) {
	if d.Std() <= 0 {
		c.add(key, "must be more than 0, like \"1s\"")
	}
	if d.Std() > 365*24*time.Hour {
		c.add(key, "%s is more than a year; write a shorter duration", d.Std())
	}
}
