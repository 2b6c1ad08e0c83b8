package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"edge/internal/admin"
	"edge/internal/process"
	"edge/internal/testpeer"
)

const testAdminToken = "0123456789abcdef0123"

// fakeAdmin is an admin listener that checks the token and answers a
// deploy with status and body.
func fakeAdmin(t *testing.T, status int, body string) (configPath string, calls *[]string) {
	t.Helper()
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testAdminToken {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errcode":40101}`)
			return
		}
		seen = append(seen, r.Method+" "+r.URL.Path)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	path := adminConfig(t, srv.URL)
	return path, &seen
}

// adminConfig writes a config whose admin listener is the test server at
// url, guarded by testAdminToken.
func adminConfig(t *testing.T, url string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edge.toml")
	cfg := fmt.Sprintf("[server]\nlisten_admin = %q\nadmin_token = %q\n[[routes]]\nname = \"hi\"\npath = \"/\"\nrespond = { body = \"hi\" }\n",
		strings.TrimPrefix(url, "http://"), testAdminToken)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDeployCommand: edge deploy finds the admin listener and its token in
// the config, and says what the listener answered; a failed deploy is an
// error (exit 1) with the listener's reason.
func TestDeployCommand(t *testing.T) {
	path, calls := fakeAdmin(t, 200, `{"replaced":2,"result":"succeeded","upstream":"api","version":4}`)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"deploy", "-config", path, "api"}, &out, &errOut); err != nil {
		t.Fatalf("deploy: %v\n%s", err, errOut.String())
	}
	if out.String() != "edge: upstream api deployed: version 4 on 2 instance(s)\n" || len(*calls) != 1 || (*calls)[0] != "POST /upstreams/api/deploy" {
		t.Fatalf("deploy: %q, calls %q", out.String(), *calls)
	}

	path, _ = fakeAdmin(t, 500, `{"error":"instance 0 of version 2 did not pass its health check within 1m0s (state starting)","result":"failed","upstream":"api"}`)
	err := run(context.Background(), []string{"deploy", "-config", path, "api"}, &out, &errOut)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), `deploy of "api": failed: instance 0 of version 2 did not pass`) {
		t.Fatalf("failed deploy: %v", err)
	}

	if err := run(context.Background(), []string{"deploy", "-config", path}, &out, &errOut); exitCode(err) != 2 {
		t.Fatalf("deploy without an upstream: %v", err)
	}
}

func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	printStatus(&b, []admin.Upstream{{Name: "api", Deploying: true, Instances: []process.Status{
		{Instance: 0, Version: 2, State: "ready", PID: 4242, Addr: "127.0.0.1:12001", Started: now.Add(-90 * time.Second), Restarts: 1, RSS: 31 << 20},
		{Instance: 0, Version: 1, State: "draining", PID: 4100, Addr: "127.0.0.1:12000", Started: now.Add(-time.Hour), RSS: 30 << 20},
		{Instance: 1, Version: 1, State: "backoff", Addr: "127.0.0.1:12002", Restarts: 3},
	}}, {Name: "web", Instances: []process.Status{
		{Instance: 0, Version: 1, State: "ready", PID: 4300, Addr: "unix:/tmp/edge-web-123/1.sock", Started: now.Add(-time.Minute), RSS: 20 << 20},
	}}}, now)
	want := `UPSTREAM  INSTANCE  VERSION  STATE     PID   PORT    UPTIME  RESTARTS  MEMORY
api       0         v2       ready     4242  12001   1m30s   1         31.0MB
api       0         v1       draining  4100  12000   1h0m0s  0         30.0MB
api       1         v1       backoff   -     12002   -       3         -
web       0         v1       ready     4300  1.sock  1m0s    0         20.0MB
a deploy of api is running
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestPurgeCommand: edge purge sends a URL, a prefix (trailing *) or all
// to the admin listener and says how many answers went.
func TestPurgeCommand(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+string(b))
		if r.Header.Get("Authorization") != "Bearer "+testAdminToken || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"code":40001,"msg":"send one of"}`)
			return
		}
		_, _ = io.WriteString(w, `{"purged":3}`)
	}))
	t.Cleanup(srv.Close)
	path := adminConfig(t, srv.URL)
	tests := []struct{ arg, body string }{
		{"https://api.example.com/a?b=1", `{"url":"https://api.example.com/a?b=1"}`},
		{"api.example.com/a/*", `{"prefix":"api.example.com/a/"}`},
		{"all", `{"all":true}`},
	}
	for _, tt := range tests {
		got = nil
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{"purge", "-config", path, tt.arg}, &out, &errOut); err != nil {
			t.Fatalf("purge %s: %v\n%s", tt.arg, err, errOut.String())
		}
		if out.String() != "edge: purged 3 answer(s)\n" || len(got) != 1 || got[0] != "POST /cache/purge "+tt.body {
			t.Errorf("purge %s: %q, sent %q", tt.arg, out.String(), got)
		}
	}
	if err := run(context.Background(), []string{"purge", "-config", path}, io.Discard, io.Discard); exitCode(err) != 2 {
		t.Errorf("purge without an argument: %v", err)
	}
}

// TestStatusCommand: edge status prints the dashboard's views from a
// running edge, the instances table among them.
func TestStatusCommand(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(up.Close)
	addr := strings.TrimPrefix(up.URL, "http://")
	e := testpeer.StartEdge(t, fmt.Sprintf("redirect_http = false\nadmin_token = %q\n", testAdminToken), fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q]

[[routes]]
name = "api"
path = "/api/"
upstream = "app"
`, addr))
	resp, err := http.Get("http://" + e.HTTP + "/api/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"status", "-config", e.ConfigPath}, &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		"last config load: loaded (start) at ",
		"traffic, last ",
		"targets up 1/1, bans 0",
		"ROUTE  HOSTS  MATCH  AUTH  LIMITS  ANSWER        REQ/S",
		"api    -      /api/  none  -       upstream app",
		"app       " + addr + "  up ",
		"edge runs no upstream ([upstreams.run])",
		"no bans",
		"CERTIFICATE (internal)",
		"localhost,127.0.0.1,::1  internal",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("edge status lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, testAdminToken) {
		t.Errorf("edge status prints the admin token:\n%s", got)
	}
}
