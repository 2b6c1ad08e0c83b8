package testpeer

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PrometheusServer is a real Prometheus (the Debian package) owned by a
// test, scraping the targets it was given every second.
type PrometheusServer struct {
	// URL is the base of its HTTP API, http://127.0.0.1:port.
	URL string

	t       testing.TB
	logPath string
}

// PrometheusOptions say what the server scrapes and evaluates.
type PrometheusOptions struct {
	// Job is the scrape job's name (alerts may select on it).
	Job string
	// Targets are host:port addresses scraped at /metrics every second.
	Targets []string
	// RuleFiles are alert or recording rule files, by absolute path.
	RuleFiles []string
}

// Prometheus starts a Prometheus on a free loopback port with a 1 s scrape
// and evaluation interval; it stops with the test.
func Prometheus(t testing.TB, o PrometheusOptions) *PrometheusServer {
	t.Helper()
	bin := Binary(t, "prometheus")
	dir := t.TempDir()
	targets, err := json.Marshal(o.Targets)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := json.Marshal(o.RuleFiles)
	if err != nil {
		t.Fatal(err)
	}
	// JSON is YAML, so the lists need no YAML library.
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: %s
scrape_configs:
  - job_name: %q
    static_configs:
      - targets: %s
`, rules, o.Job, targets)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := FreePort(t)
	p := &PrometheusServer{URL: "http://" + addr, t: t, logPath: filepath.Join(dir, "prometheus.log")}
	log, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--storage.tsdb.retention.time=1h")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("starting prometheus: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log.Close()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 20s:\n%s", p.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LogTail is the end of Prometheus' log, for failure messages.
func (p *PrometheusServer) LogTail() string { return LogTail(p.logPath, 30) }

// Sample is one series of an instant query's answer.
type Sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// Query evaluates an instant PromQL query now. An error is the server's
// own (a bad query) or a transport failure.
func (p *PrometheusServer) Query(query string) ([]Sample, error) {
	resp, err := http.Get(p.URL + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return nil, fmt.Errorf("querying prometheus: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("reading prometheus' answer: %w", err)
	}
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("decoding prometheus' answer %q: %w", body, err)
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("prometheus: %s", out.Error)
	}
	if out.Data.ResultType != "vector" {
		return nil, fmt.Errorf("prometheus answered a %s, not an instant vector", out.Data.ResultType)
	}
	var samples []Sample
	if err := json.Unmarshal(out.Data.Result, &samples); err != nil {
		return nil, fmt.Errorf("decoding prometheus' vector: %w", err)
	}
	return samples, nil
}

// RuleHealth is one rule as /api/v1/rules reports it.
type RuleHealth struct {
	Name      string `json:"name"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// Rules lists every loaded rule with its evaluation health.
func (p *PrometheusServer) Rules() ([]RuleHealth, error) {
	resp, err := http.Get(p.URL + "/api/v1/rules")
	if err != nil {
		return nil, fmt.Errorf("listing rules: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Groups []struct {
				Rules []RuleHealth `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("decoding rules: %w", err)
	}
	var rules []RuleHealth
	for _, g := range out.Data.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules, nil
}

// WaitScraped waits until Prometheus has scraped every target of job
// successfully at least once after now.
func (p *PrometheusServer) WaitScraped(job string, within time.Duration) {
	p.t.Helper()
	since := time.Now()
	deadline := since.Add(within)
	for {
		// timestamp() of a plain selector is the time of the scrape.
		up, err := p.Query(fmt.Sprintf(`up{job=%q}`, job))
		var samples []Sample
		if err == nil {
			samples, err = p.Query(fmt.Sprintf(`timestamp(up{job=%q})`, job))
		}
		if err == nil && len(up) > 0 && allValue(up, "1") && len(samples) == len(up) && allAfter(samples, since) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("prometheus did not scrape job %q within %s (last: %v %v):\n%s", job, within, samples, err, p.LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func allValue(samples []Sample, want string) bool {
	for _, s := range samples {
		if v, ok := s.Value[1].(string); !ok || v != want {
			return false
		}
	}
	return true
}

func allAfter(samples []Sample, t time.Time) bool {
	for _, s := range samples {
		v, ok := s.Value[1].(string)
		if !ok {
			return false
		}
		var ts float64
		if _, err := fmt.Sscan(strings.TrimSpace(v), &ts); err != nil || ts < float64(t.UnixMilli())/1000 {
			return false
		}
	}
	return true
}

// StartEdgeAt is StartEdgeIn with listener addresses chosen by the test,
// for peers that must know edge's ports before it starts (Pebble validates
// challenges on them).
func StartEdgeAt(t testing.TB, dir string, addrs [3]string, serverExtra, body string) *EdgeProcess {
	t.Helper()
	e := &EdgeProcess{HTTPS: addrs[0], HTTP: addrs[1], Admin: addrs[2], Dir: dir, t: t,
		ConfigPath: filepath.Join(dir, "edge.toml")}
	e.WriteConfig(serverExtra, body)
	e.start(true)
	return e
}
