// Package testpeer starts the real peers edge's tests talk to (Redis, and the
// tools built by tools/go.mod) and cleans them up. When EDGE_CI=1 (set by
// .ci/run) a missing peer fails the test; elsewhere it skips with the reason,
// so a developer without Redis can still run the rest.
package testpeer

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// InCI reports whether missing peers must fail the run.
func InCI() bool { return os.Getenv("EDGE_CI") == "1" }

// Binary finds name on PATH or in the repository's bin/ (where .ci/run
// installs the pinned tools), or fails/skips the test.
func Binary(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := filepath.Join(RepoRoot(t), "bin", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	missing(t, "%s not found on PATH or in bin/; %s (see docs/testing.md)", name, installHint(name))
	return ""
}

// debianPackages names the package that brings each peer found on PATH.
var debianPackages = map[string]string{
	"redis-server":    "redis-server",
	"redis-cli":       "redis-tools",
	"prometheus":      "prometheus",
	"promtool":        "prometheus",
	"testssl":         "testssl.sh",
	"websocketd":      "websocketd",
	"node":            "nodejs",
	"systemd-analyze": "systemd",
	"chromium":        "chromium",
}

// installHint says which command installs a missing peer: a Debian package,
// or one of the pinned Go tools that tools/test.sh puts into bin/.
func installHint(name string) string {
	if pkg, ok := debianPackages[name]; ok {
		return fmt.Sprintf("install it with `sudo apt-get install %s`, or run `bash tools/test.sh` as root, which installs every peer", pkg)
	}
	return "`bash tools/test.sh` installs the pinned Go tools into bin/ (or: cd tools && GOBIN=$PWD/../bin go install tool)"
}

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required test peer missing: "+format, args...)
	}
	t.Skipf("test peer missing: "+format, args...)
}

// RepoRoot is the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// The ports handed to peers that bind them later (Redis, Pebble, an edge
// process) come from below the kernel's ephemeral range (32768-60999 by
// default). Between the moment such a port is found free and the moment
// the peer binds it, any listener on port 0 and any outgoing connection
// of the tests running at the same time could otherwise be given it.
const (
	peerPortLow  = 20000
	peerPortHigh = 32000
)

// listenPeerPort binds a random free port of the peer range on loopback.
func listenPeerPort(t testing.TB) net.Listener {
	t.Helper()
	for range 200 {
		port := peerPortLow + mrand.IntN(peerPortHigh-peerPortLow)
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			return ln
		}
	}
	t.Fatal("no free loopback port between 20000 and 32000")
	return nil
}

// FreePort returns a loopback TCP address that was free a moment ago, for a
// peer to bind.
func FreePort(t testing.TB) string {
	t.Helper()
	ln := listenPeerPort(t)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// FreePorts returns n distinct loopback addresses that were free a moment
// ago (holding each until all are chosen, so none is handed out twice).
func FreePorts(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln := listenPeerPort(t)
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not accept connections within %s: %v", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RedisServer is a redis-server process owned by a test.
type RedisServer struct {
	Addr string
	cmd  *exec.Cmd
	dir  string
	t    testing.TB
}

// URL is the redis:// URL of the server.
func (r *RedisServer) URL() string { return "redis://" + r.Addr + "/0" }

// Stop kills the server (to test what happens when Redis goes away).
func (r *RedisServer) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// Pause stops the server without closing anything (SIGSTOP), as a Redis
// stuck in a long command or a frozen VM looks to its clients: connections
// still open, nothing answered.
func (r *RedisServer) Pause() {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		r.t.Fatalf("pausing redis-server: %v", err)
	}
}

// Resume lets a paused server go on (SIGCONT).
func (r *RedisServer) Resume() {
	r.t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		r.t.Fatalf("resuming redis-server: %v", err)
	}
}

// Start starts it again on the same address, empty.
func (r *RedisServer) Start() {
	r.t.Helper()
	bin := Binary(r.t, "redis-server")
	host, port, _ := net.SplitHostPort(r.Addr)
	cmd := exec.Command(bin, "--bind", host, "--port", port, "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	r.cmd = cmd
	WaitTCP(r.t, r.Addr, 10*time.Second)
}

// Redis starts a private redis-server on a free port for the test.
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	r := &RedisServer{Addr: FreePort(t), dir: t.TempDir(), t: t}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// LogTail returns the last lines of a file, for failure messages.
func LogTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// WriteSelfSigned writes a self-signed ECDSA certificate for name and its
// key as PEM files, as a certificate pair of tls.mode "files" needs.
func WriteSelfSigned(t testing.TB, certPath, keyPath, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// RawServer listens on a free loopback port and serves each connection with
// serve on a goroutine of its own, closing the connection after it: an
// upstream a test plays byte by byte. It stops with the test.
func RawServer(t testing.TB, serve func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

// DeadAddr returns a loopback address that refuses connections for the
// whole test. A port merely found free and released can be taken by another
// test's listener meanwhile (the packages' tests run at once), and the
// "dead" target then answers; this one stays bound, without listening, so
// no listener can take it, and a connection to it is refused.
func DeadAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
