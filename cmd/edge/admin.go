package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"edge/internal/admin"
	"edge/internal/gateway"
	"edge/internal/process"
	edgetls "edge/internal/tls"
)

// adminClient talks to a running edge's admin listener, found (with its
// admin_token) in the config file the operator runs it with.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// adminFlags parses the flags of a command that talks to the admin
// listener; it returns the positional arguments, of which there must be
// nargs.
func adminFlags(name, argsUsage, help string, nargs int, args []string, stderr io.Writer) (*adminClient, []string, error) {
	fs := flag.NewFlagSet("edge "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file of the running edge, for server.listen_admin and server.admin_token (default $EDGE_CONFIG, else ./edge.toml)")
	addr := fs.String("admin", "", "admin listener address, instead of the config's server.listen_admin")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: edge %s [-config PATH] [-admin HOST:PORT]%s\n\n%s\n\nFlags:\n", name, argsUsage, help)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, errHelp
		}
		return nil, nil, errors.Join(errUsage, errReported)
	}
	if fs.NArg() != nargs {
		fmt.Fprintf(stderr, "edge %s: want %d argument(s), got %d\n", name, nargs, fs.NArg())
		fs.Usage()
		return nil, nil, errors.Join(errUsage, errReported)
	}
	if *path == "" {
		*path = os.Getenv("EDGE_CONFIG")
	}
	if *path == "" {
		*path = "edge.toml"
	}
	cfg, err := gateway.Validate(*path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s for the admin listener: %w", *path, err)
	}
	if *addr == "" {
		*addr = cfg.Server.ListenAdmin
	}
	dial, err := adminDialAddr(*addr)
	if err != nil {
		return nil, nil, err
	}
	return &adminClient{
		base:  "http://" + dial,
		token: cfg.Server.AdminToken.Value(),
		// No timeout: a deploy answers when it is over.
		http: &http.Client{},
	}, fs.Args(), nil
}

// do sends a request, with a JSON body unless body is nil, and decodes the
// JSON answer into out; an answer that is not JSON is an error carrying
// its own words.
func (c *adminClient) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("admin listener: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("admin listener: reading the answer: %w", err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return resp.StatusCode, fmt.Errorf("admin listener answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return resp.StatusCode, nil
}

func runDeploy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, rest, err := adminFlags("deploy", " UPSTREAM",
		"Replaces the running instances of an upstream with [upstreams.run], one at a time\n(max_surge at a time): each new instance gets traffic once healthy, then the old\none drains and stops. Exit 0 when every instance is replaced; 1 when the deploy\nfailed (the old instances keep serving) or could not start.", 1, args, stderr)
	if err != nil {
		return err
	}
	var ans struct {
		Result   string `json:"result"`
		Version  int    `json:"version"`
		Replaced int    `json:"replaced"`
		Error    string `json:"error"`
	}
	code, err := c.do(ctx, http.MethodPost, "/upstreams/"+url.PathEscape(rest[0])+"/deploy", nil, &ans)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("deploy of %q: %s: %s", rest[0], ans.Result, ans.Error)
	}
	fmt.Fprintf(stdout, "edge: upstream %s deployed: version %d on %d instance(s)\n", rest[0], ans.Version, ans.Replaced)
	return nil
}

func runPurge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, rest, err := adminFlags("purge", " URL|PREFIX*|all",
		"Removes answers from the response cache: one URL in every variant\n(https://api.example.com/api/config?v=2; scheme and port may be left out),\nevery URL starting with a prefix (a trailing *), or all of them.", 1, args, stderr)
	if err != nil {
		return err
	}
	body := map[string]any{"url": rest[0]}
	switch arg := rest[0]; {
	case arg == "all":
		body = map[string]any{"all": true}
	case strings.HasSuffix(arg, "*"):
		body = map[string]any{"prefix": strings.TrimSuffix(arg, "*")}
	}
	var ans struct {
		Purged *int   `json:"purged"`
		Msg    string `json:"msg"`
	}
	code, err := c.do(ctx, http.MethodPost, "/cache/purge", body, &ans)
	if err != nil {
		return err
	}
	if code != http.StatusOK || ans.Purged == nil {
		return fmt.Errorf("purge of %q: admin listener answered %d: %s", rest[0], code, ans.Msg)
	}
	fmt.Fprintf(stdout, "edge: purged %d answer(s)\n", *ans.Purged)
	return nil
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, _, err := adminFlags("status", "",
		"Prints what the dashboard shows (/dashboard/ on the admin listener): version,\nuptime, the last config load and its problems, the traffic of the last minute,\nthe routes with their live rate, the upstream targets, the instances of every\nupstream edge runs (pid, port, version, uptime, restarts, memory and state),\nbans, the most limited clients, auth rejections and certificates.", 0, args, stderr)
	if err != nil {
		return err
	}
	var d statusData
	for _, part := range []struct {
		path string
		out  any
	}{
		{"/api/overview", &d.overview},
		{"/api/routes", &d.routes},
		{"/api/upstreams", &d.targets},
		{"/upstreams", &d.instances},
		{"/api/security", &d.security},
		{"/api/certificates", &d.certs},
	} {
		code, err := c.do(ctx, http.MethodGet, part.path, nil, part.out)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("admin listener answered %d to GET %s", code, part.path)
		}
	}
	printOverview(stdout, &d, time.Now())
	return nil
}

// statusData is the admin API's answers edge status prints.
type statusData struct {
	overview admin.Overview
	routes   struct {
		Routes []admin.RouteView `json:"routes"`
	}
	targets struct {
		Upstreams []admin.UpstreamView `json:"upstreams"`
	}
	instances struct {
		Upstreams []admin.Upstream `json:"upstreams"`
	}
	security admin.Security
	certs    edgetls.Status
}

// printOverview prints the dashboard's views one after the other, tables
// as the instances one.
func printOverview(w io.Writer, d *statusData, now time.Time) {
	o := d.overview
	fmt.Fprintf(w, "edge %s, up %s, config %s\n", o.Version, (time.Duration(o.UptimeSeconds) * time.Second).String(), o.Config)
	lr := o.LastReload
	fmt.Fprintf(w, "last config load: %s (%s) at %s\n", lr.Result, lr.Trigger, lr.At.UTC().Format(time.DateTime+" MST"))
	for _, p := range lr.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
	t := o.Traffic
	fmt.Fprintf(w, "traffic, last %d s: %.1f req/s, %.1f%% 5xx, p50 %.1f ms, p99 %.1f ms; targets up %d/%d, bans %d\n\n",
		t.Seconds, t.RPS, t.ErrorRate*100, t.P50Ms, t.P99Ms, o.TargetsUp, o.Targets, o.Bans)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tHOSTS\tMATCH\tAUTH\tLIMITS\tANSWER\tREQ/S\t2XX\t3XX\t4XX\t5XX")
	for _, r := range d.routes.Routes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%d\t%d\t%d\t%d\n", r.Name, orDash(strings.Join(r.Hosts, ",")), r.Match, r.Auth,
			orDash(strings.Join(r.Limits, ",")), r.Answer, r.Live.RPS, r.Live.Classes["2xx"], r.Live.Classes["3xx"], r.Live.Classes["4xx"], r.Live.Classes["5xx"])
	}
	tw.Flush()
	fmt.Fprintln(w)

	if len(d.targets.Upstreams) > 0 {
		fmt.Fprintln(tw, "UPSTREAM\tTARGET\tHEALTH\tIN FLIGHT\tLATENCY\tPASSIVE FAILURES")
		for _, u := range d.targets.Upstreams {
			for _, tg := range u.Targets {
				health := "down"
				if tg.Healthy {
					health = "up"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.1fms\t%d\n", u.Name, tg.Addr, health, tg.InFlight, tg.LatencyMs, tg.Failures)
			}
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	printStatus(w, d.instances.Upstreams, now)
	fmt.Fprintln(w)

	s := d.security
	if len(s.Bans) == 0 {
		fmt.Fprintln(w, "no bans")
	} else {
		fmt.Fprintln(tw, "BANNED\tREASON\tUNTIL")
		for _, b := range s.Bans {
			who := b.Key
			if b.Kind == "openid" {
				who = admin.ShortOpenID(who)
			}
			fmt.Fprintf(tw, "%s %s\t%s\t%s\n", b.Kind, who, orDash(b.Reason), b.Expires.UTC().Format(time.DateTime+" MST"))
		}
		tw.Flush()
	}
	if len(s.TopLimited) > 0 {
		fmt.Fprintln(tw, "MOST LIMITED\tREFUSED")
		for _, k := range s.TopLimited {
			fmt.Fprintf(tw, "%s %s\t%d\n", k.Kind, k.Key, k.Count)
		}
		tw.Flush()
	}
	if len(s.AuthRejections) > 0 {
		codes := slices.Sorted(maps.Keys(s.AuthRejections))
		parts := make([]string, len(codes))
		for i, c := range codes {
			parts[i] = fmt.Sprintf("%s: %d", c, s.AuthRejections[c])
		}
		fmt.Fprintf(w, "auth rejections by code: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)

	fmt.Fprintf(tw, "CERTIFICATE (%s)\tSOURCE\tISSUER\tEXPIRES\tRENEWS\n", d.certs.Mode)
	for _, c := range d.certs.Certificates {
		expires, renews := "-", "-"
		if !c.Expiry.IsZero() {
			expires = c.Expiry.UTC().Format(time.DateOnly)
		}
		if !c.Renewal.IsZero() {
			renews = c.Renewal.UTC().Format(time.DateOnly)
		}
		source := c.Source
		if c.Pending {
			source += " (pending)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", strings.Join(c.Names, ","), source, orDash(c.Issuer), expires, renews)
	}
	tw.Flush()
	if d.certs.LastACMEError != "" {
		fmt.Fprintf(w, "last ACME error at %s: %s\n", d.certs.LastACMEErrorAt.UTC().Format(time.DateTime+" MST"), d.certs.LastACMEError)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printStatus(w io.Writer, ups []admin.Upstream, now time.Time) {
	if len(ups) == 0 {
		fmt.Fprintln(w, "edge runs no upstream ([upstreams.run])")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tINSTANCE\tVERSION\tSTATE\tPID\tPORT\tUPTIME\tRESTARTS\tMEMORY")
	var deploying []string
	for _, u := range ups {
		if u.Deploying {
			deploying = append(deploying, u.Name)
		}
		for _, in := range u.Instances {
			// A socket's file name: the directory is the same for all.
			_, port, _ := net.SplitHostPort(in.Addr)
			if path, ok := strings.CutPrefix(in.Addr, process.UnixPrefix); ok {
				port = filepath.Base(path)
			}
			pid, uptime, mem := "-", "-", "-"
			if in.PID != 0 {
				pid = fmt.Sprint(in.PID)
			}
			if !in.Started.IsZero() {
				uptime = now.Sub(in.Started).Truncate(time.Second).String()
			}
			if in.RSS > 0 {
				mem = fmt.Sprintf("%.1fMB", float64(in.RSS)/(1<<20))
			}
			fmt.Fprintf(tw, "%s\t%d\tv%d\t%s\t%s\t%s\t%s\t%d\t%s\n", u.Name, in.Instance, in.Version, in.State, pid, port, uptime, in.Restarts, mem)
		}
	}
	tw.Flush()
	for _, name := range deploying {
		fmt.Fprintf(w, "a deploy of %s is running\n", name)
	}
}
