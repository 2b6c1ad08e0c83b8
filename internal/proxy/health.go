package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// HealthOptions configure the active health check of an upstream.
type HealthOptions struct {
	Path               string
	Interval           time.Duration
	Timeout            time.Duration
	ExpectStatus       []int // empty: any 2xx or 3xx
	HealthyThreshold   int
	UnhealthyThreshold int
}

func (o HealthOptions) expected(code int) bool {
	if len(o.ExpectStatus) == 0 {
		return code >= 200 && code < 400
	}
	for _, c := range o.ExpectStatus {
		if c == code {
			return true
		}
	}
	return false
}

// healthChecker probes every target of one upstream each interval. It
// belongs to one snapshot's Upstream; the health it records, and the run of
// results that leads to it, live in the shared Targets, so they survive the
// checker being replaced on reload.
type healthChecker struct {
	opts     HealthOptions
	targets  []*Target
	onChange func(t *Target, healthy bool)
	client   *http.Client

	cancel context.CancelFunc
	done   chan struct{}
}

func newHealthChecker(o HealthOptions, targets []*Target, onChange func(*Target, bool)) *healthChecker {
	byAddr := make(map[string]*Target, len(targets))
	for _, t := range targets {
		byAddr[probeHost(t)] = t
	}
	// A check connects as requests do, through the target's own transport:
	// over TLS with the same name, roots and client certificate.
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		t := byAddr[addr]
		if t == nil {
			return nil, fmt.Errorf("health check of unknown target %s", addr)
		}
		return t.transport.Load().dialConn(ctx)
	}
	return &healthChecker{
		opts:     o,
		targets:  targets,
		onChange: onChange,
		client: &http.Client{
			Timeout: o.Timeout,
			// A check must see the target as a new client would: a fresh
			// connection each time, never a redirect followed elsewhere.
			Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil, DialContext: dial, DialTLSContext: dial},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

func (h *healthChecker) start(ctx context.Context) {
	ctx, h.cancel = context.WithCancel(ctx)
	h.done = make(chan struct{})
	go h.loop(ctx)
}

func (h *healthChecker) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
	}
}

func (h *healthChecker) loop(ctx context.Context) {
	defer close(h.done)
	ticker := time.NewTicker(h.opts.Interval)
	defer ticker.Stop()
	for {
		h.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (h *healthChecker) round(ctx context.Context) {
	results := make([]bool, len(h.targets))
	var wg sync.WaitGroup
	for i, t := range h.targets {
		if !t.gated() {
			wg.Go(func() { results[i] = h.probe(ctx, t) })
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	for i, t := range h.targets {
		// A supervised instance is checked by its supervisor, which also
		// knows when the process died.
		if t.gated() {
			continue
		}
		if t.recordCheck(results[i], h.opts) && h.onChange != nil {
			h.onChange(t, results[i])
		}
	}
}

func (h *healthChecker) probe(ctx context.Context, t *Target) bool {
	scheme := "http://"
	if t.transport.Load().tls != nil {
		scheme = "https://"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+probeHost(t)+h.opts.Path, nil)
	if err != nil {
		return false
	}
	if unixTarget(t) {
		// The Host an app behind a socket sees, as nginx sends it there.
		req.Host = "localhost"
	}
	req.Header.Set("User-Agent", "edge-health-check")
	resp, err := h.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return h.opts.expected(resp.StatusCode)
}

// probeHost is the URL host a check of t dials: its address, or for a
// Unix socket (no host:port) a name that stands for it, which the dialer
// maps back to t.
func probeHost(t *Target) string {
	if unixTarget(t) {
		return fmt.Sprintf("unix-socket-%x.invalid:80", addrHash(t.Addr))
	}
	return t.Addr
}

func unixTarget(t *Target) bool { return strings.HasPrefix(t.Addr, "unix:") }
