package opsproof

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"edge/internal/config"
	"edge/internal/testpeer"
)

// nginxDirectives are what a mini-program team's nginx config uses; the
// migration guide must map every one (a heading of its own) and the
// "before" example must use every one.
var nginxDirectives = []string{
	"server_name", "listen 443 ssl http2", "ssl_certificate", "location", "proxy_pass",
	"proxy_set_header", "upstream", "keepalive", "limit_req_zone", "limit_req",
	"client_max_body_size", "allow", "deny", "gzip", "try_files", "return 301", "access_log",
	"modsecurity",
}

func TestMigrationGuideCoversDirectives(t *testing.T) {
	guide := readRepoFile(t, "docs/migrating-from-nginx.md")
	before := readRepoFile(t, "docs/examples/nginx/nginx.conf")
	var headings []string
	for _, m := range mdHeading.FindAllStringSubmatch(guide, -1) {
		headings = append(headings, m[1])
	}
	for _, d := range nginxDirectives {
		found := false
		for _, h := range headings {
			if strings.Contains(h, d) {
				found = true
			}
		}
		if !found {
			t.Errorf("the guide has no section for %q", d)
		}
		if !strings.Contains(guide, "`"+d) {
			t.Errorf("the guide's table or text never shows `%s`", d)
		}
		if !strings.Contains(before, d) {
			t.Errorf("examples/nginx/nginx.conf does not use %q, so the guide's before/after misses it", d)
		}
	}
}

// exampleConfigs are the edge configs the docs show, each checked the way
// `edge validate` checks a file. Files naming certificate files are copied
// beside a freshly generated pair.
var exampleConfigs = []struct {
	path      string
	withCerts bool
}{
	{"docs/examples/nginx/edge.toml", false},
	{"docs/examples/nginx/edge-own-certificate.toml", true},
	{"deploy/edge/edge.toml", false},
	{"config.example.toml", false},
}

// exampleConfigPath is where the example can be validated as written.
func exampleConfigPath(t *testing.T, rel string, withCerts bool) string {
	t.Helper()
	path := repoFile(t, rel)
	if !withCerts {
		return path
	}
	dir := t.TempDir()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(copied, b, 0o600); err != nil {
		t.Fatal(err)
	}
	testpeer.WriteSelfSigned(t, filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem"), "api.example.com")
	return copied
}

// exampleEnv is the environment the examples read: docker-compose.yml
// hands EDGE_ADMIN_TOKEN to deploy/edge/edge.toml.
func exampleEnv(t *testing.T) {
	t.Setenv("EDGE_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef")
}

func TestExampleConfigsLoad(t *testing.T) {
	exampleEnv(t)
	for _, ex := range exampleConfigs {
		t.Run(ex.path, func(t *testing.T) {
			if _, err := config.Load(exampleConfigPath(t, ex.path, ex.withCerts)); err != nil {
				t.Fatalf("%s does not load:\n%v", ex.path, err)
			}
		})
	}
}

// TestExampleConfigsEdgeValidate runs the real binary's validate command
// on the same files, as the guide tells operators to.
func TestExampleConfigsEdgeValidate(t *testing.T) {
	bin := testpeer.EdgeBinary(t)
	exampleEnv(t)
	for _, ex := range exampleConfigs {
		t.Run(ex.path, func(t *testing.T) {
			out := runTool(t, testpeer.RepoRoot(t), bin, "validate", "-config", exampleConfigPath(t, ex.path, ex.withCerts))
			if !strings.Contains(out, "is valid") {
				t.Fatalf("edge validate said:\n%s", out)
			}
		})
	}
}

var tomlBlock = regexp.MustCompile("(?s)```toml\n(.*?)```")

// TestGuideSnippetsAreValidated requires every TOML snippet of the guide
// to be a verbatim piece of a validated example, so the guide cannot drift
// from what edge accepts.
func TestGuideSnippetsAreValidated(t *testing.T) {
	var examples []string
	for _, ex := range exampleConfigs {
		examples = append(examples, readRepoFile(t, ex.path))
	}
	blocks := tomlBlock.FindAllStringSubmatch(readRepoFile(t, "docs/migrating-from-nginx.md"), -1)
	if len(blocks) < len(nginxDirectives)/2 {
		t.Fatalf("only %d toml snippets in the guide", len(blocks))
	}
	for _, b := range blocks {
		snippet := strings.TrimSpace(b[1])
		found := false
		for _, ex := range examples {
			if strings.Contains(ex, snippet) {
				found = true
			}
		}
		if !found {
			t.Errorf("this snippet of the guide is in no validated example file:\n%s", snippet)
		}
	}
}

var (
	composeSource = regexp.MustCompile(`(?m)^\s*- \./([^:]+):`)
	dockerCopy    = regexp.MustCompile(`(?m)^COPY (?:--from=\S+ )?(.+) \S+$`)
)

// TestDeployFilesReferenced checks the paths docker-compose.yml mounts and
// the Dockerfile copies: neither tool runs here, so a missing file would
// otherwise be found by the first user.
func TestDeployFilesReferenced(t *testing.T) {
	compose := readRepoFile(t, "deploy/docker-compose.yml")
	mounts := composeSource.FindAllStringSubmatch(compose, -1)
	if len(mounts) < 5 {
		t.Fatalf("found only %d bind mounts in docker-compose.yml", len(mounts))
	}
	for _, m := range mounts {
		if _, err := os.Stat(repoFile(t, "deploy/"+m[1])); err != nil {
			t.Errorf("docker-compose.yml mounts ./%s: %v", m[1], err)
		}
	}
	docker := readRepoFile(t, "Dockerfile")
	copies := dockerCopy.FindAllStringSubmatch(docker, -1)
	if len(copies) < 3 {
		t.Fatalf("found only %d COPY lines in the Dockerfile", len(copies))
	}
	for _, m := range copies {
		if strings.Contains(m[0], "--from=") {
			continue
		}
		for _, src := range strings.Fields(m[1]) {
			if _, err := os.Stat(repoFile(t, src)); err != nil {
				t.Errorf("Dockerfile copies %s: %v", src, err)
			}
		}
	}
	for _, want := range []string{
		"CGO_ENABLED=0", "-trimpath", "setcap cap_net_bind_service=+ep", "USER edge",
		"VOLUME [\"/var/lib/edge\"]", "EXPOSE 443 80", "HEALTHCHECK", "/etc/edge/edge.toml",
	} {
		if !strings.Contains(docker, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
}

// TestSystemdUnit runs systemd-analyze verify on the unit, with ExecStart
// pointing at a real edge binary, and checks the hardening the unit
// promises.
func TestSystemdUnit(t *testing.T) {
	analyze := testpeer.Binary(t, "systemd-analyze")
	unit := readRepoFile(t, "deploy/systemd/edge.service")
	for _, want := range []string{
		"AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/edge", "ProtectHome=yes",
		"PrivateTmp=yes", "User=edge", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "LimitNOFILE=",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("edge.service lacks %q", want)
		}
	}
	dir := t.TempDir()
	unit = strings.ReplaceAll(unit, "/usr/local/bin/edge", testpeer.EdgeBinary(t))
	path := filepath.Join(dir, "edge.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := runTool(t, dir, analyze, "verify", path); strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify:\n%s", out)
	}
}
