package process_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"edge/internal/testpeer"
)

var (
	appOnce sync.Once
	appPath string
	appErr  error
)

// testApp builds testdata/app once per test process.
func testApp(t *testing.T) string {
	t.Helper()
	appOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edge-process-app-")
		if err != nil {
			appErr = err
			return
		}
		appPath = filepath.Join(dir, "app")
		out, err := exec.Command("go", "build", "-o", appPath, "./testdata/app").CombinedOutput()
		if err != nil {
			appErr = fmt.Errorf("go build testdata/app: %v\n%s", err, out)
		}
	})
	if appErr != nil {
		t.Fatal(appErr)
	}
	return appPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if appPath != "" {
		os.RemoveAll(filepath.Dir(appPath))
	}
	os.Exit(code)
}

// upstream is an [[upstreams]] entry running the test app, with a route
// to it at /<name>/.
func upstream(app, name string, instances int, env string) string {
	return fmt.Sprintf(`
[[upstreams]]
name = %[1]q
retries = 0
[upstreams.run]
command = %[2]q
instances = %[3]d
env = { %[4]s }
stop_grace = "3s"
[upstreams.health_check]
path = "/health"
interval = "1s"
[upstreams.passive_health]
max_fails = 0

[[routes]]
name = %[1]q
path = "/%[1]s/"
upstream = %[1]q
strip_prefix = true
`, name, app, instances, env)
}

type caller struct {
	t *testing.T
	e *testpeer.EdgeProcess
	c *http.Client
}

func (c caller) get(path string) (int, string) {
	resp, err := c.c.Get(c.e.URL("localhost", path))
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitLog waits for edge's log to hold text: the log reaches the test
// through a pipe, a moment after edge wrote it.
func waitLog(t *testing.T, e *testpeer.EdgeProcess, text string) {
	t.Helper()
	eventually(t, 10*time.Second, "edge's log to say "+text, func() bool { return strings.Contains(e.Stderr(), text) })
}

func eventually(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pids are the processes the test app wrote into dir: every one edge
// started.
func pids(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// alive reports whether pid is a process that has not ended: a zombie
// (ended, not yet reaped by whoever inherited it) counts as gone.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestInstancesGetTrafficOnlyWhenHealthy: two instances that listen only
// a second after they start. Until one answers its health check edge
// answers 502; from the first 200 on, no request fails, though the second
// instance may still be starting, and both end up serving.
func TestInstancesGetTrafficOnlyWhenHealthy(t *testing.T) {
	t.Parallel()
	pidsDir := t.TempDir()
	e := testpeer.StartEdgeAnswering(t, "", upstream(testApp(t), "api", 2,
		fmt.Sprintf(`DELAY = "1s", PIDS_DIR = %q`, pidsDir)))
	c := caller{t, e, e.Client(t, false)}
	servedBy := map[string]bool{}
	firstOK := false
	eventually(t, 20*time.Second, "both instances serve", func() bool {
		code, body := c.get("/api/")
		switch {
		case code == http.StatusOK:
			firstOK = true
			servedBy[strings.Fields(body)[0]] = true
		case firstOK:
			t.Fatalf("after the first instance was ready: %d %s", code, body)
		case code != http.StatusBadGateway:
			t.Fatalf("before any instance was ready: %d %s, want 502", code, body)
		}
		return len(servedBy) == 2
	})
	// An instance can answer a request before its first health probe has
	// passed: while no instance was ready, edge tried one anyway (as nginx
	// does). Readiness follows within a probe interval.
	var ready string
	eventually(t, 20*time.Second, "/readyz reports both instances ready", func() bool {
		resp, err := http.Get("http://" + e.Admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ready = fmt.Sprintf("%d %s", resp.StatusCode, b)
		return resp.StatusCode == 200 && strings.Contains(string(b), "upstream api: 2/2 instances ready")
	})
	t.Logf("/readyz: %s", ready)
	if m := e.Metrics(t, "edge_upstream_instances{"); !strings.Contains(m, `edge_upstream_instances{state="ready",upstream="api"} 2`) {
		t.Fatalf("metrics:\n%s", m)
	}
	waitLog(t, e, `"line":"app `)
}

// TestKilledInstanceComesBack: SIGKILL to one of two instances; the other
// serves meanwhile, and the killed one is restarted (on its port: the same
// target) and serves again.
func TestKilledInstanceComesBack(t *testing.T) {
	t.Parallel()
	pidsDir := t.TempDir()
	e := testpeer.StartEdge(t, "", upstream(testApp(t), "api", 2, fmt.Sprintf(`PIDS_DIR = %q`, pidsDir)))
	c := caller{t, e, e.Client(t, false)}
	eventually(t, 20*time.Second, "both instances serve", func() bool {
		c.get("/api/")
		return strings.Contains(e.Metrics(t, "edge_upstream_instances{"), `{state="ready",upstream="api"} 2`)
	})
	before := pids(t, pidsDir)
	if len(before) != 2 {
		t.Fatalf("started %v, want 2 processes", before)
	}
	if err := syscall.Kill(before[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	failed, served := 0, map[string]bool{}
	eventually(t, 20*time.Second, "the killed instance restarted and serving", func() bool {
		code, body := c.get("/api/")
		if code != http.StatusOK {
			failed++
		} else {
			served[strings.Fields(body)[0]] = true
		}
		return len(pids(t, pidsDir)) == 3 && len(served) >= 2 && !served["pid="+strconv.Itoa(before[0])] &&
			strings.Contains(e.Metrics(t, "edge_upstream_instance_restarts_total"), `{reason="exit",upstream="api"} 1`)
	})
	// At most the request that was on the killed instance may fail.
	if failed > 1 {
		t.Fatalf("%d requests failed while an instance was down", failed)
	}
}

// TestCrashLoopIsMarkedFailed: an app that exits at once is restarted with
// backoff until it is marked failed, reported in the log, the metrics and
// /readyz (503: that upstream has nothing to serve), while another
// upstream's instance keeps serving throughout.
func TestCrashLoopIsMarkedFailed(t *testing.T) {
	t.Parallel()
	app := testApp(t)
	e := testpeer.StartEdgeAnswering(t, "", upstream(app, "good", 1, "")+upstream(app, "bad", 1, `CRASH = "1"`))
	c := caller{t, e, e.Client(t, false)}
	eventually(t, 20*time.Second, "good serves", func() bool { code, _ := c.get("/good/"); return code == 200 })
	eventually(t, 60*time.Second, "bad marked failed", func() bool {
		if code, body := c.get("/good/"); code != 200 {
			t.Fatalf("the healthy upstream answered %d %s", code, body)
		}
		return strings.Contains(e.Metrics(t, "edge_upstream_instances{"), `{state="failed",upstream="bad"} 1`)
	})
	if m := e.Metrics(t, "edge_upstream_instance_restarts_total"); !strings.Contains(m, `{reason="exit",upstream="bad"} 5`) {
		t.Fatalf("restarts:\n%s", m)
	}
	waitLog(t, e, "crashing in a loop")
	resp, err := http.Get("http://" + e.Admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "upstream bad: 0/1 instances ready (0=failed)") ||
		!strings.Contains(string(b), "upstream good: 1/1 instances ready") {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, b)
	}
	if code, _ := c.get("/bad/"); code != http.StatusBadGateway {
		t.Fatalf("the failed upstream answered %d, want 502", code)
	}
}

// TestStopLeavesNoProcess: SIGTERM to edge stops every instance; SIGKILL to
// edge leaves none either (Pdeathsig).
func TestStopLeavesNoProcess(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			pidsDir := t.TempDir()
			e := testpeer.StartEdge(t, "", upstream(testApp(t), "api", 3, fmt.Sprintf(`PIDS_DIR = %q`, pidsDir)))
			eventually(t, 20*time.Second, "three instances started", func() bool { return len(pids(t, pidsDir)) == 3 })
			started := pids(t, pidsDir)
			for _, pid := range started {
				if !alive(pid) {
					t.Fatalf("instance %d is not running", pid)
				}
			}
			e.Signal(sig)
			if err := e.Wait(20 * time.Second); sig == syscall.SIGTERM && err != nil {
				t.Fatalf("edge after SIGTERM: %v", err)
			}
			eventually(t, 10*time.Second, "every instance gone", func() bool {
				for _, pid := range started {
					if alive(pid) {
						return false
					}
				}
				return true
			})
		})
	}
}

// TestReloadChangesInstances: four workers send requests without pause
// (no retries, no passive health) while a reload takes the instances from
// 2 to 3, then to 1. The third starts (EDGE_INSTANCE=2) and serves once
// healthy while the two running go on as the same processes; then
// instances 1 and 2 are drained and stopped, and instance 0 serves alone.
// Not one request fails.
func TestReloadChangesInstances(t *testing.T) {
	t.Parallel()
	pidsDir := t.TempDir()
	app := testApp(t)
	env := fmt.Sprintf(`PIDS_DIR = %q`, pidsDir)
	e := testpeer.StartEdge(t, "", deployUpstream(app, 2, env, `deploy_grace = "10s"`))
	c := caller{t, e, e.Client(t, false)}
	readyN := func(n int) func() bool {
		return func() bool {
			return strings.Contains(e.Metrics(t, "edge_upstream_instances{"), fmt.Sprintf(`{state="ready",upstream="api"} %d`, n))
		}
	}
	eventually(t, 20*time.Second, "both instances ready", readyN(2))
	first := pids(t, pidsDir)
	l := startLoad(t, c, 4)
	l.waitAnswers(t, 0, 20)

	e.WriteConfig("", deployUpstream(app, 3, env, `deploy_grace = "10s"`))
	e.Signal(syscall.SIGHUP)
	eventually(t, 20*time.Second, "three instances ready", readyN(3))
	eventually(t, 20*time.Second, "instance 2 serving", func() bool {
		_, body := c.get("/api/")
		return strings.Contains(body, " instance=2 ")
	})
	if all := pids(t, pidsDir); len(all) != 3 {
		t.Fatalf("processes started: %v, want the two running and one more", all)
	}
	for _, pid := range first {
		if !alive(pid) {
			t.Fatalf("instance process %d ended when a third was added", pid)
		}
	}
	waitLog(t, e, "instances changed; starting or stopping instances")

	e.WriteConfig("", deployUpstream(app, 1, env, `deploy_grace = "10s"`))
	e.Signal(syscall.SIGHUP)
	eventually(t, 30*time.Second, "instances 1 and 2 stopped", func() bool {
		st := upstreams(t, e)
		return len(st) == 1 && len(st[0].Instances) == 1 && st[0].Instances[0].Instance == 0
	})
	eventually(t, 10*time.Second, "one process left", func() bool {
		n := 0
		for _, pid := range pids(t, pidsDir) {
			if alive(pid) {
				n++
			}
		}
		return n == 1
	})
	for range 10 {
		if code, body := c.get("/api/"); code != http.StatusOK || !strings.Contains(body, " instance=0 ") {
			t.Fatalf("after the reload to one instance: %d %q", code, body)
		}
	}
	l.end()
	if len(l.failures) > 0 {
		t.Fatalf("%d of %d requests failed while instances changed, first: %s", len(l.failures), l.total, l.failures[0])
	}
	t.Logf("%d requests, none failed", l.total)
}

// TestUnixSocketInstances: with socket_env each instance listens on a
// Unix socket, in a directory only edge's user can enter, and gets no
// port; both instances serve through it, one killed comes back on its
// socket, and the directory is gone once edge stops.
func TestUnixSocketInstances(t *testing.T) {
	t.Parallel()
	pidsDir := t.TempDir()
	cfg := strings.Replace(upstream(testApp(t), "api", 2, fmt.Sprintf(`PIDS_DIR = %q`, pidsDir)), `stop_grace = "3s"`,
		`stop_grace = "3s"`+"\n"+`socket_env = "SOCKET"`, 1)
	e := testpeer.StartEdge(t, "", cfg)
	c := caller{t, e, e.Client(t, false)}
	served := map[string]bool{}
	eventually(t, 20*time.Second, "both instances serve", func() bool {
		if code, body := c.get("/api/"); code == http.StatusOK {
			served[strings.Fields(body)[0]] = true
		}
		return len(served) == 2
	})
	code, body := c.get("/api/addr")
	socket, port, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(body, "socket=")), " port=")
	if code != http.StatusOK || !filepath.IsAbs(socket) || port != "" {
		t.Fatalf("GET /api/addr: %d %q, want a socket path and no port", code, body)
	}
	dir := filepath.Dir(socket)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory %s: %v %v, want mode 0700", dir, fi.Mode(), err)
	}
	for _, in := range upstreams(t, e)[0].Instances {
		if !strings.HasPrefix(in.Addr, "unix:"+dir+"/") {
			t.Fatalf("GET /upstreams: instance %d at %q, want a socket in %s", in.Instance, in.Addr, dir)
		}
	}
	before := pids(t, pidsDir)
	if err := syscall.Kill(before[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	served = map[string]bool{}
	eventually(t, 20*time.Second, "the killed instance restarted and serving", func() bool {
		if code, body := c.get("/api/"); code == http.StatusOK {
			served[strings.Fields(body)[0]] = true
		}
		return len(pids(t, pidsDir)) == 3 && len(served) >= 2 && !served["pid="+strconv.Itoa(before[0])]
	})
	e.Signal(syscall.SIGTERM)
	if err := e.Wait(20 * time.Second); err != nil {
		t.Fatalf("edge after SIGTERM: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket directory after edge stopped: %v, want it removed", err)
	}
}

// TestMaxMemoryRestarts: an instance whose resident memory exceeds
// max_memory is restarted, and the restart is counted as reason memory.
func TestMaxMemoryRestarts(t *testing.T) {
	t.Parallel()
	e := testpeer.StartEdge(t, "", strings.Replace(upstream(testApp(t), "api", 1, `BALLAST_MB = "64"`),
		`stop_grace = "3s"`, `stop_grace = "3s"`+"\nmax_memory = \"32MB\"", 1))
	eventually(t, 30*time.Second, "a restart for memory", func() bool {
		return strings.Contains(e.Metrics(t, "edge_upstream_instance_restarts_total"), `{reason="memory",upstream="api"} 1`)
	})
	waitLog(t, e, "instance above max_memory")
}

// TestHungInstanceTakenOut: an instance that stops answering its health
// check is taken out of the pool (state unhealthy, process left running)
// and the other serves everything.
func TestHungInstanceTakenOut(t *testing.T) {
	t.Parallel()
	e := testpeer.StartEdge(t, "", upstream(testApp(t), "api", 2, ""))
	c := caller{t, e, e.Client(t, false)}
	eventually(t, 20*time.Second, "both instances ready", func() bool {
		return strings.Contains(e.Metrics(t, "edge_upstream_instances{"), `{state="ready",upstream="api"} 2`)
	})
	code, hung := c.get("/api/hang")
	if code != 200 {
		t.Fatalf("/hang: %d %s", code, hung)
	}
	eventually(t, 20*time.Second, "the hung instance marked unhealthy", func() bool {
		return strings.Contains(e.Metrics(t, "edge_upstream_instances{"), `{state="unhealthy",upstream="api"} 1`)
	})
	for range 10 {
		if code, body := c.get("/api/"); code != 200 || body == hung {
			t.Fatalf("after the hang: %d %q (the hung instance is %q)", code, body, hung)
		}
	}
}

// TestInstanceOutputToLogFile: with log_file each instance writes its own
// file, stdout and stderr together, and long lines written on both streams
// at once arrive whole; edge's log no longer carries them.
func TestInstanceOutputToLogFile(t *testing.T) {
	t.Parallel()
	cfg := strings.Replace(upstream(testApp(t), "api", 2, ""), `stop_grace = "3s"`,
		`stop_grace = "3s"`+"\n"+`log_file = "api-{instance}.log"`, 1)
	e := testpeer.StartEdgeAnswering(t, "", cfg)
	c := caller{t, e, e.Client(t, false)}
	files := []string{filepath.Join(e.Dir, "api-0.log"), filepath.Join(e.Dir, "api-1.log")}
	spammed := func(f string) bool {
		b, _ := os.ReadFile(f)
		return bytes.Contains(b, []byte(" stdout v1 spam stdout 499 ")) && bytes.Contains(b, []byte(" stderr v1 spam stderr 499 "))
	}
	eventually(t, 20*time.Second, "both instances to write their log file", func() bool {
		if code, body := c.get("/api/spam"); code != http.StatusOK {
			t.Fatalf("GET /api/spam: %d %s", code, body)
		}
		return spammed(files[0]) && spammed(files[1])
	})
	line := regexp.MustCompile(`^\S+Z (?:stdout v1 app \d+ starting|(stdout|stderr) v1 spam (stdout|stderr) \d+ x{1000})$`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for l := range strings.Lines(string(b)) {
			// The stream edge read a line from is the one the app wrote it to.
			m := line.FindStringSubmatch(strings.TrimSuffix(l, "\n"))
			if m == nil || m[1] != m[2] {
				t.Fatalf("%s: a line not written whole: %.200q", filepath.Base(f), l)
			}
		}
	}
	if strings.Contains(e.Stderr(), `"line":"spam`) {
		t.Fatal("instance output in edge's log too, with log_file set")
	}
}

// TestInstanceOutputToLogFileAndEdgeLog: with log_file and log_edge each
// line goes to both.
func TestInstanceOutputToLogFileAndEdgeLog(t *testing.T) {
	t.Parallel()
	cfg := strings.Replace(upstream(testApp(t), "api", 1, ""), `stop_grace = "3s"`,
		`stop_grace = "3s"`+"\n"+`log_file = "api.log"`+"\n"+`log_edge = true`, 1)
	e := testpeer.StartEdgeAnswering(t, "", cfg)
	c := caller{t, e, e.Client(t, false)}
	_, body := c.get("/api/")
	pid := strings.TrimPrefix(strings.Fields(body)[0], "pid=")
	start := "app " + pid + " starting"
	waitLog(t, e, `"line":"`+start+`"`)
	eventually(t, 10*time.Second, "the line in api.log", func() bool {
		b, _ := os.ReadFile(filepath.Join(e.Dir, "api.log"))
		return bytes.Contains(b, []byte(" stdout v1 "+start+"\n"))
	})
}
