package identity_test

// End-to-end checks of issue 4 through the real edge binary: the JavaScript
// helper under Node against a fake wx, identity headers a client cannot
// forge, code2Session failures, and tokens, nonces and bans shared by two
// processes through a real Redis.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"edge/internal/identity"
	"edge/internal/testpeer"
)

const (
	e2eAppID         = "wx00e2e00000000001"
	e2eAppSecret     = "e2e-app-secret-never-in-a-log"
	e2eSessionSecret = "e2e-session-secret-0123456789-abcdefghij"
	e2eLoginTimeout  = time.Second
)

// The fake platform's users: code "NAME.n" logs NAME in.
func openidFor(user string) string     { return "oE2E_" + user }
func unionidFor(user string) string    { return "uE2E_" + user }
func sessionKeyFor(user string) string { return "sk_" + user + "_never_leaves_edge" }

// fakePlatform is a code2Session server. Codes name what it answers:
// "errcode.N" that errcode with HTTP 200, "http500", "garbage" (not JSON),
// "hang" (nothing until edge gives up); any other "NAME.n" logs NAME in.
type fakePlatform struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls []url.Values
}

func startFakePlatform(t *testing.T) *fakePlatform {
	t.Helper()
	p := &fakePlatform{}
	stop := make(chan struct{})
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		p.mu.Lock()
		p.calls = append(p.calls, q)
		p.mu.Unlock()
		if r.URL.Path != "/sns/jscode2session" || q.Get("appid") != e2eAppID || q.Get("secret") != e2eAppSecret ||
			q.Get("grant_type") != "authorization_code" {
			// What the real platform says to a wrong appid or secret.
			fmt.Fprint(w, `{"errcode":40013,"errmsg":"invalid appid"}`)
			return
		}
		code := q.Get("js_code")
		switch user, _, _ := strings.Cut(code, "."); {
		case user == "errcode":
			fmt.Fprintf(w, `{"errcode":%s,"errmsg":"fake platform error"}`, strings.TrimPrefix(code, "errcode."))
		case code == "http500":
			http.Error(w, "internal error", http.StatusInternalServerError)
		case code == "garbage":
			fmt.Fprint(w, "<html>busy</html>")
		case code == "hang":
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		default:
			w.Header().Set("Content-Type", "text/plain") // the real one says so too
			_ = json.NewEncoder(w).Encode(map[string]string{
				"openid": openidFor(user), "unionid": unionidFor(user), "session_key": sessionKeyFor(user),
			})
		}
	}))
	t.Cleanup(p.srv.Close)
	t.Cleanup(func() { close(stop) })
	return p
}

func (p *fakePlatform) url() string { return p.srv.URL + "/sns/jscode2session" }

// codes are the js_code values code2Session received, in order.
func (p *fakePlatform) codes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, q := range p.calls {
		out = append(out, q.Get("js_code"))
	}
	return out
}

// echo is what the recording upstream answers: what it received.
type echo struct {
	OpenID        string   `json:"openid"`
	AppID         string   `json:"appid"`
	UnionID       string   `json:"unionid"`
	RequestID     string   `json:"request_id"`
	Forged        []string `json:"forged"`
	Authorization bool     `json:"authorization"`
	Method        string   `json:"method"`
	Path          string   `json:"path"`
	Query         string   `json:"query"`
	Body          string   `json:"body"`
	FileSHA256    string   `json:"file_sha256,omitempty"`
	FormKind      string   `json:"form_kind,omitempty"`
	// Trailer is the request's trailer section, read after the body.
	Trailer map[string]string `json:"trailer,omitempty"`
}

// identityHeaders are the three headers edge injects.
var identityHeaders = []string{"X-Wx-Openid", "X-Wx-Appid", "X-Wx-Unionid"}

func echoOf(r *http.Request, body []byte) echo {
	e := echo{
		OpenID: r.Header.Get("X-Wx-Openid"), AppID: r.Header.Get("X-Wx-Appid"), UnionID: r.Header.Get("X-Wx-Unionid"),
		RequestID: r.Header.Get("X-Request-Id"), Forged: []string{}, Authorization: r.Header["Authorization"] != nil,
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(body),
	}
	for k, vs := range r.Header {
		norm := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		injected := slices.Contains(identityHeaders, k) && len(vs) == 1
		if (strings.HasPrefix(norm, "x-wx-") || strings.HasPrefix(norm, "x-edge-")) && !injected {
			e.Forged = append(e.Forged, k)
		}
		for _, v := range vs {
			if strings.Contains(v, "forged") {
				e.Forged = append(e.Forged, k+": "+v)
			}
		}
	}
	for k, vs := range r.Trailer {
		for _, v := range vs {
			if e.Trailer == nil {
				e.Trailer = map[string]string{}
			}
			e.Trailer[k] = v
			norm := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
			if strings.HasPrefix(norm, "x-wx-") || strings.HasPrefix(norm, "x-edge-") || strings.Contains(v, "forged") {
				e.Forged = append(e.Forged, "trailer "+k+": "+v)
			}
		}
	}
	slices.Sort(e.Forged)
	return e
}

// upstream is the app behind edge: it answers every request with its echo
// and records it. /ws/ is a WebSocket that sends the echo, then echoes
// text messages.
type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []echo
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/ws/") {
		u.record(echoOf(r, nil))
		u.websocket(w, r)
		return
	}
	var e echo
	if mr, err := r.MultipartReader(); err == nil {
		e = echoOf(r, nil)
		for {
			part, err := mr.NextPart()
			if err != nil {
				break
			}
			b, _ := io.ReadAll(part)
			switch part.FormName() {
			case "file":
				sum := sha256.Sum256(b)
				e.FileSHA256 = hex.EncodeToString(sum[:])
			case "kind":
				e.FormKind = string(b)
			}
		}
	} else {
		body, _ := io.ReadAll(r.Body)
		e = echoOf(r, body)
	}
	u.record(e)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(e)
}

func (u *upstream) websocket(w http.ResponseWriter, r *http.Request) {
	hello, _ := json.Marshal(echoOf(r, nil))
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if c.Write(ctx, websocket.MessageText, hello) != nil {
		return
	}
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		if c.Write(ctx, websocket.MessageText, append([]byte("echo:"), msg...)) != nil {
			return
		}
	}
}

func (u *upstream) record(e echo) {
	u.mu.Lock()
	u.seen = append(u.seen, e)
	u.mu.Unlock()
}

func (u *upstream) requests() []echo {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.seen)
}

// edgeConfig is one app logging in through p, and routes to up:
// /api/ signed, /upload/ signed with UNSIGNED-PAYLOAD, /ws/ a signed
// WebSocket, /tok/ token only, /open/ no auth.
func edgeConfig(p *fakePlatform, up *upstream, extra string) string {
	return fmt.Sprintf(`
[[apps]]
name = "shop"
appid = %q
secret = %q
code2session_url = %q
login_timeout = %q

[sessions]
secrets = [%q]
ttl = "1h"

[[upstreams]]
name = "app"
targets = [%q]
retries = 0

[[routes]]
name = "api"
path = "/api/"
upstream = "app"
auth = "signed"

[[routes]]
name = "upload"
path = "/upload/"
upstream = "app"
auth = "signed"
allow_unsigned_payload = true
max_body = "2MB"

[[routes]]
name = "ws"
path = "/ws/"
upstream = "app"
auth = "signed"
websocket = true

[[routes]]
name = "tok"
path = "/tok/"
upstream = "app"
auth = "token"

[[routes]]
name = "open"
path = "/open/"
upstream = "app"
%s`, e2eAppID, e2eAppSecret, p.url(), e2eLoginTimeout.String(), e2eSessionSecret, up.addr(), extra)
}

// apiAnswer is the JSON error body of docs/signature.md, and of the login answer.
type apiAnswer struct {
	Code      int    `json:"code"`
	Msg       string `json:"msg"`
	RequestID string `json:"request_id"`
	Data      struct {
		Token     string `json:"token"`
		SignKey   string `json:"sign_key"`
		ExpiresIn int64  `json:"expires_in"`
	} `json:"data"`
}

// call sends req and decodes the answer: an echo when the upstream
// answered (200), edge's own JSON body otherwise.
func call(t *testing.T, c *http.Client, req *http.Request) (int, echo, apiAnswer) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", req.URL, err)
	}
	var e echo
	var a apiAnswer
	if resp.StatusCode == http.StatusOK && !strings.Contains(req.URL.Path, "login") {
		err = json.Unmarshal(b, &e)
	} else {
		err = json.Unmarshal(b, &a)
	}
	if err != nil {
		t.Fatalf("%s %s: HTTP %d with a body that is not the expected JSON: %v\n%s", req.Method, req.URL, resp.StatusCode, err, b)
	}
	return resp.StatusCode, e, a
}

func newRequest(t *testing.T, method, url string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	return req
}

// login runs the login endpoint with code and returns the session.
func login(t *testing.T, e *testpeer.EdgeProcess, c *http.Client, code string) (token, signKey string) {
	t.Helper()
	req := newRequest(t, http.MethodPost, e.URL("127.0.0.1", "/edge/login"), []byte(`{"code":"`+code+`"}`))
	req.Header.Set("Content-Type", "application/json")
	status, _, a := call(t, c, req)
	if status != http.StatusOK || a.Code != 0 || a.Data.Token == "" || a.Data.SignKey == "" {
		t.Fatalf("login with %q: HTTP %d %+v", code, status, a)
	}
	return a.Data.Token, a.Data.SignKey
}

// sign adds the EDGE-HMAC-SHA256 headers of docs/signature.md. The query must
// already be in canonical form (sorted, encoded), which keeps this signer
// independent of the one under test.
func sign(t *testing.T, req *http.Request, token, signKey string, body []byte) {
	t.Helper()
	var nb [18]byte
	if _, err := rand.Read(nb[:]); err != nil {
		t.Fatal(err)
	}
	nonce := base64.RawURLEncoding.EncodeToString(nb[:])
	ts := fmt.Sprint(time.Now().Unix())
	sum := sha256.Sum256(body)
	sts := strings.Join([]string{req.Method, req.URL.EscapedPath(), req.URL.RawQuery, ts, nonce, hex.EncodeToString(sum[:])}, "\n")
	mac := hmac.New(sha256.New, []byte(signKey))
	mac.Write([]byte(sts))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Edge-Timestamp", ts)
	req.Header.Set("X-Edge-Nonce", nonce)
	req.Header.Set("X-Edge-Signature", hex.EncodeToString(mac.Sum(nil)))
}

func signedGet(t *testing.T, e *testpeer.EdgeProcess, path, token, signKey string) *http.Request {
	t.Helper()
	req := newRequest(t, http.MethodGet, e.URL("127.0.0.1", path), nil)
	sign(t, req, token, signKey, nil)
	return req
}

// assertNoSecretsLogged checks edge's logs for every secret it handled.
func assertNoSecretsLogged(t *testing.T, e *testpeer.EdgeProcess, secrets ...string) {
	t.Helper()
	logs := e.Stdout() + e.Stderr()
	for _, s := range append(secrets, e2eAppSecret, e2eSessionSecret) {
		if strings.Contains(logs, s) {
			t.Errorf("edge logged a secret (%d bytes starting %.4q)", len(s), s)
		}
	}
}

func TestE2EMiniProgramHelperUnderNode(t *testing.T) {
	t.Parallel()
	node := testpeer.Binary(t, "node")
	plat, up := startFakePlatform(t), startUpstream(t)
	e := testpeer.StartEdge(t, "", edgeConfig(plat, up, ""))

	// A token sealed with edge's secret an hour ago and valid for a minute:
	// the session a client kept in storage past its end.
	hourAgo := func() time.Time { return time.Now().Add(-time.Hour) }
	old, err := identity.NewSealer([][]byte{[]byte(e2eSessionSecret)}, time.Minute, nil, hourAgo)
	if err != nil {
		t.Fatal(err)
	}
	expired, sess, err := old.Issue(e2eAppID, openidFor("alice"), unionidFor("alice"))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	driver := filepath.Join(testpeer.RepoRoot(t), "clients", "miniprogram", "testdata", "e2e-driver.js")
	cmd := exec.CommandContext(ctx, node, "--test", driver)
	cmd.Env = append(os.Environ(),
		"NODE_EXTRA_CA_CERTS="+filepath.Join(e.Dir, "state", "internal", "ca.crt"),
		"EDGE_E2E_URL="+strings.TrimSuffix(e.URL("127.0.0.1", ""), "/"),
		"EDGE_E2E_USER=alice",
		"EDGE_E2E_OPENID="+openidFor("alice"),
		"EDGE_E2E_APPID="+e2eAppID,
		"EDGE_E2E_SESSION_KEY="+sessionKeyFor("alice"),
		"EDGE_E2E_EXPIRED_TOKEN="+expired,
		"EDGE_E2E_EXPIRED_SIGN_KEY="+sess.SignKey(),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test %s: %v\n%s", driver, err, out)
	}
	t.Logf("node --test %s:\n%s", driver, out)

	if got, want := plat.codes(), []string{"alice.1", "alice.2"}; !slices.Equal(got, want) {
		t.Errorf("code2Session received %q, want %q (one login, one after the expired token)", got, want)
	}
	// What reached the upstream, in order: the replay, the refused upload
	// and the expired token's first try never did.
	var got []string
	for _, r := range up.requests() {
		got = append(got, r.Method+" "+r.Path)
		if r.OpenID != openidFor("alice") || r.AppID != e2eAppID || r.UnionID != unionidFor("alice") ||
			r.RequestID == "" || len(r.Forged) > 0 || r.Authorization {
			t.Errorf("%s %s reached the upstream with openid %q, appid %q, unionid %q, request id %q, stray headers %q, Authorization %v",
				r.Method, r.Path, r.OpenID, r.AppID, r.UnionID, r.RequestID, r.Forged, r.Authorization)
		}
	}
	want := []string{"GET /api/orders", "POST /api/orders", "POST /upload/avatar", "GET /ws/chat", "GET /api/after-expiry"}
	if !slices.Equal(got, want) {
		t.Errorf("the upstream received %q, want %q", got, want)
	}
	metrics := e.Metrics(t, "edge_")
	for _, line := range []string{
		`edge_logins_total{app="shop",result="ok"} 2`,
		`edge_auth_rejections_total{code="40102",route="api"} 1`,
		`edge_auth_rejections_total{code="40103",route="api"} 1`,
		`edge_auth_rejections_total{code="40105",route="api"} 1`,
	} {
		if !strings.Contains(metrics, line) {
			t.Errorf("metrics lack %s", line)
		}
	}
	assertNoSecretsLogged(t, e, sessionKeyFor("alice"), sess.SignKey())
}

func TestE2EClientIdentityHeadersNeverReachUpstream(t *testing.T) {
	t.Parallel()
	plat, up := startFakePlatform(t), startUpstream(t)
	e := testpeer.StartEdge(t, "", edgeConfig(plat, up, ""))
	token, signKey := login(t, e, e.Client(t, false), "carol.1")

	// Every spelling a framework may read as X-WX-OPENID (PHP and several
	// Node frameworks turn '_' into '-'), plus the other identity and
	// signature names. Keys are set verbatim: HTTP/1.1 sends them as
	// written; HTTP/2 lowercases them.
	forged := map[string]string{
		"X-WX-OPENID": "forged-1", "x-wx-openid": "forged-2", "X_WX_OPENID": "forged-3", "x_Wx-OpenId": "forged-4",
		"X-WX-APPID": "forged-appid", "x_wx_unionid": "forged-unionid", "X-WX-SOURCE": "forged-source",
		"X-Edge-Verified": "forged-edge", "x_edge_openid": "forged-edge-2",
	}
	cases := []struct {
		route, path string
		auth        func(req *http.Request)
		wantOpenID  string
	}{
		{"none", "/open/x", func(*http.Request) {}, ""},
		{"token", "/tok/x", func(req *http.Request) { req.Header.Set("Authorization", "Bearer "+token) }, openidFor("carol")},
		{"signed", "/api/x", func(req *http.Request) { sign(t, req, token, signKey, nil) }, openidFor("carol")},
	}
	for _, h2 := range []bool{false, true} {
		c := e.Client(t, h2)
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/h2=%v", tc.route, h2), func(t *testing.T) {
				req := newRequest(t, http.MethodGet, e.URL("127.0.0.1", tc.path), nil)
				for k, v := range forged {
					req.Header[k] = []string{v}
				}
				tc.auth(req)
				status, got, a := call(t, c, req)
				if status != http.StatusOK {
					t.Fatalf("HTTP %d %+v", status, a)
				}
				if got.OpenID != tc.wantOpenID || len(got.Forged) > 0 {
					t.Errorf("upstream got X-WX-OPENID %q (want %q) and client identity headers %q", got.OpenID, tc.wantOpenID, got.Forged)
				}
				if tc.wantOpenID == "" && (got.AppID != "" || got.UnionID != "") {
					t.Errorf("upstream got appid %q, unionid %q on an anonymous route", got.AppID, got.UnionID)
				}
			})
		}
	}
}

func TestE2ELoginFailures(t *testing.T) {
	t.Parallel()
	plat, up := startFakePlatform(t), startUpstream(t)
	e := testpeer.StartEdge(t, "", edgeConfig(plat, up, ""))
	c := e.Client(t, false)
	cases := []struct {
		code       string
		body       string // instead of {"code": code}
		wantStatus int
		wantCode   int
	}{
		{"errcode.40029", "", 401, 40106}, // invalid code
		{"errcode.40163", "", 401, 40106}, // code already used
		{"errcode.40226", "", 401, 40106}, // high-risk user
		{"errcode.-1", "", 502, 50202},    // system busy
		{"errcode.45011", "", 502, 50202}, // minute quota
		{"errcode.40013", "", 502, 50202}, // not documented for code2Session: edge's problem, not the user's
		{"http500", "", 502, 50202},
		{"garbage", "", 502, 50202},
		{"hang", "", 502, 50202},
		{"body not JSON", "code=abc", 400, 40001},
		{"body without code", `{"js_code":"abc"}`, 400, 40001},
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			body := tc.body
			if body == "" {
				body = `{"code":"` + tc.code + `"}`
			}
			req := newRequest(t, http.MethodPost, e.URL("127.0.0.1", "/edge/login"), []byte(body))
			start := time.Now()
			status, _, a := call(t, c, req)
			took := time.Since(start)
			if status != tc.wantStatus || a.Code != tc.wantCode || a.RequestID == "" || a.Data.Token != "" {
				t.Errorf("HTTP %d %+v, want %d with code %d, a request id and no token", status, a, tc.wantStatus, tc.wantCode)
			}
			// The fake platform never answers "hang", so any answer at all
			// is login_timeout at work; it cannot come before the timeout,
			// however fast or loaded the machine.
			if tc.code == "hang" && took < e2eLoginTimeout {
				t.Errorf("answered after %s; login_timeout is %s", took, e2eLoginTimeout)
			}
		})
	}
	metrics := e.Metrics(t, "edge_logins_total")
	for _, line := range []string{`result="code_rejected"} 3`, `result="platform_error"} 6`, `result="bad_request"} 2`} {
		if !strings.Contains(metrics, line) {
			t.Errorf("metrics lack %s:\n%s", line, metrics)
		}
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("the upstream received %d requests; failed logins must not reach it", n)
	}
	assertNoSecretsLogged(t, e)
}

// TestE2EReplicasShareTokensNoncesAndBans runs two edge processes with the
// same session secret and Redis, as two replicas behind a load balancer.
func TestE2EReplicasShareTokensNoncesAndBans(t *testing.T) {
	t.Parallel()
	rds := testpeer.Redis(t)
	plat, up := startFakePlatform(t), startUpstream(t)
	cfg := edgeConfig(plat, up, fmt.Sprintf(`
[cluster]
redis = %q

[bans]
threshold = 3
count = ["signature"]
ban_ip = false
duration = "10m"
sync_interval = "100ms"
`, rds.URL()))
	a := testpeer.StartEdge(t, "", cfg)
	b := testpeer.StartEdge(t, "", cfg)
	ca, cb := a.Client(t, false), b.Client(t, false)

	t.Run("a token from one replica is accepted by the other", func(t *testing.T) {
		for _, pair := range []struct {
			name         string
			issue, check *testpeer.EdgeProcess
			ic, cc       *http.Client
		}{{"a to b", a, b, ca, cb}, {"b to a", b, a, cb, ca}} {
			token, signKey := login(t, pair.issue, pair.ic, "dave.1")
			status, got, ans := call(t, pair.cc, signedGet(t, pair.check, "/api/shared", token, signKey))
			if status != http.StatusOK || got.OpenID != openidFor("dave") {
				t.Errorf("%s: HTTP %d %+v, upstream saw openid %q", pair.name, status, ans, got.OpenID)
			}
		}
	})

	t.Run("a nonce replayed to the other replica is rejected", func(t *testing.T) {
		token, signKey := login(t, a, ca, "erin.1")
		req := signedGet(t, a, "/api/once?n=1", token, signKey)
		if status, _, ans := call(t, ca, req); status != http.StatusOK {
			t.Fatalf("first send: HTTP %d %+v", status, ans)
		}
		replay := newRequest(t, http.MethodGet, b.URL("127.0.0.1", "/api/once?n=1"), nil)
		replay.Header = req.Header.Clone()
		status, _, ans := call(t, cb, replay)
		if status != http.StatusUnauthorized || ans.Code != 40105 {
			t.Errorf("replay to the other replica: HTTP %d %+v, want 401 / 40105", status, ans)
		}
	})

	t.Run("bad signatures ban the openid on every replica until lifted", func(t *testing.T) {
		token, signKey := login(t, a, ca, "mallory.1")
		for i := range 3 {
			status, _, ans := call(t, ca, signedGet(t, a, "/api/x", token, "not-"+signKey))
			if status != http.StatusUnauthorized || ans.Code != 40103 {
				t.Fatalf("bad signature %d: HTTP %d %+v, want 401 / 40103", i+1, status, ans)
			}
		}
		if status, _, ans := call(t, ca, signedGet(t, a, "/api/x", token, signKey)); status != http.StatusForbidden || ans.Code != 40301 {
			t.Fatalf("valid request after the ban: HTTP %d %+v, want 403 / 40301", status, ans)
		}
		// Another user from the same address is not affected: the ban is
		// the openid's, not the IP's.
		other, otherKey := login(t, a, ca, "frank.1")
		if status, _, ans := call(t, ca, signedGet(t, a, "/api/x", other, otherKey)); status != http.StatusOK {
			t.Errorf("another user: HTTP %d %+v", status, ans)
		}
		waitStatus(t, cb, b, token, signKey, http.StatusForbidden, "the ban to reach the other replica")

		req, err := http.NewRequest(http.MethodDelete, "http://"+a.Admin+"/bans/openid/"+openidFor("mallory"), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"shared":true`) {
			t.Fatalf("DELETE /bans/openid/...: HTTP %d %s", resp.StatusCode, body)
		}
		if status, _, ans := call(t, ca, signedGet(t, a, "/api/x", token, signKey)); status != http.StatusOK {
			t.Errorf("after the lift, on the replica that lifted it: HTTP %d %+v", status, ans)
		}
		waitStatus(t, cb, b, token, signKey, http.StatusOK, "the lift to reach the other replica")
	})
}

// waitStatus sends fresh signed requests to e until one gets want
// (replicas read bans from Redis every sync_interval), for at most a bound
// generous enough for a loaded machine.
func waitStatus(t *testing.T, c *http.Client, e *testpeer.EdgeProcess, token, signKey string, want int, what string) {
	t.Helper()
	const within = 15 * time.Second
	deadline := time.Now().Add(within)
	for {
		status, _, ans := call(t, c, signedGet(t, e, "/api/x", token, signKey))
		if status == want {
			if want == http.StatusForbidden && ans.Code != 40301 {
				t.Fatalf("%s: HTTP 403 with code %d, want 40301", what, ans.Code)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s: still HTTP %d %+v", within, what, status, ans)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
