// Command app is the app the process tests have edge run: it serves HTTP on
// $PORT (or the Unix socket $SOCKET) after $DELAY, answers /health, and can be told to crash, hang or hold memory.
// Its version is $VERSION, or what $VERSION_FILE holds when it starts (new
// code on disk, for edge deploy); version "broken" never passes /health.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// ballast holds the memory BALLAST_MB asks for, for the max_memory test.
var ballast []byte

func main() {
	pid := os.Getpid()
	if dir := os.Getenv("PIDS_DIR"); dir != "" {
		// The test finds every process edge ever started here.
		_ = os.WriteFile(filepath.Join(dir, strconv.Itoa(pid)), nil, 0o644)
	}
	fmt.Printf("app %d starting\n", pid)
	if os.Getenv("CRASH") != "" {
		fmt.Fprintln(os.Stderr, "crashing at once, as told")
		os.Exit(3)
	}
	if mb, err := strconv.Atoi(os.Getenv("BALLAST_MB")); err == nil {
		// Touched, so it is resident, not just reserved.
		ballast = make([]byte, mb<<20)
		for i := range ballast {
			ballast[i] = 1
		}
	}
	if d, err := time.ParseDuration(os.Getenv("DELAY")); err == nil {
		time.Sleep(d)
	}
	version := os.Getenv("VERSION")
	if f := os.Getenv("VERSION_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		version = strings.TrimSpace(string(b))
	}
	hung := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hung:
			select {}
		default:
		}
		if version == "broken" {
			http.Error(w, "broken", http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
	// /ws echoes each message with the version that answered it.
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, []byte(version+":"+string(msg))); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /crash", func(w http.ResponseWriter, r *http.Request) { os.Exit(4) })
	whoami := func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "pid=%d instance=%s version=%s\n", pid, os.Getenv("EDGE_INSTANCE"), version)
	}
	mux.HandleFunc("GET /addr", func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "socket=%s port=%s\n", os.Getenv("SOCKET"), os.Getenv("PORT"))
	})
	mux.HandleFunc("GET /hang", func(w http.ResponseWriter, r *http.Request) { close(hung); whoami(w, r) })
	// /spam writes long lines to stdout and stderr at once, for the test
	// that they reach a log file whole.
	mux.HandleFunc("GET /spam", func(w http.ResponseWriter, r *http.Request) {
		pad := strings.Repeat("x", 1000)
		var wg sync.WaitGroup
		for _, f := range []*os.File{os.Stdout, os.Stderr} {
			wg.Go(func() {
				for i := range 500 {
					fmt.Fprintf(f, "spam %s %d %s\n", strings.TrimPrefix(f.Name(), "/dev/"), i, pad)
				}
			})
		}
		wg.Wait()
		whoami(w, r)
	})
	mux.HandleFunc("GET /", whoami)
	network, addr := "tcp", "127.0.0.1:"+os.Getenv("PORT")
	if path := os.Getenv("SOCKET"); path != "" {
		network, addr = "unix", path
	}
	ln, err := net.Listen(network, addr)
	if err == nil {
		err = http.Serve(ln, mux)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
