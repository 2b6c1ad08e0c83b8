package conformance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// toolTimeout bounds one tool run. testssl takes about 35 s on two idle
// cores, and over a minute on a busy machine.
const toolTimeout = 5 * time.Minute

// page is a compressible HTML answer, so the scanners see what a gzip
// route serves (BREACH is about compressed responses).
var page = "<!doctype html><title>edge</title><p>" + strings.Repeat("mini-program backend ", 100) + "</p>"

// TestConformance starts one edge in internal mode (the development CA)
// with HSTS and a gzip route proxied to a real upstream, then runs testssl
// and h2spec against its HTTPS listener side by side, next to the same
// testssl run against a deliberately weak server that must fail the judge
// (edge's own policy cannot be made weak). The route proxies, so edge
// itself reads request bodies: a route that answers without reading one
// (respond) also fails h2spec http2/8.1.2.6/2, since its answer is
// complete before the mismatching DATA frames arrive.
func TestConformance(t *testing.T) {
	// The three tool runs start from goroutines (t.Run allows that) rather
	// than as t.Parallel subtests: -parallel defaults to GOMAXPROCS, two on
	// the project's machines, so one run would queue behind another
	// although all three mostly wait on the network. The weak control, the
	// longest, needs no edge and so overlaps edge's start-up. The deferred
	// Wait also covers a failed start-up: every t.Run must return before
	// this test does.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { t.Run("testssl-weak", testsslWeak) })

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(page))
	}))
	t.Cleanup(up.Close)
	e := testpeer.StartEdge(t, "", fmt.Sprintf(`
[tls]
mode = "internal"

[tls.hsts]
max_age = "8760h"
include_subdomains = true

[[upstreams]]
name = "app"
targets = [%q]

[[routes]]
name = "app"
path = "/"
upstream = "app"
gzip = true
`, up.Listener.Addr().String()))
	ca := filepath.Join(e.Dir, "state", "internal", "ca.crt")

	wg.Go(func() { t.Run("testssl", func(t *testing.T) { testssl(t, e.HTTPS, ca) }) })
	wg.Go(func() { t.Run("h2spec", func(t *testing.T) { h2spec(t, e.HTTPS) }) })
}

// run executes a tool in dir; its combined output is returned for failure
// messages. Exit codes are not judged: both tools report through files.
func run(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within %s\n%s", filepath.Base(bin), toolTimeout, out)
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running %s: %v", filepath.Base(bin), err)
	}
	return string(out)
}

func readFile(t *testing.T, path, toolOutput string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the tool wrote no report: %v\n%s", err, toolOutput)
	}
	return b
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
