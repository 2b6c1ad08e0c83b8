// Package wechatapi owns the access_token service and the egress endpoint
// for WeChat server APIs: per configured WeChat app it keeps a valid token
// from the stable-token API (shared by replicas through Redis, one fetch per
// renewal), and it forwards the app's token-less API calls to WeChat with
// the token added, refreshing and retrying once when WeChat rejects it.
package wechatapi

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"edge/internal/config"
	"edge/internal/metrics"
)

// Options configure a Service.
type Options struct {
	// Config is [wechat_api]; it does not change while the Service runs.
	Config config.WechatAPI
	// Redis shares tokens and the refresh lock between replicas; nil on
	// one machine.
	Redis Redis
	// Metrics records tokens, refreshes and calls; nil records nothing.
	Metrics *metrics.WechatAPI
	Log     *slog.Logger
	// Now is the clock of every expiry decision; default time.Now.
	Now func() time.Time
	// Transport carries calls to WeChat; default a transport of its own
	// that ignores HTTP_PROXY (edge is what the apps' HTTP_PROXY points at).
	Transport http.RoundTripper
}

// Service keeps the tokens and serves the egress listener. It is created
// once per process; SetApps follows config reloads.
type Service struct {
	opts   Options
	client *http.Client
	base   string
	// sem bounds the calls in flight to WeChat: a semaphore rather than a
	// rate, because what WeChat's quotas and edge's memory suffer from is
	// concurrent work (a media upload holds its slot for seconds), and
	// WeChat's per-API quotas are not known to edge anyway.
	sem  chan struct{}
	apps atomic.Pointer[appSet]
	// crossOrigin refuses a browser page's cross-origin calls.
	crossOrigin *http.CrossOriginProtection

	stop    context.CancelFunc
	stopped chan struct{}
	once    sync.Once
}

// appSet is the configured WeChat apps, by appid, swapped whole on reload.
type appSet struct {
	byID  map[string]*appToken
	order []*appToken
}

// New creates the service for the WeChat apps of cfg.
func New(cfg *config.Config, o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Transport == nil {
		o.Transport = &http.Transport{
			Proxy:                 nil,
			ForceAttemptHTTP2:     true,
			MaxIdleConnsPerHost:   o.Config.MaxConcurrent,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: o.Config.Timeout.Std(),
		}
	}
	s := &Service{
		opts:        o,
		base:        trimSlash(o.Config.BaseURL),
		sem:         make(chan struct{}, o.Config.MaxConcurrent),
		crossOrigin: http.NewCrossOriginProtection(),
		client: &http.Client{
			Transport: o.Transport,
			// A redirect would carry the token to another address.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	s.SetApps(cfg.Apps)
	return s
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// SetApps follows the [[apps]] of a new config. An app whose name, appid
// and secret did not change keeps its token.
func (s *Service) SetApps(apps []config.App) {
	old := s.apps.Load()
	next := &appSet{byID: make(map[string]*appToken, len(apps))}
	for _, a := range apps {
		if a.Platform != config.PlatformWechat {
			continue
		}
		if old != nil {
			if prev, ok := old.byID[a.AppID]; ok && prev.name == a.Name && prev.secret == a.Secret.Value() {
				next.byID[a.AppID] = prev
				next.order = append(next.order, prev)
				continue
			}
		}
		at := newAppToken(a)
		next.byID[a.AppID] = at
		next.order = append(next.order, at)
	}
	s.apps.Store(next)
}

// renewInterval is how often the background loop looks for tokens due for
// renewal; a token is due ten minutes before its expiry, so a check every
// 15 s renews it in time even after a few failed attempts.
const renewInterval = 15 * time.Second

// Start fetches every app's token and keeps renewing them in the
// background until Close, so that no call waits for a fetch.
func (s *Service) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.stopped = cancel, make(chan struct{})
	go func() {
		defer close(s.stopped)
		t := time.NewTicker(renewInterval)
		defer t.Stop()
		for {
			s.RenewDue(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// RenewDue fetches the tokens that are missing or due for renewal.
func (s *Service) RenewDue(ctx context.Context) {
	for _, a := range s.apps.Load().order {
		if ctx.Err() != nil {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, s.opts.Config.Timeout.Std())
		_, _ = s.Token(cctx, a)
		cancel()
	}
}

// Close stops the background renewal and waits for it.
func (s *Service) Close() {
	s.once.Do(func() {
		if s.stop != nil {
			s.stop()
			<-s.stopped
		}
	})
}
