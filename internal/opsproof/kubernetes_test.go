package opsproof

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/pelletier/go-toml/v2"

	"edge/internal/testpeer"
)

var update = flag.Bool("update", false, "rewrite deploy/kubernetes/ from the Helm chart")

const chartDir = "deploy/helm/edge"

// object is one rendered Kubernetes object, as decoded YAML.
type object map[string]any

// get walks a path of map keys and list indexes ("spec", "ports", 0, ...).
func (o object) get(path ...any) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			cur = l[k]
		}
	}
	return cur
}

func (o object) str(path ...any) string { return fmt.Sprint(o.get(path...)) }

func (o object) num(t *testing.T, path ...any) int {
	t.Helper()
	switch v := o.get(path...).(type) {
	case uint64:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	}
	t.Fatalf("%s %v: %v is not a number", o.str("kind"), path, o.get(path...))
	return 0
}

// helmTemplate renders the chart with extra `helm template` arguments.
func helmTemplate(t *testing.T, args ...string) (string, map[string]object) {
	t.Helper()
	helm := testpeer.Binary(t, "helm")
	out := runTool(t, testpeer.RepoRoot(t), helm, append([]string{"template", "edge", chartDir}, args...)...)
	objs := map[string]object{}
	for _, doc := range strings.Split(out, "\n---\n") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if o == nil {
			continue
		}
		objs[o.str("kind")+"/"+o.str("metadata", "name")] = o
	}
	return out, objs
}

// serverSection is the part of the rendered edge.toml the chart's other
// objects must agree with.
type serverSection struct {
	Server struct {
		ListenHTTPS       string   `toml:"listen_https"`
		ListenHTTP        string   `toml:"listen_http"`
		ListenAdmin       string   `toml:"listen_admin"`
		ShutdownDelay     string   `toml:"shutdown_delay"`
		ShutdownGrace     string   `toml:"shutdown_grace"`
		ProxyProtocolFrom []string `toml:"proxy_protocol_from"`
	} `toml:"server"`
	Cluster struct {
		Redis string `toml:"redis"`
	} `toml:"cluster"`
}

// TestHelmChart lints the chart and checks what it renders against what
// edge does: the probes and ports against the listeners in the TOML it
// ships, the preStop sleep and terminationGracePeriodSeconds against
// shutdown_delay and shutdown_grace, the PodDisruptionBudget against the
// replicas, and the TOML itself through `edge validate` (with a real
// Redis behind [cluster] redis).
func TestHelmChart(t *testing.T) {
	helm := testpeer.Binary(t, "helm")
	runTool(t, testpeer.RepoRoot(t), helm, "lint", "--strict", chartDir)
	// A delay the readiness probe cannot beat is refused, naming the value.
	cmd := exec.Command(helm, "template", "edge", chartDir, "--set", "shutdown.delaySeconds=2")
	cmd.Dir = testpeer.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "shutdown.delaySeconds is 2: make it 5 or more") {
		t.Errorf("shutdown.delaySeconds=2 rendered: %v\n%s", err, out)
	}
	bin := testpeer.EdgeBinary(t)
	redis := testpeer.Redis(t)
	t.Setenv("EDGE_ADMIN_TOKEN", strings.Repeat("0123456789abcdef", 4))
	t.Setenv("EDGE_REDIS_URL", "redis://"+redis.Addr+"/0")

	for _, tt := range []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"behind a PROXY protocol balancer, three replicas, ServiceMonitor", []string{
			"--set", "server.proxyProtocolFrom={10.0.0.0/8,172.16.0.0/12}",
			"--set", "server.extra.trusted_proxies={10.0.0.0/8}",
			"--set", "replicaCount=3", "--set", "serviceMonitor.enabled=true",
			"--set", "shutdown.delaySeconds=20", "--set", "shutdown.graceSeconds=60",
		}},
		{"one replica without Redis", []string{"--set", "replicaCount=1", "--set", "cluster.redis=false", "--set", "podDisruptionBudget.enabled=false"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, objs := helmTemplate(t, tt.args...)
			cm, dep := objs["ConfigMap/edge"], objs["Deployment/edge"]
			if cm == nil || dep == nil {
				t.Fatalf("rendered %v: no ConfigMap or Deployment named edge", keys(objs))
			}
			text := cm.str("data", "edge.toml")
			path := filepath.Join(t.TempDir(), "edge.toml")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if out := runTool(t, t.TempDir(), bin, "validate", "-config", path); !strings.Contains(out, "is valid") {
				t.Fatalf("edge validate on the ConfigMap's edge.toml:\n%s\n%s", out, text)
			}
			var cfg serverSection
			if err := toml.Unmarshal([]byte(text), &cfg); err != nil {
				t.Fatal(err)
			}
			checkDeployment(t, dep, cfg)
			checkServices(t, objs, dep)
			checkPDB(t, objs, dep)
			if has := objs["ServiceMonitor/edge"] != nil; has != strings.Contains(strings.Join(tt.args, " "), "serviceMonitor.enabled=true") {
				t.Errorf("ServiceMonitor rendered: %v", has)
			}
			if sm := objs["ServiceMonitor/edge"]; sm != nil && (sm.str("spec", "endpoints", 0, "port") != "metrics" || sm.str("spec", "endpoints", 0, "path") != "/metrics") {
				t.Errorf("ServiceMonitor endpoint: %v", sm.get("spec", "endpoints"))
			}
			if want := strings.Contains(strings.Join(tt.args, " "), "cluster.redis=false"); want != (cfg.Cluster.Redis == "") {
				t.Errorf("[cluster] redis = %q", cfg.Cluster.Redis)
			}
		})
	}
}

func keys(m map[string]object) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func port(t *testing.T, key, addr string) int {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	var p int
	if _, err := fmt.Sscan(addr[i+1:], &p); i < 0 || err != nil {
		t.Fatalf("%s = %q has no port", key, addr)
	}
	return p
}

func seconds(t *testing.T, key, d string) int {
	t.Helper()
	v, err := time.ParseDuration(d)
	if err != nil {
		t.Fatalf("%s = %q: %v", key, d, err)
	}
	return int(v.Seconds())
}

func checkDeployment(t *testing.T, dep object, cfg serverSection) {
	t.Helper()
	pod := object(dep.get("spec", "template", "spec").(map[string]any))
	c := object(pod.get("containers", 0).(map[string]any))
	ports := map[string]int{}
	for i := range c.get("ports").([]any) {
		ports[c.str("ports", i, "name")] = c.num(t, "ports", i, "containerPort")
	}
	for name, addr := range map[string]string{"https": cfg.Server.ListenHTTPS, "http": cfg.Server.ListenHTTP, "admin": cfg.Server.ListenAdmin} {
		if want := port(t, "server.listen_"+name, addr); ports[name] != want {
			t.Errorf("container port %q is %d, the listener is on %d", name, ports[name], want)
		}
	}
	if !strings.HasPrefix(cfg.Server.ListenAdmin, ":") {
		t.Errorf("listen_admin = %q: the kubelet probes the pod IP, not loopback", cfg.Server.ListenAdmin)
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if c.str(probe, "httpGet", "path") != path || c.str(probe, "httpGet", "port") != "admin" {
			t.Errorf("%s: %v, want GET %s on the admin port", probe, c.get(probe), path)
		}
	}
	if cmd := c.str("args"); !strings.Contains(cmd, "/etc/edge/edge.toml") {
		t.Errorf("args %s do not name the ConfigMap's file", cmd)
	}
	for i := range c.get("volumeMounts").([]any) {
		if c.get("volumeMounts", i, "subPath") != nil {
			t.Errorf("volume mount %v uses subPath: a ConfigMap mounted so never updates", c.get("volumeMounts", i))
		}
		if c.str("volumeMounts", i, "name") == "config" && c.str("volumeMounts", i, "mountPath") != "/etc/edge" {
			t.Errorf("config mounted at %s", c.str("volumeMounts", i, "mountPath"))
		}
	}

	// Stopping: the preStop sleep, then SIGTERM: shutdown_delay of serving
	// with /readyz at 503, then up to shutdown_grace of draining. The
	// kubelet's grace period counts from the preStop hook.
	sleep := c.get("lifecycle", "preStop", "exec", "command").([]any)
	if len(sleep) != 2 || sleep[0] != "sleep" {
		t.Fatalf("preStop is %v, want [sleep N]", sleep)
	}
	var preStop int
	if _, err := fmt.Sscan(fmt.Sprint(sleep[1]), &preStop); err != nil || preStop <= 0 {
		t.Fatalf("preStop sleep %v", sleep[1])
	}
	delay := seconds(t, "server.shutdown_delay", cfg.Server.ShutdownDelay)
	grace := seconds(t, "server.shutdown_grace", cfg.Server.ShutdownGrace)
	if delay <= 0 {
		t.Errorf("shutdown_delay = %s: the listeners would close while the readiness probe still passes", cfg.Server.ShutdownDelay)
	}
	if tg := pod.num(t, "terminationGracePeriodSeconds"); tg < preStop+delay+grace {
		t.Errorf("terminationGracePeriodSeconds %d < preStop %d + shutdown_delay %d + shutdown_grace %d: the kubelet kills the drain", tg, preStop, delay, grace)
	}
	if noticed := c.num(t, "readinessProbe", "periodSeconds") * c.num(t, "readinessProbe", "failureThreshold"); noticed >= delay {
		t.Errorf("readiness notices the 503 after %d s, shutdown_delay is %d s: the listeners close first", noticed, delay)
	}
}

func checkServices(t *testing.T, objs map[string]object, dep object) {
	t.Helper()
	labels := dep.get("spec", "template", "metadata", "labels").(map[string]any)
	for name, want := range map[string]map[string]string{
		"Service/edge":         {"https": "443:https", "http": "80:http"},
		"Service/edge-metrics": {"metrics": "9180:admin"},
	} {
		svc := objs[name]
		if svc == nil {
			t.Errorf("no %s", name)
			continue
		}
		for k, v := range svc.get("spec", "selector").(map[string]any) {
			if labels[k] != v {
				t.Errorf("%s selects %s=%v, the pods have %v", name, k, v, labels[k])
			}
		}
		got := map[string]string{}
		for i := range svc.get("spec", "ports").([]any) {
			got[svc.str("spec", "ports", i, "name")] = svc.str("spec", "ports", i, "port") + ":" + svc.str("spec", "ports", i, "targetPort")
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s ports %v, want %v", name, got, want)
		}
	}
	if objs["Service/edge-metrics"].str("spec", "type") != "ClusterIP" {
		t.Error("the metrics Service must stay inside the cluster")
	}
}

func checkPDB(t *testing.T, objs map[string]object, dep object) {
	t.Helper()
	pdb := objs["PodDisruptionBudget/edge"]
	replicas := dep.num(t, "spec", "replicas")
	if pdb == nil {
		if replicas > 1 {
			t.Errorf("%d replicas and no PodDisruptionBudget", replicas)
		}
		return
	}
	if mu := pdb.num(t, "spec", "maxUnavailable"); mu < 1 || mu >= replicas {
		t.Errorf("PodDisruptionBudget maxUnavailable %d with %d replicas", mu, replicas)
	}
	labels := dep.get("spec", "template", "metadata", "labels").(map[string]any)
	for k, v := range pdb.get("spec", "selector", "matchLabels").(map[string]any) {
		if labels[k] != v {
			t.Errorf("the PodDisruptionBudget selects %s=%v, the pods have %v", k, v, labels[k])
		}
	}
}

// manifestHeader opens deploy/kubernetes/edge.yaml.
const manifestHeader = `# edge on Kubernetes without Helm: the chart in deploy/helm/edge rendered with
# its default values (helm template edge deploy/helm/edge). Do not edit: change
# the chart, then run
#   go test ./internal/opsproof -run TestPlainManifests -update
# docs/kubernetes.md says what to change for your cluster.
`

// TestPlainManifests keeps deploy/kubernetes/edge.yaml what the chart
// renders, so the two ways to deploy never drift.
func TestPlainManifests(t *testing.T) {
	out, _ := helmTemplate(t)
	want := manifestHeader + out
	path := repoFile(t, "deploy/kubernetes/edge.yaml")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := readRepoFile(t, "deploy/kubernetes/edge.yaml"); got != want {
		t.Fatal("deploy/kubernetes/edge.yaml is not what the chart renders; run go test ./internal/opsproof -run TestPlainManifests -update")
	}
}
