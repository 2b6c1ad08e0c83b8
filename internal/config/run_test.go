package config

import (
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// runUpstream is an upstream with a valid run on lines 1-6, before the
// lines a case adds to [upstreams.run].
func runUpstream(lines ...string) string {
	return doc(append([]string{`[[upstreams]]`, `name = "api"`, `[upstreams.health_check]`, `path = "/healthz"`,
		`[upstreams.run]`, `command = "sh"`}, lines...)...)
}

func TestRunProblems(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []want
	}{
		{"no command", doc(`[[upstreams]]`, `name = "api"`, `[upstreams.health_check]`, `path = "/healthz"`, `[upstreams.run]`, `args = ["x"]`),
			[]want{{"upstreams[0].run.command", 5, "is missing; write the program to run"}}},
		{"command not in PATH", doc(`[[upstreams]]`, `name = "api"`, `[upstreams.health_check]`, `path = "/healthz"`, `[upstreams.run]`, `command = "no-such-program-edge"`),
			[]want{{"upstreams[0].run.command", 6, `"no-such-program-edge" is not found in PATH`}}},
		{"no health check", doc(`[[upstreams]]`, `name = "api"`, `[upstreams.run]`, `command = "sh"`),
			[]want{{"upstreams[0].health_check.path", 1, "is required with [upstreams.run]"}}},
		{"bad values", runUpstream(`instances = 0`, `port_env = "1PORT"`, `stop_grace = "0s"`, `dir = "no-such-dir"`,
			`deploy_timeout = "0s"`, `deploy_grace = "-1s"`, `max_surge = 0`),
			[]want{
				{"upstreams[0].run.instances", 7, "must be 1 or more, not 0"},
				{"upstreams[0].run.port_env", 8, `"1PORT" is not an environment variable name`},
				{"upstreams[0].run.stop_grace", 9, "must be more than 0"},
				{"upstreams[0].run.dir", 10, "is not a directory"},
				{"upstreams[0].run.deploy_timeout", 11, "must be more than 0"},
				{"upstreams[0].run.deploy_grace", 12, `"-1s" is negative`},
				{"upstreams[0].run.max_surge", 13, "must be 1 or more, not 0"},
			}},
		{"env sets the port", runUpstream(`env = { PORT = "3000" }`),
			[]want{{"upstreams[0].run.env.PORT", 7, "is set by edge for each instance"}}},
		{"log files", runUpstream(`instances = 2`, `log_file = "logs/api.log"`),
			[]want{
				{"upstreams[0].run.log_file", 8, "must contain {instance} with more than one instance"},
				{"upstreams[0].run.log_file", 8, "does not exist"},
			}},
		{"socket and port", runUpstream(`socket_env = "SOCKET"`, `port_env = "PORT"`, `env = { SOCKET = "/x" }`),
			[]want{
				{"upstreams[0].run.port_env", 8, "is not used with socket_env"},
				{"upstreams[0].run.env.SOCKET", 9, "is set by edge for each instance (socket_env)"},
			}},
		{"bad socket_env", runUpstream(`socket_env = "APP SOCKET"`),
			[]want{{"upstreams[0].run.socket_env", 7, `"APP SOCKET" is not an environment variable name`}}},
		{"unknown key", runUpstream(`instance = 2`),
			[]want{{"upstreams[0].run.instance", 7, `did you mean "instances"?`}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, e := parseIn(t, testDir(t), tc.text)
			wantProblems(t, e, tc.want)
		})
	}
}

func TestRunDefaultsAndEnv(t *testing.T) {
	dir := testDir(t)
	t.Setenv("EDGE_TEST_DB_PASSWORD", "s3cret")
	cfg := mustParse(t, dir, runUpstream(`args = ["server.js"]`, `env = { NODE_ENV = "production", DB_PASSWORD = "${EDGE_TEST_DB_PASSWORD}" }`, `max_memory = "300MB"`))
	r := cfg.Upstreams[0].Run
	abs, _ := filepath.Abs(dir)
	if r.Instances != 1 || r.PortEnv != "PORT" || r.StopGrace.Std() != 10*time.Second || r.MaxMemory != 300<<20 || r.Dir != abs ||
		r.DeployTimeout.Std() != 60*time.Second || r.DeployGrace.Std() != 30*time.Second || r.MaxSurge != 1 {
		t.Fatalf("run: %+v", r)
	}
	if got := r.RunEnv(); !slices.Equal(got, []string{"DB_PASSWORD=s3cret", "NODE_ENV=production"}) {
		t.Fatalf("env: %q", got)
	}
}

// TestRunChangeRedeploys: a change of how instances run, a secret's value
// included, is a deploy and no restart; a change of instances is neither
// (a reload starts or stops instances); a switch between ports and
// sockets, the log settings and a run a reload adds wait for the restart.
func TestRunChangeRedeploys(t *testing.T) {
	dir := testDir(t)
	t.Setenv("EDGE_TEST_TOKEN", "one")
	cur := mustParse(t, dir, runUpstream(`env = { TOKEN = "${EDGE_TEST_TOKEN}" }`))
	t.Setenv("EDGE_TEST_TOKEN", "two")
	next := mustParse(t, dir, runUpstream(`env = { TOKEN = "${EDGE_TEST_TOKEN}" }`, `max_surge = 2`))
	if got := RestartNeeded(cur, next); len(got) != 0 {
		t.Fatalf("restart needed: %v", got)
	}
	if got := RedeployNeeded(cur, next); !slices.Equal(got, []string{"api"}) {
		t.Fatalf("redeploy needed: %v", got)
	}
	if got := RedeployNeeded(next, mustParse(t, dir, runUpstream(`env = { TOKEN = "${EDGE_TEST_TOKEN}" }`, `deploy_grace = "1s"`))); len(got) != 0 {
		t.Fatalf("a deploy setting alone redeploys: %v", got)
	}

	scaled := mustParse(t, dir, runUpstream(`instances = 3`))
	if got := RestartNeeded(cur, scaled); len(got) != 0 {
		t.Fatalf("restart needed for instances: %v", got)
	}
	KeepRun(cur, scaled)
	if scaled.Upstreams[0].Run.Instances != 3 {
		t.Fatalf("after KeepRun: instances %d, want the new 3 (a reload starts or stops instances)", scaled.Upstreams[0].Run.Instances)
	}
	socket := mustParse(t, dir, runUpstream(`socket_env = "SOCKET"`, `args = ["x"]`))
	if got := RestartNeeded(cur, socket); !slices.Equal(got, []string{"upstreams.run"}) {
		t.Fatalf("restart needed for a switch to sockets: %v", got)
	}
	KeepRun(cur, socket)
	if got := RestartNeeded(cur, socket); len(got) != 0 || socket.Upstreams[0].Run.SocketEnv != "" || !slices.Equal(socket.Upstreams[0].Run.Args, []string{"x"}) {
		t.Fatalf("after KeepRun: %v %+v", got, socket.Upstreams[0].Run)
	}
	both := mustParse(t, dir, runUpstream(`log_edge = true`))
	if got := RestartNeeded(cur, both); !slices.Equal(got, []string{"upstreams.run"}) {
		t.Fatalf("restart needed for log_edge: %v", got)
	}
	logged := mustParse(t, dir, runUpstream(`log_file = "api.log"`))
	if got := RestartNeeded(cur, logged); !slices.Equal(got, []string{"upstreams.run"}) {
		t.Fatalf("restart needed for log_file: %v", got)
	}
	KeepRun(cur, logged)
	if logged.Upstreams[0].Run.LogFile != "" {
		t.Fatalf("after KeepRun: log_file %q", logged.Upstreams[0].Run.LogFile)
	}

	added := mustParse(t, dir, runUpstream()+"\n"+doc(`[[upstreams]]`, `name = "new"`, `[upstreams.health_check]`, `path = "/h"`, `[upstreams.run]`, `command = "sh"`))
	KeepRun(cur, added)
	if added.Upstreams[1].Run != nil {
		t.Fatal("a run added by a reload must wait for a restart")
	}
}
