package gateway

import (
	"fmt"
	"io"
	"net/http"
	"testing"
)

// TestPathsOtherServersReadDifferentlyAreRefused: a path that Tomcat, Spring
// or a Windows server would resolve differently from edge (and so route to
// a part of the app edge did not check) is refused with 400 / 40001 on every
// protocol, and never reaches the upstream. Plain paths, and dot segments
// edge resolves itself, still pass.
func TestPathsOtherServersReadDifferentlyAreRefused(t *testing.T) {
	b := startBackend(t, "b", nil)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "b"
targets = [%q]
[[routes]]
name = "public"
path = "/"
upstream = "b"
[[routes]]
name = "api"
path = "/api"
respond = { status = 401, body = "checked" }
`, b.addr))

	refused := []string{
		"/public/..;/api/x",
		"/public/%2e%2e;/api/x",
		"/public/%2E%2E;jsessionid=1/api/x",
		"/public/.;/api/x",
		"/public/..%3b/api/x",
		"/api;x/secret",
		`/public\..\api\x`,
		"/public/%5c..%5capi/x",
		"/public/%5C",
		"/public/x%00.json",
		"/public/%0d%0aX-Injected:%201",
		"/public/%09",
		"/public/%7f",
	}
	passed := map[string]string{
		"/public/x":               "b GET /public/x",
		"/public/caf%C3%A9?q=1;2": "b GET /public/caf%C3%A9?q=1;2",
		"/public/../public/y":     "b GET /public/y",
		"/public/a%2Fb":           "b GET /public/a%2Fb",
	}
	for _, proto := range []struct {
		name   string
		client *http.Client
	}{{"h1", e.client}, {"h2", e.h2}} {
		send := func(t *testing.T, target string) (*http.Response, string) {
			t.Helper()
			req, err := http.NewRequest(http.MethodGet, e.url("api.example.com", "/"), nil)
			if err != nil {
				t.Fatal(err)
			}
			// Opaque is sent as the request-target byte for byte.
			req.URL.Opaque = target
			resp, err := proto.client.Do(req)
			if err != nil {
				t.Fatalf("GET %q: %v", target, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if proto.name == "h2" && resp.ProtoMajor != 2 {
				t.Fatalf("spoke %s, want HTTP/2", resp.Proto)
			}
			return resp, string(body)
		}
		t.Run(proto.name, func(t *testing.T) {
			for _, target := range refused {
				before := b.count()
				resp, body := send(t, target)
				assertAPIError(t, resp, body, http.StatusBadRequest, 40001)
				if b.count() != before {
					t.Errorf("%q reached the upstream", target)
				}
			}
			for target, want := range passed {
				if resp, body := send(t, target); resp.StatusCode != http.StatusOK || body != want {
					t.Errorf("%q: %d %q, want 200 %q", target, resp.StatusCode, body, want)
				}
			}
		})
	}
}
