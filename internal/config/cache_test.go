package config

import (
	"slices"
	"testing"
	"time"
)

func TestCacheKeys(t *testing.T) {
	dir := testDir(t)
	cfg := mustParse(t, dir, withA(`[cache]`, `max_size = "8MB"`, `identity_headers = ["X-Shop-Token"]`,
		`[[routes]]`, `name = "r"`, `upstream = "a"`, `[routes.cache]`, `ttl = "1m"`, `stale_if_error = "10m"`,
		`[[routes]]`, `name = "plain"`, `path = "/plain/"`, `upstream = "a"`))
	if cfg.Cache.MaxSize != 8<<20 || cfg.Cache.MaxEntrySize != 1<<20 || !slices.Equal(cfg.Cache.IdentityHeaders, []string{"X-Shop-Token"}) {
		t.Errorf("[cache]: %+v, want max_size 8MB, the default max_entry_size 1MB and identity_headers X-Shop-Token", cfg.Cache)
	}
	c := cfg.Routes[0].Cache
	if c == nil || c.TTL.Std() != time.Minute || c.StaleIfError.Std() != 10*time.Minute || c.LockTimeout.Std() != 5*time.Second || c.Public {
		t.Errorf("[routes.cache]: %+v, want ttl 1m, stale_if_error 10m, the default lock_timeout 5s", c)
	}
	if cfg.Routes[1].Cache != nil {
		t.Error("a route without [routes.cache] got one")
	}
	if d := Defaults(); d.Cache.MaxSize != 64<<20 {
		t.Errorf("default max_size %d, want 64MB", d.Cache.MaxSize)
	}
}

func TestCacheProblems(t *testing.T) {
	dir := answersDir(t)
	route := func(lines ...string) string {
		return withA(append([]string{`[[routes]]`, `name = "r"`, `upstream = "a"`}, lines...)...)
	}
	tests := []struct {
		name, text, key, want string
	}{
		{"static route", withA(`[[routes]]`, `name = "r"`, `static = "."`, `[routes.cache]`, `ttl = "1m"`),
			"routes[0].cache", "only applies to routes with upstream"},
		{"no lock timeout", route(`[routes.cache]`, `lock_timeout = "0s"`), "routes[0].cache.lock_timeout", "more than 0"},
		{"bad ttl", route(`[routes.cache]`, `ttl = "soon"`), "routes[0].cache.ttl", "not a duration"},
		{"unknown key", route(`[routes.cache]`, `valid = "1m"`), "routes[0].cache.valid", "unknown key"},
		{"zero size", withA(`[cache]`, `max_size = 0`, `[[routes]]`, `name = "r"`, `upstream = "a"`), "cache.max_size", "more than 0"},
		{"entry over size", withA(`[cache]`, `max_size = "1MB"`, `max_entry_size = "2MB"`, `[[routes]]`, `name = "r"`, `upstream = "a"`),
			"cache.max_entry_size", "larger than cache.max_size"},
		{"bad identity header", withA(`[cache]`, `identity_headers = ["X-Token", "x token"]`, `[[routes]]`, `name = "r"`, `upstream = "a"`),
			"cache.identity_headers[1]", "not a valid header name"},
		{"basic auth not public", route(`auth_basic = { user_file = "htpasswd" }`, `[routes.cache]`, `ttl = "1m"`), "routes[0].cache", "auth_basic carries credentials"},
		{"token route not public", route(`auth = "jwt"`, `jwt = { secret = "0123456789abcdef0123456789abcdef" }`, `[routes.cache]`, `ttl = "1m"`),
			"routes[0].cache", "set public = true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, e := parseIn(t, dir, tt.text)
			wantProblem(t, e, tt.key, tt.want)
		})
	}
}

func TestCachePublicWarns(t *testing.T) {
	cfg := mustParse(t, testDir(t), withA(`[[routes]]`, `name = "r"`, `upstream = "a"`, `[routes.cache]`, `public = true`))
	for _, w := range cfg.Warnings {
		if w.Key == "routes[0].cache.public" && w.Line > 0 {
			return
		}
	}
	t.Errorf("public = true gave no warning with a line: %v", cfg.Warnings)
}
