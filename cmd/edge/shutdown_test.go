package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// heldUpstream answers each request only once release is closed; started
// receives one value per request that arrived.
func heldUpstream(t *testing.T) (addr string, started chan struct{}, release chan struct{}) {
	t.Helper()
	started, release = make(chan struct{}, 16), make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "finished")
	})}
	go func() { _ = up.Serve(ln) }()
	t.Cleanup(func() { up.Close() })
	return ln.Addr().String(), started, release
}

func heldConfig(upAddr string) string {
	return fmt.Sprintf(`
[tls]
mode = "internal"
[[upstreams]]
name = "held"
targets = [%q]
[[routes]]
name = "held"
path = "/held"
upstream = "held"
[[routes]]
name = "quick"
path = "/quick"
respond = { body = "quick" }
`, upAddr)
}

type result struct {
	body string
	err  error
}

// getAsync runs a GET in the background.
func getAsync(client *http.Client, url string) <-chan result {
	done := make(chan result, 1)
	go func() {
		resp, err := client.Get(url)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	return done
}

// adminStatus is the status of GET path on the admin listener, or 0 when
// the listener does not answer.
func adminStatus(e *testpeer.EdgeProcess, path string) int {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + e.Admin + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitForLog(t *testing.T, e *testpeer.EdgeProcess, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.Stderr(), line) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q:\n%s", line, e.Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDrainAnswersReadyz503: while in-flight requests (HTTP/1.1 and
// HTTP/2) drain, the admin listener stays up so a load balancer polling
// /readyz sees 503 (and /healthz still 200), instead of a refused
// connection it may retry.
func TestDrainAnswersReadyz503(t *testing.T) {
	upAddr, started, release := heldUpstream(t)
	e := testpeer.StartEdge(t, "", heldConfig(upAddr))
	done := getAsync(e.Client(t, false), e.URL("localhost", "/held"))
	doneH2 := getAsync(e.Client(t, true), e.URL("localhost", "/held"))
	<-started
	<-started
	e.Signal(syscall.SIGTERM)
	waitForLog(t, e, "shutting down: draining in-flight requests")
	if got := adminStatus(e, "/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the drain: %d, want 503", got)
	}
	if got := adminStatus(e, "/healthz"); got != http.StatusOK {
		t.Errorf("/healthz during the drain: %d, want 200", got)
	}
	close(release)
	if res := <-done; res.err != nil || res.body != "finished" {
		t.Fatalf("in-flight request: %q %v", res.body, res.err)
	}
	if res := <-doneH2; res.err != nil || res.body != "finished" {
		t.Fatalf("in-flight HTTP/2 request: %q %v", res.body, res.err)
	}
	if err := e.Wait(10 * time.Second); err != nil {
		t.Fatalf("edge did not exit 0 after the drain: %v", err)
	}
}

// TestShutdownDelayKeepsServingUntilListenersClose: with shutdown_delay,
// SIGTERM turns /readyz to 503 at once while the HTTPS listener still
// takes new requests (a load balancer polling every few seconds keeps
// sending for a while); a second SIGTERM stops edge at once.
func TestShutdownDelayKeepsServingUntilListenersClose(t *testing.T) {
	e := testpeer.StartEdge(t, "shutdown_delay = \"1h\"\nshutdown_grace = \"1h\"", heldConfig("127.0.0.1:9"))
	client := e.Client(t, false)
	e.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for adminStatus(e, "/readyz") != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still not 503 after SIGTERM:\n%s", e.Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A new connection, not one kept alive from before the signal.
	client.Transport.(*http.Transport).CloseIdleConnections()
	if res := <-getAsync(client, e.URL("localhost", "/quick")); res.err != nil || res.body != "quick" {
		t.Fatalf("a new request during shutdown_delay: %q %v", res.body, res.err)
	}
	e.Signal(syscall.SIGTERM)
	if err := e.Wait(20 * time.Second); err != nil {
		t.Fatalf("a second SIGTERM during shutdown_delay did not stop edge: %v", err)
	}
}

// TestSecondSIGTERMStopsTheDrain: a second SIGTERM while requests drain
// closes them and exits, rather than waiting out shutdown_grace.
func TestSecondSIGTERMStopsTheDrain(t *testing.T) {
	upAddr, started, _ := heldUpstream(t)
	e := testpeer.StartEdge(t, "shutdown_grace = \"1h\"", heldConfig(upAddr))
	done := getAsync(e.Client(t, false), e.URL("localhost", "/held"))
	<-started
	e.Signal(syscall.SIGTERM)
	waitForLog(t, e, "shutting down: draining in-flight requests")
	e.Signal(syscall.SIGTERM)
	if err := e.Wait(20 * time.Second); err != nil {
		t.Fatalf("a second SIGTERM during the drain did not stop edge: %v", err)
	}
	if res := <-done; res.err == nil {
		t.Errorf("the held request finished (%q) although edge stopped at once", res.body)
	}
	if !strings.Contains(e.Stderr(), "second stop signal") {
		t.Errorf("no log line for the forced stop:\n%s", e.Stderr())
	}
}
