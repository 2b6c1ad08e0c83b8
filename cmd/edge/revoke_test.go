package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"edge/internal/identity"
	"edge/internal/testpeer"
)

// TestRevokeSessionThroughAdmin: with [cluster] redis, an operator logs a
// user out with POST /sessions/revoke; the token then gets 40102 everywhere.
func TestRevokeSessionThroughAdmin(t *testing.T) {
	rdb := testpeer.Redis(t)
	secret := strings.Repeat("s", 40)
	t.Setenv("EDGE_TEST_APP_SECRET", "app-secret")
	t.Setenv("EDGE_TEST_SESSION_SECRET", secret)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("X-Wx-Openid"))
	})}
	go func() { _ = up.Serve(ln) }()
	defer up.Close()

	e := testpeer.StartEdge(t, "", fmt.Sprintf(`
[cluster]
redis = %q
[[apps]]
name = "shop"
appid = "wx0000000000000001"
secret = "${EDGE_TEST_APP_SECRET}"
[sessions]
secrets = ["${EDGE_TEST_SESSION_SECRET}"]
[[upstreams]]
name = "app"
targets = [%q]
[[routes]]
name = "api"
path = "/api/"
upstream = "app"
auth = "token"
`, rdb.URL(), ln.Addr().String()))

	sealer, err := identity.NewSealer([][]byte{[]byte(secret)}, time.Hour, nil, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := sealer.Issue("wx0000000000000001", "o-user-1", "")
	if err != nil {
		t.Fatal(err)
	}
	client := e.Client(t, false)
	call := func() (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.URL("localhost", "/api/me"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := call(); code != 200 || body != "o-user-1" {
		t.Fatalf("before revocation: %d %q", code, body)
	}
	revoke := func(body string) (int, string) {
		resp, err := http.Post("http://"+e.Admin+"/sessions/revoke", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := revoke(`{"token":"` + base64.RawURLEncoding.EncodeToString([]byte("forged")) + `"}`); code != 400 {
		t.Fatalf("revoking a forged token: %d %q", code, body)
	}
	if code, body := revoke(`{"token":"` + token + `"}`); code != 200 || !strings.Contains(body, "revoked") {
		t.Fatalf("revoke: %d %q", code, body)
	}
	if code, body := call(); code != 401 || !strings.Contains(body, "40102") {
		t.Fatalf("after revocation: %d %q", code, body)
	}
}
