// Package cache owns the response cache (nginx proxy_cache): the memory
// store shared by every route, bounded in bytes, and each route's compiled
// step that answers GET and HEAD requests from it, fetches one answer per
// key at a time (proxy_cache_lock), revalidates with the upstream's
// validators and stands in for a failing upstream with a stale answer
// (proxy_cache_use_stale). A route without [routes.cache] carries a nil
// Policy and pays nothing.
package cache

import (
	"bytes"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Policy is the compiled cache step of one route.
type Policy struct {
	store *Store
	route string
	// gen is the generation of the route's answer-shaping settings, and
	// keyPrefix the route and gen that begin each of its keys.
	gen, keyPrefix string
	ttl            time.Duration
	public         bool
	// identityHeaders are the canonical names of the request headers
	// that carry an identity: the built-in ones and the config's own.
	identityHeaders []string
	staleIfError    time.Duration
	lockTimeout     time.Duration
	maxEntry        int64
	now             func() time.Time
	requests        [nResults]prometheus.Counter
}

// Options are a route's [routes.cache] settings, compiled.
type Options struct {
	Store *Store
	Route string
	// Generation fingerprints what shapes the route's answers (its
	// upstream, rewriting, headers, auth, cache settings): it is part of
	// every key, so a reload that changes any of it never serves an
	// answer fetched under the old settings. See Store.Retain.
	Generation string
	// TTL is the freshness of answers the upstream says nothing of
	// (nginx proxy_cache_valid); 0 stores only what the upstream marks
	// cacheable.
	TTL time.Duration
	// Public caches answers to requests that carry an identity.
	Public bool
	// IdentityHeaders are request headers that carry an identity besides
	// the built-in ones ([cache] identity_headers): the app's own token
	// header.
	IdentityHeaders []string
	// StaleIfError is how long past its freshness an answer may stand in
	// for an upstream that fails (nginx proxy_cache_use_stale).
	StaleIfError time.Duration
	// LockTimeout is how long a request waits for another's fetch of the
	// same key before it asks the upstream itself (proxy_cache_lock_timeout).
	LockTimeout time.Duration
	// MaxEntry bounds an answer stored; a longer one passes through.
	MaxEntry int64
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Requests returns the counter of one result label; nil counts none.
	Requests func(result string) prometheus.Counter
}

// Results of a request, the values of the X-Cache header (upper case)
// and of the result label of edge_cache_requests_total.
const (
	resultHit = iota
	resultMiss
	resultStale
	resultRevalidated
	resultBypass
	nResults
)

// results are the result label's values.
var results = [nResults]string{"hit", "miss", "stale", "revalidated", "bypass"}

var xCache = [nResults][]string{{"HIT"}, {"MISS"}, {"STALE"}, {"REVALIDATED"}, {"BYPASS"}}

// New compiles a route's cache step.
func New(o Options) *Policy {
	p := &Policy{
		store: o.Store, route: o.Route, gen: o.Generation, keyPrefix: o.Route + "\x00" + o.Generation + "\x00",
		ttl: o.TTL, public: o.Public, staleIfError: o.StaleIfError, lockTimeout: o.LockTimeout, maxEntry: o.MaxEntry, now: o.Now,
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.identityHeaders = slices.Clone(identityHeaders)
	for _, n := range o.IdentityHeaders {
		if n = http.CanonicalHeaderKey(n); !slices.Contains(p.identityHeaders, n) {
			p.identityHeaders = append(p.identityHeaders, n)
		}
	}
	if o.Requests != nil {
		for i, name := range results {
			p.requests[i] = o.Requests(name)
		}
	}
	return p
}

func (p *Policy) count(result int) {
	if c := p.requests[result]; c != nil {
		c.Inc()
	}
}

// identityHeaders are the request headers that carry an identity the
// upstream may answer for alone (canonical names): credentials, cookies,
// edge's signature headers, and the token headers mini-program backends
// commonly read themselves (wx.request({header: {token}})) on routes where
// edge checks nothing: the bare "token" and its X- spellings, Sa-Token's
// "satoken", jeecg-boot's X-Access-Token, ant-design-pro's Access-Token,
// Spring Session's X-Auth-Token, wafer's X-WX-Skey. Missing one leaks a
// user's answer to others, listing one too many only costs hits, so the
// list leans wide; [cache] identity_headers adds an app's own.
var identityHeaders = []string{
	"Authorization", "Cookie", "X-Edge-Signature", "X-Edge-Nonce",
	"Token", "X-Token", "Access-Token", "X-Access-Token", "X-Auth-Token", "Auth-Token",
	"X-Session-Id", "X-Session-Token", "X-User-Token", "Satoken", "X-Wx-Skey",
}

// identityQuery are query names that carry a token or a signature in a
// mini-program's requests (log.mask_query hides the same).
var identityQuery = []string{"token", "access_token", "session_key", "sign", "signature", "msg_signature"}

// Identified reports whether r carries an identity whose answer may be
// its own: one of the identity headers (credentials, a cookie, edge's
// signature headers, a token header) or a token or signature in the
// query. It must run before the route's identity step, which removes some
// of those headers; on a public route it is always false.
func (p *Policy) Identified(r *http.Request) bool {
	if p.public {
		return false
	}
	h := r.Header
	for _, name := range p.identityHeaders {
		if len(h[name]) > 0 {
			return true
		}
	}
	for q := r.URL.RawQuery; q != ""; {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		name, _, _ := strings.Cut(pair, "=")
		if strings.IndexByte(name, '%') >= 0 || strings.IndexByte(name, '+') >= 0 {
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
		}
		for _, id := range identityQuery {
			if strings.EqualFold(name, id) {
				return true
			}
		}
	}
	return false
}

// Serve answers r from the cache or through next, the route's upstream
// exchange, storing what may be stored. identified is Identified's verdict
// or an identity the route's checks established.
func (p *Policy) Serve(w http.ResponseWriter, r *http.Request, next http.Handler, identified bool) {
	h := r.Header
	if r.Method != http.MethodGet && r.Method != http.MethodHead || identified && !p.public ||
		len(h["Range"]) > 0 || len(h["Upgrade"]) > 0 {
		p.count(resultBypass)
		w.Header()["X-Cache"] = xCache[resultBypass]
		next.ServeHTTP(w, r)
		return
	}
	key, url := p.key(r)
	head := r.Method == http.MethodHead
	// The client's conditions are answered from the stored answer; the
	// upstream is asked for the whole of it.
	cond := conditions{inm: h["If-None-Match"], ims: h["If-Modified-Since"]}
	delete(h, "If-None-Match")
	delete(h, "If-Modified-Since")
	for waited := false; ; waited = true {
		now := p.now()
		e, fl, lead := p.store.lookup(key, h, head, now)
		switch {
		case fl == nil:
			p.answer(w, r, e, resultHit, now, cond)
			return
		case lead:
			p.fetch(w, r, next, fetchOf{key: key, url: url, head: head, stale: e, flight: fl, cond: cond})
			return
		}
		if waited || !p.wait(r, fl) {
			if r.Context().Err() != nil {
				return
			}
			// The lock held too long, or the answer it waited for could
			// not be stored: nginx too sends such a request on uncached.
			p.count(resultMiss)
			w.Header()["X-Cache"] = xCache[resultMiss]
			next.ServeHTTP(w, r)
			return
		}
	}
}

// wait waits for another request's fetch; false when the lock timeout or
// the client's departure came first.
func (p *Policy) wait(r *http.Request, fl *flight) bool {
	t := time.NewTimer(p.lockTimeout)
	defer t.Stop()
	select {
	case <-fl.done:
		return true
	case <-t.C:
	case <-r.Context().Done():
	}
	return false
}

// key is the request's cache key: the route and its generation, scheme,
// host without port, path as sent and the query with its pairs ordered by
// name. url is the part a purge names.
func (p *Policy) key(r *http.Request) (key, url string) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	url = strings.ToLower(host) + r.URL.EscapedPath()
	if q := NormalQuery(r.URL.RawQuery); q != "" {
		url += "?" + q
	}
	return p.keyPrefix + scheme + "\x00" + url, url
}

// NormalQuery orders a raw query's pairs by name and drops empty ones, so
// that "b=2&a=1" and "a=1&b=2" share an answer. The sort is stable: the
// values of a repeated name keep the order they were sent in, since
// first-wins and last-wins frameworks answer "id=1&id=2" and "id=2&id=1"
// differently. Pairs are compared as sent, not decoded: two spellings of
// one value are two keys, never one answer for two values.
func NormalQuery(q string) string {
	if normal(q) {
		return q
	}
	pairs := strings.Split(q, "&")
	pairs = slices.DeleteFunc(pairs, func(s string) bool { return s == "" })
	slices.SortStableFunc(pairs, func(a, b string) int { return strings.Compare(queryName(a), queryName(b)) })
	return strings.Join(pairs, "&")
}

// queryName is a raw pair's name, as sent.
func queryName(pair string) string {
	name, _, _ := strings.Cut(pair, "=")
	return name
}

// normal reports whether q's pairs are in name order already, none empty:
// the usual case, which needs no copy.
func normal(q string) bool {
	if q == "" {
		return true
	}
	prev := ""
	for i := 0; ; i++ {
		pair, rest, more := strings.Cut(q, "&")
		name := queryName(pair)
		if pair == "" || i > 0 && name < prev {
			return false
		}
		if !more {
			return true
		}
		prev, q = name, rest
	}
}

// conditions are the client's conditional headers, answered from the
// stored answer.
type conditions struct {
	inm, ims []string
}

// fetchOf is one fetch a request leads.
type fetchOf struct {
	key, url string
	head     bool
	// stale is the stored answer that is no longer fresh, or nil.
	stale  *entry
	flight *flight
	cond   conditions
}

// fetch asks the upstream for the answer, stores it if it may be stored,
// and answers the client: a stored answer from the store, any other as it
// comes. A stale answer is revalidated when it has validators, and stands
// in for an upstream that fails while stale_if_error allows it.
func (p *Policy) fetch(w http.ResponseWriter, r *http.Request, next http.Handler, f fetchOf) {
	defer p.store.land(f.key, f.flight)
	now := p.now()
	rec := &recorder{w: w, p: p, h: make(http.Header), now: now}
	if s := f.stale; s != nil {
		if now.Before(s.staleUntil) {
			rec.fallback = s
		}
		if s.hasValidators() {
			rec.revalidating = true
			if s.etag != "" {
				r.Header["If-None-Match"] = []string{s.etag}
			}
			if lm := s.header["Last-Modified"]; len(lm) > 0 {
				r.Header["If-Modified-Since"] = lm
			}
		}
	}
	defer func() {
		// The upstream broke off: a client that has seen nothing yet
		// gets the stale answer, if any; otherwise the panic goes on to
		// the server, which closes the connection.
		if v := recover(); v != nil {
			if rec.mode == modePass || rec.fallback == nil {
				panic(v)
			}
			p.answer(w, r, rec.fallback, resultStale, p.now(), f.cond)
		}
	}()
	next.ServeHTTP(rec, r)
	if rec.mode == modeNone {
		rec.WriteHeader(http.StatusOK)
	}
	switch rec.mode {
	case modePass:
		rec.trailers()
		// The upstream no longer lets its answer be stored.
		if f.stale != nil && rec.status < 500 {
			p.store.drop(f.stale)
		}
		p.count(resultMiss)
	case modeFallback:
		p.answer(w, r, rec.fallback, resultStale, now, f.cond)
	case modeBuffer:
		if rec.status == http.StatusNotModified {
			e, ok := p.refresh(f.stale, rec.h, now)
			if ok {
				p.store.put(e)
			} else {
				p.store.drop(f.stale)
			}
			p.answer(w, r, e, resultRevalidated, now, f.cond)
			return
		}
		e := p.entry(f, r.Header, rec.status, rec.h, rec.body, rec.fresh)
		p.store.put(e)
		p.answer(w, r, e, resultMiss, now, f.cond)
	}
}

// refresh is the stored answer updated by a 304's header (RFC 9111
// 4.3.4); ok is false when the answer may no longer be stored.
func (p *Policy) refresh(old *entry, h http.Header, now time.Time) (*entry, bool) {
	merged := maps.Clone(old.header)
	for k, v := range h {
		if k != "Content-Length" {
			merged[k] = v
		}
	}
	fresh, ok := p.freshness(old.status, merged, now)
	if !ok {
		// Served once as it now stands, then forgotten.
		fresh = freshness{base: now}
	}
	f := fetchOf{key: old.key, url: old.url, head: old.head}
	e := p.entry(f, nil, old.status, merged, old.body, fresh)
	e.vary, e.values = old.vary, old.values
	return e, ok
}

// entry builds the stored form of an answer; reqHeader is the header of
// the request that fetched it, for the values of its Vary (nil: set by
// the caller).
func (p *Policy) entry(f fetchOf, reqHeader http.Header, status int, h http.Header, body []byte, fresh freshness) *entry {
	if cap(body)-len(body) > len(body)/8 {
		// The buffer grew by doubling: what is stored is what is counted.
		body = bytes.Clone(body)
	}
	e := &entry{
		key: f.key, url: f.url, route: p.route, gen: p.gen, head: f.head, status: status,
		header: storedHeader(h), body: body, base: fresh.base,
	}
	e.freshUntil = fresh.base.Add(fresh.life)
	e.staleUntil = e.freshUntil
	if fresh.mayStale {
		e.staleUntil = e.freshUntil.Add(p.staleIfError)
	}
	if v := h["Etag"]; len(v) > 0 {
		e.etag = v[0]
	}
	if v := h["Last-Modified"]; len(v) > 0 {
		e.lastModified, _ = http.ParseTime(v[0])
	}
	if reqHeader != nil {
		e.vary = varyNames(h)
		e.values = make([]string, len(e.vary))
		for i, n := range e.vary {
			e.values[i] = joinValues(reqHeader[n])
		}
	}
	e.size = entryOverhead + int64(len(e.key)+len(e.url)+len(body))
	for k, vs := range e.header {
		for _, v := range vs {
			e.size += int64(len(k) + len(v))
		}
	}
	for _, v := range e.values {
		e.size += int64(len(v))
	}
	return e
}

// entryOverhead is what an entry costs beyond its bytes of text: its
// struct, maps and list links, roughly.
const entryOverhead = 512

// notModifiedHeaders are the headers a 304 carries (RFC 9110 15.4.5).
var notModifiedHeaders = []string{"Cache-Control", "Content-Location", "Date", "Etag", "Expires", "Last-Modified", "Vary"}

// answer writes a stored answer to the client, or a 304 when the client's
// conditions hold.
func (p *Policy) answer(w http.ResponseWriter, r *http.Request, e *entry, result int, now time.Time, cond conditions) {
	p.count(result)
	h := w.Header()
	nm := notModified(e, cond.inm, cond.ims)
	for k, v := range e.header {
		if nm && !slices.Contains(notModifiedHeaders, k) {
			continue
		}
		if k == "Vary" {
			// CORS may have put its own; clipped, so an append copies
			// rather than writing into a slice another answer shares.
			h[k] = append(slices.Clip(h[k]), v...)
			continue
		}
		h[k] = v
	}
	age := max(now.Sub(e.base), 0) / time.Second
	h["Age"] = []string{strconv.FormatInt(int64(age), 10)}
	h["X-Cache"] = xCache[result]
	if nm {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead && len(e.body) > 0 {
		_, _ = w.Write(e.body)
	}
}
