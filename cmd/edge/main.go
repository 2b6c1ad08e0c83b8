// Command edge is the mini-program gateway: edge run | validate | version,
// and deploy, status, release and purge, which talk to a running edge's
// admin listener.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"edge/internal/gateway"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version or VCS revision is used.
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, errHelp) {
		if !errors.Is(err, errReported) {
			fmt.Fprintln(os.Stderr, "edge:", err)
		}
		os.Exit(exitCode(err))
	}
}

// errReported means the problem was already printed in full.
var errReported = errors.New("reported")

// errHelp means -h was asked for and answered: exit 0.
var errHelp = errors.New("help shown")

// errUsage is a command-line mistake (exit 2, as flag does).
var errUsage = errors.New("usage")

func exitCode(err error) int {
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

const usage = `edge: the gateway in front of mini-program backends

Usage:
  edge [run] [-config PATH]     serve (the default command)
  edge validate [-config PATH] [-offline]
                                check a config file (and its Redis) and exit,
                                like nginx -t
  edge deploy UPSTREAM          replace an upstream's instances, one at a time
  edge status                   what the dashboard shows, in the terminal
  edge version                  print the version
  edge release ROUTE weight N|promote|rollback
                                change a route's release live (admin API)
  edge purge URL|PREFIX*|all    remove answers from the response cache

The config path is -config, else $EDGE_CONFIG, else ./edge.toml; deploy,
status, release and purge read it for the admin listener's address and
admin_token.
Signals: SIGHUP reloads the config; SIGTERM or SIGINT drain and stop (a
second one stops at once).
Run "edge <command> -h" for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runServe(ctx, args, stdout, stderr)
	case "validate":
		return runValidate(args, stdout, stderr)
	case "deploy":
		return runDeploy(ctx, args, stdout, stderr)
	case "status":
		return runStatus(ctx, args, stdout, stderr)
	case "release":
		return runRelease(ctx, args, stdout, stderr)
	case "purge":
		return runPurge(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "edge", buildVersion())
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "edge: unknown command %q\n\n%s", cmd, usage)
	return errUsage
}

func configFlag(name string, args []string, stderr io.Writer, help string, extra ...func(*flag.FlagSet)) (string, error) {
	fs := flag.NewFlagSet("edge "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (default $EDGE_CONFIG, else ./edge.toml)")
	for _, f := range extra {
		f(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: edge %s [-config PATH]\n\n%s\n\nFlags:\n", name, help)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", errHelp
		}
		return "", errors.Join(errUsage, errReported)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edge %s: unexpected argument %q\n", name, fs.Arg(0))
		fs.Usage()
		return "", errors.Join(errUsage, errReported)
	}
	if *path != "" {
		return *path, nil
	}
	if env := os.Getenv("EDGE_CONFIG"); env != "" {
		return env, nil
	}
	return "edge.toml", nil
}

func runValidate(args []string, stdout, stderr io.Writer) error {
	var offline bool
	path, err := configFlag("validate", args, stderr,
		"Checks the config file: syntax, unknown keys, types, values and references.\nWith [cluster] redis it also connects to Redis: refused credentials or a failed\nTLS handshake are errors, a Redis that does not answer from here a warning.\nExit 0 and one line when it is valid (dangerous settings are printed as warnings);\nexit 1 and every problem otherwise.",
		func(fs *flag.FlagSet) {
			fs.BoolVar(&offline, "offline", false, "do not connect to [cluster] redis (for a machine that cannot reach it)")
		})
	if err != nil {
		return err
	}
	cfg, err := gateway.Validate(path)
	if err == nil && !offline {
		var warning string
		warning, err = gateway.CheckRedis(context.Background(), cfg)
		if warning != "" {
			fmt.Fprintln(stderr, "edge: warning:", warning)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintf(stderr, "edge: configuration file %s test failed\n", path)
		return errReported
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, "edge: warning:", w.In(path))
	}
	fmt.Fprintf(stdout, "edge: configuration file %s is valid (%d routes, %d upstreams)\n", path, len(cfg.Routes), len(cfg.Upstreams))
	return nil
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	path, err := configFlag("run", args, stderr,
		"Serves HTTPS, the HTTP redirect/ACME listener and the admin listener as configured.\nSIGHUP, a change of the file, or POST /reload on the admin listener reload the config.")
	if err != nil {
		return err
	}
	abort, stopWatching := secondStopSignal()
	defer stopWatching()
	srv, err := gateway.New(gateway.Options{ConfigPath: path, Version: buildVersion(), Stdout: stdout, Stderr: stderr, Abort: abort})
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintln(stderr, "edge: not started")
		return errReported
	}
	return srv.Serve(ctx)
}

// secondStopSignal returns a channel closed when SIGTERM or SIGINT arrives
// for the second time. The first ends main's context, which starts the
// drain; every signal reaches both registrations, so counting here needs
// no coordination with main.
func secondStopSignal() (<-chan struct{}, func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	abort, done := make(chan struct{}), make(chan struct{})
	go func() {
		for n := 1; ; n++ {
			select {
			case <-done:
				return
			case <-ch:
				if n == 2 {
					close(abort)
					return
				}
			}
		}
	}()
	return abort, func() {
		signal.Stop(ch)
		close(done)
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}
