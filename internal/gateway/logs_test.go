package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"edge/internal/logsample"
	"edge/internal/testpeer"
)

// logRecord is one line of the JSON error log.
type logRecord struct {
	Level      string `json:"level"`
	Msg        string `json:"msg"`
	Detail     string `json:"detail"`
	Suppressed *int64 `json:"suppressed"`
}

// records parses the error log, failing on any line that is not JSON.
func records(t *testing.T, log string) []logRecord {
	t.Helper()
	var out []logRecord
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var r logRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("error log line is not JSON: %q", line)
		}
		out = append(out, r)
	}
	return out
}

func withMsg(rs []logRecord, msg string) []logRecord {
	var out []logRecord
	for _, r := range rs {
		if r.Msg == msg {
			out = append(out, r)
		}
	}
	return out
}

// hit sends one POST and reads what comes back: the status, or 0 when edge
// cut the connection (as it does when an upstream body breaks off). A POST,
// because the client resends a GET whose connection was cut.
func (e *edgeUnderTest) hit(path string) int {
	resp, err := e.client.Post(e.url("api.example.com", path), "text/plain", nil)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0
	}
	return resp.StatusCode
}

// TestRepeatedUpstreamWarningsAreSampled: a target that fails every request
// writes one line when passive health takes it out, however often it fails
// again while out, and its per-request warnings at most one per
// logsample.Every, each carrying how many it left out, so that the lines
// still account for every failure.
func TestRepeatedUpstreamWarningsAreSampled(t *testing.T) {
	broken := startBackend(t, "broken", func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
		conn.Close()
	})
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "dead"
targets = [%q]
retries = 0
[upstreams.passive_health]
max_fails = 1
cooldown = "1h"
[[upstreams]]
name = "broken"
targets = [%q]
[upstreams.passive_health]
max_fails = 0
[[routes]]
name = "dead"
path = "/dead"
upstream = "dead"
[[routes]]
name = "broken"
path = "/broken"
upstream = "broken"
`, deadAddr(t), broken.addr))

	for _, tc := range []struct {
		path, msg string
		status    int
	}{
		{"/dead", "upstream error", 502},
		{"/broken", "upstream body broken off", 0},
	} {
		t.Run(tc.msg, func(t *testing.T) {
			const burst = 20
			start := time.Now()
			for range burst {
				if got := e.hit(tc.path); got != tc.status {
					t.Fatalf("POST %s: %d, want %d", tc.path, got, tc.status)
				}
			}
			elapsed := time.Since(start)
			lines := withMsg(records(t, e.stderr.String()), tc.msg)
			// Lines are at least Every apart.
			if most := 1 + int(elapsed/logsample.Every); len(lines) == 0 || len(lines) > most {
				t.Fatalf("%d %q lines for %d failures in %s, want 1 to %d", len(lines), tc.msg, burst, elapsed, most)
			}
			// The next line, once due, says how many were left out.
			sent := burst
			eventually(t, 10*time.Second, func() bool {
				e.hit(tc.path)
				sent++
				return len(withMsg(records(t, e.stderr.String()), tc.msg)) > len(lines)
			}, "the next sampled line")
			lines = withMsg(records(t, e.stderr.String()), tc.msg)
			accounted := int64(0)
			for _, l := range lines {
				if l.Suppressed == nil {
					t.Fatalf("a %q line without the suppressed count", tc.msg)
				}
				accounted += 1 + *l.Suppressed
			}
			if accounted != int64(sent) || *lines[len(lines)-1].Suppressed == 0 {
				t.Fatalf("%d lines account for %d failures of %d sent (last line suppressed %d)",
					len(lines), accounted, sent, *lines[len(lines)-1].Suppressed)
			}
			t.Logf("%d failures, %d %q lines", sent, len(lines), tc.msg)
		})
	}

	out := withMsg(records(t, e.stderr.String()), "upstream target taken out after repeated failures")
	if len(out) != 1 {
		t.Fatalf("%d 'taken out' lines for one target that stayed out, want 1", len(out))
	}
}

// TestRedisClientLinesInTheErrorLog: go-redis' own lines (here: a failed
// dial to a Redis that is not there) are records of edge's error log, not
// plain text in the middle of its JSON.
func TestRedisClientLinesInTheErrorLog(t *testing.T) {
	app := startBackend(t, "app", nil)
	e := testpeer.StartEdge(t, "", fmt.Sprintf(`
[cluster]
redis = "redis://%s/0"

[[upstreams]]
name = "app"
targets = [%q]

[[routes]]
name = "api"
hosts = ["api.example.com"]
path = "/"
upstream = "app"

[[limits]]
name = "per_ip"
key = "ip"
rate = "100/s"
routes = ["api"]
`, deadAddr(t), app.addr))
	resp, err := e.Client(t, false).Get(e.URL("api.example.com", "/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("limited route with Redis away (policy local): %d", resp.StatusCode)
	}
	// go-redis dials in the background and logs once its attempts are
	// over, after the request's own deadline.
	eventually(t, 10*time.Second, func() bool { return strings.Contains(e.Stderr(), "failed to dial") }, "go-redis' dial failure")
	var dial []logRecord
	for _, r := range records(t, e.Stderr()) {
		if r.Msg == "redis client" && strings.Contains(r.Detail, "failed to dial") {
			dial = append(dial, r)
		}
	}
	if len(dial) == 0 || dial[0].Level != "WARN" || dial[0].Suppressed == nil {
		t.Fatalf("no WARN record of go-redis' failed dial, with its suppressed count:\n%s", e.Stderr())
	}
}
