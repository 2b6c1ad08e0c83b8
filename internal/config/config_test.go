package config

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// doc joins lines so that a test's line numbers are its argument positions.
func doc(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

// testDir is a config directory holding what valid configs refer to: a
// site directory, a plain file, and a certificate pair.
func testDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "site"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"file.txt", "cert.pem", "key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// routeFiller is appended to test documents that have no route of their
// own: a config without routes is refused, and most tests are about
// another section. It comes last so the document's line numbers hold.
const routeFiller = "\n[[routes]]\nname = \"filler\"\npath = \"/filler\"\nrespond = { body = \"x\" }\n"

func parseIn(t *testing.T, dir, text string) (*Config, *Error) {
	t.Helper()
	if !strings.Contains(text, "[[routes]]") {
		text += routeFiller
	}
	cfg, err := Parse([]byte(text), filepath.Join(dir, "edge.toml"))
	if err == nil {
		return cfg, nil
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Parse returned %T (%v), want *Error", err, err)
	}
	return nil, e
}

// wantProblem requires e to hold a problem at key whose message contains
// want, with the line it was written on.
func wantProblem(t *testing.T, e *Error, key, want string) {
	t.Helper()
	if e == nil {
		t.Fatal("no problems")
	}
	for _, p := range e.Problems {
		if p.Key == key && strings.Contains(p.Msg, want) {
			if p.Line == 0 {
				t.Errorf("problem %v has no line", p)
			}
			return
		}
	}
	t.Fatalf("no problem at %s containing %q in:\n%v", key, want, e)
}

func mustParse(t *testing.T, dir, text string) *Config {
	t.Helper()
	cfg, e := parseIn(t, dir, text)
	if e != nil {
		t.Fatalf("unexpected problems:\n%v", e)
	}
	return cfg
}

func TestExampleConfigValidates(t *testing.T) {
	cfg, err := Load("../../config.example.toml")
	if err != nil {
		t.Fatalf("config.example.toml:\n%v", err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen_https", cfg.Server.ListenHTTPS, "127.0.0.1:8443"},
		{"listen_http", cfg.Server.ListenHTTP, "127.0.0.1:8080"},
		{"listen_admin", cfg.Server.ListenAdmin, "127.0.0.1:9180"},
		{"state_dir", cfg.Server.StateDir, filepath.Join(root, "edge-state")},
		{"tls mode", cfg.TLS.Mode, "internal"},
		{"routes", len(cfg.Routes), 3},
		{"static dir", cfg.Routes[2].Static, filepath.Join(root, "examples", "site")},
		{"api upstream", cfg.Routes[1].Upstream, "app"},
		{"app target", cfg.Upstreams[0].Targets, []Target{{Address: "127.0.0.1:3000", Weight: 1}}},
		{"health path", cfg.Upstreams[0].HealthCheck.Path, "/healthz"},
		{"respond", *cfg.Routes[0].Respond, Respond{Status: 200, Body: "ok\n", ContentType: "text/plain; charset=utf-8"}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	// The example shows every default; it must agree with Defaults().
	def := Defaults()
	if cfg.Server.ReadHeaderTimeout != def.Server.ReadHeaderTimeout || cfg.Server.MaxHeaderBytes != def.Server.MaxHeaderBytes ||
		cfg.Server.IdleTimeout != def.Server.IdleTimeout || cfg.Server.ShutdownGrace != def.Server.ShutdownGrace ||
		cfg.Server.ShutdownDelay != def.Server.ShutdownDelay {
		t.Errorf("example server timeouts differ from Defaults(): %+v vs %+v", cfg.Server, def.Server)
	}
}

func TestDefaults(t *testing.T) {
	d := Defaults()
	dir := testDir(t)
	cfg := mustParse(t, dir, doc(
		`[[upstreams]]`,
		`name = "api"`,
		`targets = ["127.0.0.1:3000"]`,
		`[[routes]]`,
		`name = "r"`,
		`respond = {}`,
	))
	u, r := cfg.Upstreams[0], cfg.Routes[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen_https", d.Server.ListenHTTPS, ":443"},
		{"listen_http", d.Server.ListenHTTP, ":80"},
		{"listen_admin", d.Server.ListenAdmin, "127.0.0.1:9180"},
		{"state_dir", d.Server.StateDir, "edge-state"},
		{"parsed state_dir", cfg.Server.StateDir, filepath.Join(dir, "edge-state")},
		{"read_header_timeout", d.Server.ReadHeaderTimeout.Std(), 10 * time.Second},
		{"read_timeout", d.Server.ReadTimeout.Std(), 60 * time.Second},
		{"write_timeout", d.Server.WriteTimeout.Std(), time.Duration(0)},
		{"idle_timeout", d.Server.IdleTimeout.Std(), 75 * time.Second},
		{"max_header_bytes", d.Server.MaxHeaderBytes, ByteSize(64 << 10)},
		{"shutdown_grace", d.Server.ShutdownGrace.Std(), 30 * time.Second},
		{"shutdown_delay", d.Server.ShutdownDelay.Std(), time.Duration(0)},
		{"tls.mode", d.TLS.Mode, "internal"},
		{"tls.min_version", d.TLS.MinVersion, "1.2"},
		{"log.level", d.Log.Level, "info"},
		{"log.format", d.Log.Format, "json"},
		{"log.access", *d.Log.Access, true},
		{"log.mask_query", strings.Join(d.Log.MaskQuery, ","), "code,token,access_token,session_key,password,secret,sign,signature,msg_signature,phone,mobile"},
		{"route access", r.Access, (*bool)(nil)},
		{"waf.paranoia_level", d.WAF.ParanoiaLevel, 1},
		{"waf.anomaly_threshold", d.WAF.AnomalyThreshold, 5},
		{"waf.body_limit", d.WAF.BodyLimit, ByteSize(128 << 10)},
		{"log.access_fields", strings.Join(d.Log.AccessFields, ","), "time,request_id,client_ip,method,host,path,query,proto,status,bytes,duration_ms,route,upstream,target,upstream_ms,openid,reason,waf,waf_rules,cache"},
		{"balance", u.Balance, "round_robin"},
		{"hash_key", u.HashKey, "ip"},
		{"keepalive", u.Keepalive, 64},
		{"connect_timeout", u.ConnectTimeout.Std(), 3 * time.Second},
		{"response_header_timeout", u.ResponseHeaderTimeout.Std(), 60 * time.Second},
		{"upstream read_timeout", u.ReadTimeout.Std(), 60 * time.Second},
		{"route upstream_read_timeout", r.UpstreamReadTimeout, (*Duration)(nil)},
		{"retries", u.Retries, 1},
		{"weight", u.Targets[0].Weight, 1},
		{"health interval", u.HealthCheck.Interval.Std(), 5 * time.Second},
		{"health timeout", u.HealthCheck.Timeout.Std(), 2 * time.Second},
		{"healthy_threshold", u.HealthCheck.HealthyThreshold, 2},
		{"unhealthy_threshold", u.HealthCheck.UnhealthyThreshold, 2},
		{"max_fails", u.Passive.MaxFails, 3},
		{"window", u.Passive.Window.Std(), 10 * time.Second},
		{"cooldown", u.Passive.Cooldown.Std(), 30 * time.Second},
		{"route path", r.Path, "/"},
		{"route index", r.Index, "index.html"},
		{"route max_body", *r.MaxBody, ByteSize(1 << 20)},
		{"respond status", r.Respond.Status, 200},
		{"respond content_type", r.Respond.ContentType, "text/plain; charset=utf-8"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	if Defaults().Log.Access == d.Log.Access {
		t.Error("Defaults shares a pointer between calls; a caller's change would leak into the next config")
	}
}

func TestParseFull(t *testing.T) {
	cfg, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	td, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	maxBody := func(r Route) ByteSize { return *r.MaxBody }
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen_https", cfg.Server.ListenHTTPS, "127.0.0.1:8443"},
		{"listen_http", cfg.Server.ListenHTTP, "off"},
		{"state_dir", cfg.Server.StateDir, filepath.Join(td, "state")},
		{"read_timeout", cfg.Server.ReadTimeout.Std(), 2 * time.Minute},
		{"max_header_bytes", cfg.Server.MaxHeaderBytes, ByteSize(32768)},
		{"trusted_proxies", cfg.Server.TrustedProxies, []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("192.168.1.10/32"),
			netip.MustParsePrefix("2001:db8::1/128"),
		}},
		{"min_version", cfg.TLS.MinVersion, "1.3"},
		{"log", []any{cfg.Log.Level, cfg.Log.Format, *cfg.Log.Access}, []any{"debug", "text", false}},
		{"redis from file", cfg.Cluster.Redis.Value(), "redis://:s3cret-from-file@127.0.0.1:6379/0"},
		{"targets", cfg.Upstreams[0].Targets, []Target{{"127.0.0.1:3000", 1, false}, {"127.0.0.1:3001", 3, false}}},
		{"hash_key", cfg.Upstreams[0].HashKey, "header:X-User-Id"},
		{"expect_status", cfg.Upstreams[0].HealthCheck.ExpectStatus, []int{200, 204}},
		{"array-table targets", cfg.Upstreams[1].Targets, []Target{{"10.0.0.11:8080", 2, false}}},
		{"inline passive keeps other defaults", cfg.Upstreams[1].Passive, Passive{MaxFails: 0, Window: Duration(10 * time.Second), Cooldown: Duration(30 * time.Second)}},
		{"methods upper-cased", cfg.Routes[0].Methods, []string{"GET", "POST"}},
		{"max_body string", maxBody(cfg.Routes[0]), ByteSize(10 << 20)},
		{"upstream read_timeout", cfg.Upstreams[1].ReadTimeout.Std(), 10 * time.Minute},
		{"route upstream_read_timeout", *cfg.Routes[0].UpstreamReadTimeout, Duration(90 * time.Second)},
		{"max_body zero", maxBody(cfg.Routes[2]), ByteSize(0)},
		{"set_request_headers", cfg.Routes[0].SetRequestHeaders, map[string]string{"X-Edge": "1"}},
		{"static resolved", cfg.Routes[1].Static, filepath.Join(td, "site")},
		{"respond defaults", *cfg.Routes[2].Respond, Respond{Status: 200, Body: "pong", ContentType: "text/plain; charset=utf-8"}},
		{"path", cfg.Path, "testdata/full.toml"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// TestManyProblemsGolden checks that one pass reports every problem of a
// file, sorted by line, in the exact FILE:LINE: KEY: MSG form.
func TestManyProblemsGolden(t *testing.T) {
	_, err := Load("testdata/many-problems.toml")
	if err == nil {
		t.Fatal("want problems")
	}
	td, aerr := filepath.Abs("testdata")
	if aerr != nil {
		t.Fatal(aerr)
	}
	got := strings.ReplaceAll(err.Error(), td, "$TESTDATA") + "\n"
	golden := "testdata/many-problems.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, rerr := os.ReadFile(golden)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if got != string(want) {
		t.Errorf("problems differ from %s (run with -update after checking):\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{File: "edge.toml", Problems: []Problem{
		{Key: "routes[1].upstream", Line: 14, Msg: "no upstream named \"apii\""},
		{Line: 3, Msg: "TOML syntax error at column 2: x"},
		{Key: "server.state_dir", Msg: "y"},
	}}
	want := "edge.toml:14: routes[1].upstream: no upstream named \"apii\"\n" +
		"edge.toml:3: TOML syntax error at column 2: x\n" +
		"edge.toml: server.state_dir: y"
	if got := e.Error(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestSyntaxError(t *testing.T) {
	cases := []struct {
		name, text string
		line       int
		msg        string
	}{
		{"missing equals", doc(`[server]`, `listen_https ":443"`), 2, "column 14"},
		{"duplicate key", doc(`[log]`, `level = "info"`, `level = "debug"`), 3, "level"},
		{"unclosed table", doc(`[routes`), 1, "column"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, e := parseIn(t, t.TempDir(), tc.text)
			if e == nil || len(e.Problems) != 1 {
				t.Fatalf("want exactly one problem, got %v", e)
			}
			p := e.Problems[0]
			if p.Line != tc.line || p.Key != "" || !strings.Contains(p.Msg, "TOML syntax error") || !strings.Contains(p.Msg, tc.msg) {
				t.Errorf("got %+v, want line %d and %q", p, tc.line, tc.msg)
			}
		})
	}
}

func TestTargetForms(t *testing.T) {
	cfg := mustParse(t, t.TempDir(), doc(
		`[[upstreams]]`,
		`name = "a"`,
		`targets = ["10.0.0.1:80", { address = "10.0.0.2:80" }, { address = "10.0.0.3:80", weight = 5 }]`,
	))
	want := []Target{{"10.0.0.1:80", 1, false}, {"10.0.0.2:80", 1, false}, {"10.0.0.3:80", 5, false}}
	if !reflect.DeepEqual(cfg.Upstreams[0].Targets, want) {
		t.Errorf("targets = %+v, want %+v", cfg.Upstreams[0].Targets, want)
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("EDGE_TEST_HOST", "10.9.8.7")
	t.Setenv("EDGE_TEST_KEY", "hunter2")
	t.Setenv("EDGE_TEST_REDIS", "redis://:pw@127.0.0.1:6379")
	dir := testDir(t)
	cfg := mustParse(t, dir, doc(
		`cluster.redis = "${EDGE_TEST_REDIS}"`,
		`[[upstreams]]`,
		`name = "a"`,
		`targets = ["${EDGE_TEST_HOST}:3000"]`,
		`[[routes]]`,
		`name = "r"`,
		`upstream = "a"`,
		`set_request_headers = { "X-Key" = "k=${EDGE_TEST_KEY}", "X-Lit" = "$${NOT_EXPANDED}" }`,
	))
	checks := []struct {
		name, got, want string
	}{
		{"target", cfg.Upstreams[0].Targets[0].Address, "10.9.8.7:3000"},
		{"header", cfg.Routes[0].SetRequestHeaders["X-Key"], "k=hunter2"},
		{"escaped", cfg.Routes[0].SetRequestHeaders["X-Lit"], "${NOT_EXPANDED}"},
		{"secret", cfg.Cluster.Redis.Value(), "redis://:pw@127.0.0.1:6379"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}

	_, e := parseIn(t, dir, doc(
		`[log]`,
		`level = "${EDGE_TEST_MISSING_VAR}"`,
		`format = "${EDGE_TEST_KEY"`,
	))
	wantProblems(t, e, []want{
		{"log.level", 2, "environment variable EDGE_TEST_MISSING_VAR is not set"},
		{"log.format", 3, `write ${NAME}`},
	})
	if strings.Contains(e.Error(), "hunter2") {
		t.Errorf("an environment value reached the message:\n%v", e)
	}
}

func TestSecretFile(t *testing.T) {
	dir := testDir(t)
	if err := os.WriteFile(filepath.Join(dir, "redis.url"), []byte("rediss://:topsecret@10.0.0.5:6380/1\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.url"), []byte("http://:topsecret@x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EDGE_TEST_DIR", dir)
	for _, ref := range []string{"file:redis.url", "file:${EDGE_TEST_DIR}/redis.url"} {
		cfg := mustParse(t, dir, doc(`[cluster]`, `redis = "`+ref+`"`))
		if got := cfg.Cluster.Redis.Value(); got != "rediss://:topsecret@10.0.0.5:6380/1" {
			t.Errorf("%s: redis = %q", ref, got)
		}
	}
	cases := []struct {
		name, ref, msg string
	}{
		{"missing file", "file:nope.txt", "cannot read secret file"},
		{"directory", "file:site", "not a regular file"},
		{"bad url from file", "file:bad.url", "must be a URL like"},
		{"bad url inline", "redis://:topsecret", "value is not shown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, e := parseIn(t, dir, doc(`[cluster]`, `redis = "`+tc.ref+`"`))
			wantProblems(t, e, []want{{"cluster.redis", 2, tc.msg}})
			if strings.Contains(e.Error(), "topsecret") {
				t.Errorf("a secret reached the message:\n%v", e)
			}
		})
	}
}

func TestRestartNeeded(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"nothing", func(*Config) {}, nil},
		{"live settings", func(c *Config) {
			c.Log.Level = "debug"
			c.Server.ShutdownGrace = 1
			c.Server.ShutdownDelay = 1
			c.TLS.MinVersion = "1.3"
			c.Routes = append(c.Routes, Route{Name: "x"})
		}, nil},
		{"listeners", func(c *Config) {
			c.Server.ListenHTTPS = ":8443"
			c.Server.ListenHTTP = "off"
			c.Server.ListenAdmin = ":9999"
		}, []string{"server.listen_https", "server.listen_http", "server.listen_admin"}},
		{"storage and cluster", func(c *Config) {
			c.Server.StateDir = "/var/lib/edge"
			c.TLS.Mode = "acme"
			c.Cluster.Redis = "redis://x:6379"
		}, []string{"server.state_dir", "tls.mode", "cluster.redis"}},
		{"server limits", func(c *Config) {
			c.Server.ReadHeaderTimeout = 1
			c.Server.ReadTimeout = 1 // applied live: a per-read pause on bodies
			c.Server.WriteTimeout = 1
			c.Server.IdleTimeout = 1
			c.Server.MaxHeaderBytes = 1
		}, []string{"server.read_header_timeout", "server.write_timeout", "server.idle_timeout", "server.max_header_bytes"}},
		// The listeners are wrapped for PROXY protocol once, at start.
		{"PROXY protocol sources", func(c *Config) {
			c.Server.ProxyProtocolFrom = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
			c.Server.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} // live
		}, []string{"server.proxy_protocol_from"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next := Defaults()
			tc.change(next)
			if got := RestartNeeded(Defaults(), next); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if got := RestartNeeded(nil, Defaults()); got != nil {
		t.Errorf("first load: got %q, want nothing", got)
	}
}

func TestLineIndex(t *testing.T) {
	lines := indexLines([]byte(doc(
		`server.listen_https = ":443"`, // 1
		`[[upstreams]]`,                // 2
		`name = "a"`,                   // 3
		`targets = [`,                  // 4
		`  "10.0.0.1:80",`,             // 5
		`  { address = "10.0.0.2:80", weight = 2 },`, // 6
		`]`,                               // 7
		`[[upstreams]]`,                   // 8
		`[upstreams.health_check]`,        // 9
		`path = "/h"`,                     // 10
		`[[upstreams.targets]]`,           // 11
		`address = "x:1"`,                 // 12
		`[[routes]]`,                      // 13
		`hosts = ["a", "b"]`,              // 14
		`respond = { status = 204 }`,      // 15
		`[[routes]]`,                      // 16
		`set_request_headers.X-A = "1"`,   // 17
		`[tls]`,                           // 18
		`certificates = [{ cert = "c" }]`, // 19
	)))
	want := map[string]int{
		"server":                            1,
		"server.listen_https":               1,
		"upstreams":                         2,
		"upstreams[0]":                      2,
		"upstreams[0].targets":              4,
		"upstreams[0].targets[0]":           5,
		"upstreams[0].targets[1]":           6,
		"upstreams[0].targets[1].weight":    6,
		"upstreams[1]":                      8,
		"upstreams[1].health_check":         9,
		"upstreams[1].health_check.path":    10,
		"upstreams[1].targets[0]":           11,
		"upstreams[1].targets[0].address":   12,
		"routes[0]":                         13,
		"routes[0].hosts[1]":                14,
		"routes[0].respond.status":          15,
		"routes[1]":                         16,
		"routes[1].set_request_headers.X-A": 17,
		"tls.certificates[0].cert":          19,
	}
	for k, l := range want {
		if lines[k] != l {
			t.Errorf("line of %s = %d, want %d", k, lines[k], l)
		}
	}
}

func TestClosest(t *testing.T) {
	known := []string{"listen_https", "listen_http", "listen_admin", "state_dir"}
	cases := []struct{ word, want string }{
		{"listen_htps", "listen_https"},
		{"listen-admin", "listen_admin"},
		{"LISTEN_HTTP", "listen_http"},
		{"statedir", "state_dir"},
		{"listen", "listen_http"},
		{"state_directory", "state_dir"},
		{"colour", ""},
		{"x", ""},
	}
	for _, tc := range cases {
		if got := closest(tc.word, known); got != tc.want {
			t.Errorf("closest(%q) = %q, want %q", tc.word, got, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"../../config.example.toml", "testdata/full.toml", "testdata/many-problems.toml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"", "[", "a = ", "[[routes]]\n[routes]\n", "x = [[[[]]]]",
		"[[upstreams]]\ntargets = [1, {}, \"a\", [\"b\"]]\n",
		"server = 1\ntls = []\nroutes = {}\nupstreams = \"x\"\n",
		"[[routes]]\nrespond = 5\nmax_body = -3\nmethods = [\"\\u0000\"]\n",
		"[cluster]\nredis = \"file:/dev/zero\"\n",
		"[server]\ntrusted_proxies = [\"::ffff:1.2.3.4\", \"1.2.3.4/40\", \"${\"]\n",
		"[[routes]]\nhosts = [\"*.\", \"*\", \"[::1]:80\", \"a..b\"]\nstatic = \"/\"\n",
	} {
		f.Add([]byte(s))
	}
	dir := testDir(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, filepath.Join(dir, "edge.toml"))
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without an error")
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || len(e.Problems) == 0 {
			t.Fatalf("want *Error with problems, got %T: %v", err, err)
		}
	})
}

func BenchmarkParseExample(b *testing.B) {
	data, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data, "../../config.example.toml"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNoRoutesIsRefused: an empty file (`: > edge.toml`), a comment-only one
// or the first half of a file being written must not go live as a gateway
// that answers everything 404.
func TestNoRoutesIsRefused(t *testing.T) {
	dir := testDir(t)
	for name, text := range map[string]string{
		"empty":                   "",
		"whitespace and comment":  "\n  \n# edge config\n",
		"only the server section": doc(`[server]`, `listen_https = ":8443"`),
		"cut before the routes":   doc(`[[upstreams]]`, `name = "app"`, `targets = ["127.0.0.1:3000"]`),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(text), filepath.Join(dir, "edge.toml"))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse = %v, want a *config.Error", err)
			}
			found := false
			for _, p := range e.Problems {
				if p.Key == "routes" && strings.Contains(p.Msg, "no [[routes]]") {
					found = true
				}
			}
			if !found {
				t.Fatalf("problems %v lack the no-routes problem", e)
			}
		})
	}
}

// TestRedisTopologiesAndTLS: the URLs of every topology pass, TLS files
// are resolved against the config's directory and checked, and each
// mistake names its key and line.
func TestRedisTopologiesAndTLS(t *testing.T) {
	dir := testDir(t)
	testpeer.WriteSelfSigned(t, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"), "ca")
	for _, url := range []string{
		"redis-sentinel://:pw@10.0.0.5:26379,10.0.0.6:26379?master_name=mymaster",
		"redis://10.0.0.5:26379?master_name=mymaster&addr=10.0.0.6:26379",
		"redis+cluster://:pw@10.0.0.5:7000,10.0.0.6:7000",
	} {
		if _, e := parseIn(t, dir, doc(`[cluster]`, `redis = "`+url+`"`)); e != nil {
			t.Errorf("%s: %v", url, e)
		}
	}
	cfg := mustParse(t, dir, doc(`[cluster]`, `redis = "rediss://10.0.0.5:6380"`, `redis_ca = "ca.pem"`,
		`redis_client_cert = "ca.pem"`, `redis_client_key = "ca-key.pem"`))
	if want := filepath.Join(dir, "ca.pem"); cfg.Cluster.RedisCA != want {
		t.Errorf("redis_ca = %q, want %q", cfg.Cluster.RedisCA, want)
	}
	for _, tc := range []struct {
		name  string
		lines []string
		w     want
	}{
		{"ca without tls", []string{`redis = "redis://10.0.0.5:6379"`, `redis_ca = "ca.pem"`}, want{"cluster.redis", 2, "rediss://"}},
		{"ca not pem", []string{`redis = "rediss://10.0.0.5:6379"`, `redis_ca = "file.txt"`}, want{"cluster.redis_ca", 3, "no PEM certificate"}},
		{"ca missing", []string{`redis = "rediss://10.0.0.5:6379"`, `redis_ca = "nope.pem"`}, want{"cluster.redis_ca", 3, "reading the CA file"}},
		{"key without cert", []string{`redis = "rediss://10.0.0.5:6379"`, `redis_client_key = "key.pem"`}, want{"cluster.redis_client_key", 3, "needs redis_client_cert"}},
		{"cert without key", []string{`redis = "rediss://10.0.0.5:6379"`, `redis_client_cert = "ca.pem"`}, want{"cluster.redis_client_cert", 3, "both"}},
		{"ca without redis", []string{`redis_ca = "ca.pem"`}, want{"cluster.redis_ca", 2, "cluster.redis is not"}},
		{"sentinel without master", []string{`redis = "redis-sentinel://10.0.0.5"`}, want{"cluster.redis", 2, "master_name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, e := parseIn(t, dir, doc(append([]string{`[cluster]`}, tc.lines...)...))
			wantProblems(t, e, []want{tc.w})
		})
	}
}
