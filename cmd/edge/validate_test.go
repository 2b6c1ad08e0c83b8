package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

func validate(t *testing.T, cfg string) (path, stdout, stderr string, err error) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "edge.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"validate", "-config", path}, &out, &errOut)
	return path, out.String(), errOut.String(), err
}

const validateRoutes = `
[[routes]]
name = "r"
path = "/"
respond = { body = "ok" }
`

// TestValidateRequiresAdminTokenOffLoopback: an admin listener other
// machines can reach must have a token.
func TestValidateRequiresAdminTokenOffLoopback(t *testing.T) {
	path, _, stderr, err := validate(t, "[server]\nlisten_https = \"127.0.0.1:8443\"\nlisten_admin = \":9180\"\n"+validateRoutes)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("want exit 1, got %v", err)
	}
	if !strings.Contains(stderr, path+":3: server.listen_admin: \":9180\" is not on loopback") || !strings.Contains(stderr, "server.admin_token") {
		t.Errorf("stderr:\n%s", stderr)
	}
	_, stdout, stderr, err := validate(t, "[server]\nlisten_https = \"127.0.0.1:8443\"\nlisten_admin = \":9180\"\nadmin_token = \"0123456789abcdef0123456789abcdef\"\n"+validateRoutes)
	if err != nil || !strings.Contains(stdout, "is valid") {
		t.Fatalf("with a token: %v\n%s%s", err, stdout, stderr)
	}
}

// TestValidateWarnsAboutTrustingEveryone: trusted_proxies that hold every
// address are valid (exit 0) but printed as a warning with their line.
func TestValidateWarnsAboutTrustingEveryone(t *testing.T) {
	path, stdout, stderr, err := validate(t, "[server]\nlisten_https = \"127.0.0.1:8443\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::/0\"]\n"+validateRoutes)
	if err != nil {
		t.Fatalf("want exit 0, got %v\n%s", err, stderr)
	}
	if lines := strings.Count(stdout, "\n"); lines != 1 || !strings.Contains(stdout, "is valid") {
		t.Errorf("stdout: %q", stdout)
	}
	if want := "edge: warning: " + path + ":3: server.trusted_proxies[1]: ::/0 trusts every peer"; !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
}

// TestValidateChecksRedis: edge validate connects to [cluster] redis. A
// password Redis refuses fails it with the key, the line and the fix, and
// never the password; a Redis that does not answer from here is a warning;
// -offline does not connect.
func TestValidateChecksRedis(t *testing.T) {
	r := testpeer.RedisWith(t, "--requirepass", "right-horse-battery")
	cfgFor := func(url string) string {
		return "[server]\nlisten_https = \"127.0.0.1:8443\"\n[cluster]\nredis = \"" + url + "\"\n" + validateRoutes
	}
	path, _, stderr, err := validate(t, cfgFor("redis://:wrong-staple-9@"+r.Addr))
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("wrong password: want exit 1, got %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "cluster.redis") || !strings.Contains(stderr, "refused the credentials") || !strings.Contains(stderr, path) {
		t.Errorf("wrong password: stderr does not say what is wrong:\n%s", stderr)
	}
	if strings.Contains(stderr, "wrong-staple-9") {
		t.Errorf("wrong password: stderr shows the password:\n%s", stderr)
	}
	if _, stdout, stderr, err := validate(t, cfgFor("redis://:right-horse-battery@"+r.Addr)); err != nil || !strings.Contains(stdout, "is valid") || stderr != "" {
		t.Errorf("right password: %v\n%s%s", err, stdout, stderr)
	}
	_, stdout, stderr, err := validate(t, cfgFor("redis://"+testpeer.DeadAddr(t)))
	if err != nil || !strings.Contains(stdout, "is valid") || !strings.Contains(stderr, "edge: warning: cluster.redis: not checked") {
		t.Errorf("unreachable: want valid with a warning, got %v\n%s%s", err, stdout, stderr)
	}
	cfgPath := filepath.Join(t.TempDir(), "edge.toml")
	if err := os.WriteFile(cfgPath, []byte(cfgFor("redis://:wrong-staple-9@"+r.Addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"validate", "-offline", "-config", cfgPath}, &out, &errOut); err != nil {
		t.Errorf("-offline: %v\n%s", err, errOut.String())
	}
}

// TestValidateRedisTLS: rediss:// with a private CA and a client
// certificate given by [cluster] redis_ca, redis_client_cert and
// redis_client_key passes; without the CA the handshake fails and the
// message names the key that fixes it.
func TestValidateRedisTLS(t *testing.T) {
	r := testpeer.RedisTLS(t)
	base := "[server]\nlisten_https = \"127.0.0.1:8443\"\n[cluster]\nredis = \"" + r.URL() + "\"\n"
	files := "redis_client_cert = \"" + r.ClientCert + "\"\nredis_client_key = \"" + r.ClientKey + "\"\n"
	if _, stdout, stderr, err := validate(t, base+files+"redis_ca = \""+r.CAFile+"\"\n"+validateRoutes); err != nil || stderr != "" {
		t.Errorf("private CA: %v\n%s%s", err, stdout, stderr)
	}
	_, _, stderr, err := validate(t, base+files+validateRoutes)
	if err == nil || !strings.Contains(stderr, "redis_ca") || !strings.Contains(stderr, "cluster.redis") {
		t.Errorf("without redis_ca: want a failure naming redis_ca, got %v\n%s", err, stderr)
	}
}

// TestRunRefusesRedisCredentials: edge run stops at start-up when Redis
// refuses the password, rather than failing every shared decision later.
func TestRunRefusesRedisCredentials(t *testing.T) {
	r := testpeer.RedisWith(t, "--requirepass", "right-horse-battery")
	path := filepath.Join(t.TempDir(), "edge.toml")
	cfg := "[server]\nlisten_https = \"127.0.0.1:0\"\nlisten_http = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n[tls]\nmode = \"internal\"\n[cluster]\nredis = \"redis://:wrong-staple-9@" + r.Addr + "\"\n" + validateRoutes
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"run", "-config", path}, &out, &errOut)
	if err == nil || !strings.Contains(errOut.String(), "refused the credentials") || !strings.Contains(errOut.String(), "not started") {
		t.Errorf("want a refusal to start naming the credentials, got %v\n%s", err, errOut.String())
	}
	if strings.Contains(errOut.String(), "wrong-staple-9") {
		t.Errorf("stderr shows the password:\n%s", errOut.String())
	}
}

// runUntilLogged runs edge with the [cluster] section redis and waits for
// a log line holding want; it returns the log once edge has stopped.
func runUntilLogged(t *testing.T, cluster, want string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edge.toml")
	cfg := "[server]\nlisten_https = \"127.0.0.1:0\"\nlisten_http = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n[tls]\nmode = \"internal\"\n[cluster]\n" + cluster + validateRoutes
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut testpeer.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "-config", path}, &out, &errOut) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(errOut.String(), want) {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("edge stopped: %v\n%s", err, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no log line %q within 30 s:\n%s", want, errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("edge run: %v\n%s", err, errOut.String())
	}
	return errOut.String()
}

// TestRunStartsWithoutRedis: a Redis that does not answer at start-up
// is no reason to refuse: edge starts, says so in its log, and the
// failure policies decide until Redis answers.
func TestRunStartsWithoutRedis(t *testing.T) {
	log := runUntilLogged(t, "redis = \"redis://:pw@"+testpeer.DeadAddr(t)+"\"\n", "redis does not answer at start-up")
	if strings.Contains(log, ":pw@") {
		t.Errorf("the log shows the password:\n%s", log)
	}
}

// TestRunRedisTLS: edge run connects to a TLS-only Redis that asks for a
// client certificate, through redis_ca, redis_client_cert and
// redis_client_key.
func TestRunRedisTLS(t *testing.T) {
	r := testpeer.RedisTLS(t)
	runUntilLogged(t, "redis = \""+r.URL()+"\"\nredis_ca = \""+r.CAFile+"\"\nredis_client_cert = \""+r.ClientCert+"\"\nredis_client_key = \""+r.ClientKey+"\"\n",
		"redis connected")
}
