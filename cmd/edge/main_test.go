package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"edge/internal/testpeer"
)

func TestValidateExampleConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"validate", "-config", "../../config.example.toml"}, &out, &errOut); err != nil {
		t.Fatalf("validate config.example.toml: %v\n%s", err, errOut.String())
	}
	if lines := strings.Count(out.String(), "\n"); lines != 1 || !strings.Contains(out.String(), "is valid") {
		t.Fatalf("want one line saying the file is valid, got %q", out.String())
	}
}

func TestValidateListsEveryProblemWithKeyAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.toml")
	cfg := `[server]
listen_https = "127.0.0.1:8443"
trusted_proxies = ["10.0.0.0/33"]
colour = "blue"

[[upstreams]]
name = "app"
targets = ["127.0.0.1:3000"]
keepalive = "many"

[[routes]]
name = "api"
path = "/api/"
upstream = "app"

[[routes]]
name = "api"
path = "/v2/"
upstream = "ghost"
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"validate", "-config", path}, &out, &errOut)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("want exit 1, got %v", err)
	}
	msg := errOut.String()
	for _, want := range []string{
		path + ":3: server.trusted_proxies[0]",
		path + ":4: server.colour",
		path + ":9: upstreams[0].keepalive",
		path + ":17: routes[1].name",
		path + ":19: routes[1].upstream",
		"ghost",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("output lacks %q:\n%s", want, msg)
		}
	}
}

func TestUsageAndVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "edge ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"frobnicate"}, &out, &errOut); exitCode(err) != 2 {
		t.Fatalf("unknown command: %v", err)
	}
	errOut.Reset()
	if err := run(context.Background(), []string{"validate", "-h"}, &out, &errOut); err != errHelp || !strings.Contains(errOut.String(), "-config") {
		t.Fatalf("validate -h: %v %q", err, errOut.String())
	}
}

// TestSIGTERMDrainsInFlightRequest runs the real binary: a request still in
// flight when SIGTERM arrives completes, then the process exits 0.
func TestSIGTERMDrainsInFlightRequest(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upAddr := ln.Addr().String()
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "finished")
	})}
	go func() { _ = up.Serve(ln) }()
	defer up.Close()

	e := testpeer.StartEdge(t, "", fmt.Sprintf(`
[tls]
mode = "internal"
[[upstreams]]
name = "slow"
targets = [%q]
[[routes]]
name = "slow"
path = "/"
upstream = "slow"
`, upAddr))
	client := e.Client(t, false)
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Get(e.URL("localhost", "/slow"))
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	<-started
	e.Signal(syscall.SIGTERM)
	// Release the request only once edge is draining, so it is truly in
	// flight when the signal lands.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.Stderr(), "shutting down: draining in-flight requests") {
		if time.Now().After(deadline) {
			t.Fatalf("edge did not start draining after SIGTERM:\n%s", e.Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	res := <-done
	if res.err != nil || res.body != "finished" {
		t.Fatalf("in-flight request: %q %v", res.body, res.err)
	}
	if err := e.Wait(10 * time.Second); err != nil {
		t.Fatalf("edge did not exit 0 after SIGTERM: %v", err)
	}
}

// TestAccessLogFileReopenedOnSIGUSR1 is the logrotate "create" cycle: the
// file is moved away, SIGUSR1 arrives, and the next line goes to a new file
// at the configured path.
func TestAccessLogFileReopenedOnSIGUSR1(t *testing.T) {
	logDir := t.TempDir()
	logPath := filepath.Join(logDir, "access.log")
	e := testpeer.StartEdge(t, "", fmt.Sprintf(`
[log]
access_file = %q
[[routes]]
name = "hello"
path = "/"
respond = { body = "hi" }
`, logPath))
	client := e.Client(t, false)
	get := func(path string) {
		t.Helper()
		resp, err := client.Get(e.URL("localhost", path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	waitFor := func(file, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, _ := os.ReadFile(file)
			if strings.Contains(string(b), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never contained %q; it has:\n%s", file, want, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	get("/first")
	waitFor(logPath, `"path":"/first"`)
	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	e.Signal(syscall.SIGUSR1)
	waitFor(rotated, `"path":"/first"`)
	// The signal is handled asynchronously: keep sending until a line lands
	// in the new file, and check no line went to the moved one after that.
	deadline := time.Now().Add(10 * time.Second)
	for {
		get("/second")
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), `"path":"/second"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new access log file after SIGUSR1")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(e.Stdout(), `"path"`) {
		t.Error("access lines went to stdout although access_file is set")
	}
}
