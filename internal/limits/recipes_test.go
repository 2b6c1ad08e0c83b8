package limits

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
)

// TestRecipes loads the documented recipes through the real decoder and
// validation, compiles them, and checks the behaviour each one promises.
func TestRecipes(t *testing.T) {
	load := func(t *testing.T, name string) *harness {
		t.Helper()
		cfg, err := config.Load(filepath.Join("testdata", "recipes", name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return newHarness(t, cfg, harnessOpt{})
	}
	t.Run("api", func(t *testing.T) {
		h := load(t, "api.toml")
		if got := h.serve("api", client{ip: "192.0.2.1"}).Code; got != 403 {
			t.Fatalf("anonymous API call: %d, want 403", got)
		}
		if got := h.allowed("api", client{ip: "192.0.2.1", openid: "o1"}, 25); got != 20 {
			t.Fatalf("one user's burst: %d allowed, want 20", got)
		}
		if got := h.allowed("login", client{ip: "192.0.2.9"}, 400); got != 300 {
			t.Fatalf("one IP's burst on login: %d allowed, want 300", got)
		}
	})
	t.Run("login under attack", func(t *testing.T) {
		h := load(t, "login-under-attack.toml")
		browser := func(r *http.Request) { r.Header.Set("User-Agent", "Mozilla/5.0 MicroMessenger") }
		send := func(c client, edit func(*http.Request)) int {
			r := newRequest(c)
			edit(r)
			w := httptest.NewRecorder()
			h.e.Handler("login", okHandler).ServeHTTP(w, r)
			return w.Code
		}
		if got := send(client{ip: "203.0.113.5"}, browser); got != 403 {
			t.Fatalf("denied range: %d", got)
		}
		if got := send(client{ip: "192.0.2.1"}, func(r *http.Request) { r.Header.Set("User-Agent", "python-requests/2") }); got != 403 {
			t.Fatalf("scripted client: %d", got)
		}
		dev := func(r *http.Request) { browser(r); r.Header.Set("X-Device-Id", "dev-1") }
		codes := ""
		for range 30 {
			codes += map[int]string{200: "a", 429: "l", 403: "b"}[send(client{ip: "192.0.2.1"}, dev)]
		}
		// login_device: 5 allowed; then 20 refusals earn the IP a ban.
		if want := "aaaaa" + strings.Repeat("l", 20) + "bbbbb"; codes != want {
			t.Fatalf("answers %s, want %s", codes, want)
		}
	})
	t.Run("flash sale", func(t *testing.T) {
		h := load(t, "flash-sale.toml")
		s := h.e.snap.Load()
		if s.policy != config.RedisFailLocal || !s.alwaysHeaders {
			t.Fatalf("limiter settings not applied: %+v", s)
		}
		buyer := client{ip: "192.0.2.1", openid: "o-buyer"}
		if got := h.allowed("sale", buyer, 8); got != 5 {
			t.Fatalf("one buyer: %d allowed, want 5", got)
		}
		h.clock.Advance(500 * time.Millisecond)
		w := h.serve("sale", buyer)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("RateLimit"), `"sale_user";r=0;t=1, "sale_total";r=9999;`) {
			t.Fatalf("after half a second: %d RateLimit %q", w.Code, w.Header().Get("RateLimit"))
		}
	})
}

func TestRecipeErrorsNameTheLine(t *testing.T) {
	doc := `
[[upstreams]]
name = "app"
targets = ["127.0.0.1:3000"]

[[routes]]
name = "api"
upstream = "app"

[[limits]]
name = "per_user"
key = "opneid"
rate = "10/sec"
routes = ["apii"]

[limiter]
on_redis_failure = "fail-open"
`
	_, err := config.Parse([]byte(doc), "edge.toml")
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("Parse: %v", err)
	}
	want := map[string]int{"limits[0].key": 12, "limits[0].rate": 13, "limits[0].routes[0]": 14, "limiter.on_redis_failure": 17}
	for _, p := range cerr.Problems {
		if line, ok := want[p.Key]; ok && line == p.Line {
			delete(want, p.Key)
		}
	}
	if len(want) > 0 {
		t.Fatalf("problems %v not reported at their lines; got:\n%v", want, err)
	}
}
