package opsproof

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
	"proxy_set_header Upgrade",
	"modsecurity",
	"proxy_cache",
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

// translatedConfigs are nginx configs of mini-program backends and their
// edge translations (each in exampleConfigs): the guide must map every
// directive they use.
var translatedConfigs = []string{
	"docs/examples/nginx/nginx.conf",
	"docs/examples/nginx/shop/nginx.conf",
	"docs/examples/nginx/h5-admin/nginx.conf",
	"docs/examples/nginx/services/nginx.conf",
}

// TestGuideMapsEveryDirectiveOfTheTranslatedConfigs: each directive of
// the nginx configs the examples translate is shown in the guide in
// backticks (`name ...`), in its table or its text, so a reader with the
// same config finds every line of it.
func TestGuideMapsEveryDirectiveOfTheTranslatedConfigs(t *testing.T) {
	guide := readRepoFile(t, "docs/migrating-from-nginx.md")
	for _, rel := range translatedConfigs {
		directives := nginxDirectiveNames(readRepoFile(t, rel))
		if len(directives) < 15 {
			t.Fatalf("%s: only %d directives read: %q", rel, len(directives), directives)
		}
		for _, d := range directives {
			if !regexp.MustCompile("`" + regexp.QuoteMeta(d) + "[ ;`]").MatchString(guide) {
				t.Errorf("%s uses %q, which docs/migrating-from-nginx.md never shows as `%s ...`", rel, d, d)
			}
		}
	}
}

// nginxDirectiveNames are the directive names of an nginx config, each
// once, in order: the first word of every statement, quoted strings and
// comments skipped, and nothing inside a map block (its lines are values).
func nginxDirectiveNames(conf string) []string {
	var names []string
	seen := map[string]bool{}
	start, depth, mapDepth := true, 0, -1
	for i := 0; i < len(conf); {
		c := conf[i]
		switch {
		case c == '#':
			for i < len(conf) && conf[i] != '\n' {
				i++
			}
			continue
		case c == '\'' || c == '"':
			end := strings.IndexByte(conf[i+1:], c)
			if end < 0 {
				return names
			}
			i += end + 2
			start = false
			continue
		case c == ';':
			start = true
		case c == '{':
			depth++
			start = true
		case c == '}':
			depth--
			if depth < mapDepth {
				mapDepth = -1
			}
			start = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		default:
			j := i
			for j < len(conf) && !strings.ContainsRune(" \t\r\n;{}", rune(conf[j])) {
				j++
			}
			word := conf[i:j]
			if start && mapDepth < 0 {
				if !seen[word] {
					seen[word] = true
					names = append(names, word)
				}
				if word == "map" {
					mapDepth = depth + 1
				}
			}
			start = false
			i = j
			continue
		}
		i++
	}
	return names
}

// exampleConfigs are the edge configs the docs show, each checked the way
// `edge validate` checks a file. Files naming certificate files are copied
// beside a freshly generated pair.
var exampleConfigs = []struct {
	path string
	// certs are certificate and key files the config names, made beside
	// a copy of its directory: no key is kept in the repository.
	certs [][2]string
}{
	{"docs/examples/nginx/edge.toml", nil},
	{"docs/examples/nginx/edge-own-certificate.toml", [][2]string{{"fullchain.pem", "privkey.pem"}}},
	{"docs/examples/nginx/shop/edge.toml", nil},
	{"docs/examples/nginx/h5-admin/edge.toml", nil},
	{"docs/examples/nginx/services/edge.toml", [][2]string{{"internal-ca.pem", "internal-ca.key"}, {"edge-client.pem", "edge-client.key"}}},
	{"deploy/edge/edge.toml", nil},
	{"config.example.toml", nil},
}

// exampleConfigPath is where the example can be validated as written.
func exampleConfigPath(t *testing.T, rel string, certs [][2]string) string {
	t.Helper()
	path := repoFile(t, rel)
	if len(certs) == 0 {
		return path
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Dir(path))); err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		testpeer.WriteSelfSigned(t, filepath.Join(dir, c[0]), filepath.Join(dir, c[1]), "api.example.com")
	}
	return filepath.Join(dir, filepath.Base(path))
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
			if _, err := config.Load(exampleConfigPath(t, ex.path, ex.certs)); err != nil {
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
			out := runTool(t, testpeer.RepoRoot(t), bin, "validate", "-config", exampleConfigPath(t, ex.path, ex.certs))
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

func TestNginxDirectiveNames(t *testing.T) {
	conf := `# a comment; location
http {
    log_format main '$remote_addr "x;y" {'
                    '$status';
    map $http_origin $cors { default ""; "~^https://a" $http_origin; }
    server { listen 443 ssl; location ~ ^/v(\d+)/ { if ($x = y) { return 204; } proxy_pass http://a; } }
}`
	want := []string{"http", "log_format", "map", "server", "listen", "location", "if", "return", "proxy_pass"}
	if got := nginxDirectiveNames(conf); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
