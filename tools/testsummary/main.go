// Command testsummary reads what tools/test.sh recorded — `go test -json`
// events and Node's TAP report — and prints one summary: how many tests ran,
// passed, failed and were skipped, every failure, and the reason for every
// skip. It exits 1 when anything failed or no test ran.
//
//	testsummary -progress < go-test.json    print package results as they arrive
//	testsummary -go go.json -node node.tap  print the summary
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	Elapsed     float64
	FailedBuild string
	ImportPath  string
}

type counts struct{ ran, passed, failed, skipped int }

type report struct {
	counts
	failures []string // "pkg Test: output"
	skips    []string // "pkg Test: reason"
}

func main() {
	progress := flag.Bool("progress", false, "echo package results from go test -json on stdin as they arrive")
	goFile := flag.String("go", "", "go test -json output")
	nodeFile := flag.String("node", "", "node --test --test-reporter=tap output")
	flag.Parse()
	if *progress {
		echoProgress(os.Stdin, os.Stdout)
		return
	}
	var all counts
	ok := true
	if *goFile != "" {
		r, err := readGo(*goFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testsummary:", err)
			os.Exit(2)
		}
		printReport("Go", r)
		all = add(all, r.counts)
		ok = ok && r.failed == 0
	}
	if *nodeFile != "" {
		r, err := readTAP(*nodeFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testsummary:", err)
			os.Exit(2)
		}
		printReport("Node", r)
		all = add(all, r.counts)
		ok = ok && r.failed == 0
	}
	fmt.Printf("\nALL: %d ran, %d passed, %d failed, %d skipped\n", all.ran, all.passed, all.failed, all.skipped)
	if !ok || all.ran == 0 {
		os.Exit(1)
	}
}

func add(a, b counts) counts {
	return counts{a.ran + b.ran, a.passed + b.passed, a.failed + b.failed, a.skipped + b.skipped}
}

func printReport(suite string, r report) {
	fmt.Printf("\n%s: %d ran, %d passed, %d failed, %d skipped\n", suite, r.ran, r.passed, r.failed, r.skipped)
	for _, f := range r.failures {
		fmt.Printf("  FAIL %s\n", f)
	}
	for _, s := range r.skips {
		fmt.Printf("  SKIP %s\n", s)
	}
}

// echoProgress prints a line per package (and the output of failed tests)
// while the run goes on, so a long run is not silent.
func echoProgress(in io.Reader, out io.Writer) {
	outputs := map[string][]string{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			fmt.Fprintln(out, sc.Text())
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output", "build-output":
			if e.Test != "" || e.Action == "build-output" {
				outputs[key] = append(outputs[key], e.Output)
			}
		case "fail":
			if e.Test != "" {
				fmt.Fprintf(out, "--- FAIL %s %s (%.1fs)\n%s", e.Package, e.Test, e.Elapsed, strings.Join(outputs[key], ""))
			} else {
				fmt.Fprintf(out, "FAIL    %s (%.1fs)%s\n", e.Package, e.Elapsed, buildNote(e))
			}
			delete(outputs, key)
		case "pass", "skip":
			if e.Test == "" {
				fmt.Fprintf(out, "%-7s %s (%.1fs)\n", map[string]string{"pass": "ok", "skip": "-"}[e.Action], e.Package, e.Elapsed)
			}
			delete(outputs, key)
		}
	}
}

func buildNote(e event) string {
	if e.FailedBuild != "" {
		return " [build failed: " + e.FailedBuild + "]"
	}
	return ""
}

func readGo(path string) (report, error) {
	f, err := os.Open(path)
	if err != nil {
		return report{}, err
	}
	defer f.Close()
	var r report
	outputs := map[string][]string{}
	buildOutput := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			outputs[key] = append(outputs[key], e.Output)
		case "build-output":
			buildOutput[e.ImportPath] = append(buildOutput[e.ImportPath], e.Output)
		case "pass":
			if e.Test != "" {
				r.ran++
				r.passed++
			}
		case "fail":
			switch {
			case e.Test != "":
				r.ran++
				r.failed++
				r.failures = append(r.failures, fmt.Sprintf("%s %s", e.Package, e.Test))
			case e.FailedBuild != "":
				r.failed++
				r.failures = append(r.failures, fmt.Sprintf("%s: build failed\n%s", e.Package, indent(buildOutput[e.FailedBuild])))
			case !testsFailedIn(r.failures, e.Package):
				// A package that failed without a failed test: a panic,
				// a timeout, or an error in TestMain.
				r.failed++
				r.failures = append(r.failures, fmt.Sprintf("%s (no test failed: the package did)\n%s", e.Package, indent(tail(outputs[key], 20))))
			}
		case "skip":
			if e.Test != "" {
				r.ran++
				r.skipped++
				r.skips = append(r.skips, fmt.Sprintf("%s %s: %s", e.Package, e.Test, skipReason(outputs[key])))
			}
		}
	}
	sort.Strings(r.skips)
	return r, sc.Err()
}

func testsFailedIn(failures []string, pkg string) bool {
	for _, f := range failures {
		if strings.HasPrefix(f, pkg+" ") {
			return true
		}
	}
	return false
}

// skipReason is the message given to t.Skip: the test's output without the
// runner's own === and --- lines.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		msg = append(msg, t)
	}
	if len(msg) == 0 {
		return "(no reason given)"
	}
	return strings.Join(msg, " / ")
}

func tail(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

func indent(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("      ")
		b.WriteString(strings.TrimRight(l, "\n"))
		b.WriteByte('\n')
	}
	return strings.TrimRight(b.String(), "\n")
}

var (
	tapCount = regexp.MustCompile(`^# (tests|pass|fail|skipped|cancelled|todo) (\d+)$`)
	tapSkip  = regexp.MustCompile(`^\s*ok \d+ - (.*?) # SKIP ?(.*)$`)
	tapFail  = regexp.MustCompile(`^\s*not ok \d+ - (.*?)( # .*)?$`)
)

// readTAP reads the totals Node's TAP reporter ends with, and the names of
// failed and skipped tests.
func readTAP(path string) (report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return report{}, err
	}
	var r report
	totals := map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		if m := tapCount.FindStringSubmatch(line); m != nil {
			totals[m[1]], _ = strconv.Atoi(m[2])
			continue
		}
		if m := tapSkip.FindStringSubmatch(line); m != nil {
			reason := m[2]
			if reason == "" {
				reason = "(no reason given)"
			}
			r.skips = append(r.skips, m[1]+": "+reason)
			continue
		}
		if m := tapFail.FindStringSubmatch(line); m != nil {
			r.failures = append(r.failures, m[1])
		}
	}
	if _, ok := totals["tests"]; !ok {
		return r, fmt.Errorf("%s has no TAP totals: did node run?\n%s", path, data)
	}
	r.ran = totals["tests"]
	r.passed = totals["pass"]
	r.failed = totals["fail"] + totals["cancelled"]
	r.skipped = totals["skipped"] + totals["todo"]
	return r, nil
}
