package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"

	"edge/internal/apierror"
	"edge/internal/cache"
)

// Purger removes answers from the response cache: those match selects by
// their route and URL (host and path, and the query: "api.example.com/a?b=1").
type Purger interface {
	Purge(match func(route, url string) bool) int
}

var _ Purger = (*cache.Store)(nil)

// purgeRequest is the body of POST /cache/purge: one of url (that URL, in
// every variant), prefix (every URL starting with it) or all, optionally
// narrowed to a route (nginx proxy_cache_purge, with a trailing * for
// prefix).
type purgeRequest struct {
	URL    string `json:"url"`
	Prefix string `json:"prefix"`
	All    bool   `json:"all"`
	Route  string `json:"route"`
}

const purgeUsage = `send one of {"url": "https://host/path?query"}, {"prefix": "https://host/path/"} or {"all": true}, with "route": "name" to narrow it to one route`

func cacheRoutes(mux *http.ServeMux, p Purger) {
	if p == nil {
		return
	}
	mux.HandleFunc("POST /cache/purge", func(w http.ResponseWriter, r *http.Request) {
		var req purgeRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			apierror.Write(w, r, apierror.BadRequest, purgeUsage)
			return
		}
		match, ok := req.matcher()
		if !ok {
			apierror.Write(w, r, apierror.BadRequest, purgeUsage)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"purged": p.Purge(match)})
	})
}

// matcher turns the request into the test of each stored answer; ok is
// false unless exactly one of url, prefix and all is given, and well.
func (req purgeRequest) matcher() (match func(route, url string) bool, ok bool) {
	given := 0
	for _, set := range []bool{req.URL != "", req.Prefix != "", req.All} {
		if set {
			given++
		}
	}
	if given != 1 {
		return nil, false
	}
	inRoute := func(route string) bool { return req.Route == "" || route == req.Route }
	switch {
	case req.All:
		return func(route, _ string) bool { return inRoute(route) }, true
	case req.URL != "":
		want, ok := purgeURL(req.URL, true)
		return func(route, u string) bool { return inRoute(route) && u == want }, ok
	}
	want, ok := purgeURL(req.Prefix, false)
	return func(route, u string) bool { return inRoute(route) && strings.HasPrefix(u, want) }, ok
}

// purgeURL is a URL as the cache names its answers: host without port,
// lower case, the path as sent, and for a whole URL the query with its
// pairs ordered by name (cache.NormalQuery). The scheme may be left out; answers of both are purged.
func purgeURL(s string, whole bool) (string, bool) {
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return "", false
	}
	out := strings.ToLower(u.Hostname()) + u.EscapedPath()
	switch {
	case whole && u.RawQuery != "":
		out += "?" + cache.NormalQuery(u.RawQuery)
	case !whole && u.ForceQuery || u.RawQuery != "":
		out += "?" + u.RawQuery
	}
	return out, true
}
