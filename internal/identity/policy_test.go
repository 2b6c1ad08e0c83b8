package identity

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"edge/internal/apierror"
	"edge/internal/config"
	"edge/internal/metrics"
	"edge/internal/reqctx"
	"edge/internal/testpeer"
)

func TestStripClientIdentity(t *testing.T) {
	for _, tc := range []struct {
		name  string
		strip bool
	}{
		{"X-WX-OPENID", true},
		{"x-wx-openid", true},
		{"X_WX_OPENID", true},
		{"x_wx_Openid", true},
		{"X-Wx_Unionid", true},
		{"X-WX-SOURCE", true},
		{"X-Edge-Foo", true},
		{"x_edge_signature", true},
		{"X-WX-", true},
		{"X-WX", false},
		{"X-WXOPENID", false},
		{"X-Wechat-Pay", false},
		{"X-Edgey", false},
		{"Authorization", false},
		{"Content-Type", false},
	} {
		h := http.Header{tc.name: {"evil"}, "Accept": {"*/*"}}
		StripClientIdentity(h)
		if _, kept := h[tc.name]; kept == tc.strip {
			t.Errorf("%s: kept %v", tc.name, kept)
		}
		if h.Get("Accept") != "*/*" {
			t.Errorf("%s: Accept was removed", tc.name)
		}
	}
}

// TestForgedIdentityNeverReachesUpstream sends identity headers in several
// spellings over a real connection, through the policy and a reverse
// proxy, to a real upstream, on every auth policy.
func TestForgedIdentityNeverReachesUpstream(t *testing.T) {
	var mu sync.Mutex
	var upstreamSaw http.Header
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upstreamSaw = r.Header.Clone()
		mu.Unlock()
	}))
	defer upstream.Close()
	target, _ := url.Parse(upstream.URL)
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}

	now := testpeer.NewClock(time.Now())
	s := newService(t, testConfig(), Options{Now: now.Now})
	token, _, _ := s.Sealer().Issue(testAppID, "real-openid", "")
	for _, auth := range []string{"none", "token"} {
		t.Run(auth, func(t *testing.T) {
			p, err := s.Policy(testRoute(auth))
			if err != nil {
				t.Fatal(err)
			}
			front := httptest.NewServer(withInfo(checked(p, proxy)))
			defer front.Close()
			conn, err := net.Dial("tcp", front.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
				"X-WX-OPENID: evil1\r\nx-wx-openid: evil2\r\nX_WX_OPENID: evil3\r\nx_wx_Openid: evil4\r\n"+
				"X-WX-APPID: evil5\r\nX-Edge-Foo: evil6\r\nConnection: close\r\n\r\n", token)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			mu.Lock()
			defer mu.Unlock()
			for k, v := range upstreamSaw {
				for _, x := range v {
					if strings.HasPrefix(x, "evil") {
						t.Errorf("upstream received %s: %s", k, x)
					}
				}
			}
			wantOpenID := ""
			if auth == "token" {
				wantOpenID = "real-openid"
			}
			if got := upstreamSaw.Get("X-WX-OPENID"); got != wantOpenID {
				t.Errorf("X-WX-OPENID %q, want %q", got, wantOpenID)
			}
			if _, fwd := upstreamSaw["Authorization"]; fwd == (auth == "token") {
				t.Errorf("Authorization forwarded: %v", fwd)
			}
		})
	}
}

func withInfo(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := reqctx.New(time.Now())
		defer reqctx.Release(info)
		h.ServeHTTP(w, r.WithContext(reqctx.With(r.Context(), info)))
	})
}

func TestTokenPolicy(t *testing.T) {
	now := testpeer.NewClock(time.Unix(1772538184, 0))
	cfg := testConfig()
	cfg.Apps = append(cfg.Apps, config.App{Name: "other", AppID: "wxother", LoginPath: "/o/login"})
	reg := prometheus.NewRegistry()
	m, err := metrics.NewIdentity(reg)
	if err != nil {
		t.Fatal(err)
	}
	var rejected []apierror.Code
	s := newService(t, cfg, Options{Now: now.Now, Metrics: m, OnReject: func(_ *http.Request, c apierror.Code) { rejected = append(rejected, c) }})
	good, _, _ := s.Sealer().Issue(testAppID, "openid-1", "union-1")
	otherApp, _, _ := s.Sealer().Issue("wxother", "openid-2", "")
	now.Advance(-3 * time.Hour)
	expired, _, _ := s.Sealer().Issue(testAppID, "openid-1", "")
	now.Advance(3 * time.Hour)

	for _, tc := range []struct {
		name    string
		auth    []string
		app     string
		forward bool
		code    int
	}{
		{"good", []string{"Bearer " + good}, "shop", false, 0},
		{"lowercase scheme", []string{"bearer " + good}, "shop", false, 0},
		{"forward authorization", []string{"Bearer " + good}, "shop", true, 0},
		{"missing", nil, "shop", false, 40101},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "shop", false, 40101},
		{"empty bearer", []string{"Bearer "}, "shop", false, 40101},
		{"two headers", []string{"Bearer " + good, "Bearer " + good}, "shop", false, 40101},
		{"forged", []string{"Bearer " + good[:len(good)-2] + "AA"}, "shop", false, 40101},
		{"expired", []string{"Bearer " + expired}, "shop", false, 40102},
		{"another app's token", []string{"Bearer " + otherApp}, "shop", false, 40101},
		{"any app", []string{"Bearer " + otherApp}, "", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := testRoute("token")
			rt.App, rt.ForwardAuthorization = tc.app, tc.forward
			req := httptest.NewRequest("GET", "/api", nil)
			req.Header["Authorization"] = tc.auth
			rec, got := serveThrough(t, s, rt, req, false)
			if tc.code == 0 {
				if !got.called {
					t.Fatalf("refused: %s", rec.Body.String())
				}
				if _, fwd := got.header["Authorization"]; fwd != tc.forward {
					t.Errorf("Authorization forwarded %v", fwd)
				}
				return
			}
			if got.called {
				t.Fatal("reached the upstream")
			}
			if code := errorCode(t, rec); code != tc.code {
				t.Errorf("code %d, want %d", code, tc.code)
			}
		})
	}
	if len(rejected) != 7 {
		t.Errorf("OnReject saw %v", rejected)
	}
	if n := counterValue(t, m.Rejected("api", 40101)); n != 6 {
		t.Errorf("edge_auth_rejections_total{code=40101} = %v, want 6", n)
	}
}

func TestSignedBodyLimits(t *testing.T) {
	vec := loadVectors(t)
	now := testpeer.NewClock(time.Unix(vec.Now, 0))
	s := newService(t, testConfig(), Options{Now: now.Now})
	token, _ := sessionWithKey(t, s.Sealer(), vec.SignKey)
	v := vec.Valid[2] // a POST with a body
	for _, tc := range []struct {
		name    string
		limit   config.ByteSize
		chunked bool
		code    int
	}{
		{"fits", 1 << 10, false, 0},
		{"declared too large", 10, false, 41301},
		{"chunked too large", 10, true, 41301},
		{"chunked fits", 1 << 10, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := testRoute("signed")
			rt.MaxBody = &tc.limit
			req := v.request(t, token)
			if tc.chunked {
				req.ContentLength = -1
			}
			rec, got := serveThrough(t, s, rt, req, false)
			if tc.code == 0 {
				if !got.called {
					t.Fatalf("refused: %s", rec.Body.String())
				}
				return
			}
			if got.called || errorCode(t, rec) != tc.code {
				t.Fatalf("answered %d %s", rec.Code, rec.Body.String())
			}
		})
		// Each attempt used the vector's nonce; start clean.
		s = newService(t, testConfig(), Options{Now: now.Now})
		token, _ = sessionWithKey(t, s.Sealer(), vec.SignKey)
	}
}

func TestTrustedHeaderPolicy(t *testing.T) {
	s := newService(t, testConfig(), Options{})
	for _, tc := range []struct {
		name    string
		trusted bool
		headers map[string]string
		code    int
		want    identity
	}{
		{"trusted", true, map[string]string{"X-WX-OPENID": "o1", "X-WX-APPID": "wxcloud", "X-WX-UNIONID": "u1"}, 0, identity{"o1", "u1", "wxcloud"}},
		{"trusted, route app", true, map[string]string{"X-WX-OPENID": "o1"}, 0, identity{"o1", "", testAppID}},
		{"untrusted peer", false, map[string]string{"X-WX-OPENID": "o1"}, 40101, identity{}},
		{"no openid", true, nil, 40101, identity{}},
		{"underscore spelling is not believed", true, map[string]string{"X_WX_OPENID": "o1"}, 40101, identity{}},
		{"control character", true, map[string]string{"X-WX-OPENID": "o 1"}, 40101, identity{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := testRoute("trusted_header")
			rt.App = "shop"
			req := httptest.NewRequest("GET", "/api", nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			req.Header["X_wx_source"] = []string{"evil"}
			rec, got := serveThrough(t, s, rt, req, tc.trusted)
			if tc.code != 0 {
				if got.called || errorCode(t, rec) != tc.code {
					t.Fatalf("answered %d %s", rec.Code, rec.Body.String())
				}
				return
			}
			if !got.called {
				t.Fatalf("refused: %s", rec.Body.String())
			}
			h := got.header
			if gotID := (identity{h.Get("X-WX-OPENID"), h.Get("X-WX-UNIONID"), h.Get("X-WX-APPID")}); gotID != tc.want {
				t.Errorf("upstream identity %+v, want %+v", gotID, tc.want)
			}
			if _, ok := h["X_wx_source"]; ok {
				t.Error("X_wx_source reached the upstream")
			}
		})
	}
}

func TestRefererCheck(t *testing.T) {
	s := newService(t, testConfig(), Options{})
	ref := func(appid, version string) string {
		return "https://servicewechat.com/" + appid + "/" + version + "/page-frame.html"
	}
	for _, tc := range []struct {
		name        string
		referer     []string
		releaseOnly bool
		ok          bool
	}{
		{"release", []string{ref(testAppID, "12")}, true, true},
		{"devtools", []string{ref(testAppID, "devtools")}, false, true},
		{"devtools, release only", []string{ref(testAppID, "devtools")}, true, false},
		{"trial, release only", []string{ref(testAppID, "0")}, true, false},
		{"unknown app", []string{ref("wxevil", "12")}, false, false},
		{"missing", nil, false, false},
		{"other page", []string{"https://servicewechat.com/" + testAppID + "/12/other.html"}, false, false},
		{"http", []string{"http://servicewechat.com/" + testAppID + "/12/page-frame.html"}, false, false},
		{"look-alike host", []string{"https://servicewechat.com.evil/" + testAppID + "/12/page-frame.html"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := testRoute("none")
			rt.RefererCheck, rt.ReleaseOnly = true, tc.releaseOnly
			req := httptest.NewRequest("GET", "/api", nil)
			req.Header["Referer"] = tc.referer
			rec, got := serveThrough(t, s, rt, req, false)
			if got.called != tc.ok {
				t.Fatalf("passed %v, want %v", got.called, tc.ok)
			}
			if !tc.ok && errorCode(t, rec) != int(apierror.Forbidden) {
				t.Errorf("answer %s", rec.Body.String())
			}
		})
	}
}

func TestPolicyRefusesBadRoutes(t *testing.T) {
	s := newService(t, testConfig(), Options{})
	noSessions := newService(t, &config.Config{}, Options{})
	for _, tc := range []struct {
		name string
		s    *Service
		rt   *config.Route
	}{
		{"unknown app", s, &config.Route{Name: "r", RouteAuth: config.RouteAuth{Auth: "token", App: "nope"}}},
		{"unknown auth", s, &config.Route{Name: "r", RouteAuth: config.RouteAuth{Auth: "magic"}}},
		{"jwt without table", s, &config.Route{Name: "r", RouteAuth: config.RouteAuth{Auth: "jwt"}}},
		{"token without secrets", noSessions, &config.Route{Name: "r", RouteAuth: config.RouteAuth{Auth: "signed"}}},
	} {
		if _, err := tc.s.Policy(tc.rt); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestRejectionAttribution: a request refused after its token proved
// authentic is the token holder's (bans count it against the openid); one
// refused on the token itself belongs to nobody known.
func TestRejectionAttribution(t *testing.T) {
	vec := loadVectors(t)
	now := testpeer.NewClock(time.Unix(vec.Now, 0))
	var gotOpenID []string
	s := newService(t, testConfig(), Options{Now: now.Now, OnReject: func(r *http.Request, _ apierror.Code) {
		gotOpenID = append(gotOpenID, reqctx.FromRequest(r).OpenID)
	}})
	token, sess := sessionWithKey(t, s.Sealer(), vec.SignKey)
	v := vec.Valid[0]
	for _, tc := range []struct {
		name       string
		token      string
		signature  string
		wantOpenID string
	}{
		{"bad signature", token, strings.Repeat("0", 64), sess.OpenID},
		{"forged token", token[:len(token)-2] + "AA", v.Signature, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotOpenID = nil
			req := v.request(t, tc.token)
			req.Header.Set("X-Edge-Signature", tc.signature)
			rec, got := serveThrough(t, s, testRoute("signed"), req, false)
			if got.called || rec.Code != http.StatusUnauthorized {
				t.Fatalf("answered %d %s", rec.Code, rec.Body.String())
			}
			if len(gotOpenID) != 1 || gotOpenID[0] != tc.wantOpenID {
				t.Errorf("OnReject saw openids %q, want [%q]", gotOpenID, tc.wantOpenID)
			}
		})
	}
}
