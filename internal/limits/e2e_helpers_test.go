package limits_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// upstream is a real HTTP server on loopback that counts what reaches it.
type upstream struct {
	addr string
	hits atomic.Int64
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		_, _ = io.WriteString(w, "upstream")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u
}

// appConfig is one upstream behind the route "api" (every path of
// api.example.com, which the internal CA then covers), followed by the
// test's own tables.
func appConfig(u *upstream, extra string) string {
	return fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q]

[[routes]]
name = "api"
hosts = ["api.example.com"]
path = "/"
upstream = "app"
%s`, u.addr, extra)
}

// answer is what a client got back, body read and connection reusable.
type answer struct {
	status int
	header http.Header
	body   string
}

func request(t *testing.T, c *http.Client, url string, hdr map[string]string) answer {
	t.Helper()
	a, err := tryRequest(c, url, hdr)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return a
}

func tryRequest(c *http.Client, url string, hdr map[string]string) (answer, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return answer{}, err
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

// wantStatuses sends one request per expected status, in order.
func wantStatuses(t *testing.T, c *http.Client, url string, hdr map[string]string, want ...int) {
	t.Helper()
	for i, w := range want {
		if a := request(t, c, url, hdr); a.status != w {
			t.Fatalf("request %d with %v: status %d, want %d (body %q)", i+1, hdr, a.status, w, a.body)
		}
	}
}

// wantAPIError checks the spec's JSON error body and its status.
func wantAPIError(t *testing.T, a answer, status, code int) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d (body %q)", a.status, status, a.body)
	}
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want JSON", ct)
	}
	var got struct {
		Code      int    `json:"code"`
		Msg       string `json:"msg"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal([]byte(a.body), &got); err != nil {
		t.Fatalf("body %q is not the spec's JSON: %v", a.body, err)
	}
	if got.Code != code || got.Msg == "" || got.RequestID == "" || got.RequestID != a.header.Get("X-Request-Id") {
		t.Fatalf("body %+v, want code %d, a message and the response's request id %q", got, code, a.header.Get("X-Request-Id"))
	}
}

// metric sums the samples of one metric whose labels include every one of
// labels (written as in the exposition format: `route="api"`).
func metric(t *testing.T, e *testpeer.EdgeProcess, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(e.Metrics(t, name), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(series, l) {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// reload asks the admin listener to read the config again and fails the
// test unless the new config is serving. "unchanged" is accepted because
// edge's own file watcher may have applied the write first.
func reload(t *testing.T, e *testpeer.EdgeProcess) {
	t.Helper()
	resp, err := http.Post("http://"+e.Admin+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Result   string   `json:"result"`
		Problems []string `json:"problems"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("reload answer: %v", err)
	}
	if out.Result != "reloaded" && out.Result != "unchanged" {
		t.Fatalf("reload: %s %v", out.Result, out.Problems)
	}
}

// eventually polls cond for what edge does on its own schedule (Redis
// probes, accepting queued connections).
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sample is one answer of a load run: which edge, when (since the run
// began) and what.
type sample struct {
	edge       int
	at         time.Duration
	status     int
	retryAfter string
}

// loadRun drives edges with closed-loop workers (each sends its next
// request when the last is answered) and records every answer.
type loadRun struct {
	t     *testing.T
	start time.Time

	mu      sync.Mutex
	samples []sample
	errs    int
}

func newLoadRun(t *testing.T) *loadRun { return &loadRun{t: t, start: time.Now()} }

func (l *loadRun) now() time.Duration { return time.Since(l.start) }

// drive starts n workers on edge (index idx in the results) and returns
// the function that stops them and waits for them (once; later calls do
// nothing, so it can also be deferred).
func (l *loadRun) drive(e *testpeer.EdgeProcess, idx, n int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	url := e.URL("api.example.com", "/")
	for range n {
		c := e.Client(l.t, false)
		wg.Go(func() {
			defer c.CloseIdleConnections()
			for {
				select {
				case <-done:
					return
				default:
				}
				a, err := tryRequest(c, url, nil)
				l.mu.Lock()
				if err != nil {
					l.errs++
				} else {
					l.samples = append(l.samples, sample{edge: idx, at: l.now(), status: a.status, retryAfter: a.header.Get("Retry-After")})
				}
				l.mu.Unlock()
			}
		})
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// window is a span of a load run.
type window struct{ from, to time.Duration }

func (w window) seconds() float64 { return (w.to - w.from).Seconds() }

// count is the number of answers with status in w, from edge idx (-1: any).
func (l *loadRun) count(idx, status int, w window) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.samples {
		if (idx < 0 || s.edge == idx) && s.status == status && s.at >= w.from && s.at < w.to {
			n++
		}
	}
	return n
}

// each calls f for every answer in w.
func (l *loadRun) each(w window, f func(sample)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.samples {
		if s.at >= w.from && s.at < w.to {
			f(s)
		}
	}
}

// within10 fails unless got is within 10% of want.
func within10(t *testing.T, what string, got int, want float64) {
	t.Helper()
	if d := float64(got) - want; d > want/10 || d < -want/10 {
		t.Errorf("%s: %d allowed, want %.0f ± 10%%", what, got, want)
	} else {
		t.Logf("%s: %d allowed, want %.0f ± 10%%", what, got, want)
	}
}
