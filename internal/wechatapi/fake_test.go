package wechatapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

const (
	testAppID  = "wx00000000000000a1"
	testSecret = "app-secret-never-printed"
)

// fakeWechat is WeChat's server API as far as edge sees it: stable_token
// with WeChat's normal and force_refresh modes, and server APIs that check
// the token (42001 once it expired, 40001 when unknown or revoked).
type fakeWechat struct {
	now func() time.Time
	srv *httptest.Server

	mu          sync.Mutex
	cur, prev   *issued
	seq         int
	stableCalls int
	forceCalls  int
	apiCalls    map[string]int
	bodies      map[string]string // path → sha256 of the last body
	answers     map[string]string // path → answer when the token is good
	busy        bool              // stable_token answers -1
}

type issued struct {
	value   string
	expires time.Time
	revoked bool
}

const fakeLifetime = 7200 * time.Second

func newFakeWechat(t *testing.T, now func() time.Time) *fakeWechat {
	f := &fakeWechat{now: now, apiCalls: map[string]int{}, bodies: map[string]string{}, answers: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeWechat) URL() string { return f.srv.URL }

func (f *fakeWechat) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	if r.URL.Path == "/cgi-bin/stable_token" {
		f.stableToken(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	sum := sha256.Sum256(body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apiCalls[r.URL.Path]++
	f.bodies[r.URL.Path] = hex.EncodeToString(sum[:])
	tok, now := r.URL.Query().Get("access_token"), f.now()
	var known *issued
	for _, i := range []*issued{f.cur, f.prev} {
		if i != nil && i.value == tok {
			known = i
		}
	}
	switch {
	case known == nil || known.revoked:
		fmt.Fprint(w, `{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: 1"}`)
	case !now.Before(known.expires):
		fmt.Fprint(w, `{"errcode":42001,"errmsg":"access_token expired rid: 2"}`)
	case f.answers[r.URL.Path] != "":
		fmt.Fprint(w, f.answers[r.URL.Path])
	default:
		fmt.Fprintf(w, `{"errcode":0,"errmsg":"ok","method":%q,"query_a":%q,"len":%d}`, r.Method, r.URL.Query().Get("a"), len(body))
	}
}

func (f *fakeWechat) stableToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil || req.GrantType != "client_credential" {
		fmt.Fprint(w, `{"errcode":40002,"errmsg":"invalid grant_type"}`)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stableCalls++
	if f.busy {
		fmt.Fprint(w, `{"errcode":-1,"errmsg":"system error"}`)
		return
	}
	if req.AppID != testAppID || req.Secret != testSecret {
		fmt.Fprint(w, `{"errcode":40125,"errmsg":"invalid appsecret"}`)
		return
	}
	now := f.now()
	switch {
	case req.ForceRefresh:
		f.forceCalls++
		f.prev = nil
		f.issue(now)
	case f.cur == nil || !now.Before(f.cur.expires.Add(-5*time.Minute)):
		// WeChat's renewal window: a new token, the old one valid to its end.
		f.prev = f.cur
		f.issue(now)
	}
	fmt.Fprintf(w, `{"access_token":%q,"expires_in":%d}`, f.cur.value, int(f.cur.expires.Sub(now)/time.Second))
}

func (f *fakeWechat) issue(now time.Time) {
	f.seq++
	f.cur = &issued{value: fmt.Sprintf("TOKEN-%04d-%d", f.seq, now.UnixNano()%1e6), expires: now.Add(fakeLifetime)}
}

// Expire makes the tokens issued so far expired, as WeChat's clock sees them.
func (f *fakeWechat) Expire() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range []*issued{f.cur, f.prev} {
		if i != nil {
			i.expires = f.now().Add(-time.Second)
		}
	}
}

// Revoke makes the current token refused (40001) while stable_token still
// hands it out: only force_refresh replaces it.
func (f *fakeWechat) Revoke() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur.revoked = true
}

// Busy makes stable_token answer -1 (system busy) or work again.
func (f *fakeWechat) Busy(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.busy = on
}

// Answer sets what path answers when the token is good.
func (f *fakeWechat) Answer(path, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[path] = body
}

func (f *fakeWechat) Counts() (stable, force int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stableCalls, f.forceCalls
}

func (f *fakeWechat) Calls(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.apiCalls[path]
}

func (f *fakeWechat) BodySum(path string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[path]
}

func (f *fakeWechat) Current() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur == nil {
		return "(none issued)"
	}
	return f.cur.value
}
