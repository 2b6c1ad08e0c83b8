package gateway

import (
	"context"
	"crypto/sha256"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"edge/internal/admin"
	"edge/internal/config"
	"edge/internal/h1"
	"edge/internal/identity"
	"edge/internal/metrics"
	"edge/internal/process"
	edgetls "edge/internal/tls"
)

// Options configure a Server.
type Options struct {
	ConfigPath string
	Version    string
	Stdout     io.Writer // access log
	Stderr     io.Writer // error log
	// Listening, when set, is called once every listener is up, with their
	// actual addresses (tests listen on port 0).
	Listening func(Addrs)
	// Abort, when closed during the shutdown, ends it at once: every
	// connection is closed (a second SIGTERM).
	Abort <-chan struct{}
	// CacheClock is the response cache's clock; nil is time.Now. Tests
	// move it instead of waiting for answers to expire.
	CacheClock func() time.Time
}

// Addrs are the bound listener addresses; empty when a listener is off.
type Addrs struct{ HTTPS, HTTP, Admin, WechatAPI string }

// Server owns the listeners, the gateway, the certificate manager and
// reloading.
type Server struct {
	opts    Options
	gw      *Gateway
	tlsm    *edgetls.Manager
	metrics *metrics.Metrics
	log     *slog.Logger
	level   *slog.LevelVar
	access  *accessLog

	reloadMu sync.Mutex
	cfg      *config.Config
	cfgHash  [sha256.Size]byte

	ready atomic.Bool
	// started and lastReload are the dashboard's overview.
	started    time.Time
	lastReload atomic.Pointer[admin.Reload]
}

// New loads and compiles the config. A config error is returned as is (a
// *config.Error listing every problem).
func New(o Options) (*Server, error) {
	data, err := os.ReadFile(o.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := config.Parse(data, o.ConfigPath)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: o, level: new(slog.LevelVar), cfg: cfg, cfgHash: sha256.Sum256(data), started: time.Now()}
	s.log = newLogger(o.Stderr, cfg.Log, s.level)
	s.metrics = metrics.New(o.Version)
	state, err := newLasting(cfg, s.metrics, s.log)
	if err != nil {
		return nil, err
	}
	accessOut, err := accessWriter(cfg.Log, o.Stdout)
	if err != nil {
		state.close()
		return nil, err
	}
	s.access = newAccessLog(accessOut)
	s.gw = newGateway(s.metrics, s.log, s.access, o.ConfigPath, state)
	s.gw.cacheClock = o.CacheClock
	s.gw.httpsPort.Store(edgetls.PortOf(cfg.Server.ListenHTTPS))
	// The engine compiled this config when it was created; preparing it
	// again binds the same buckets for the routes.
	next, err := s.gw.Prepare(cfg)
	if err != nil {
		state.close()
		s.access.close()
		return nil, err
	}
	s.tlsm, err = edgetls.New(cfg.TLS, cfg.Server.StateDir, tlsHosts(cfg), s.log, state.tlsOptions(s.metrics)...)
	if err != nil {
		state.close()
		s.access.close()
		return nil, fmt.Errorf("setting up TLS: %w", err)
	}
	s.gw.tlsm = s.tlsm
	next.Apply()
	s.metrics.ReloadResult(true, time.Now())
	s.setLastReload("start", "loaded", nil, s.started)
	return s, nil
}

func newLogger(w io.Writer, lc config.Log, level *slog.LevelVar) *slog.Logger {
	setLevel(level, lc.Level)
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func setLevel(v *slog.LevelVar, name string) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(name)); err != nil {
		l = slog.LevelInfo
	}
	v.Set(l)
}

// tlsHosts are the names the certificate manager must cover.
func tlsHosts(cfg *config.Config) []string {
	seen := map[string]bool{}
	var hosts []string
	for _, r := range cfg.Routes {
		for _, h := range r.Hosts {
			if !seen[h] {
				seen[h] = true
				hosts = append(hosts, h)
			}
		}
	}
	sort.Strings(hosts)
	return hosts
}

// Serve listens and serves until ctx is done, then shuts down (see
// shutdown) and returns nil.
func (s *Server) Serve(ctx context.Context) error {
	sc := s.cfg.Server
	var servers []listenerServer
	var addrs Addrs
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	listen := func(addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		lns = append(lns, ln)
		return ln, nil
	}

	httpsLn, err := listen(sc.ListenHTTPS)
	if err != nil {
		return err
	}
	addrs.HTTPS = httpsLn.Addr().String()
	s.gw.httpsPort.Store(edgetls.PortOf(addrs.HTTPS))
	// The connection caps see the balancer's address, at accept; the
	// PROXY header is read later, in the connection's goroutine.
	httpsLn = proxyProtocolListener(s.gw.lasting.limits.Listener(edgetls.QuickAckListener(httpsLn)), sc.ProxyProtocolFrom, sc.ReadHeaderTimeout.Std(), s.gw.lasting.limits.AdmitClient)
	tlsConfig := s.tlsm.TLSConfig()
	tlsConfig.VerifyConnection = func(stdtls.ConnectionState) error {
		s.metrics.TLSHandshake(true)
		return nil
	}
	// The fallback serves what the HTTP/1.1 front hands over: HTTP/2 and
	// the request shapes the front does not take.
	fallback := &http.Server{
		TLSConfig:         tlsConfig,
		ConnState:         newConnTracker(s.metrics, "https").state,
		ReadHeaderTimeout: sc.ReadHeaderTimeout.Std(),
		WriteTimeout:      sc.WriteTimeout.Std(),
		IdleTimeout:       sc.IdleTimeout.Std(),
		MaxHeaderBytes:    int(sc.MaxHeaderBytes),
		ErrorLog:          log.New(handshakeErrorLog{m: s.metrics, log: s.log}, "", 0),
	}
	if err := guardHTTP2(fallback, s.metrics, s.log); err != nil {
		closeAll()
		return fmt.Errorf("setting up HTTP/2: %w", err)
	}
	front := s.h1Front(s.gw, fallback, "https")
	servers = append(servers, front)

	if sc.ListenHTTP != "off" && sc.ListenHTTP != "" {
		ln, err := listen(sc.ListenHTTP)
		if err != nil {
			return err
		}
		addrs.HTTP = ln.Addr().String()
		ln = proxyProtocolListener(s.gw.lasting.limits.Listener(ln), sc.ProxyProtocolFrom, sc.ReadHeaderTimeout.Std(), s.gw.lasting.limits.AdmitClient)
		plainFallback := &http.Server{
			ConnState:         newConnTracker(s.metrics, "http").state,
			ReadHeaderTimeout: sc.ReadHeaderTimeout.Std(),
			IdleTimeout:       sc.IdleTimeout.Std(),
			MaxHeaderBytes:    int(sc.MaxHeaderBytes),
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		plain := s.h1Front(http.HandlerFunc(s.gw.servePort80), plainFallback, "http")
		servers = append(servers, plain)
		go s.serve(plain, ln)
	}
	var admin *http.Server
	if sc.ListenAdmin != "off" && sc.ListenAdmin != "" {
		ln, err := listen(sc.ListenAdmin)
		if err != nil {
			return err
		}
		addrs.Admin = ln.Addr().String()
		admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
		go s.serve(admin, ln)
	}
	if wx := s.gw.lasting.wechat; wx != nil {
		ln, err := listen(sc.ListenWechatAPI)
		if err != nil {
			return err
		}
		addrs.WechatAPI = ln.Addr().String()
		srv := &http.Server{
			Handler:           wx,
			ReadHeaderTimeout: sc.ReadHeaderTimeout.Std(),
			// Bounds a slow upload holding one of wechat_api.max_concurrent.
			ReadTimeout:    s.cfg.WechatAPI.Timeout.Std(),
			IdleTimeout:    sc.IdleTimeout.Std(),
			MaxHeaderBytes: int(sc.MaxHeaderBytes),
			ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		// Drained with the traffic listeners: an app's call to WeChat in
		// flight finishes.
		servers = append(servers, srv)
		go s.serve(srv, ln)
		wx.Start()
	}
	go s.serve(front, httpsLn)
	s.tlsm.Start()

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if w := s.newConfigWatcher(); w != nil {
		go s.watchConfig(watchCtx, w)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(signals)
	go s.watchSignals(watchCtx, signals)
	go s.gw.live.Run(watchCtx.Done())

	s.ready.Store(true)
	for _, w := range s.cfg.Warnings {
		s.log.Warn("dangerous setting", "warning", w.In(s.opts.ConfigPath))
	}
	if p := s.tlsm.CAPath(); p != "" {
		s.log.Info("internal TLS: trust this CA to avoid browser warnings", "ca", p)
	}
	s.log.Info("edge is serving", "https", addrs.HTTPS, "http", addrs.HTTP, "admin", addrs.Admin, "wechat_api", addrs.WechatAPI, "config", s.opts.ConfigPath)
	if s.opts.Listening != nil {
		s.opts.Listening(addrs)
	}

	<-ctx.Done()
	s.shutdown(servers, admin)
	s.close()
	s.log.Info("edge stopped")
	return nil
}

// h1Front is the HTTP/1.1 front of a traffic listener, with fallback for
// what it hands over. fallback's TLSConfig makes it an HTTPS front.
func (s *Server) h1Front(h http.Handler, fallback *http.Server, listener string) *h1.Server {
	sc := s.cfg.Server
	o := h1.Options{
		Handler:           h,
		Fallback:          fallback,
		TLSConfig:         fallback.TLSConfig,
		ReadHeaderTimeout: sc.ReadHeaderTimeout.Std(),
		IdleTimeout:       sc.IdleTimeout.Std(),
		WriteTimeout:      fallback.WriteTimeout,
		MaxHeaderBytes:    int(sc.MaxHeaderBytes),
		Logger:            s.log,
		OpenConns:         s.metrics.ConnectionsOpen(listener, "h1"),
		RequestID:         s.gw.newRequestID,
		Refused:           s.gw.recordRefusedHead,
	}
	if o.TLSConfig != nil {
		o.HandshakeFailed = func(err error) {
			s.metrics.TLSHandshake(false)
			s.log.Debug("TLS handshake error", "error", err.Error())
		}
	}
	return h1.New(o)
}

// listenerServer is a listener's server: an HTTP/1.1 front or net/http's.
type listenerServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

func (s *Server) serve(srv listenerServer, ln net.Listener) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("listener stopped", "addr", ln.Addr().String(), "error", err.Error())
	}
}

func (s *Server) close() {
	// Under the reload lock: a reload starts its snapshot's health checks
	// after publishing it, and they must not start while being stopped.
	s.reloadMu.Lock()
	if snap := s.gw.snap.Load(); snap != nil {
		snap.stop()
	}
	s.reloadMu.Unlock()
	s.tlsm.Close()
	s.gw.lasting.close()
	s.access.close()
}

func (s *Server) currentConfig() *config.Config {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return s.cfg
}

// adminAPI is the Server as the admin API sees it.
type adminAPI struct{ s *Server }

func (a adminAPI) Ready() bool                 { return a.s.ready.Load() }
func (a adminAPI) Reload() (string, error)     { return a.s.Reload(TriggerAdmin) }
func (a adminAPI) Server() *config.Server      { return &a.s.gw.snap.Load().cfg.Server }
func (a adminAPI) Sealer() *identity.Sealer    { return a.s.gw.snap.Load().identity.Sealer() }
func (a adminAPI) Processes() (bool, []string) { return a.s.gw.processReadiness() }
func (a adminAPI) Upstreams() []admin.Upstream { return a.s.gw.Upstreams() }
func (a adminAPI) Deploy(name string) (process.Deployed, error) {
	return a.s.gw.Deploy(name)
}

// releases orders a live release change with reloads, so a change is
// never made to a snapshot a reload is replacing.
type releases struct{ s *Server }

func (r releases) SetReleaseWeight(route string, weight int) (admin.Release, error) {
	r.s.reloadMu.Lock()
	defer r.s.reloadMu.Unlock()
	return r.s.gw.SetReleaseWeight(route, weight)
}

func (s *Server) adminHandler() http.Handler {
	return admin.Handler(admin.Options{
		Gateway:   adminAPI{s},
		Registry:  s.metrics.Registry,
		Bans:      s.gw.lasting.limits.AdminHandler(),
		Releases:  releases{s},
		Cache:     s.gw.lasting.cache,
		Dashboard: dashboard{s},
		Log:       s.log,
	})
}

// Validate loads a config file and reports every problem, as `nginx -t`.
func Validate(path string) (*config.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := config.Parse(data, path)
	if err != nil {
		return nil, err
	}
	// The firewall's rule set is compiled too, as nginx -t loads
	// ModSecurity's rules: an excluded id it lacks would fail the reload.
	if _, err := wafEngines(cfg, nil); err != nil {
		return nil, err
	}
	return cfg, nil
}
