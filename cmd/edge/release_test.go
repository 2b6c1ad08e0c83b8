package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"edge/internal/testpeer"
)

// TestReleaseVerb: edge release finds the admin listener and admin_token
// in the config and changes the running edge's release; mistakes are
// usage errors or the admin API's own message.
func TestReleaseVerb(t *testing.T) {
	var upstreams string
	for _, name := range []string{"cur", "next"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name)
		})}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		upstreams += fmt.Sprintf("[[upstreams]]\nname = %q\ntargets = [%q]\n", name, ln.Addr())
	}
	t.Setenv("EDGE_TEST_ADMIN_TOKEN", "release-verb-token-0123456789ab")
	e := testpeer.StartEdge(t, `admin_token = "${EDGE_TEST_ADMIN_TOKEN}"`, upstreams+`
[[routes]]
name = "api"
path = "/api/"
upstream = "cur"
[routes.release]
upstream = "next"
weight = 10
`)
	client := e.Client(t, false)
	version := func() string {
		t.Helper()
		resp, err := client.Get(e.URL("localhost", "/api/x"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	release := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"release", "-config", e.ConfigPath}, args...), &out, &errOut)
		return out.String(), errOut.String(), err
	}

	out, stderr, err := release("api", "promote")
	if err != nil || !strings.Contains(out, "route api sends 100% to next (was 10%); a reload goes back to the file's 10%") {
		t.Fatalf("promote: %v\n%s%s", err, out, stderr)
	}
	for range 10 {
		if v := version(); v != "next" {
			t.Fatalf("after promote: %s answered", v)
		}
	}
	if out, stderr, err := release("api", "rollback"); err != nil || !strings.Contains(out, "sends 0% to next (was 100%)") {
		t.Fatalf("rollback: %v\n%s%s", err, out, stderr)
	}
	for range 10 {
		if v := version(); v != "cur" {
			t.Fatalf("after rollback: %s answered", v)
		}
	}
	if out, stderr, err := release("api", "weight", "40"); err != nil || !strings.Contains(out, "sends 40% to next (was 0%)") {
		t.Fatalf("weight 40: %v\n%s%s", err, out, stderr)
	}
	if got := e.Metrics(t, "edge_route_release_weight"); got != `edge_route_release_weight{route="api"} 40` {
		t.Errorf("metric: %s", got)
	}

	for _, args := range [][]string{{"api"}, {"api", "weight"}, {"api", "weight", "101"}, {"api", "promote", "now"}, {}} {
		if _, _, err := release(args...); err == nil || exitCode(err) != 2 {
			t.Errorf("edge release %v: %v, want a usage error", args, err)
		}
	}
	if _, _, err := release("nope", "promote"); err == nil || !strings.Contains(err.Error(), `no route named "nope"`) {
		t.Errorf("unknown route: %v", err)
	}
}

func TestAdminDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9180": "127.0.0.1:9180",
		":9180":          "127.0.0.1:9180",
		"0.0.0.0:9180":   "127.0.0.1:9180",
		"[::]:9180":      "[::1]:9180",
		"10.0.0.5:9180":  "10.0.0.5:9180",
	} {
		if got, err := adminDialAddr(in); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", in, got, err, want)
		}
	}
	if _, err := adminDialAddr("off"); err == nil {
		t.Error(`"off" gave an address`)
	}
}
