package gateway

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"edge/internal/proxy"
	"edge/internal/testpeer"
)

// TestFailedReloadChangesNothing: a reload whose last step fails (here a
// certificate file that validation finds readable but is no certificate)
// must leave every part as it was: no new upstream target joins the
// registry, and an existing target keeps its connection pool although the
// rejected config changed its keep-alive settings. Before reloads were
// prepared whole, the routes step had already swapped the pool (closing
// its idle connections) and registered the new target.
func TestFailedReloadChangesNothing(t *testing.T) {
	var conns atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go func() { _ = up.Serve(ln) }()
	t.Cleanup(func() { _ = up.Close() })
	a, b := ln.Addr().String(), deadAddr(t)

	dir := t.TempDir()
	testpeer.WriteSelfSigned(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), "api.example.com")
	if err := os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "edge.toml")
	write := func(cert string, keepalive int, targets ...string) {
		t.Helper()
		cfg := fmt.Sprintf(`
[server]
listen_https = "127.0.0.1:0"
listen_http = "off"
listen_admin = "off"
state_dir = %q

[tls]
mode = "files"
[[tls.certificates]]
cert = %q
key = "key.pem"

[[upstreams]]
name = "app"
targets = [%s]
keepalive = %d

[[routes]]
name = "app"
path = "/"
upstream = "app"
`, filepath.Join(dir, "state"), cert, quoteList(targets), keepalive)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("cert.pem", 8, a)
	srv, err := New(Options{ConfigPath: path, Version: "test", Stdout: &testpeer.SyncBuffer{}, Stderr: &testpeer.SyncBuffer{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.close)

	// inRegistry tells whether the registry holds addr: a stage hands out
	// the registry's own target for a key it has, a fresh one otherwise.
	lookup := func(addr string) *proxy.Target {
		return srv.gw.lasting.targets.Stage().Target("app", addr, proxy.TransportOptions{})
	}
	inRegistry := func(addr string) bool {
		first := lookup(addr)
		return first == lookup(addr)
	}
	get := func() {
		t.Helper()
		w := httptest.NewRecorder()
		srv.gw.ServeHTTP(w, httptest.NewRequest("GET", "https://api.example.com/", nil))
		if w.Code != 200 || w.Body.String() != "ok" {
			t.Fatalf("GET: %d %q", w.Code, w.Body.String())
		}
	}
	get()
	if !inRegistry(a) || inRegistry(b) || conns.Load() != 1 {
		t.Fatalf("before the reload: registry holds a %v, b %v; %d upstream connections", inRegistry(a), inRegistry(b), conns.Load())
	}

	write("junk.pem", 16, a, b)
	if res, err := srv.Reload(TriggerAdmin); res != ReloadFailed || err == nil || !strings.Contains(err.Error(), "junk.pem") {
		t.Fatalf("reload with a junk certificate: %s %v", res, err)
	}
	get()
	if inRegistry(b) {
		t.Error("the rejected config's new target b joined the registry")
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d upstream connections after the rejected reload, want 1: its keep-alive change replaced the live pool", n)
	}

	write("cert.pem", 16, a, b)
	if res, err := srv.Reload(TriggerAdmin); res != ReloadApplied || err != nil {
		t.Fatalf("good reload: %s %v", res, err)
	}
	get()
	if !inRegistry(b) || conns.Load() != 2 {
		t.Errorf("after the good reload: b registered %v, %d upstream connections (want a new pool, so 2)", inRegistry(b), conns.Load())
	}
}

func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// TestReloadCannotDropTheTokenOfAnOpenAdminListener: listen_admin changes
// only on a restart. A file that moves it to loopback and removes
// admin_token validates on its own, but applied to the running listener
// (still reachable from other machines) it would open the admin API to
// the network; the reload is refused and the token stays.
func TestReloadCannotDropTheTokenOfAnOpenAdminListener(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.toml")
	const token = "0123456789abcdef0123456789abcdef"
	write := func(admin, tokenLine string) {
		t.Helper()
		cfg := fmt.Sprintf(`
[server]
listen_https = "127.0.0.1:0"
listen_http = "off"
listen_admin = %q
state_dir = %q
%s

[[routes]]
name = "r"
path = "/"
respond = { body = "ok" }
`, admin, filepath.Join(dir, "state"), tokenLine)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("0.0.0.0:9180", `admin_token = "`+token+`"`)
	srv, err := New(Options{ConfigPath: path, Version: "test", Stdout: &testpeer.SyncBuffer{}, Stderr: &testpeer.SyncBuffer{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.close)

	write("127.0.0.1:9180", "")
	res, err := srv.Reload(TriggerAdmin)
	if res != ReloadFailed || err == nil || !strings.Contains(err.Error(), "admin_token") {
		t.Fatalf("reload dropping the token of an open admin listener: %s %v", res, err)
	}
	if got := srv.gw.snap.Load().cfg.Server.AdminToken.Value(); got != token {
		t.Fatalf("the running admin token is %q after the refused reload", got)
	}
}
