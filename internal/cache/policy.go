package cache

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"edge/internal/httphdr"
)

// freshness is how long an answer may be served.
type freshness struct {
	// base is when the answer was generated: received less its Age.
	base time.Time
	life time.Duration
	// mayStale is false when the upstream demands revalidation
	// (must-revalidate): no stale answer then, not even on errors.
	mayStale bool
}

// freshness decides whether an answer may be stored and for how long:
// RFC 9111 for a shared cache, kept conservative. ok is false when it must
// not be stored.
func (p *Policy) freshness(status int, h http.Header, now time.Time) (f freshness, ok bool) {
	if !cacheableStatus(status) || len(h["Set-Cookie"]) > 0 || len(h["Trailer"]) > 0 {
		return
	}
	for v := range httphdr.Elements(h["Vary"]) {
		if v == "*" {
			return
		}
	}
	d := parseControl(h["Cache-Control"])
	if d.noStore || d.noCache || d.private {
		return
	}
	f.base = now
	if age, ok := ageValue(h["Age"]); ok {
		f.base = now.Add(-age)
	}
	switch {
	case d.sMaxAge >= 0:
		f.life = time.Duration(d.sMaxAge) * time.Second
	case d.maxAge >= 0:
		f.life = time.Duration(d.maxAge) * time.Second
	case len(h["Expires"]) > 0:
		// An Expires that is not a date means already expired (RFC 9111
		// 5.3).
		exp, err := http.ParseTime(h.Get("Expires"))
		if err != nil {
			return
		}
		date := now
		if t, err := http.ParseTime(h.Get("Date")); err == nil {
			date = t
		}
		f.life = exp.Sub(date)
	case p.ttl > 0 && defaultTTLStatus(status):
		f.life = p.ttl
	default:
		return
	}
	if !f.base.Add(f.life).After(now) {
		return f, false
	}
	f.mayStale = !d.mustRevalidate
	return f, true
}

// cacheableStatus lists the statuses RFC 9111 4.2.2 lets a cache store
// without knowing more of them (206 left out: edge does not cache ranges).
func cacheableStatus(code int) bool {
	switch code {
	case 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// defaultTTLStatus are the statuses a route's ttl applies to when the
// upstream says nothing of freshness (nginx proxy_cache_valid without
// codes is 200, 301 and 302; a miss being cheap to remember, 404 joins).
func defaultTTLStatus(code int) bool {
	return code == 200 || code == 301 || code == 404
}

func ageValue(v []string) (time.Duration, bool) {
	if len(v) == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v[0]), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return time.Duration(min(n, maxDelta)) * time.Second, true
}

// storedHeader is the part of the upstream's header an entry keeps: not
// Age, which is counted again on every answer, nor X-Cache, which is
// edge's. Each value's slice is clipped, so a later step that appends to
// an answer's header (Vary) copies instead of writing into the entry.
func storedHeader(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, v := range h {
		if k == "Age" || k == "X-Cache" {
			continue
		}
		out[k] = slices.Clip(slices.Clone(v))
	}
	return out
}

// varyNames are the canonical header names the answer's Vary lists.
func varyNames(h http.Header) []string {
	var names []string
	for v := range httphdr.Elements(h["Vary"]) {
		n := http.CanonicalHeaderKey(v)
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// notModified reports whether the client's conditional headers are met by
// the entry, so a 304 answers it (RFC 9110 13.2.2: If-None-Match first,
// If-Modified-Since only without it).
func notModified(e *entry, inm, ims []string) bool {
	if e.status != http.StatusOK {
		return false
	}
	if len(inm) > 0 {
		if e.etag == "" {
			return false
		}
		for tag := range httphdr.Elements(inm) {
			if tag == "*" || weakEqual(tag, e.etag) {
				return true
			}
		}
		return false
	}
	if len(ims) == 0 || e.lastModified.IsZero() {
		return false
	}
	t, err := http.ParseTime(ims[0])
	return err == nil && !e.lastModified.After(t)
}

// weakEqual is the weak comparison of two entity tags.
func weakEqual(a, b string) bool {
	return strings.TrimPrefix(a, "W/") == strings.TrimPrefix(b, "W/")
}
