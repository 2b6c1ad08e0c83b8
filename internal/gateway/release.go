package gateway

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync/atomic"

	"edge/internal/admin"
	"edge/internal/config"
	"edge/internal/metrics"
	"edge/internal/reqctx"
)

// release is a route's compiled [routes.release]: the next version's
// handler and the rule that chooses it. The weight is the one thing that
// changes while the snapshot serves (the admin API's promote and
// rollback); the snapshot that compiled it owns it, so a reload starts
// again from the file's value.
type release struct {
	upstream string
	next     http.Handler
	byOpenID bool
	salt     string
	testers  map[string]struct{}
	file     int32
	weight   atomic.Int32
}

func newRelease(rc *config.Release, next http.Handler) *release {
	rel := &release{
		upstream: rc.Upstream,
		next:     next,
		byOpenID: rc.By == config.ReleaseByOpenID,
		salt:     rc.Salt,
		file:     int32(rc.Weight),
	}
	if rel.salt == "" {
		rel.salt = rc.Upstream
	}
	if len(rc.OpenIDs) > 0 {
		rel.testers = make(map[string]struct{}, len(rc.OpenIDs))
		for _, id := range rc.OpenIDs {
			rel.testers[id] = struct{}{}
		}
	}
	rel.weight.Store(rel.file)
	return rel
}

// toNext says whether the request goes to the next version. info.OpenID
// is set only by the route's identity policy, never from a client header.
func (rel *release) toNext(info *reqctx.Info) bool {
	if info.OpenID != "" && rel.testers != nil {
		if _, ok := rel.testers[info.OpenID]; ok {
			return true
		}
	}
	w := int(rel.weight.Load())
	switch {
	case w <= 0:
		return false
	case w >= 100:
		return true
	case !rel.byOpenID:
		return rand.IntN(100) < w
	case info.OpenID == "":
		return false
	}
	return ReleaseBucket(rel.salt, info.AppID, info.OpenID) < w
}

// ReleaseBucket is the user's place, 0 to 99, in a by = "openid" release:
// FNV-1a (32 bit) of salt, appid and openid, each followed by a zero
// byte, modulo 100. A user goes to the next version when the bucket is
// below the weight, so raising the weight keeps everyone already there.
// It is documented in docs/releases.md and must not change: a new
// function would move users between versions.
func ReleaseBucket(salt, appid, openid string) int {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for _, s := range [...]string{salt, appid, openid} {
		for i := 0; i < len(s); i++ {
			h ^= uint32(s[i])
			h *= prime
		}
		h *= prime // the zero byte: h ^= 0 changes nothing
	}
	return int(h % 100)
}

// releaseWeights lists the live weights for edge_route_release_weight.
func (g *Gateway) releaseWeights() []metrics.ReleaseWeight {
	s := g.snap.Load()
	if s == nil {
		return nil
	}
	var out []metrics.ReleaseWeight
	for _, rt := range s.routes {
		if rt.release != nil {
			out = append(out, metrics.ReleaseWeight{Route: rt.name, Weight: int(rt.release.weight.Load())})
		}
	}
	return out
}

// SetReleaseWeight changes a route's release weight live, until the next
// reload (POST /routes/NAME/release and its promote and rollback).
func (g *Gateway) SetReleaseWeight(routeName string, weight int) (admin.Release, error) {
	if weight < 0 || weight > 100 {
		return admin.Release{}, fmt.Errorf("weight %d is not a percent from 0 to 100: %w", weight, admin.ErrBadWeight)
	}
	s := g.snap.Load()
	for _, rt := range s.routes {
		if rt.name != routeName {
			continue
		}
		if rt.release == nil {
			return admin.Release{}, fmt.Errorf("route %q has no [routes.release]: %w", routeName, admin.ErrNoRelease)
		}
		was := rt.release.weight.Swap(int32(weight))
		g.log.Warn("release weight changed live; a reload goes back to the file's value",
			"route", routeName, "upstream", rt.release.upstream, "weight", weight, "was", was, "file", rt.release.file)
		return admin.Release{Route: routeName, Upstream: rt.release.upstream, Weight: weight, Was: int(was), File: int(rt.release.file)}, nil
	}
	return admin.Release{}, fmt.Errorf("no route named %q: %w", routeName, admin.ErrNoRelease)
}

// logReleasesReset says which live weights a new snapshot put back to the
// file's value.
func (g *Gateway) logReleasesReset(old, cur *snapshot) {
	for _, rt := range old.routes {
		rel := rt.release
		if rel == nil || rel.weight.Load() == rel.file {
			continue
		}
		var now any = "no release"
		for _, n := range cur.routes {
			if n.name == rt.name && n.release != nil {
				now = n.release.weight.Load()
			}
		}
		g.log.Warn("reload put the release weight back to the file's value", "route", rt.name,
			"live", rel.weight.Load(), "weight", now)
	}
}
