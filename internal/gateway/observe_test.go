package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// accessLine waits (seconds, not a sleep) for the access log line of the
// request to path and returns it decoded.
func (e *edgeUnderTest) accessLine(t *testing.T, path string) map[string]any {
	t.Helper()
	var found map[string]any
	eventually(t, 5*time.Second, func() bool {
		for _, l := range strings.Split(strings.TrimSpace(e.stdout.String()), "\n") {
			var line map[string]any
			if json.Unmarshal([]byte(l), &line) == nil && line["path"] == path {
				found = line
				return true
			}
		}
		return false
	}, "the access log line of "+path)
	return found
}

// TestUpgradeAndAbortAreLoggedAsObserved: a WebSocket upgrade is logged and
// counted as the 101 it was, and an answer the upstream broke off in the
// middle of its body still leaves its access log line and its metrics.
func TestUpgradeAndAbortAreLoggedAsObserved(t *testing.T) {
	up := startBackend(t, "up", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ws":
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			_, _, _ = c.Read(r.Context())
		case "/broken":
			// Promise 100 bytes, send 5, then hang up.
			conn, bw, _ := http.NewResponseController(w).Hijack()
			_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
			_ = bw.Flush()
			conn.Close()
		}
	})
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "up"
targets = [%q]
[[routes]]
name = "ws"
path = "/ws"
upstream = "up"
websocket = true
[[routes]]
name = "broken"
path = "/broken"
upstream = "up"
`, up.addr))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "wss://api.example.com"+strings.TrimPrefix(e.url("", "/ws"), "https://"), &websocket.DialOptions{HTTPClient: e.client})
	if err != nil {
		t.Fatalf("dialing wss through edge: %v", err)
	}
	conn.Close(websocket.StatusNormalClosure, "")
	if line := e.accessLine(t, "/ws"); line["status"] != float64(http.StatusSwitchingProtocols) {
		t.Errorf("the upgrade was logged as %v, want 101: %v", line["status"], line)
	}
	if m := e.metric(t, `edge_http_requests_total{code="101",method="GET",route="ws"}`); !strings.HasSuffix(m, " 1") {
		t.Errorf("the upgrade was not counted as 101: %q", m)
	}

	resp, err := e.client.Get(e.url("api.example.com", "/broken"))
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a broken-off body arrived as complete")
	}
	line := e.accessLine(t, "/broken")
	if line["status"] != float64(http.StatusOK) || line["reason"] != "upstream_aborted" || line["route"] != "broken" || line["target"] != up.addr {
		t.Errorf("access log line of the aborted answer: %v; want status 200 (what the client got), reason upstream_aborted", line)
	}
	if m := e.metric(t, `edge_http_requests_total{code="200",method="GET",route="broken"}`); !strings.HasSuffix(m, " 1") {
		t.Errorf("the aborted answer was not counted: %q", m)
	}
	if m := e.metric(t, `edge_upstream_requests_total{code="error",route="broken"`); !strings.HasSuffix(m, " 1") {
		t.Errorf("the broken exchange with the upstream was not counted as an error: %q", m)
	}
	if m := e.metric(t, "edge_http_requests_in_flight"); !strings.HasSuffix(m, " 0") {
		t.Errorf("in flight after both requests ended: %q", m)
	}
}
