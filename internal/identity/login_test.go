package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/config"
	"edge/internal/metrics"
)

// fakePlatform is a local code2Session answering what the test says.
type fakePlatform struct {
	srv     *httptest.Server
	mu      sync.Mutex
	answer  func(w http.ResponseWriter, r *http.Request)
	queries []string
}

func newFakePlatform(t *testing.T) *fakePlatform {
	f := &fakePlatform{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.queries = append(f.queries, r.URL.Path+"?"+r.URL.RawQuery)
		answer := f.answer
		f.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func jsonAnswer(status int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

type loginAnswer struct {
	Code int                        `json:"code"`
	Data map[string]json.RawMessage `json:"data"`
}

func postLogin(t *testing.T, h http.Handler, body string) (*httptest.ResponseRecorder, loginAnswer) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/edge/login", strings.NewReader(body)))
	var a loginAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("answer is not JSON: %q", rec.Body.String())
	}
	return rec, a
}

const platformSecretSessionKey = "tiihtNczf5v6AKRyjwEUhQ=="

// Login timeouts of the tests. A test about an answer waits so long that no
// loaded machine reaches it; a test about a platform or hook that never
// answers waits a second, which its real calls, if any, fit in easily.
const (
	answerLoginTimeout = 30 * time.Second
	hangLoginTimeout   = time.Second
)

func loginService(t *testing.T, platform string, hook string, logs io.Writer, timeout time.Duration) (*Service, *metrics.Identity) {
	cfg := testConfig()
	cfg.Apps[0].Code2SessionURL = platform + "/sns/jscode2session"
	cfg.Apps[0].LoginTimeout = config.Duration(timeout)
	cfg.Apps[0].LoginHook = hook
	m, err := metrics.NewIdentity(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return newService(t, cfg, Options{Metrics: m, Log: slog.New(slog.NewTextHandler(logs, nil))}), m
}

func loginHandlerOf(t *testing.T, s *Service) http.Handler {
	t.Helper()
	logins, err := s.Logins()
	if err != nil || len(logins) != 1 || logins[0].Path != "/edge/login" {
		t.Fatalf("logins %v %v", logins, err)
	}
	return logins[0].Handler
}

func TestLoginPlatformAnswers(t *testing.T) {
	platform := newFakePlatform(t)
	var logs bytes.Buffer
	s, m := loginService(t, platform.srv.URL, "", &logs, answerLoginTimeout)
	h := loginHandlerOf(t, s)
	ok := `{"openid":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","session_key":"` + platformSecretSessionKey + `","unionid":"o6_bmasdasdsad6_2sgVt7hMZOPfL"}`
	for _, tc := range []struct {
		name   string
		answer func(http.ResponseWriter, *http.Request)
		code   int
		result string
	}{
		{"success", jsonAnswer(200, ok), 0, "ok"},
		{"system busy", jsonAnswer(200, `{"errcode":-1,"errmsg":"system error"}`), 50202, "platform_error"},
		{"invalid code", jsonAnswer(200, `{"errcode":40029,"errmsg":"invalid code"}`), 40106, "code_rejected"},
		{"code used", jsonAnswer(200, `{"errcode":40163,"errmsg":"code been used"}`), 40106, "code_rejected"},
		{"high risk", jsonAnswer(200, `{"errcode":40226,"errmsg":"user is blocked"}`), 40106, "code_rejected"},
		{"quota", jsonAnswer(200, `{"errcode":45011,"errmsg":"api minute-quota reach limit"}`), 50202, "platform_error"},
		{"unknown errcode", jsonAnswer(200, `{"errcode":40125,"errmsg":"invalid appsecret"}`), 50202, "platform_error"},
		{"HTTP 500", jsonAnswer(500, `{}`), 50202, "platform_error"},
		{"garbage", jsonAnswer(200, `<html>busy</html>`), 50202, "platform_error"},
		{"no session_key", jsonAnswer(200, `{"openid":"o1"}`), 50202, "platform_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			platform.mu.Lock()
			platform.answer = tc.answer
			platform.mu.Unlock()
			rec, a := postLogin(t, h, `{"code":"081tE3ll2PRzqd4ZfSll2y2UHC4tE3lb"}`)
			if a.Code != tc.code {
				t.Fatalf("code %d, want %d: %s", a.Code, tc.code, rec.Body.String())
			}
			if n := counterValue(t, m.Login("shop", tc.result)); n < 1 {
				t.Errorf("edge_logins_total{result=%q} not counted", tc.result)
			}
			if strings.Contains(rec.Body.String(), platformSecretSessionKey) {
				t.Error("the session_key reached the client")
			}
			if tc.code != 0 {
				if rec.Code != tc.code/100 {
					t.Errorf("status %d", rec.Code)
				}
				return
			}
			var token, signKey string
			var expires int
			json.Unmarshal(a.Data["token"], &token)
			json.Unmarshal(a.Data["sign_key"], &signKey)
			json.Unmarshal(a.Data["expires_in"], &expires)
			if expires != 7200 || len(signKey) != 43 {
				t.Errorf("answer %s", rec.Body.String())
			}
			if _, ok := a.Data["openid"]; ok {
				t.Error("openid exposed without expose_openid")
			}
			sess, err := s.Sealer().Open(token)
			if err != nil || sess.OpenID != "o6_bmjrPTlm6_2sgVt7hMZOPfL2M" || sess.SignKey() != signKey || sess.AppID != testAppID {
				t.Errorf("token opens to %+v, %v", sess, err)
			}
		})
	}
	platform.mu.Lock()
	defer platform.mu.Unlock()
	q := platform.queries[0]
	for _, want := range []string{"/sns/jscode2session?", "appid=" + testAppID, "secret=app-secret-value", "js_code=081tE3ll2PRzqd4ZfSll2y2UHC4tE3lb", "grant_type=authorization_code"} {
		if !strings.Contains(q, want) {
			t.Errorf("code2Session query %q lacks %q", q, want)
		}
	}
	for _, secret := range []string{"app-secret-value", platformSecretSessionKey} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a secret reached the log:\n%s", logs.String())
		}
	}
}

// TestLoginPlatformHangIsCutAtLoginTimeout: a platform that does not
// answer holds a login for login_timeout, then it fails with 502 / 50202.
func TestLoginPlatformHangIsCutAtLoginTimeout(t *testing.T) {
	platform := newFakePlatform(t)
	// Without login_timeout the login would end after the minute, failed
	// for the empty answer instead, which the log tells apart.
	platform.answer = func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}
	var logs bytes.Buffer
	s, m := loginService(t, platform.srv.URL, "", &logs, hangLoginTimeout)
	start := time.Now()
	rec, a := postLogin(t, loginHandlerOf(t, s), `{"code":"081tE3ll2PRzqd4ZfSll2y2UHC4tE3lb"}`)
	// A timer never fires early: the answer cannot come sooner.
	if took := time.Since(start); took < hangLoginTimeout {
		t.Errorf("answered after %s; login_timeout is %s", took, hangLoginTimeout)
	}
	if a.Code != 50202 || rec.Code != 502 {
		t.Fatalf("HTTP %d code %d, want 502 / 50202: %s", rec.Code, a.Code, rec.Body.String())
	}
	if n := counterValue(t, m.Login("shop", "platform_error")); n != 1 {
		t.Errorf(`edge_logins_total{result="platform_error"} = %v, want 1`, n)
	}
	if !strings.Contains(logs.String(), context.DeadlineExceeded.Error()) {
		t.Errorf("the log does not say the platform timed out:\n%s", logs.String())
	}
}

func TestLoginUnreachablePlatformKeepsSecretOutOfLog(t *testing.T) {
	var logs bytes.Buffer
	s, _ := loginService(t, "http://127.0.0.1:1", "", &logs, answerLoginTimeout)
	_, a := postLogin(t, loginHandlerOf(t, s), `{"code":"abc"}`)
	if a.Code != 50202 {
		t.Fatalf("code %d", a.Code)
	}
	if !strings.Contains(logs.String(), "login failed") || strings.Contains(logs.String(), "app-secret-value") {
		t.Errorf("log:\n%s", logs.String())
	}
}

func TestLoginBadRequests(t *testing.T) {
	platform := newFakePlatform(t)
	platform.answer = jsonAnswer(500, "")
	s, _ := loginService(t, platform.srv.URL, "", io.Discard, answerLoginTimeout)
	h := loginHandlerOf(t, s)
	for _, body := range []string{``, `{}`, `{"code":""}`, `{"code":"a b"}`, `{"code":1}`, `[`, `{"code":"` + strings.Repeat("a", 129) + `"}`, strings.Repeat(" ", 5000) + `{"code":"x"}`} {
		// 400, not 40106: a client told to call wx.login again would send
		// the same malformed body forever.
		if rec, a := postLogin(t, h, body); a.Code != 40001 || rec.Code != 400 {
			t.Errorf("body %.30q: %s", body, rec.Body.String())
		}
	}
	if len(platform.queries) != 0 {
		t.Error("a malformed login reached the platform")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/edge/login", nil))
	if rec.Code != 404 {
		t.Errorf("GET answered %d", rec.Code)
	}
}

func TestLoginHook(t *testing.T) {
	platform := newFakePlatform(t)
	platform.answer = jsonAnswer(200, `{"openid":"o1","session_key":"`+platformSecretSessionKey+`","unionid":"u1"}`)
	var hookSaw map[string]string
	var calls int
	hookAnswer := jsonAnswer(200, `{"data":{"user_id":42,"token":"hook-cannot-override"}}`)
	var mu sync.Mutex
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		json.NewDecoder(r.Body).Decode(&hookSaw)
		answer := hookAnswer
		mu.Unlock()
		answer(w, r)
	}))
	defer hook.Close()
	s, _ := loginService(t, platform.srv.URL, hook.URL+"/users/login", io.Discard, answerLoginTimeout)
	h := loginHandlerOf(t, s)

	rec, a := postLogin(t, h, `{"code":"abc"}`)
	if a.Code != 0 || string(a.Data["user_id"]) != "42" || string(a.Data["token"]) == `"hook-cannot-override"` {
		t.Fatalf("answer %s", rec.Body.String())
	}
	want := map[string]string{"openid": "o1", "unionid": "u1", "session_key": platformSecretSessionKey, "appid": testAppID}
	for k, v := range want {
		if hookSaw[k] != v {
			t.Errorf("hook got %s=%q, want %q", k, hookSaw[k], v)
		}
	}
	if calls != 1 {
		t.Errorf("hook called %d times", calls)
	}
	// A hook that never answers is cut at login_timeout, by a service
	// whose timeout the test can wait out.
	short, _ := loginService(t, platform.srv.URL, hook.URL+"/users/login", io.Discard, hangLoginTimeout)
	for _, bad := range []struct {
		h      http.Handler
		answer func(http.ResponseWriter, *http.Request)
	}{
		{h, jsonAnswer(500, `{}`)},
		{h, jsonAnswer(200, `not json`)},
		{loginHandlerOf(t, short), func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
	} {
		mu.Lock()
		hookAnswer = bad.answer
		mu.Unlock()
		if rec, a := postLogin(t, bad.h, `{"code":"abc"}`); a.Code != 50201 || strings.Contains(rec.Body.String(), "token") {
			t.Errorf("failing hook: %s", rec.Body.String())
		}
	}
}

func TestLoginExposeOpenID(t *testing.T) {
	platform := newFakePlatform(t)
	platform.answer = jsonAnswer(200, `{"openid":"o1","session_key":"k"}`)
	cfg := testConfig()
	cfg.Apps[0].Code2SessionURL = platform.srv.URL
	cfg.Apps[0].ExposeOpenID = true
	s := newService(t, cfg, Options{})
	if _, a := postLogin(t, loginHandlerOf(t, s), `{"code":"abc"}`); string(a.Data["openid"]) != `"o1"` {
		t.Errorf("openid %s", a.Data["openid"])
	}
}
