package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMaxInflightPerIP: with max_inflight_per_ip = 2 a client's third
// request in progress on the route is refused with 429 / 42901, while
// another client and another route are not; slots come back when a request
// ends well, when the client aborts it and when the upstream breaks off,
// and exactly: with two held again, the next is refused again.
func TestMaxInflightPerIP(t *testing.T) {
	entered := make(chan struct{}, 8)
	proceed := make(chan string)
	b := startBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow/hold" {
			fmt.Fprint(w, "fast")
			return
		}
		entered <- struct{}{}
		select {
		case action := <-proceed:
			if action == "fail" {
				conn, _, _ := http.NewResponseController(w).Hijack()
				conn.Close()
				return
			}
			fmt.Fprint(w, "held")
		case <-r.Context().Done():
		}
	})
	e := startEdgeWith(t, `trusted_proxies = ["127.0.0.1/32"]`, "", fmt.Sprintf(`[[upstreams]]
name = "b"
targets = [%q]
[[routes]]
name = "slow"
path = "/slow"
upstream = "b"
max_inflight_per_ip = 2
[[routes]]
name = "other"
path = "/other"
upstream = "b"
`, b.addr))
	from := func(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }
	const ip1, ip2 = "198.51.100.1", "198.51.100.2"
	refused := 0
	get := func(path, ip string) int {
		resp, body := e.do(t, "GET", e.url("api.example.com", path), nil, from(ip))
		if resp.StatusCode == 429 {
			refused++
			if !strings.Contains(body, "42901") || resp.Header.Get("Retry-After") != "1" {
				t.Fatalf("refusal: %q, Retry-After %q", body, resp.Header.Get("Retry-After"))
			}
		}
		return resp.StatusCode
	}
	type held struct {
		cancel context.CancelFunc
		code   chan int
	}
	hold := func() held {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		h := held{cancel: cancel, code: make(chan int, 1)}
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url("api.example.com", "/slow/hold"), nil)
		req.Header.Set("X-Forwarded-For", ip1)
		go func() {
			resp, err := e.client.Do(req)
			if err != nil {
				h.code <- 0
				return
			}
			resp.Body.Close()
			h.code <- resp.StatusCode
		}()
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("a held request did not reach the backend")
		}
		return h
	}
	wantRefused := func(when string) {
		t.Helper()
		if code := get("/slow/fast", ip1); code != 429 {
			t.Fatalf("%s: a third request from the same client got %d, want 429", when, code)
		}
	}

	a1, a2 := hold(), hold()
	defer a1.cancel()
	defer a2.cancel()
	wantRefused("two held")
	if code := get("/slow/fast", ip2); code != 200 {
		t.Fatalf("another client on the route: %d", code)
	}
	if code := get("/other/fast", ip1); code != 200 {
		t.Fatalf("the same client on another route: %d", code)
	}

	// The client gives up on one: its slot comes back once edge sees it.
	a1.cancel()
	<-a1.code
	eventually(t, 10*time.Second, func() bool { return get("/slow/fast", ip1) == 200 }, "the aborted request's slot")
	a3 := hold()
	defer a3.cancel()
	wantRefused("after the abort, two held again")

	// The upstream breaks one off (502), then answers the other.
	proceed <- "fail"
	proceed <- "ok"
	codes := []int{<-a2.code, <-a3.code}
	if !(codes[0] == 502 && codes[1] == 200 || codes[0] == 200 && codes[1] == 502) {
		t.Fatalf("held requests ended with %v, want one 502 and one 200", codes)
	}
	if code := get("/slow/fast", ip1); code != 200 {
		t.Fatalf("after every held request ended: %d", code)
	}
	a4, a5 := hold(), hold()
	defer a4.cancel()
	defer a5.cancel()
	wantRefused("two held after the others ended")
	proceed <- "ok"
	proceed <- "ok"
	<-a4.code
	<-a5.code

	want := fmt.Sprintf(`edge_access_rejections_total{reason="inflight_per_ip",route="slow"} %d`, refused)
	if m := e.metric(t, `edge_access_rejections_total{reason="inflight_per_ip"`); !strings.Contains(m, want) || strings.Contains(m, `route="other"} 1`) {
		t.Fatalf("metrics:\n%s\nwant %s", m, want)
	}
}
