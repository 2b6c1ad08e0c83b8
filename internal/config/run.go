package config

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// validateRun checks an upstream's [upstreams.run] and resolves its dir.
func validateRun(c *checker, key string, u *Upstream) {
	r := u.Run
	rk := key + ".run"
	if r.Dir == "" {
		r.Dir = c.dir
	} else {
		c.resolve(&r.Dir)
		if fi, err := os.Stat(r.Dir); err != nil || !fi.IsDir() {
			c.add(rk+".dir", "%q is not a directory; it is the instances' working directory (default: the config file's)", r.Dir)
		}
	}
	switch {
	case r.Command == "":
		c.add(rk+".command", `is missing; write the program to run, like command = "node" and args = ["server.js"]`)
	case !strings.Contains(r.Command, "/"):
		if _, err := exec.LookPath(r.Command); err != nil {
			c.add(rk+".command", "%q is not found in PATH; install it or write its full path", r.Command)
		}
	}
	if r.Instances < 1 {
		c.add(rk+".instances", "must be 1 or more, not %d; it is how many copies of the app run (pm2's instances)", r.Instances)
	}
	if !validEnvName(r.PortEnv) {
		c.add(rk+".port_env", "%q is not an environment variable name; write letters, digits and _, like \"PORT\"", r.PortEnv)
	}
	if r.SocketEnv != "" {
		if !validEnvName(r.SocketEnv) {
			c.add(rk+".socket_env", "%q is not an environment variable name; write letters, digits and _, like \"SOCKET\"", r.SocketEnv)
		}
		if c.has(rk + ".port_env") {
			c.add(rk+".port_env", "is not used with socket_env: instances listen on a Unix socket, not a port; remove one of the two")
		}
	}
	addrEnv, addrKey := r.PortEnv, "port_env"
	if r.SocketEnv != "" {
		addrEnv, addrKey = r.SocketEnv, "socket_env"
	}
	for name := range r.Env {
		if !validEnvName(name) {
			c.add(joinKey(rk+".env", name), "%q is not an environment variable name; write letters, digits and _", name)
		}
		if name == addrEnv {
			c.add(joinKey(rk+".env", name), "is set by edge for each instance (%s); remove it from env", addrKey)
		}
	}
	if r.DeployTimeout <= 0 {
		c.add(rk+".deploy_timeout", `must be more than 0, like "60s"; it is how long a deploy waits for a new instance to pass its health check`)
	}
	if r.MaxSurge < 1 {
		c.add(rk+".max_surge", "must be 1 or more, not %d; it is how many instances a deploy replaces at once", r.MaxSurge)
	}
	if r.StopGrace <= 0 {
		c.add(rk+".stop_grace", `must be more than 0, like "10s"; it is how long an instance has to exit after SIGTERM`)
	}
	if r.LogFile != "" {
		c.resolve(&r.LogFile)
		if r.Instances > 1 && !strings.Contains(r.LogFile, "{instance}") {
			c.add(rk+".log_file", `must contain {instance} with more than one instance, like "logs/api-{instance}.log": each instance writes its own file`)
		}
		if fi, err := os.Stat(filepath.Dir(r.LogFile)); err != nil || !fi.IsDir() {
			c.add(rk+".log_file", "%q: the directory %q does not exist; create it or write another path", r.LogFile, filepath.Dir(r.LogFile))
		}
	}
	if u.HealthCheck.Path == "" {
		c.add(key+".health_check.path", `is required with [upstreams.run]: an instance gets traffic only once it answers it; write path = "/healthz" (any path the app answers with 2xx)`)
	}
}

// RunEnv is the run's environment as "NAME=value" lines, in name order.
func (r *Run) RunEnv() []string {
	out := make([]string, 0, len(r.Env))
	for _, name := range slices.Sorted(maps.Keys(r.Env)) {
		out = append(out, name+"="+r.Env[name].Value())
	}
	return out
}

// runFingerprint tells whether the set of upstreams edge runs, or the log
// settings of one, or whether it listens on ports or sockets, differ:
// those take a restart.
func runFingerprint(c *Config) string {
	var b strings.Builder
	for _, u := range c.Upstreams {
		if r := u.Run; r != nil {
			fmt.Fprintf(&b, "%q %q %t %t\n", u.Name, r.LogFile, r.LogEdge, r.SocketEnv != "")
		}
	}
	return b.String()
}

// instanceFingerprint is what an instance is started with, secrets
// included (by value, which a Secret's printing hides).
func (r *Run) instanceFingerprint() string {
	return fmt.Sprintf("%q %q %q %q %q %q %d %d", r.Command, r.Args, r.Dir, r.RunEnv(), r.PortEnv, r.SocketEnv, r.StopGrace, r.MaxMemory)
}

// RedeployNeeded names the upstreams run in both cur and next whose
// instances next starts differently (command, args, dir, env, port_env,
// socket_env, stop_grace, max_memory): a reload replaces them by a
// rolling deploy.
func RedeployNeeded(cur, next *Config) []string {
	running := make(map[string]*Run)
	for _, u := range cur.Upstreams {
		running[u.Name] = u.Run
	}
	var names []string
	for _, u := range next.Upstreams {
		if old := running[u.Name]; old != nil && u.Run != nil && old.instanceFingerprint() != u.Run.instanceFingerprint() {
			names = append(names, u.Name)
		}
	}
	return names
}

// KeepRun keeps in next what only a restart changes: an upstream keeps
// its log settings and its kind of address (port or socket), and a run
// that a reload adds or removes waits for the restart (next gets the
// running one, or none).
func KeepRun(cur, next *Config) {
	running := make(map[string]*Run)
	for _, u := range cur.Upstreams {
		running[u.Name] = u.Run
	}
	for i := range next.Upstreams {
		u := &next.Upstreams[i]
		old := running[u.Name]
		if old == nil || u.Run == nil {
			u.Run = old
			continue
		}
		u.Run.LogFile, u.Run.LogEdge = old.LogFile, old.LogEdge
		if (old.SocketEnv == "") != (u.Run.SocketEnv == "") {
			u.Run.SocketEnv, u.Run.PortEnv = old.SocketEnv, old.PortEnv
		}
	}
}
