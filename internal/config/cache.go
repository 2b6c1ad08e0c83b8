package config

import "time"

// CacheStore is the [cache] table: the memory every cached route shares
// (nginx proxy_cache_path's max_size, in memory). It applies live on
// reload; what is stored survives the reload, but for the routes whose
// answer-shaping settings it changes.
//
//	[cache]
//	max_size = "64MB"
//	max_entry_size = "1MB"
//	identity_headers = ["X-Shop-Token"]
type CacheStore struct {
	// MaxSize bounds the bytes stored; the least recently used answers
	// go first. Default 64MB.
	MaxSize ByteSize `toml:"max_size"`
	// MaxEntrySize bounds one answer; a longer one is passed on
	// uncached. Default 1MB.
	MaxEntrySize ByteSize `toml:"max_entry_size"`
	// IdentityHeaders are request headers that carry a user's identity
	// besides the built-in ones (Authorization, Cookie, token, X-Token and
	// the other common token headers, see cache.identityHeaders): a
	// request with one is answered by the upstream and its answer never
	// stored, on every cached route not public. For an app whose upstream
	// reads its own token header on routes with auth = "none". It lives
	// here, not per route, so a route added later cannot forget it.
	IdentityHeaders []string `toml:"identity_headers"`
}

// RouteCache is a route's [routes.cache] table (nginx proxy_cache on the
// location): GET and HEAD answers are stored when the upstream marks them
// cacheable (Cache-Control s-maxage or max-age, Expires) or, with ttl, for
// 200, 301 and 404 answers it says nothing of.
//
//	[routes.cache]
//	ttl = "1m"
//	stale_if_error = "10m"
type RouteCache struct {
	// TTL is nginx proxy_cache_valid: the freshness of answers whose
	// upstream gives none. Default 0: only what the upstream marks.
	TTL Duration `toml:"ttl"`
	// Public stores answers to requests that carry an identity (a token,
	// a signature, a cookie) too, and serves them to everyone: only for
	// answers that are the same for every user.
	Public bool `toml:"public"`
	// StaleIfError serves an answer this long past its freshness when the
	// upstream fails or answers 5xx (nginx proxy_cache_use_stale error
	// timeout http_500 http_502 http_503 http_504). Default 0.
	StaleIfError Duration `toml:"stale_if_error"`
	// LockTimeout is how long a request waits for another's fetch of the
	// same answer before asking the upstream itself (nginx
	// proxy_cache_lock_timeout). Default 5s.
	LockTimeout Duration `toml:"lock_timeout"`
}

func (c *CacheStore) setDefaults() {
	c.MaxSize = 64 << 20
	c.MaxEntrySize = 1 << 20
}

func (r *RouteCache) setDefaults() { r.LockTimeout = Duration(5 * time.Second) }

func (c *CacheStore) validate(ck *checker) {
	if c.MaxSize <= 0 {
		ck.add("cache.max_size", `must be more than 0, like "64MB"`)
	}
	if c.MaxEntrySize <= 0 {
		ck.add("cache.max_entry_size", `must be more than 0, like "1MB"`)
	} else if c.MaxEntrySize > c.MaxSize && c.MaxSize > 0 {
		ck.add("cache.max_entry_size", "is larger than cache.max_size; lower it or raise max_size")
	}
	checkHeaderList(ck, "cache.identity_headers", c.IdentityHeaders)
}

func (r *Route) validateCache(c *checker, key string) {
	rc := r.Cache
	if rc == nil {
		return
	}
	key += ".cache"
	if r.Upstream == "" {
		c.add(key, "only applies to routes with upstream; static files and fixed answers need no cache")
	}
	switch {
	case rc.Public:
	case r.Auth != "" && r.Auth != AuthNone:
		c.add(key, `every request of a route with auth = %q carries an identity, whose answers are never cached: nothing would be stored; set public = true if the answers are the same for every user, or remove [routes.cache]`, r.Auth)
	case r.AuthBasic != nil:
		c.add(key, `every request of a route with auth_basic carries credentials, whose answers are never cached: nothing would be stored; set public = true if the answers are the same for every user, or remove [routes.cache]`)
	}
	if rc.LockTimeout <= 0 {
		c.add(key+".lock_timeout", `must be more than 0, like "5s"`)
	}
	if rc.Public {
		c.warn(key+".public", "answers to requests with a token, signature or cookie are stored and served to every client; make sure they hold nothing of one user")
	}
}
