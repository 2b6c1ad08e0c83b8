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

// tally is what a fixed number of requests got back.
type tally struct {
	ok, limited int
	// retryAfter counts the Retry-After values of the 429s.
	retryAfter map[string]int
	// other holds any status but 200 and 429, errs the requests that got
	// no answer at all.
	other []int
	errs  []error
}

func (t *tally) add(o tally) {
	t.ok += o.ok
	t.limited += o.limited
	for v, n := range o.retryAfter {
		if t.retryAfter == nil {
			t.retryAfter = map[string]int{}
		}
		t.retryAfter[v] += n
	}
	t.other = append(t.other, o.other...)
	t.errs = append(t.errs, o.errs...)
}

// sender sends requests to the route "api" of one edge, from workers
// clients of their own in parallel.
type sender struct {
	url     string
	clients []*http.Client
}

func newSender(t *testing.T, e *testpeer.EdgeProcess, workers int) *sender {
	t.Helper()
	s := &sender{url: e.URL("api.example.com", "/")}
	for range workers {
		c := e.Client(t, false)
		t.Cleanup(c.CloseIdleConnections)
		s.clients = append(s.clients, c)
	}
	return s
}

// send sends exactly n requests, spread over the workers, and tallies the
// answers. It does not touch the test, so it may run in any goroutine.
func (s *sender) send(n int) tally {
	var mu sync.Mutex
	var out tally
	var wg sync.WaitGroup
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for _, c := range s.clients {
		wg.Go(func() {
			for range next {
				a, err := tryRequest(c, s.url, nil)
				var one tally
				switch {
				case err != nil:
					one.errs = []error{err}
				case a.status == http.StatusOK:
					one.ok = 1
				case a.status == http.StatusTooManyRequests:
					one.limited = 1
					one.retryAfter = map[string]int{a.header.Get("Retry-After"): 1}
				default:
					one.other = []int{a.status}
				}
				mu.Lock()
				out.add(one)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// sendBoth sends n[i] requests to senders[i], both at once.
func sendBoth(senders [2]*sender, n [2]int) [2]tally {
	var out [2]tally
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() { out[i] = senders[i].send(n[i]) })
	}
	wg.Wait()
	return out
}
