package conformance

import (
	"encoding/xml"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"edge/internal/testpeer"
)

// goKnownH2Failures are the h2spec v2.2.1 cases Go's own net/http HTTP/2
// server fails (see shared/testing.md); edge serves HTTP/2 with it, so
// these are accepted and nothing else is.
var goKnownH2Failures = []string{"http2/4.2/3", "http2/6.5.3/1", "http2/8.1.2.2/1", "http2/8.1.2.2/2"}

// minH2Cases guards against a run that checked almost nothing (the pinned
// h2spec has 145 cases).
const minH2Cases = 140

func h2spec(t *testing.T, addr string) {
	bin := testpeer.Binary(t, "h2spec")
	dir := t.TempDir()
	report := filepath.Join(dir, "h2spec.xml")
	out := run(t, dir, bin, "-t", "-k", "-h", "127.0.0.1", "-p", portOf(t, addr), "-j", report)
	res, err := parseJUnit(readFile(t, report, out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if msg := res.judge(goKnownH2Failures, minH2Cases); msg != "" {
		t.Errorf("%s\n%s", msg, out)
	}
	t.Logf("h2spec: %d cases, failed: %v", res.total, res.failed)
	for _, id := range goKnownH2Failures {
		if !slices.Contains(res.failed, id) {
			t.Logf("h2spec: known Go failure %s now passes", id)
		}
	}
}

// h2Result is what an h2spec run found: how many cases ran and the ids
// ("http2/6.5.3/1": suite package, then the case's place in it) of those
// that failed.
type h2Result struct {
	total  int
	failed []string
}

// parseJUnit reads h2spec's -j report. A case failed when it holds an
// error or failure element.
func parseJUnit(data []byte) (h2Result, error) {
	var doc struct {
		Suites []struct {
			Package string `xml:"package,attr"`
			Cases   []struct {
				Error   *struct{} `xml:"error"`
				Failure *struct{} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		return h2Result{}, fmt.Errorf("reading h2spec's JUnit report: %w", err)
	}
	var r h2Result
	for _, s := range doc.Suites {
		for i, c := range s.Cases {
			r.total++
			if c.Error != nil || c.Failure != nil {
				r.failed = append(r.failed, s.Package+"/"+strconv.Itoa(i+1))
			}
		}
	}
	return r, nil
}

// judge returns what is wrong with the run: too few cases, or a failure
// not in known. Known failures that pass are not a problem.
func (r h2Result) judge(known []string, minCases int) string {
	if r.total < minCases {
		return fmt.Sprintf("h2spec ran %d cases, want at least %d", r.total, minCases)
	}
	var unexpected []string
	for _, id := range r.failed {
		if !slices.Contains(known, id) {
			unexpected = append(unexpected, id)
		}
	}
	if len(unexpected) > 0 {
		return fmt.Sprintf("h2spec cases failed beyond Go's known ones: %v", unexpected)
	}
	return ""
}

func TestH2SpecJudge(t *testing.T) {
	suite := func(pkg string, cases ...string) string {
		s := `<testsuite package="` + pkg + `">`
		for _, c := range cases {
			s += `<testcase package="` + pkg + `" classname="x">` + c + `</testcase>`
		}
		return s + `</testsuite>`
	}
	const fail = `<error>GOAWAY Frame</error>`
	tests := []struct {
		name       string
		xml        string
		wantFailed []string
		wantOK     bool
	}{
		{"all pass", `<testsuites>` + suite("http2/4.2", "", "", "") + `</testsuites>`, nil, true},
		{"only known failures", `<testsuites>` + suite("http2/4.2", "", "", fail) + suite("http2/6.5.3", fail) + `</testsuites>`,
			[]string{"http2/4.2/3", "http2/6.5.3/1"}, true},
		{"an unexpected failure", `<testsuites>` + suite("http2/4.2", fail, "", fail) + `</testsuites>`,
			[]string{"http2/4.2/1", "http2/4.2/3"}, false},
		{"failure element", `<testsuites>` + suite("generic/5", `<failure>x</failure>`) + `</testsuites>`,
			[]string{"generic/5/1"}, false},
		{"nothing ran", `<testsuites></testsuites>`, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := parseJUnit([]byte(tt.xml))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.failed, tt.wantFailed) {
				t.Errorf("failed = %v, want %v", r.failed, tt.wantFailed)
			}
			if msg := r.judge(goKnownH2Failures, 1); (msg == "") != tt.wantOK {
				t.Errorf("judge = %q, want ok=%v", msg, tt.wantOK)
			}
		})
	}
	if _, err := parseJUnit([]byte("<testsuites><testsuite>")); err == nil {
		t.Error("a truncated report parsed")
	}
}
