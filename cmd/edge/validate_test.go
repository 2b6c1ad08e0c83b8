package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
