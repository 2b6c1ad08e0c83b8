package opsproof

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"edge/internal/testpeer"
)

// repoFile is the absolute path of a file given relative to the repository.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	return filepath.Join(testpeer.RepoRoot(t), filepath.FromSlash(rel))
}

func readRepoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(repoFile(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// runTool runs a command in dir and fails the test with its output when it
// exits non-zero.
func runTool(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPromtool(t *testing.T) {
	promtool := testpeer.Binary(t, "promtool")
	dir := repoFile(t, "deploy/prometheus")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
		{"check", "config", "prometheus.yml"},
	} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			runTool(t, dir, promtool, args...)
		})
	}
}

var (
	alertName   = regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)\s*$`)
	runbookLine = regexp.MustCompile(`(?m)^\s*runbook:\s*"docs/operations\.md#([a-z0-9-]+)"\s*$`)
	mdHeading   = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
)

// alertNames lists the alerts of alerts.yml in file order.
func alertNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, m := range alertName.FindAllStringSubmatch(readRepoFile(t, "deploy/prometheus/alerts.yml"), -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatal("alerts.yml has no alert")
	}
	return names
}

// TestAlertsTestedBothWays requires, for every alert, one evaluation in
// alerts_test.yml that expects it to fire and one that expects silence:
// promtool then proves both.
func TestAlertsTestedBothWays(t *testing.T) {
	lines := strings.Split(readRepoFile(t, "deploy/prometheus/alerts_test.yml"), "\n")
	fires, quiet := map[string]bool{}, map[string]bool{}
	for i := 0; i+1 < len(lines); i++ {
		name, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), "alertname: ")
		if !ok {
			continue
		}
		switch strings.TrimSpace(lines[i+1]) {
		case "exp_alerts: []":
			quiet[name] = true
		case "exp_alerts:":
			fires[name] = true
		}
	}
	for _, name := range alertNames(t) {
		if !fires[name] {
			t.Errorf("alerts_test.yml has no case where %s fires", name)
		}
		if !quiet[name] {
			t.Errorf("alerts_test.yml has no case where %s stays quiet", name)
		}
	}
}

// githubAnchor is the fragment GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// TestAlertRunbooks requires every alert to link to a section of
// docs/operations.md that exists and to be named in that guide.
func TestAlertRunbooks(t *testing.T) {
	ops := readRepoFile(t, "docs/operations.md")
	anchors := map[string]bool{}
	for _, m := range mdHeading.FindAllStringSubmatch(ops, -1) {
		anchors[githubAnchor(m[1])] = true
	}
	alerts := readRepoFile(t, "deploy/prometheus/alerts.yml")
	links := runbookLine.FindAllStringSubmatch(alerts, -1)
	if names := alertNames(t); len(links) != len(names) {
		t.Errorf("%d alerts but %d runbook links; every alert needs one", len(names), len(links))
	}
	for _, m := range links {
		if !anchors[m[1]] {
			t.Errorf("runbook docs/operations.md#%s: no such heading", m[1])
		}
	}
	for _, name := range alertNames(t) {
		if !strings.Contains(ops, name) {
			t.Errorf("docs/operations.md does not explain %s", name)
		}
	}
}
