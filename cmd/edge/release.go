package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"edge/internal/gateway"
)

const releaseHelp = `Changes the share of a route's [routes.release] live, through the admin
listener of the running edge (its address and admin_token from the config):
  weight N   send N percent (0 to 100) to the next upstream
  promote    send everything to next (weight 100)
  rollback   send nothing to next but the testers in openids (weight 0)
The change lasts until the next reload, which goes back to the file's weight.`

func runRelease(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge release", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (default $EDGE_CONFIG, else ./edge.toml)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: edge release [-config PATH] ROUTE weight N|promote|rollback\n\n%s\n\nFlags:\n", releaseHelp)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errors.Join(errUsage, errReported)
	}
	route, rest := fs.Arg(0), fs.Args()
	if len(rest) > 0 {
		rest = rest[1:]
	}
	var endpoint, body string
	switch {
	case len(rest) == 2 && rest[0] == "weight":
		n, err := strconv.Atoi(rest[1])
		if err != nil || n < 0 || n > 100 {
			fmt.Fprintf(stderr, "edge release: weight %q is not a percent from 0 to 100\n", rest[1])
			return errors.Join(errUsage, errReported)
		}
		endpoint, body = "/release", fmt.Sprintf(`{"weight":%d}`, n)
	case len(rest) == 1 && (rest[0] == "promote" || rest[0] == "rollback"):
		endpoint = "/release/" + rest[0]
	default:
		fs.Usage()
		return errors.Join(errUsage, errReported)
	}
	cfgPath := *path
	if cfgPath == "" {
		cfgPath = os.Getenv("EDGE_CONFIG")
	}
	if cfgPath == "" {
		cfgPath = "edge.toml"
	}
	cfg, err := gateway.Validate(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errReported
	}
	addr, err := adminDialAddr(cfg.Server.ListenAdmin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		"http://"+addr+"/routes/"+url.PathEscape(route)+endpoint, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok := cfg.Server.AdminToken.Value(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("asking the admin listener (is edge running?): %w", err)
	}
	defer resp.Body.Close()
	var ans struct {
		Msg        string `json:"msg"`
		Upstream   string `json:"upstream"`
		Weight     int    `json:"weight"`
		Was        int    `json:"was"`
		FileWeight int    `json:"file_weight"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&ans); err != nil {
		return fmt.Errorf("admin listener answered %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("route %q: %s", route, ans.Msg)
	}
	fmt.Fprintf(stdout, "edge: route %s sends %d%% to %s (was %d%%); a reload goes back to the file's %d%%\n",
		route, ans.Weight, ans.Upstream, ans.Was, ans.FileWeight)
	return nil
}

// adminDialAddr is where a local client reaches the admin listener: a
// listener on every address ("0.0.0.0:9180", ":9180") is reached on
// loopback.
func adminDialAddr(listen string) (string, error) {
	if listen == "off" {
		return "", errors.New(`server.listen_admin is "off": the running edge takes no admin requests`)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("server.listen_admin: %w", err)
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if err == nil && ip.Is6() {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}
