package process_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"edge/internal/testpeer"
)

// deployUpstream is upstream() with more [upstreams.run] keys.
func deployUpstream(app string, instances int, env string, runKeys ...string) string {
	return strings.Replace(upstream(app, "api", instances, env), `stop_grace = "3s"`,
		strings.Join(append([]string{`stop_grace = "3s"`}, runKeys...), "\n"), 1)
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// load sends GET /api/ from several workers, each one request after the
// other, until stopped, and counts what comes back.
type load struct {
	mu       sync.Mutex
	total    int
	failures []string
	versions []string // in the order answers came
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(t *testing.T, c caller, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := c.c.Get(c.e.URL("localhost", "/api/"))
				var line string
				var code int
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					line, code = strings.TrimSpace(string(b)), resp.StatusCode
				}
				l.mu.Lock()
				l.total++
				switch {
				case err != nil:
					l.failures = append(l.failures, err.Error())
				case code != http.StatusOK:
					l.failures = append(l.failures, fmt.Sprintf("%d %s", code, line))
				default:
					_, v, _ := strings.Cut(line, "version=")
					l.versions = append(l.versions, v)
				}
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(l.end)
	return l
}

func (l *load) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// since returns the versions answered after the first n answers.
func (l *load) since(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.versions[min(n, len(l.versions)):]...)
}

func (l *load) answered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.versions)
}

// waitAnswers waits until n more answers came after from.
func (l *load) waitAnswers(t *testing.T, from, n int) []string {
	t.Helper()
	eventually(t, 20*time.Second, "answers under load", func() bool { return l.answered() >= from+n })
	return l.since(from)
}

func allAre(vs []string, want string) bool {
	for _, v := range vs {
		if v != want {
			return false
		}
	}
	return len(vs) > 0
}

// edgeCLI runs the edge binary's operator commands against e.
func edgeCLI(t *testing.T, e *testpeer.EdgeProcess, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testpeer.EdgeBinary(t), args...)
	cmd.Env = append(os.Environ(), "EDGE_CONFIG="+e.ConfigPath)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestRollingDeployUnderLoad: four workers send requests without pause
// (no retries, no passive health) while two instances are replaced twice:
// by edge deploy (new code on disk, same config), then by a reload that
// changes the run's env, two at a time (max_surge). Not one request fails;
// once a deploy is over every answer comes from the new version; edge
// status lists the instances of the version deployed.
func TestRollingDeployUnderLoad(t *testing.T) {
	t.Parallel()
	app := testApp(t)
	dir := t.TempDir()
	v1, v3 := filepath.Join(dir, "v1"), filepath.Join(dir, "v3")
	writeFile(t, v1, "one")
	writeFile(t, v3, "three")
	e := testpeer.StartEdge(t, "", deployUpstream(app, 2, fmt.Sprintf(`VERSION_FILE = %q`, v1), `deploy_grace = "10s"`))
	c := caller{t, e, e.Client(t, false)}
	eventually(t, 20*time.Second, "both instances ready", func() bool {
		return strings.Contains(e.Metrics(t, "edge_upstream_instances{"), `{state="ready",upstream="api"} 2`)
	})
	l := startLoad(t, c, 4)
	if vs := l.waitAnswers(t, 0, 50); !allAre(vs, "one") {
		t.Fatalf("before the deploy: %q", vs)
	}

	writeFile(t, v1, "two")
	out, err := edgeCLI(t, e, "deploy", "api")
	if err != nil || !strings.Contains(out, "upstream api deployed: version 2 on 2 instance(s)") {
		t.Fatalf("edge deploy: %v\n%s", err, out)
	}
	n := l.answered()
	if vs := l.waitAnswers(t, n, 50); !allAre(vs, "two") {
		t.Fatalf("after edge deploy: %q", vs)
	}
	out, err = edgeCLI(t, e, "status")
	if err != nil {
		t.Fatalf("edge status: %v\n%s", err, out)
	}
	// The instances table: its header, then a line per instance up to the
	// blank line that ends it.
	_, table, _ := strings.Cut(out, "UPSTREAM  INSTANCE")
	table, _, _ = strings.Cut(table, "\n\n")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 {
		t.Fatalf("edge status:\n%s", out)
	}
	for i, line := range lines[1:] {
		f := strings.Fields(line)
		// api INSTANCE v2 ready PID PORT UPTIME RESTARTS MEMORY
		if len(f) != 9 || f[0] != "api" || f[1] != fmt.Sprint(i) || f[2] != "v2" || f[3] != "ready" || f[4] == "-" || f[7] != "0" || !strings.HasSuffix(f[8], "MB") {
			t.Fatalf("edge status line %q:\n%s", line, out)
		}
	}

	e.WriteConfig("", deployUpstream(app, 2, fmt.Sprintf(`VERSION_FILE = %q`, v3), `deploy_grace = "10s"`, `max_surge = 2`))
	e.Signal(syscall.SIGHUP)
	eventually(t, 30*time.Second, "the reload's deploy done", func() bool {
		return strings.Contains(e.Metrics(t, "edge_upstream_deploys_total"), `{result="succeeded",upstream="api"} 2`)
	})
	n = l.answered()
	if vs := l.waitAnswers(t, n, 50); !allAre(vs, "three") {
		t.Fatalf("after the reload's deploy: %q", vs)
	}
	l.end()
	if len(l.failures) > 0 {
		t.Fatalf("%d of %d requests failed during the deploys, first: %s", len(l.failures), l.total, l.failures[0])
	}
	waitLog(t, e, "run settings changed; deploying")
	t.Logf("%d requests, none failed", l.total)
}

// TestBrokenDeployKeepsOldServing: the new version never passes its
// health check; the deploy gives up after deploy_timeout, edge deploy says
// so and exits 1, the new instance is stopped, and the old instances
// serve every request throughout.
func TestBrokenDeployKeepsOldServing(t *testing.T) {
	t.Parallel()
	dir, pidsDir := t.TempDir(), t.TempDir()
	v := filepath.Join(dir, "version")
	writeFile(t, v, "one")
	e := testpeer.StartEdge(t, "", deployUpstream(testApp(t), 2, fmt.Sprintf(`VERSION_FILE = %q, PIDS_DIR = %q`, v, pidsDir), `deploy_timeout = "3s"`))
	c := caller{t, e, e.Client(t, false)}
	eventually(t, 20*time.Second, "both instances ready", func() bool {
		return strings.Contains(e.Metrics(t, "edge_upstream_instances{"), `{state="ready",upstream="api"} 2`)
	})
	l := startLoad(t, c, 2)
	writeFile(t, v, "broken")
	out, err := edgeCLI(t, e, "deploy", "api")
	if err == nil || !strings.Contains(out, `deploy of "api": failed: instance 0 of version 2 did not pass its health check within 3s`) {
		t.Fatalf("edge deploy of a broken version: %v\n%s", err, out)
	}
	n := l.answered()
	if vs := l.waitAnswers(t, n, 50); !allAre(vs, "one") {
		t.Fatalf("after the failed deploy: %q", vs)
	}
	l.end()
	if len(l.failures) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(l.failures), l.total, l.failures[0])
	}
	if m := e.Metrics(t, "edge_upstream_deploys_total"); !strings.Contains(m, `{result="failed",upstream="api"} 1`) {
		t.Fatalf("metrics:\n%s", m)
	}
	waitLog(t, e, "deploy failed; the instances not yet replaced keep serving")
	all := pids(t, pidsDir)
	if len(all) != 3 {
		t.Fatalf("started %v, want the two old and the broken one", all)
	}
	live := 0
	for _, pid := range all {
		if alive(pid) {
			live++
		}
	}
	if live != 2 {
		t.Fatalf("%d processes alive, want the two old ones (the broken one stopped)", live)
	}
	ups := upstreams(t, e)
	if len(ups) != 1 || len(ups[0].Instances) != 2 || ups[0].Deploying {
		t.Fatalf("GET /upstreams: %+v", ups)
	}
	for _, in := range ups[0].Instances {
		if in.Version != 1 || in.State != "ready" {
			t.Fatalf("GET /upstreams: %+v", ups)
		}
	}
}

type upstreamStatus struct {
	Name      string `json:"name"`
	Deploying bool   `json:"deploying"`
	Instances []struct {
		Instance int    `json:"instance"`
		Version  int    `json:"version"`
		State    string `json:"state"`
		Addr     string `json:"addr"`
	} `json:"instances"`
}

func upstreams(t *testing.T, e *testpeer.EdgeProcess) []upstreamStatus {
	t.Helper()
	resp, err := http.Get("http://" + e.Admin + "/upstreams")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Upstreams []upstreamStatus `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /upstreams: %d %v", resp.StatusCode, err)
	}
	return body.Upstreams
}

// TestDeployDrainsWebSocket: a WebSocket open to the old instance keeps
// being answered by it while the new one takes every new request; the
// deploy waits for it (deploy_grace is a minute) and ends once the client
// closes it, well before the grace is out. A reload that changes the run
// meanwhile is deployed after it.
func TestDeployDrainsWebSocket(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	v, v3 := filepath.Join(dir, "version"), filepath.Join(dir, "v3")
	writeFile(t, v, "one")
	writeFile(t, v3, "three")
	config := func(file string) string {
		return strings.Replace(deployUpstream(testApp(t), 1, fmt.Sprintf(`VERSION_FILE = %q`, file), `deploy_grace = "60s"`),
			"strip_prefix = true", "strip_prefix = true\nwebsocket = true", 1)
	}
	e := testpeer.StartEdge(t, "", config(v))
	c := caller{t, e, e.Client(t, false)}
	eventually(t, 20*time.Second, "the instance serves", func() bool { code, _ := c.get("/api/"); return code == 200 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(e.URL("localhost", "/api/ws"), "https://", "wss://", 1), &websocket.DialOptions{HTTPClient: c.c})
	if err != nil {
		t.Fatalf("dialing the WebSocket: %v", err)
	}
	defer ws.CloseNow()
	echo := func(msg string) string {
		t.Helper()
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return string(got)
	}
	if got := echo("a"); got != "one:a" {
		t.Fatalf("before the deploy: %q", got)
	}
	writeFile(t, v, "two")
	type result struct {
		code int
		body string
		at   time.Time
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Post("http://"+e.Admin+"/upstreams/api/deploy", "", nil)
		if err != nil {
			done <- result{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b), time.Now()}
	}()
	eventually(t, 20*time.Second, "the old instance draining", func() bool {
		for _, u := range upstreams(t, e) {
			for _, in := range u.Instances {
				if in.State == "draining" {
					return true
				}
			}
		}
		return false
	})
	for range 5 {
		if code, body := c.get("/api/"); code != 200 || !strings.Contains(body, "version=two") {
			t.Fatalf("a new request while the old instance drains: %d %s", code, body)
		}
	}
	if got := echo("b"); got != "one:b" {
		t.Fatalf("the open WebSocket while draining: %q", got)
	}
	e.WriteConfig("", config(v3))
	e.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the reload queued its deploy", func() bool {
		return strings.Contains(e.Stderr(), "run settings changed; deploying them once the running deploy ends")
	})
	select {
	case r := <-done:
		t.Fatalf("the deploy ended with the WebSocket open: %+v", r)
	case <-time.After(time.Second):
	}
	closed := time.Now()
	ws.Close(websocket.StatusNormalClosure, "")
	select {
	case r := <-done:
		if r.code != 200 || !strings.Contains(r.body, `"result":"succeeded"`) {
			t.Fatalf("deploy: %+v", r)
		}
		if r.at.Sub(closed) > 30*time.Second {
			t.Fatalf("the deploy ended %s after the WebSocket closed: it waited out the grace", r.at.Sub(closed))
		}
	case <-time.After(45 * time.Second):
		t.Fatal("the deploy did not end after the WebSocket closed")
	}
	eventually(t, 30*time.Second, "the reload's deploy done", func() bool {
		return strings.Contains(e.Metrics(t, "edge_upstream_deploys_total"), `{result="succeeded",upstream="api"} 2`)
	})
	if code, body := c.get("/api/"); code != 200 || !strings.Contains(body, "version=three") {
		t.Fatalf("after the reload's deploy: %d %s", code, body)
	}
}

// TestShutdownEndsDeploy: SIGTERM to edge while a deploy waits for a new
// instance that never becomes healthy (deploy_timeout two minutes): the
// deploy answers at once that edge is stopping, and edge exits without
// waiting out the timeout.
func TestShutdownEndsDeploy(t *testing.T) {
	t.Parallel()
	v := filepath.Join(t.TempDir(), "version")
	writeFile(t, v, "one")
	e := testpeer.StartEdge(t, "", deployUpstream(testApp(t), 1, fmt.Sprintf(`VERSION_FILE = %q`, v), `deploy_timeout = "120s"`))
	c := caller{t, e, e.Client(t, false)}
	eventually(t, 20*time.Second, "the instance serves", func() bool { code, _ := c.get("/api/"); return code == 200 })
	writeFile(t, v, "broken")
	answer := make(chan string, 1)
	go func() {
		resp, err := http.Post("http://"+e.Admin+"/upstreams/api/deploy", "", nil)
		if err != nil {
			answer <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answer <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	eventually(t, 20*time.Second, "the new instance starting", func() bool {
		ups := upstreams(t, e)
		return len(ups) == 1 && len(ups[0].Instances) == 2
	})
	e.Signal(syscall.SIGTERM)
	if err := e.Wait(60 * time.Second); err != nil {
		t.Fatalf("edge after SIGTERM: %v", err)
	}
	select {
	case a := <-answer:
		if !strings.HasPrefix(a, "500 ") || !strings.Contains(a, "edge is stopping") {
			t.Fatalf("deploy answer: %s", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the deploy")
	}
}
