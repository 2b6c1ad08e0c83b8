package admin_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/internal/admin"
	"edge/internal/limits"
	"edge/internal/live"
	"edge/internal/testpeer"
	edgetls "edge/internal/tls"
)

const dashToken = "dash-admin-token-0123456789"

// bannedIP is the client the test gets banned: a documentation address
// sent in X-Forwarded-For by the loopback peer, a trusted proxy, so the
// ban does not shut out the test's own traffic from 127.0.0.1.
const bannedIP = "203.0.113.7"

// dashEdge is a running edge with an upstream, a rate limited route, bans,
// a token route and the internal CA, and what the test sent it.
type dashEdge struct {
	*testpeer.EdgeProcess
	upstream string // the target's address
	client   *http.Client
}

func startDashEdge(t *testing.T) *dashEdge {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond)
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	addr := strings.TrimPrefix(up.URL, "http://")
	server := fmt.Sprintf("redirect_http = false\ntrusted_proxies = [\"127.0.0.1/32\"]\nadmin_token = %q\n", dashToken)
	e := testpeer.StartEdge(t, server, fmt.Sprintf(`
[[apps]]
name = "shop"
appid = "wxdash"
secret = "dash-app-secret"

[sessions]
secrets = ["dash-session-secret-0123456789abcdef"]

[bans]
threshold = 2
window = "1m"
duration = "10m"
count = ["rate_limit"]
ban_ip = true

[[upstreams]]
name = "app"
targets = [%q]

[[routes]]
name = "api"
path = "/api/"
upstream = "app"

[[routes]]
name = "orders"
path = "/orders/"
auth = "token"
upstream = "app"

[[routes]]
name = "limited"
path = "/limited"
respond = { body = "ok" }

[[limits]]
name = "per_ip"
key = "ip"
rate = "1/m"
burst = 1
routes = ["limited"]
`, addr))
	return &dashEdge{EdgeProcess: e, upstream: addr, client: &http.Client{Timeout: 10 * time.Second}}
}

// send makes one request on the plain HTTP listener and returns its status.
func (e *dashEdge) send(t testing.TB, path, forwardedFor string) int {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+e.HTTP+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if forwardedFor != "" {
		req.Header.Set("X-Forwarded-For", forwardedFor)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// traffic sends the requests every view has something to show for: 20
// answered by the upstream, one refused for want of a token, and three
// from bannedIP of which two are limited, which bans it.
func (e *dashEdge) traffic(t testing.TB) {
	t.Helper()
	for range 20 {
		if got := e.send(t, "/api/ping", ""); got != 200 {
			t.Fatalf("/api/ping: %d", got)
		}
	}
	if got := e.send(t, "/orders/1", ""); got != 401 {
		t.Fatalf("/orders/1 without a token: %d", got)
	}
	var codes []int
	for range 3 {
		codes = append(codes, e.send(t, "/limited", bannedIP))
	}
	if fmt.Sprint(codes) != "[200 429 429]" {
		t.Fatalf("/limited from %s: %v", bannedIP, codes)
	}
}

// get fetches an admin API path with the token and decodes the answer.
func (e *dashEdge) get(t testing.TB, path string, out any) {
	t.Helper()
	code, body := e.admin(t, "GET", path, dashToken)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), out); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}

func (e *dashEdge) admin(t testing.TB, method, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+e.Admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitTraffic waits until the recorder has sampled at least n requests.
func (e *dashEdge) waitTraffic(t testing.TB, n uint64) live.Traffic {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var tr live.Traffic
		e.get(t, "/api/traffic", &tr)
		var sum uint64
		for _, p := range tr.Points {
			sum += p.Requests
		}
		if sum >= n {
			return tr
		}
		if time.Now().After(deadline) {
			t.Fatalf("the traffic samples hold %d requests after 20 s, want %d: %+v", sum, n, tr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDashboardAPI: every view's JSON against a running edge with
// traffic, behind the admin token, with no secret in any answer.
func TestDashboardAPI(t *testing.T) {
	e := startDashEdge(t)
	e.traffic(t)
	tr := e.waitTraffic(t, 24)
	if tr.LastMinute.RPS <= 0 || tr.LastMinute.P99Ms <= 0 || tr.LastMinute.P50Ms > tr.LastMinute.P99Ms {
		t.Errorf("last minute: %+v", tr.LastMinute)
	}

	for _, path := range []string{"/api/overview", "/api/routes", "/api/upstreams", "/api/security", "/api/certificates", "/api/traffic"} {
		if code, body := e.admin(t, "GET", path, ""); code != 401 {
			t.Errorf("GET %s without the token: %d %s", path, code, body)
		}
		if code, _ := e.admin(t, "GET", path, "wrong"); code != 401 {
			t.Errorf("GET %s with a wrong token: %d", path, code)
		}
		code, body := e.admin(t, "GET", path, dashToken)
		for _, secret := range []string{dashToken, "dash-app-secret", "dash-session-secret"} {
			if strings.Contains(body, secret) {
				t.Errorf("GET %s answers a secret: %s", path, body)
			}
		}
		if code != 200 {
			t.Errorf("GET %s: %d", path, code)
		}
	}

	var o admin.Overview
	e.get(t, "/api/overview", &o)
	if o.Config != e.ConfigPath || o.LastReload.Result != "loaded" || o.Routes != 3 || o.Upstreams != 1 ||
		o.Targets != 1 || o.TargetsUp != 1 || o.Bans != 1 || o.Started.IsZero() {
		t.Errorf("overview: %+v", o)
	}

	var routes struct{ Routes []admin.RouteView }
	e.get(t, "/api/routes", &routes)
	byName := map[string]admin.RouteView{}
	for _, r := range routes.Routes {
		byName[r.Name] = r
	}
	if r := byName["api"]; r.Match != "/api/" || r.Answer != "upstream app" || r.Auth != "none" || r.Live.Classes["2xx"] != 20 || len(r.Limits) != 0 {
		t.Errorf("route api: %+v", r)
	}
	if r := byName["orders"]; r.Auth != "token" || r.Live.Classes["4xx"] != 1 {
		t.Errorf("route orders: %+v", r)
	}
	if r := byName["limited"]; fmt.Sprint(r.Limits) != "[per_ip]" || r.Answer != "respond 200" || r.Live.Classes["4xx"] != 2 || r.Live.Classes["2xx"] != 1 {
		t.Errorf("route limited: %+v", r)
	}

	var ups struct{ Upstreams []admin.UpstreamView }
	e.get(t, "/api/upstreams", &ups)
	if len(ups.Upstreams) != 1 || ups.Upstreams[0].Name != "app" || len(ups.Upstreams[0].Targets) != 1 {
		t.Fatalf("upstreams: %+v", ups)
	}
	if tg := ups.Upstreams[0].Targets[0]; tg.Addr != e.upstream || !tg.Healthy || tg.LatencyMs <= 0 || tg.InFlight != 0 {
		t.Errorf("target: %+v", tg)
	}

	var sec admin.Security
	e.get(t, "/api/security", &sec)
	if len(sec.Bans) != 1 || sec.Bans[0] != (limits.BanView{Kind: "ip", Key: bannedIP, Reason: "rate_limit", Expires: sec.Bans[0].Expires}) ||
		time.Until(sec.Bans[0].Expires) < 5*time.Minute {
		t.Errorf("bans: %+v", sec.Bans)
	}
	if len(sec.TopLimited) != 1 || sec.TopLimited[0] != (limits.LimitedKey{Kind: "ip", Key: bannedIP, Count: 2}) {
		t.Errorf("top limited: %+v", sec.TopLimited)
	}
	if len(sec.AuthRejections) != 1 || sec.AuthRejections["40101"] != 1 {
		t.Errorf("auth rejections: %+v", sec.AuthRejections)
	}

	var certs edgetls.Status
	e.get(t, "/api/certificates", &certs)
	if certs.Mode != "internal" || len(certs.Certificates) != 1 {
		t.Fatalf("certificates: %+v", certs)
	}
	if c := certs.Certificates[0]; c.Source != "internal" || c.Issuer == "" || time.Until(c.Expiry) < 24*time.Hour ||
		!c.Renewal.After(time.Now()) || !c.Renewal.Before(c.Expiry) {
		t.Errorf("certificate: %+v", c)
	}

	// Lifting the ban as the page does.
	if code, body := e.admin(t, "DELETE", "/bans/ip/"+bannedIP, dashToken); code != 200 {
		t.Fatalf("lifting the ban: %d %s", code, body)
	}
	e.get(t, "/api/security", &sec)
	if len(sec.Bans) != 0 {
		t.Errorf("bans after the lift: %+v", sec.Bans)
	}

	// A rejected reload shows with its problems; the old config serves on.
	good, err := os.ReadFile(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.ConfigPath, append(good, "\n[[routes]]\nname = \"api\"\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := e.admin(t, "POST", "/reload", dashToken); code != 422 {
		t.Fatalf("reload of a broken config: %d %s", code, body)
	}
	e.get(t, "/api/overview", &o)
	if o.LastReload.Result != "failed" || o.LastReload.Trigger != "admin" || len(o.LastReload.Problems) == 0 {
		t.Errorf("last reload: %+v", o.LastReload)
	}
}

// TestDashboardPage: the page, its script and style load without the
// token (a navigation cannot send one) and hold nothing but themselves;
// the page keeps to its own origin by its Content-Security-Policy.
func TestDashboardPage(t *testing.T) {
	e := startDashEdge(t)
	var wg sync.WaitGroup
	for _, path := range []string{"/dashboard/", "/dashboard/app.js", "/dashboard/app.css"} {
		wg.Go(func() {
			resp, err := e.client.Get("http://" + e.Admin + path)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
				t.Errorf("GET %s: %d %q", path, resp.StatusCode, resp.Header)
			}
			if strings.Contains(string(b), "http://") || strings.Contains(string(b), "https://") {
				t.Errorf("GET %s refers to another origin", path)
			}
		})
	}
	wg.Wait()
	resp, err := e.client.Get("http://" + e.Admin + "/dashboard/../api/overview")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("a path through /dashboard/ to the API: %d, want 401", resp.StatusCode)
	}
}
