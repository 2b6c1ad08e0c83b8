package identity

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
	"edge/internal/reqctx"
	"edge/internal/testpeer"
)

const (
	testAppID   = "wx0123456789abcdef"
	testSecret1 = "first-session-secret-0123456789-abcdef"
	testSecret2 = "second-session-secret-0123456789-abcdef"
)

func testConfig() *config.Config {
	cfg := config.Defaults()
	cfg.Apps = []config.App{{
		Name: "shop", Platform: config.PlatformWechat, AppID: testAppID, Secret: "app-secret-value",
		Code2SessionURL: "http://127.0.0.1:1/sns/jscode2session", LoginPath: "/edge/login",
		LoginTimeout: config.Duration(time.Second),
	}}
	cfg.Sessions.Secrets = []config.Secret{testSecret1}
	return cfg
}

func newService(t testing.TB, cfg *config.Config, opts Options) *Service {
	t.Helper()
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testRoute(auth string) *config.Route {
	mb := config.ByteSize(1 << 20)
	return &config.Route{Name: "api", Path: "/", MaxBody: &mb, RouteAuth: config.RouteAuth{Auth: auth}}
}

// seen is what the handler after the policy received.
type seen struct {
	called bool
	header http.Header
	body   string
	info   reqctx.Info
}

// serveThrough runs req through the route's policy inside a reqctx, the
// way the gateway does, and returns the answer and what next saw.
func serveThrough(t testing.TB, s *Service, rt *config.Route, req *http.Request, peerTrusted bool) (*httptest.ResponseRecorder, *seen) {
	t.Helper()
	p, err := s.Policy(rt)
	if err != nil {
		t.Fatal(err)
	}
	got := &seen{}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.called = true
		got.header = r.Header.Clone()
		b, _ := io.ReadAll(r.Body)
		got.body = string(b)
		got.info = *reqctx.FromRequest(r)
		w.WriteHeader(http.StatusNoContent)
	})
	info := reqctx.New(time.Now())
	info.RequestID = "req-1"
	info.PeerTrusted = peerTrusted
	req = req.WithContext(reqctx.With(req.Context(), info))
	rec := httptest.NewRecorder()
	checked(p, next).ServeHTTP(rec, req)
	return rec, got
}

// checked serves next after p, the way the gateway runs a route's policy.
func checked(p *Policy, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.Check(w, r, reqctx.FromRequest(r)) {
			next.ServeHTTP(w, r)
		}
	})
}

// errorCode reads the "code" of an apierror body.
func errorCode(t testing.TB, rec *httptest.ResponseRecorder) int {
	t.Helper()
	var body struct {
		Code      int    `json:"code"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("answer %d is not the JSON error body: %q", rec.Code, rec.Body.String())
	}
	if body.Code/100 != rec.Code {
		t.Errorf("status %d does not match code %d", rec.Code, body.Code)
	}
	return body.Code
}

type sigVector struct {
	Method       string `json:"method"`
	Path         string `json:"path"`
	Query        string `json:"query"`
	Timestamp    int64  `json:"timestamp"`
	Nonce        string `json:"nonce"`
	BodyB64      string `json:"body_b64"`
	Unsigned     bool   `json:"unsigned_payload"`
	StringToSign string `json:"string_to_sign"`
	Signature    string `json:"signature"`
	Reason       string `json:"reason"`
	Code         int    `json:"code"`
}

type sigVectors struct {
	SignKey     string      `json:"sign_key"`
	Now         int64       `json:"now"`
	SkewSeconds int         `json:"skew_seconds"`
	Valid       []sigVector `json:"valid"`
	Invalid     []sigVector `json:"invalid"`
}

func loadVectors(t testing.TB) sigVectors {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testpeer.RepoRoot(t), "testdata", "vectors", "edge-signature.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v sigVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// sessionWithKey seals a session whose sign_key is the given string.
func sessionWithKey(t testing.TB, s *Sealer, signKey string) (string, Session) {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(signKey)
	if err != nil || len(raw) != signKeyLen {
		t.Fatalf("sign_key %q is not 32 bytes of base64url", signKey)
	}
	_, sess, err := s.Issue(testAppID, "o-user-openid-0000000000001", "u-union-1")
	if err != nil {
		t.Fatal(err)
	}
	copy(sess.signKey[:], raw)
	return s.seal(&sess), sess
}

func (v sigVector) request(t testing.TB, token string) *http.Request {
	t.Helper()
	body, err := base64.StdEncoding.DecodeString(v.BodyB64)
	if err != nil {
		t.Fatal(err)
	}
	target := v.Path
	if v.Query != "" {
		target += "?" + v.Query
	}
	req := httptest.NewRequest(v.Method, target, strings.NewReader(string(body)))
	if len(body) == 0 {
		req.Body = http.NoBody
		req.ContentLength = 0
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Edge-Timestamp", strconv.FormatInt(v.Timestamp, 10))
	req.Header.Set("X-Edge-Nonce", v.Nonce)
	req.Header.Set("X-Edge-Signature", v.Signature)
	if v.Unsigned {
		req.Header.Set("X-Edge-Body", "UNSIGNED-PAYLOAD")
	}
	return req
}
