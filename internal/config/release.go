package config

import "slices"

// Release sends a share of a route's requests to a second upstream, the
// next version of the app, beside the route's own (current) upstream:
//
//	[[routes]]
//	name     = "api"
//	path     = "/api/"
//	upstream = "api"
//	auth     = "token"
//	[routes.release]
//	upstream = "api-next"
//	weight   = 10
//	by       = "openid"
//	openids  = ["o-tester-1"]
//
// The weight can be changed live through the admin API until the next
// reload, which goes back to the file's value.
type Release struct {
	// Upstream is the next version's [[upstreams]] entry.
	Upstream string `toml:"upstream"`
	// Weight is the percent of requests (by = "request") or of users
	// (by = "openid") sent to Upstream, 0 to 100.
	Weight int `toml:"weight"`
	// By is what the weight counts:
	//   "request" (default)  each request draws at random
	//   "openid"             a stable hash of the verified openid, so a
	//                        user stays on one version; requests without
	//                        a verified openid go to the current upstream
	//                        (unless the weight is 100)
	By string `toml:"by"`
	// OpenIDs always go to Upstream, whatever the weight (testers).
	OpenIDs []string `toml:"openids"`
	// Salt is hashed with the openid (by = "openid"). Default: Upstream,
	// so every route releasing one next version picks the same users, and
	// another next version picks others; change it to pick others.
	Salt string `toml:"salt"`
}

// The ways a release chooses requests.
const (
	ReleaseByRequest = "request"
	ReleaseByOpenID  = "openid"
)

func (r *Release) setDefaults() { r.By = ReleaseByRequest }

func (r *Route) validateRelease(c *checker, key string, upNames []string) {
	rel := r.Release
	if rel == nil {
		return
	}
	key += ".release"
	if r.Upstream == "" {
		c.add(key, "only applies to routes with an upstream; remove it")
		return
	}
	switch {
	case rel.Upstream == "":
		c.add(key+".upstream", `must name the next version's upstream, like upstream = "api-next"`)
	case rel.Upstream == r.Upstream:
		c.add(key+".upstream", "%q is already the route's upstream; name the next version's [[upstreams]] entry", rel.Upstream)
	case !slices.Contains(upNames, rel.Upstream):
		c.add(key+".upstream", "no upstream named %q; define it under [[upstreams]] or use one of: %s", rel.Upstream, quoteList(upNames))
	}
	if rel.Weight < 0 || rel.Weight > 100 {
		c.add(key+".weight", "%d is not a percent; write 0 (testers only) to 100 (everyone)", rel.Weight)
	}
	switch rel.By {
	case ReleaseByRequest, ReleaseByOpenID:
	default:
		c.add(key+".by", `%q is not a way to choose; write "request" (random per request) or "openid" (a user stays on one version)`, rel.By)
	}
	// Without an identity policy edge verifies no openid, and one sent by
	// the client must not choose the version.
	if r.Auth == AuthNone {
		if rel.By == ReleaseByOpenID {
			c.add(key+".by", `"openid" needs a verified openid; set auth on the route (token, signed, jwt or trusted_header), or use by = "request"`)
		}
		if len(rel.OpenIDs) > 0 {
			c.add(key+".openids", "needs a verified openid; set auth on the route (token, signed, jwt or trusted_header), or remove the list")
		}
	}
	for j, id := range rel.OpenIDs {
		if id == "" {
			c.add(indexKey(key+".openids", j), "is empty; write the tester's openid")
		}
	}
}
