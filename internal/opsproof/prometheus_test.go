package opsproof

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// Values that must never reach a log line.
const (
	proofAppID         = "wx0000opsproof0001"
	proofAppSecret     = "opsproof-app-secret-never-logged"
	proofSessionSecret = "opsproof-session-secret-0123456789abcdef"
	proofSessionKey    = "opsproof-session-key-never-logged"
	proofOpenID        = "oOPSPROOF_user1"
	proofPushToken     = "opsproofPushToken"
	proofDomain        = "edge.test"
	// Above what the test's own clients open from one address.
	proofMaxConnsPerIP = 6
	// A well-formed signature that is wrong for any request.
	proofBadSignature = "0000000000000000000000000000000000000000000000000000000000000bad"
)

// notOnDashboard are edge metrics the dashboard leaves out on purpose;
// every other edge_ family must be queried by a panel or an alert.
var notOnDashboard = map[string]string{
	"edge_build_info": "feeds the instance variable, not a panel",
	"edge_config_last_reload_attempt_timestamp_seconds": "the reload panels show attempts as counts",
	"edge_config_last_reload_success_timestamp_seconds": "the reload panels show attempts as counts",
	"edge_tls_acme_last_failure_timestamp_seconds":      "exists only after a failure; the ACME panel counts failures",
	"edge_listener_connections_open":                    "the limited listeners' total; the dashboard shows edge_connections_open by listener",
	"edge_cluster_events_received_total":                "a count of messages between replicas, for tests and debugging; what they carry shows in edge_bans_active",
}

// TestDashboardAgainstPrometheus runs the real binary with a config that
// exercises every feature the dashboard shows, drives every kind of traffic
// through it, lets a real Prometheus scrape it, and then evaluates every
// dashboard query through Prometheus' HTTP API: a query that errors or
// returns no series fails. The same scrape must pass promtool check
// metrics, the alert rules must evaluate cleanly on the live data, and the
// access log must carry its fields and no secret.
func TestDashboardAgainstPrometheus(t *testing.T) {
	promtool := testpeer.Binary(t, "promtool")
	testpeer.Binary(t, "prometheus")
	redis := testpeer.Redis(t)

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(upstream.Close)
	platform := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("secret") != proofAppSecret {
			_, _ = io.WriteString(w, `{"errcode":40125,"errmsg":"invalid appsecret"}`)
			return
		}
		fmt.Fprintf(w, `{"openid":%q,"session_key":%q}`, proofOpenID, proofSessionKey)
	}))
	t.Cleanup(platform.Close)
	deadTarget := testpeer.DeadAddr(t)

	addrs := [3]string{testpeer.FreePort(t), testpeer.FreePort(t), testpeer.FreePort(t)}
	pebble := testpeer.Pebble(t, testpeer.PebbleOptions{
		HTTPPort: testpeer.Port(t, addrs[1]), TLSPort: testpeer.Port(t, addrs[0]),
	})
	dir := t.TempDir()
	site := filepath.Join(dir, "site")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(site, "index.html"), []byte("<p>site</p>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	app := buildApp(t, dir)
	body := func(apiMaxBody string) string {
		return proofConfig(pebble, redis.URL(), upstream.Listener.Addr().String(), deadTarget,
			platform.URL, site, apiMaxBody, app)
	}
	edge := testpeer.StartEdgeAt(t, dir, addrs, "", body("1MB"))
	prom := testpeer.Prometheus(t, testpeer.PrometheusOptions{
		Job: "edge", Targets: []string{edge.Admin},
		RuleFiles: []string{repoFile(t, "deploy/prometheus/alerts.yml")},
	})

	roots := waitForCertificate(t, pebble, edge.HTTPS)
	d := &driver{t: t, https: edge.HTTPS, roots: roots}
	h1, h2 := d.client("127.0.0.1", false), d.client("127.0.0.1", true)

	token, signKey := d.login(h1)
	d.traffic(h1, h2, token)
	d.rateLimitAndBan()
	d.handshakeWithUnknownName()
	d.tooManyConnections(edge.Admin)

	// edge also watches the file, so the watcher may apply the good file
	// before POST /reload does: then the POST finds it unchanged.
	edge.WriteConfig("", "this is not TOML = [\n")
	d.reload(edge.Admin, http.StatusUnprocessableEntity, "failed")
	edge.WriteConfig("", body("2MB"))
	d.reload(edge.Admin, http.StatusOK, "reloaded", "unchanged")
	if !bytes.Contains(scrapeMetrics(t, edge.Admin), []byte(`edge_config_reloads_total{result="success"} 2`)) {
		t.Fatalf("the good config was not reloaded:\n%s", edge.Stderr())
	}

	// A deploy, so the App processes row sees a second version and a
	// deploy's result.
	d.deploy(edge.Admin, "runner")

	// A second round in later scrapes, so every rate() has an increase.
	prom.WaitScraped("edge", 10*time.Second)
	d.traffic(h1, h2, token)
	redis.Stop()
	for range 3 {
		d.get(d.client("127.0.0.4", false), "/limited/x", nil, 0)
	}
	prom.WaitScraped("edge", 10*time.Second)
	prom.WaitScraped("edge", 10*time.Second)

	scrape := scrapeMetrics(t, edge.Admin)
	for _, want := range []string{`edge_upstream_deploys_total{result="succeeded",upstream="runner"} 1`,
		`edge_upstream_version_instances_ready{upstream="runner",version="2"} 2`} {
		if !bytes.Contains(scrape, []byte(want)) {
			t.Errorf("no %s in the scrape", want)
		}
	}
	checkMetricsLint(t, promtool, scrape)
	checkDashboardQueries(t, prom, loadDashboard(t), edge.Admin)
	checkEveryMetricShown(t, scrape)
	checkRulesHealthy(t, prom)
	checkAccessLog(t, edge.Stdout())
	secrets := []string{token, signKey, proofAppSecret, proofSessionSecret, proofSessionKey, proofPushToken, proofBadSignature}
	checkNoSecret(t, "access log", edge.Stdout(), secrets)
	checkNoSecret(t, "error log", edge.Stderr(), secrets)
}

// buildApp builds the process tests' app into dir, for the upstream edge
// runs.
func buildApp(t *testing.T, dir string) string {
	t.Helper()
	app := filepath.Join(dir, "app")
	if out, err := exec.Command("go", "build", "-o", app, "../process/testdata/app").CombinedOutput(); err != nil {
		t.Fatalf("go build testdata/app: %v\n%s", err, out)
	}
	return app
}

// proofConfig is the edge config of the test, after the [server] and [log]
// tables testpeer writes: ACME from Pebble, a shared Redis, a good and a
// dead upstream, an upstream whose instances edge runs, and one route per
// kind of answer the dashboard shows.
func proofConfig(p *testpeer.PebbleServer, redisURL, good, dead, platformURL, site, apiMaxBody, app string) string {
	return fmt.Sprintf(`
[tls]
mode = "acme"
domains = [%[1]q]
acme_ca = %[2]q
acme_ca_roots = %[3]q

[cluster]
redis = %[4]q

[[apps]]
name = "shop"
appid = %[5]q
secret = %[6]q
code2session_url = "%[7]s/sns/jscode2session"

[sessions]
secrets = [%[8]q]

[limiter]
redis_timeout = "50ms"
probe_interval = "100ms"

[bans]
threshold = 3
window = "1m"
duration = "10m"
count = ["rate_limit"]

[access]
user_agent_deny = ["(?i)badbot"]
max_conns_per_ip = %[14]d

[[limits]]
name = "limited_ip"
key = "ip"
rate = "1/m"
burst = 1
routes = ["limited"]

[[upstreams]]
name = "app"
targets = [%[9]q]
[upstreams.health_check]
path = "/healthz"
interval = "1s"

[[upstreams]]
name = "gone"
targets = [%[10]q]
connect_timeout = "200ms"
retries = 0
[upstreams.health_check]
path = "/healthz"
interval = "1s"
timeout = "200ms"
unhealthy_threshold = 1

[[upstreams]]
name = "runner"
[upstreams.run]
command = %[15]q
instances = 2
stop_grace = "3s"
[upstreams.health_check]
path = "/health"
interval = "1s"

[[routes]]
name = "api"
path = "/api/"
upstream = "app"
max_body = %[11]q
gzip = true

[[routes]]
name = "guarded"
path = "/guarded/"
upstream = "app"
waf = "block"

[[routes]]
name = "signed"
path = "/signed/"
upstream = "app"
auth = "signed"

[[routes]]
name = "limited"
path = "/limited/"
upstream = "app"

[[routes]]
name = "dead"
path = "/dead/"
upstream = "gone"

[[routes]]
name = "run"
path = "/run/"
upstream = "runner"
strip_prefix = true

[[routes]]
name = "site"
path = "/site/"
static = %[12]q

[[routes]]
name = "cached"
path = "/cached/"
upstream = "app"
[routes.cache]
ttl = "1m"

[[routes]]
name = "push"
path = "/wx/push"
upstream = "app"
verify = "wechat_push"
[routes.wechat_push]
token = %[13]q
`, proofDomain, p.DirectoryURL, p.CAFile, redisURL, proofAppID, proofAppSecret, platformURL,
		proofSessionSecret, good, dead, apiMaxBody, site, proofPushToken, proofMaxConnsPerIP, app)
}

// waitForCertificate waits until edge serves the certificate Pebble issued
// for the test's domain, and returns the roots that verify it.
func waitForCertificate(t *testing.T, p *testpeer.PebbleServer, https string) *x509.CertPool {
	t.Helper()
	roots := p.Roots()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", https,
			&tls.Config{ServerName: proofDomain, RootCAs: roots})
		if err == nil {
			conn.Close()
			return roots
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate for %s after 30s: %v\npebble:\n%s", proofDomain, err, p.LogTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// driver sends the test's traffic to edge's HTTPS listener.
type driver struct {
	t     *testing.T
	https string
	roots *x509.CertPool
}

// client dials edge from a chosen loopback address: on Linux all of 127/8
// is local, so one test can be several clients.
func (d *driver) client(source string, h2 bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: proofDomain, RootCAs: d.roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, d.https)
		},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	d.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// do sends one request and checks its status (0: any).
func (d *driver) do(c *http.Client, req *http.Request, want int) []byte {
	d.t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL.Path, err)
	}
	if want != 0 && resp.StatusCode != want {
		d.t.Fatalf("%s %s: status %d, want %d: %s", req.Method, req.URL.Path, resp.StatusCode, want, b)
	}
	return b
}

func (d *driver) request(method, path string, body []byte, header http.Header) *http.Request {
	d.t.Helper()
	_, port, _ := net.SplitHostPort(d.https)
	req, err := http.NewRequest(method, "https://"+proofDomain+":"+port+path, bytes.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return req
}

func (d *driver) get(c *http.Client, path string, header http.Header, want int) []byte {
	d.t.Helper()
	return d.do(c, d.request(http.MethodGet, path, nil, header), want)
}

// login goes through edge's login endpoint to the fake platform and
// returns the session token and signing key.
func (d *driver) login(c *http.Client) (token, signKey string) {
	d.t.Helper()
	b := d.do(c, d.request(http.MethodPost, "/edge/login", []byte(`{"code":"opsproof-code-1"}`),
		http.Header{"Content-Type": {"application/json"}}), http.StatusOK)
	var answer struct {
		Data struct {
			Token   string `json:"token"`
			SignKey string `json:"sign_key"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &answer); err != nil || answer.Data.Token == "" || answer.Data.SignKey == "" {
		d.t.Fatalf("login answer %s: %v", b, err)
	}
	return answer.Data.Token, answer.Data.SignKey
}

// traffic sends one of each kind of request the dashboard shows, over
// HTTP/1.1 and HTTP/2.
func (d *driver) traffic(h1, h2 *http.Client, token string) {
	d.t.Helper()
	for _, c := range []*http.Client{h1, h2} {
		for range 5 {
			d.get(c, "/api/items", nil, http.StatusOK)
		}
		d.get(c, "/nothing-here", nil, http.StatusNotFound)
		d.get(c, "/dead/x", nil, http.StatusBadGateway)
		d.get(c, "/site/", nil, http.StatusOK)
		// A miss once, then hits, over each protocol.
		for range 3 {
			d.get(c, "/cached/items", nil, http.StatusOK)
		}
		d.get(c, "/api/items", http.Header{"User-Agent": {"BadBot/1.0"}}, http.StatusForbidden)
		d.get(c, "/signed/items", nil, http.StatusUnauthorized)
		d.get(c, "/guarded/items?page=2", nil, http.StatusOK)
		d.get(c, "/guarded/items?id=1%27%20OR%20%271%27%3D%271", nil, http.StatusForbidden)
		d.get(c, "/signed/items", http.Header{
			"Authorization":    {"Bearer " + token},
			"X-Edge-Timestamp": {strconv.FormatInt(time.Now().Unix(), 10)},
			"X-Edge-Nonce":     {fmt.Sprintf("opsproofnonce%016d", time.Now().UnixNano())},
			"X-Edge-Signature": {proofBadSignature},
		}, http.StatusUnauthorized)
		d.pushCheck(c, proofPushToken, http.StatusOK)
		d.pushCheck(c, "wrong-token", http.StatusUnauthorized)
	}
}

// pushCheck is WeChat's URL check of a message-push callback, signed with
// token.
func (d *driver) pushCheck(c *http.Client, token string, want int) {
	d.t.Helper()
	ts, nonce := strconv.FormatInt(time.Now().Unix(), 10), "opsproof"
	parts := []string{token, ts, nonce}
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	path := "/wx/push?signature=" + hex.EncodeToString(sum[:]) + "&timestamp=" + ts + "&nonce=" + nonce + "&echostr=hello"
	resp, err := c.Do(d.request(http.MethodGet, path, nil, nil))
	if err != nil {
		d.t.Fatal(err)
	}
	resp.Body.Close()
	if want == http.StatusOK && resp.StatusCode != http.StatusOK {
		d.t.Fatalf("a correctly signed push URL check got %d", resp.StatusCode)
	}
	if want != http.StatusOK && resp.StatusCode < 400 {
		d.t.Fatalf("a wrongly signed push URL check got %d", resp.StatusCode)
	}
}

// rateLimitAndBan exhausts the limited route from 127.0.0.2 until the IP
// is banned; other clients are unaffected.
func (d *driver) rateLimitAndBan() {
	d.t.Helper()
	c := d.client("127.0.0.2", false)
	d.get(c, "/limited/x", nil, http.StatusOK)
	for range 3 {
		d.get(c, "/limited/x", nil, http.StatusTooManyRequests)
	}
	d.get(c, "/limited/x", nil, http.StatusForbidden)
}

// handshakeWithUnknownName is a scanner's handshake: edge refuses it.
func (d *driver) handshakeWithUnknownName() {
	d.t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", d.https,
		&tls.Config{ServerName: "unknown.example", InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		d.t.Fatal("a handshake for a name edge does not serve succeeded")
	}
}

// tooManyConnections opens more connections from 127.0.0.6 than
// access.max_conns_per_ip allows and waits until edge has refused one.
func (d *driver) tooManyConnections(admin string) {
	d.t.Helper()
	dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.6")}}
	for range proofMaxConnsPerIP + 2 {
		c, err := dialer.Dial("tcp", d.https)
		if err != nil {
			d.t.Fatal(err)
		}
		defer c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for !bytes.Contains(scrapeMetrics(d.t, admin), []byte(`edge_connections_refused_total{reason="max_conns_per_ip"} 2`)) {
		if time.Now().After(deadline) {
			d.t.Fatalf("edge refused no connection over max_conns_per_ip:\n%s", scrapeMetrics(d.t, admin))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *driver) reload(admin string, wantStatus int, wantResults ...string) {
	d.t.Helper()
	resp, err := http.Post("http://"+admin+"/reload", "", nil)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Result string `json:"result"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		d.t.Fatal(err)
	}
	if resp.StatusCode != wantStatus || !slices.Contains(wantResults, answer.Result) {
		d.t.Fatalf("POST /reload: %d %q, want %d %q", resp.StatusCode, answer.Result, wantStatus, wantResults)
	}
}

func (d *driver) deploy(admin, upstream string) {
	d.t.Helper()
	resp, err := http.Post("http://"+admin+"/upstreams/"+upstream+"/deploy", "", nil)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		d.t.Fatalf("POST /upstreams/%s/deploy: %d %s", upstream, resp.StatusCode, b)
	}
}

func scrapeMetrics(t *testing.T, admin string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkMetricsLint runs promtool check metrics on a scrape taken under
// traffic: it must report nothing at all.
func checkMetricsLint(t *testing.T, promtool string, scrape []byte) {
	t.Helper()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// substitute replaces the dashboard's variables the way Grafana does when
// every value is selected.
func substitute(t *testing.T, expr, instance string) string {
	t.Helper()
	instRegex := strings.ReplaceAll(regexp.QuoteMeta(instance), `\`, `\\`)
	out := strings.NewReplacer(
		"$__rate_interval", "1m",
		"$instance", instRegex,
		"$route", ".*",
	).Replace(expr)
	if strings.Contains(out, "$") {
		t.Fatalf("unknown variable left in %q", out)
	}
	return out
}

func checkDashboardQueries(t *testing.T, prom *testpeer.PrometheusServer, d *dashboard, instance string) {
	t.Helper()
	queries := d.queries()
	if len(queries) < 30 {
		t.Fatalf("only %d queries found in the dashboard", len(queries))
	}
	for _, q := range queries {
		expr := substitute(t, q.expr, instance)
		samples, err := prom.Query(expr)
		switch {
		case err != nil:
			t.Errorf("%s: %v\n  %s", q.where, err, expr)
		case len(samples) == 0:
			t.Errorf("%s: no series\n  %s", q.where, expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		selector, label := v.labelValues(t)
		samples, err := prom.Query(substitute(t, selector, instance))
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		values := 0
		for _, s := range samples {
			if s.Metric[label] != "" {
				values++
			}
		}
		if values == 0 {
			t.Errorf("variable %s: no value of label %s in %s", v.Name, label, selector)
		}
	}
}

var familyLine = regexp.MustCompile(`(?m)^# TYPE (edge_\w+) `)

// checkEveryMetricShown requires each edge_ family of the scrape to be
// used by the dashboard or an alert, or to be listed in notOnDashboard.
func checkEveryMetricShown(t *testing.T, scrape []byte) {
	t.Helper()
	used := readRepoFile(t, "deploy/grafana/edge-dashboard.json") + readRepoFile(t, "deploy/prometheus/alerts.yml")
	for _, m := range familyLine.FindAllSubmatch(scrape, -1) {
		name := string(m[1])
		if _, ok := notOnDashboard[name]; ok {
			continue
		}
		if !regexp.MustCompile(regexp.QuoteMeta(name) + `(_bucket|_sum|_count)?\b`).MatchString(used) {
			t.Errorf("%s is on neither the dashboard nor an alert (or add it to notOnDashboard with a reason)", name)
		}
	}
}

// checkRulesHealthy requires every alert rule to evaluate without error
// against the live series.
func checkRulesHealthy(t *testing.T, prom *testpeer.PrometheusServer) {
	t.Helper()
	rules, err := prom.Rules()
	if err != nil {
		t.Fatal(err)
	}
	if want := len(alertNames(t)); len(rules) != want {
		t.Errorf("prometheus loaded %d rules, alerts.yml has %d", len(rules), want)
	}
	for _, r := range rules {
		if r.Health != "ok" {
			t.Errorf("rule %s: health %q: %s", r.Name, r.Health, r.LastError)
		}
	}
}

// checkNoSecret requires a log to hold none of the secrets the test handed
// edge or edge handed the client (the error log runs at debug level).
func checkNoSecret(t *testing.T, name, log string, secrets []string) {
	t.Helper()
	for _, secret := range secrets {
		if strings.Contains(log, secret) {
			t.Errorf("the %s contains a secret (%.12s...)", name, secret)
		}
	}
}

// checkAccessLog requires the access log to be JSON lines carrying the
// issue's fields.
func checkAccessLog(t *testing.T, log string) {
	t.Helper()
	want := map[string]bool{"proxied": false, "openid": false}
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("access log line is not JSON: %q", line)
		}
		if entry["route"] == "api" && entry["status"] == float64(200) {
			missing := ""
			for _, k := range []string{"request_id", "client_ip", "route", "target", "status", "bytes", "duration_ms", "upstream_ms"} {
				if _, ok := entry[k]; !ok {
					missing += " " + k
				}
			}
			if missing != "" {
				t.Errorf("a proxied request's access line lacks%s: %s", missing, line)
			}
			want["proxied"] = true
		}
		if entry["openid"] == proofOpenID {
			want["openid"] = true
		}
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("no access log line of kind %s", k)
		}
	}
}
