package identity_test

// Alipay login through the real edge binary, against a fake Alipay open API
// gateway that checks edge's RSA2 request signature with the app's public
// key and signs its answers with a key pair of its own, as Alipay does.

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/internal/testpeer"
)

const (
	alipayAppID = "2021000000000001"
	// alipayAccessToken is what the fake gateway hands out; edge must
	// never log it nor pass it on.
	alipayAccessToken = "authusrB_access_token_never_in_a_log"
)

func alipayOpenID(user string) string {
	return "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo_" + user
}
func alipayUserID(user string) string { return "2088" + fmt.Sprintf("%012d", len(user)) }

// fakeAlipay is Alipay's open API gateway for alipay.system.oauth.token.
// Codes name what it answers: "invalid" and "expired" the code errors,
// "unsigned-invalid" the same without a sign, "busy" a 20000 outage,
// "bad-app" an isv.invalid-app-id, "forged" an answer signed with another
// key, "tampered" a signed answer altered afterwards, "http502" a gateway
// error, "userid.NAME" an app still on user_id; any other "NAME.n" logs
// NAME in with open_id and user_id.
type fakeAlipay struct {
	srv     *httptest.Server
	appKey  *rsa.PublicKey  // checks edge's requests
	signer  *rsa.PrivateKey // Alipay's own key
	forger  *rsa.PrivateKey // anyone else's
	mu      sync.Mutex
	refused []string // why requests were refused, for the test to report
	codes   []string
}

func startFakeAlipay(t *testing.T, appKey *rsa.PublicKey, signer *rsa.PrivateKey) *fakeAlipay {
	t.Helper()
	f := &fakeAlipay{appKey: appKey, signer: signer, forger: newRSAKey(t)}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAlipay) url() string { return f.srv.URL + "/gateway.do" }

func (f *fakeAlipay) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost || r.URL.Path != "/gateway.do" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if why := f.check(r); why != "" {
		f.mu.Lock()
		f.refused = append(f.refused, why)
		f.mu.Unlock()
		// What Alipay answers a request it cannot trust.
		f.write(w, "error_response", `{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature","sub_msg":"验签出错"}`, f.signer)
		return
	}
	code := r.PostForm.Get("code")
	f.mu.Lock()
	f.codes = append(f.codes, code)
	f.mu.Unlock()
	user, _, _ := strings.Cut(code, ".")
	switch code {
	case "invalid":
		f.write(w, "error_response", `{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.code-invalid","sub_msg":"授权码code无效"}`, f.signer)
	case "expired":
		f.write(w, "error_response", `{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.code-expired","sub_msg":"授权码已过期"}`, f.signer)
	case "unsigned-invalid":
		fmt.Fprint(w, `{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.code-invalid","sub_msg":"授权码code无效"}}`)
	case "busy":
		f.write(w, "error_response", `{"code":"20000","msg":"Service Currently Unavailable","sub_code":"aop.unknow-error","sub_msg":"系统繁忙"}`, f.signer)
	case "bad-app":
		f.write(w, "error_response", `{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id","sub_msg":"无效的AppID参数"}`, f.signer)
	case "forged":
		f.write(w, "alipay_system_oauth_token_response", f.token("mallory"), f.forger)
	case "tampered":
		rec := httptest.NewRecorder()
		f.write(rec, "alipay_system_oauth_token_response", f.token("alice"), f.signer)
		fmt.Fprint(w, strings.Replace(rec.Body.String(), alipayOpenID("alice"), alipayOpenID("mallory"), 1))
	case "http502":
		http.Error(w, "bad gateway", http.StatusBadGateway)
	default:
		if user == "userid" {
			_, name, _ := strings.Cut(code, ".")
			f.write(w, "alipay_system_oauth_token_response",
				fmt.Sprintf(`{"user_id":%q,"access_token":%q,"expires_in":1296000,"re_expires_in":2592000,"refresh_token":"r"}`, alipayUserID(name), alipayAccessToken), f.signer)
			return
		}
		f.write(w, "alipay_system_oauth_token_response", f.token(user), f.signer)
	}
}

// token is a success object as Alipay writes it: compact, with escaped
// slashes and non-ASCII text left as is, which a re-encoding would change.
func (f *fakeAlipay) token(user string) string {
	return fmt.Sprintf(`{"access_token":%q,"alipay_user_id":"20880046068922837977665670016678","auth_start":"2026-11-30 10:00:00","expires_in":1296000,"open_id":%q,"re_expires_in":2592000,"refresh_token":"authusrB_refresh","user_id":%q,"note":"http:\/\/例"}`,
		alipayAccessToken, alipayOpenID(user), alipayUserID(user))
}

// write sends {"<name>": obj, "sign": ...}, the sign over obj's exact text.
func (f *fakeAlipay) write(w http.ResponseWriter, name, obj string, key *rsa.PrivateKey) {
	sum := sha256.Sum256([]byte(obj))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "text/html;charset=utf-8") // what the gateway says
	fmt.Fprintf(w, `{%q:%s,"sign":%q}`, name, obj, base64.StdEncoding.EncodeToString(sig))
}

// check returns why Alipay would refuse the request, or "": the common
// parameters, a timestamp in Beijing time, and the RSA2 signature over the
// sorted parameters with the app's public key.
func (f *fakeAlipay) check(r *http.Request) string {
	form := r.PostForm
	for k, v := range map[string]string{
		"app_id": alipayAppID, "method": "alipay.system.oauth.token", "format": "JSON", "charset": "utf-8",
		"sign_type": "RSA2", "version": "1.0", "grant_type": "authorization_code",
	} {
		if got := form.Get(k); got != v {
			return fmt.Sprintf("%s = %q, want %q", k, got, v)
		}
	}
	beijing := time.FixedZone("UTC+8", 8*3600)
	ts, err := time.ParseInLocation("2006-01-02 15:04:05", form.Get("timestamp"), beijing)
	if err != nil || time.Since(ts).Abs() > 2*time.Minute {
		return fmt.Sprintf("timestamp %q is not now in Beijing time", form.Get("timestamp"))
	}
	var pairs []string
	for k := range form {
		if k != "sign" && form.Get(k) != "" {
			pairs = append(pairs, k+"="+form.Get(k))
		}
	}
	sort.Strings(pairs)
	sig, err := base64.StdEncoding.DecodeString(form.Get("sign"))
	if err != nil {
		return "sign is not base64"
	}
	sum := sha256.Sum256([]byte(strings.Join(pairs, "&")))
	if rsa.VerifyPKCS1v15(f.appKey, crypto.SHA256, sum[:], sig) != nil {
		return "sign does not verify with the app's public key"
	}
	return ""
}

func (f *fakeAlipay) refusals() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.refused...)
}

func newRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// alipayEdgeConfig is one Alipay app logging in through gw at /edge/login,
// a second one whose gateway refuses connections at /edge/login-down,
// and the routes of edgeConfig's upstream: /tok/ token only, /open/ none.
func alipayEdgeConfig(t *testing.T, gw string, appKey, alipayKey *rsa.PrivateKey, up *upstream) (cfg, privatePEM string) {
	t.Helper()
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(appKey)
	if err != nil {
		t.Fatal(err)
	}
	privatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	pub, err := x509.MarshalPKIXPublicKey(&alipayKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	privPath, pubPath := filepath.Join(dir, "app_private_key.pem"), filepath.Join(dir, "alipay_public_key.txt")
	// The public key as the Alipay console shows it: bare base64.
	if os.WriteFile(privPath, []byte(privatePEM), 0o600) != nil || os.WriteFile(pubPath, []byte(base64.StdEncoding.EncodeToString(pub)), 0o600) != nil {
		t.Fatal("writing the keys")
	}
	return fmt.Sprintf(`
[[apps]]
name = "shop"
platform = "alipay"
appid = %[1]q
private_key = "file:%[2]s"
alipay_public_key = %[3]q
gateway_url = %[4]q
login_timeout = %[5]q

[[apps]]
name = "down"
platform = "alipay"
appid = "2021000000000002"
private_key = "file:%[2]s"
alipay_public_key = %[3]q
gateway_url = "http://%[6]s/gateway.do"
login_path = "/edge/login-down"

[sessions]
secrets = [%[7]q]

[[upstreams]]
name = "app"
targets = [%[8]q]
retries = 0

[[routes]]
name = "tok"
path = "/tok/"
upstream = "app"
auth = "token"
app = "shop"

[[routes]]
name = "open"
path = "/open/"
upstream = "app"
`, alipayAppID, privPath, pubPath, gw, e2eLoginTimeout.String(), testpeer.DeadAddr(t), e2eSessionSecret, up.addr()), privatePEM
}

func TestE2EAlipayLogin(t *testing.T) {
	t.Parallel()
	appKey, alipayKey := newRSAKey(t), newRSAKey(t)
	gw, up := startFakeAlipay(t, &appKey.PublicKey, alipayKey), startUpstream(t)
	cfg, privatePEM := alipayEdgeConfig(t, gw.url(), appKey, alipayKey, up)
	e := testpeer.StartEdge(t, "", cfg)
	c := e.Client(t, false)

	loginAs := func(t *testing.T, path, body string) (int, apiAnswer, string) {
		t.Helper()
		req := newRequest(t, http.MethodPost, e.URL("127.0.0.1", path), []byte(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var raw json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
			t.Fatalf("login answer is not JSON: %v", err)
		}
		var a apiAnswer
		if err := json.Unmarshal(raw, &a); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, a, string(raw)
	}

	t.Run("success: token, then the identity headers upstream", func(t *testing.T) {
		for _, tc := range []struct{ code, openid string }{
			{"alice.1", alipayOpenID("alice")},  // open_id wins over user_id
			{"userid.bob", alipayUserID("bob")}, // an app still on user_id
		} {
			status, a, raw := loginAs(t, "/edge/login", `{"code":"`+tc.code+`"}`)
			if status != http.StatusOK || a.Code != 0 || a.Data.Token == "" || len(a.Data.SignKey) != 43 || a.Data.ExpiresIn <= 0 {
				t.Fatalf("login %s: HTTP %d %s (gateway refused: %q)", tc.code, status, raw, gw.refusals())
			}
			if strings.Contains(raw, alipayAccessToken) || strings.Contains(raw, tc.openid) {
				t.Errorf("the login answer carries the access token or the openid: %s", raw)
			}
			req := newRequest(t, http.MethodGet, e.URL("127.0.0.1", "/tok/orders"), nil)
			req.Header.Set("Authorization", "Bearer "+a.Data.Token)
			req.Header.Set("X-WX-OPENID", "forged-openid")
			status, got, ans := call(t, c, req)
			if status != http.StatusOK || got.OpenID != tc.openid || got.AppID != alipayAppID || got.UnionID != "" || len(got.Forged) > 0 || got.Authorization {
				t.Errorf("%s: HTTP %d %+v; upstream got openid %q appid %q unionid %q, stray %q, Authorization %v",
					tc.code, status, ans, got.OpenID, got.AppID, got.UnionID, got.Forged, got.Authorization)
			}
		}
	})

	t.Run("failures", func(t *testing.T) {
		for _, tc := range []struct {
			name, path, body string
			status, code     int
		}{
			{"invalid code", "/edge/login", `{"code":"invalid"}`, 401, 40106},
			{"expired code", "/edge/login", `{"code":"expired"}`, 401, 40106},
			{"unsigned code error", "/edge/login", `{"code":"unsigned-invalid"}`, 401, 40106},
			{"answer signed by another key", "/edge/login", `{"code":"forged"}`, 502, 50202},
			{"answer altered after signing", "/edge/login", `{"code":"tampered"}`, 502, 50202},
			{"aop outage", "/edge/login", `{"code":"busy"}`, 502, 50202},
			{"app misconfigured", "/edge/login", `{"code":"bad-app"}`, 502, 50202},
			{"gateway HTTP 502", "/edge/login", `{"code":"http502"}`, 502, 50202},
			{"gateway down", "/edge/login-down", `{"code":"carol.1"}`, 502, 50202},
			{"body not JSON", "/edge/login", `code=abc`, 400, 40001},
			{"body without code", "/edge/login", `{"auth_code":"abc"}`, 400, 40001},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, a, raw := loginAs(t, tc.path, tc.body)
				if status != tc.status || a.Code != tc.code || a.RequestID == "" || a.Data.Token != "" {
					t.Errorf("HTTP %d %s, want %d with code %d, a request id and no token", status, raw, tc.status, tc.code)
				}
				if tc.code == 40106 && !strings.Contains(a.Msg, "my.getAuthCode") {
					t.Errorf("msg %q does not tell the client what to call again", a.Msg)
				}
			})
		}
	})

	if r := gw.refusals(); len(r) > 0 {
		t.Errorf("the gateway refused edge's requests: %q", r)
	}
	// Failed logins never reach the upstream: only the two /tok/ calls did.
	if n := len(up.requests()); n != 2 {
		t.Errorf("the upstream received %d requests, want 2", n)
	}
	metrics := e.Metrics(t, "edge_logins_total")
	for _, line := range []string{
		`edge_logins_total{app="shop",result="ok"} 2`,
		`edge_logins_total{app="shop",result="code_rejected"} 3`,
		`edge_logins_total{app="shop",result="platform_error"} 5`,
		`edge_logins_total{app="down",result="platform_error"} 1`,
		`edge_logins_total{app="shop",result="bad_request"} 2`,
	} {
		if !strings.Contains(metrics, line) {
			t.Errorf("metrics lack %s:\n%s", line, metrics)
		}
	}
	// Neither the codes, the access token nor the private key reach a log.
	der, _ := x509.MarshalPKCS8PrivateKey(appKey)
	assertNoSecretsLogged(t, e, alipayAccessToken, "alice.1", "userid.bob", "unsigned-invalid",
		strings.Split(privatePEM, "\n")[1], base64.StdEncoding.EncodeToString(der)[64:128])
}
