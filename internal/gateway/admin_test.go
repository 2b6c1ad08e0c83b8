package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const adminRoutes = "[[routes]]\nname = \"r\"\npath = \"/\"\nrespond = { body = \"ok\" }\n"

// adminCall sends method path to the admin listener with the given Host
// and extra headers; it returns the status and the body.
func adminCall(t *testing.T, e *edgeUnderTest, method, host, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+e.addrs.Admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// wantJSONError checks an answer is the spec's error body with code.
func wantJSONError(t *testing.T, what string, status int, body string, code int) {
	t.Helper()
	var e struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	}
	if status != code/100 || json.Unmarshal([]byte(body), &e) != nil || e.Code != code || e.Msg == "" {
		t.Errorf("%s: %d %s, want %d with code %d", what, status, body, code/100, code)
	}
}

// TestAdminRefusesReboundHost: a page the operator visits can point its
// own name at 127.0.0.1 (DNS rebinding) and then call the admin listener
// as same-origin; the Host it sends is that name. Only IP literals,
// localhost and server.admin_hosts are answered.
func TestAdminRefusesReboundHost(t *testing.T) {
	e := startEdgeWith(t, `admin_hosts = ["edge-admin.internal"]`, "", adminRoutes)
	reloads := func() string { return e.metric(t, `edge_config_reloads_total{result="success"}`) }
	before := reloads()
	for _, c := range []struct{ method, path string }{
		{"POST", "/reload"}, {"GET", "/debug/pprof/"}, {"DELETE", "/bans/ip/192.0.2.1"}, {"GET", "/metrics"}, {"GET", "/readyz"},
	} {
		status, body := adminCall(t, e, c.method, "attacker.example:9180", c.path, nil)
		wantJSONError(t, c.method+" "+c.path+" for attacker.example", status, body, 40301)
	}
	if got := reloads(); got != before {
		t.Errorf("a refused POST /reload reloaded: %q -> %q", before, got)
	}
	for _, host := range []string{"127.0.0.1", "127.0.0.1:9180", "[::1]:9180", "localhost:9180", "LocalHost", "edge-admin.internal:9180", "EDGE-ADMIN.internal"} {
		if status, body := adminCall(t, e, "GET", host, "/debug/pprof/", nil); status != 200 {
			t.Errorf("Host %q: %d %s", host, status, body)
		}
	}
	if status, body := adminCall(t, e, "POST", "127.0.0.1", "/reload", nil); status != 200 || !strings.Contains(body, "reloaded") {
		t.Errorf("POST /reload for 127.0.0.1: %d %s", status, body)
	}
}

// TestAdminRefusesCrossOriginWrites: without rebinding, a page can still
// send a simple cross-origin POST to http://127.0.0.1:9180/reload; the
// browser marks it, and edge refuses it.
func TestAdminRefusesCrossOriginWrites(t *testing.T) {
	e := startEdge(t, adminRoutes)
	for _, h := range [][2]string{{"Sec-Fetch-Site", "cross-site"}, {"Origin", "https://attacker.example"}} {
		status, body := adminCall(t, e, "POST", "127.0.0.1", "/reload", map[string]string{h[0]: h[1]})
		wantJSONError(t, "POST /reload with "+h[0]+": "+h[1], status, body, 40301)
	}
	if status, body := adminCall(t, e, "POST", "127.0.0.1", "/reload", map[string]string{"Sec-Fetch-Site": "same-origin"}); status != 200 {
		t.Errorf("same-origin POST /reload: %d %s", status, body)
	}
}

// TestAdminToken: with server.admin_token, everything but the probes and
// the metrics scrape needs it as a bearer token.
func TestAdminToken(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	e := startEdgeWith(t, `admin_token = "`+token+`"`, "", adminRoutes)
	for _, c := range []struct{ method, path string }{{"POST", "/reload"}, {"GET", "/debug/pprof/"}, {"GET", "/bans"}, {"POST", "/sessions/revoke"}} {
		status, body := adminCall(t, e, c.method, "127.0.0.1", c.path, nil)
		wantJSONError(t, c.method+" "+c.path+" without the token", status, body, 40101)
		status, body = adminCall(t, e, c.method, "127.0.0.1", c.path, map[string]string{"Authorization": "Bearer " + token + "x"})
		wantJSONError(t, c.method+" "+c.path+" with a wrong token", status, body, 40101)
	}
	if status, body := adminCall(t, e, "POST", "127.0.0.1", "/reload", map[string]string{"Authorization": "Bearer " + token}); status != 200 {
		t.Errorf("POST /reload with the token: %d %s", status, body)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if status, _ := adminCall(t, e, "GET", "127.0.0.1", path, nil); status != 200 {
			t.Errorf("GET %s without the token: %d", path, status)
		}
	}

	// A new token applies on reload; the old one is refused from then on.
	const next = "fedcba9876543210fedcba9876543210"
	state := filepath.Join(filepath.Dir(e.cfgPath), "state")
	if err := os.WriteFile(e.cfgPath, []byte(baseConfigWith(state, `admin_token = "`+next+`"`, "")+adminRoutes), 0o600); err != nil {
		t.Fatal(err)
	}
	if status, body := adminCall(t, e, "POST", "127.0.0.1", "/reload", map[string]string{"Authorization": "Bearer " + token}); status != 200 || !strings.Contains(body, "reloaded") {
		t.Fatalf("POST /reload with the new token in the file: %d %s", status, body)
	}
	status, body := adminCall(t, e, "GET", "127.0.0.1", "/bans", map[string]string{"Authorization": "Bearer " + token})
	wantJSONError(t, "the old token after the reload", status, body, 40101)
	if status, body := adminCall(t, e, "GET", "127.0.0.1", "/bans", map[string]string{"Authorization": "Bearer " + next}); status != 200 {
		t.Errorf("the new token after the reload: %d %s", status, body)
	}
	if log := e.stderr.String(); strings.Contains(log, token) || strings.Contains(log, next) {
		t.Error("an admin token reached the log")
	}
}

// TestRunLogsDangerousSettings: what edge validate prints as a warning,
// edge run logs at start.
func TestRunLogsDangerousSettings(t *testing.T) {
	e := startEdgeWith(t, `trusted_proxies = ["0.0.0.0/0"]`, "", adminRoutes)
	if log := e.stderr.String(); !strings.Contains(log, "dangerous setting") || !strings.Contains(log, "server.trusted_proxies[0]: 0.0.0.0/0 trusts every peer") {
		t.Errorf("no warning logged:\n%s", log)
	}
}
