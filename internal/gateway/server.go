package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	stdtls "crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"edge/internal/config"
	"edge/internal/identity"
	"edge/internal/metrics"
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
}

// Addrs are the bound listener addresses; empty when a listener is off.
type Addrs struct{ HTTPS, HTTP, Admin string }

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
	s := &Server{opts: o, level: new(slog.LevelVar), cfg: cfg, cfgHash: sha256.Sum256(data)}
	s.log = newLogger(o.Stderr, cfg.Log, s.level)
	s.metrics = metrics.New(o.Version)
	feats, err := newFeatures(cfg, s.metrics, s.log)
	if err != nil {
		return nil, err
	}
	accessOut, err := accessWriter(cfg.Log, o.Stdout)
	if err != nil {
		feats.close()
		return nil, err
	}
	s.access = newAccessLog(accessOut)
	s.gw = newGateway(s.metrics, s.log, s.access, o.ConfigPath, feats)
	s.gw.httpsPort.Store(edgetls.PortOf(cfg.Server.ListenHTTPS))
	targets := s.gw.registry.Stage()
	snap, err := s.gw.compile(cfg, targets)
	if err != nil {
		feats.close()
		s.access.close()
		return nil, err
	}
	s.tlsm, err = edgetls.New(cfg.TLS, cfg.Server.StateDir, tlsHosts(cfg), s.log, feats.tlsOptions(s.metrics)...)
	if err != nil {
		feats.close()
		s.access.close()
		return nil, fmt.Errorf("setting up TLS: %w", err)
	}
	s.gw.tlsm = s.tlsm
	targets.Commit()
	s.gw.snap.Store(snap)
	snap.start(s.gw.healthChanged)
	s.metrics.ReloadResult(true, time.Now())
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
	var servers []*http.Server
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
	httpsLn = s.gw.features.limits.Listener(edgetls.QuickAckListener(httpsLn))
	tlsConfig := s.tlsm.TLSConfig()
	tlsConfig.VerifyConnection = func(stdtls.ConnectionState) error {
		s.metrics.TLSHandshake(true)
		return nil
	}
	front := &http.Server{
		Handler:           s.gw,
		TLSConfig:         tlsConfig,
		ConnState:         newConnTracker(s.metrics, "https").state,
		ReadHeaderTimeout: sc.ReadHeaderTimeout.Std(),
		WriteTimeout:      sc.WriteTimeout.Std(),
		IdleTimeout:       sc.IdleTimeout.Std(),
		MaxHeaderBytes:    int(sc.MaxHeaderBytes),
		ErrorLog:          log.New(handshakeErrorLog{m: s.metrics, log: s.log}, "", 0),
	}
	if err := guardHTTP2(front, s.metrics, s.log); err != nil {
		closeAll()
		return fmt.Errorf("setting up HTTP/2: %w", err)
	}
	servers = append(servers, front)

	var plain *http.Server
	if sc.ListenHTTP != "off" && sc.ListenHTTP != "" {
		ln, err := listen(sc.ListenHTTP)
		if err != nil {
			return err
		}
		addrs.HTTP = ln.Addr().String()
		ln = s.gw.features.limits.Listener(ln)
		plain = &http.Server{
			Handler:           http.HandlerFunc(s.gw.servePort80),
			ConnState:         newConnTracker(s.metrics, "http").state,
			ReadHeaderTimeout: sc.ReadHeaderTimeout.Std(),
			IdleTimeout:       sc.IdleTimeout.Std(),
			MaxHeaderBytes:    int(sc.MaxHeaderBytes),
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		servers = append(servers, plain)
		go s.serve(plain, ln, false)
	}
	var admin *http.Server
	if sc.ListenAdmin != "off" && sc.ListenAdmin != "" {
		ln, err := listen(sc.ListenAdmin)
		if err != nil {
			return err
		}
		addrs.Admin = ln.Addr().String()
		admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
		go s.serve(admin, ln, false)
	}
	go s.serve(front, httpsLn, true)
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

	s.ready.Store(true)
	for _, w := range s.cfg.Warnings {
		s.log.Warn("dangerous setting", "warning", w.In(s.opts.ConfigPath))
	}
	if p := s.tlsm.CAPath(); p != "" {
		s.log.Info("internal TLS: trust this CA to avoid browser warnings", "ca", p)
	}
	s.log.Info("edge is serving", "https", addrs.HTTPS, "http", addrs.HTTP, "admin", addrs.Admin, "config", s.opts.ConfigPath)
	if s.opts.Listening != nil {
		s.opts.Listening(addrs)
	}

	<-ctx.Done()
	s.shutdown(servers, admin)
	s.close()
	s.log.Info("edge stopped")
	return nil
}

func (s *Server) serve(srv *http.Server, ln net.Listener, tls bool) {
	var err error
	if tls {
		err = srv.ServeTLS(ln, "", "")
	} else {
		err = srv.Serve(ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
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
	s.gw.registry.Close()
	s.tlsm.Close()
	s.gw.features.close()
	s.access.close()
}

func (s *Server) currentConfig() *config.Config {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return s.cfg
}

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	// Profiles, as Caddy's admin endpoint offers: the admin listener is
	// loopback-only by default, and guarded (adminGuard).
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	bans := s.gw.features.limits.AdminHandler()
	mux.Handle("/bans", bans)
	mux.Handle("/bans/", bans)
	mux.HandleFunc("POST /sessions/revoke", s.revokeSession)
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		result, err := s.Reload(TriggerAdmin)
		w.Header().Set("Content-Type", "application/json")
		body := map[string]any{"result": result}
		if err != nil {
			body["problems"] = problemLines(err)
			w.WriteHeader(http.StatusUnprocessableEntity)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	return s.adminGuard(mux)
}

// revokeSession logs a user out everywhere: POST {"token": "..."}. The
// token is put on the revocation list in Redis until it would have expired
// ([cluster] redis is required: without a shared store a token stays valid
// until it expires).
func (s *Server) revokeSession(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<10)).Decode(&req); err != nil || req.Token == "" {
		http.Error(w, `send {"token": "<the session token>"}`, http.StatusBadRequest)
		return
	}
	sealer := s.gw.snap.Load().identity.Sealer()
	if sealer == nil {
		http.Error(w, "no [sessions] configured", http.StatusConflict)
		return
	}
	sess, err := sealer.Open(req.Token)
	switch {
	case errors.Is(err, identity.ErrTokenExpired):
		_, _ = io.WriteString(w, `{"result":"already expired"}`+"\n")
		return
	case err != nil:
		http.Error(w, "not a token of this gateway", http.StatusBadRequest)
		return
	}
	if err := sealer.Revoke(r.Context(), sess); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	s.log.Info("session revoked", "appid", sess.AppID, "openid", sess.OpenID)
	_, _ = io.WriteString(w, `{"result":"revoked"}`+"\n")
}

func problemLines(err error) []string {
	return strings.Split(err.Error(), "\n")
}

// Reload triggers.
const (
	TriggerFileChange = "file change"
	TriggerSIGHUP     = "SIGHUP"
	TriggerAdmin      = "admin"
)

// Reload outcomes.
const (
	ReloadApplied   = "reloaded"
	ReloadUnchanged = "unchanged"
	ReloadFailed    = "failed"
)

// Reload reads the config file again and, if it is valid, swaps in a new
// snapshot. On any problem the current snapshot keeps serving. SIGHUP and
// POST /reload always recompile (files the config names may have changed).
func (s *Server) Reload(trigger string) (string, error) {
	return s.reload(trigger, nil)
}

// reload reads the config file and applies it. settled, from the file
// watcher, is what the file held once it stopped changing; if the file no
// longer holds it, a newer write is on its way (and its own event), so
// nothing is applied: an older version must never replace a newer one. A
// file-change trigger with the running config's bytes compiles nothing,
// but it does mean the file and the running config agree again, which is
// what edge_config_last_reload_successful reports (saving back the running
// config after a rejected edit clears the alert).
func (s *Server) reload(trigger string, settled []byte) (string, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	now := time.Now()
	data, err := os.ReadFile(s.opts.ConfigPath)
	if err != nil {
		err = fmt.Errorf("reading config: %w", err)
		s.reloadFailed(trigger, err, now)
		return ReloadFailed, err
	}
	if settled != nil && !bytes.Equal(data, settled) {
		s.log.Debug("config file changed again; waiting for it to settle", "trigger", trigger)
		return ReloadUnchanged, nil
	}
	hash := sha256.Sum256(data)
	// Only the file watcher may skip identical bytes: an operator's SIGHUP or
	// POST /reload also re-reads the files the config names (IP lists, JWKS,
	// keys), which the watcher does not see change.
	if hash == s.cfgHash && trigger == TriggerFileChange {
		s.metrics.ConfigMatchesRunning()
		s.log.Debug("config unchanged; nothing to reload", "trigger", trigger)
		return ReloadUnchanged, nil
	}
	cfg, err := config.Parse(data, s.opts.ConfigPath)
	if err != nil {
		s.reloadFailed(trigger, err, now)
		return ReloadFailed, err
	}
	for _, key := range config.RestartNeeded(s.cfg, cfg) {
		s.log.Warn("config change needs a restart; keeping the running value", "key", key)
	}
	keepRestartOnly(s.cfg, cfg)

	// Everything the config needs is read and compiled before any of it
	// goes live (routes and upstream targets, limits with their IP list
	// files, certificates), so a failure anywhere leaves all of it as it
	// was; then everything switches at once.
	targets := s.gw.registry.Stage()
	snap, err := s.gw.compile(cfg, targets)
	if err != nil {
		s.reloadFailed(trigger, err, now)
		return ReloadFailed, err
	}
	limitsPlan, err := s.gw.features.limits.Prepare(cfg)
	if err != nil {
		err = fmt.Errorf("limits: %w", err)
		s.reloadFailed(trigger, err, now)
		return ReloadFailed, err
	}
	tlsChange, err := s.tlsm.Prepare(cfg.TLS, tlsHosts(cfg))
	if err != nil {
		err = fmt.Errorf("TLS: %w", err)
		s.reloadFailed(trigger, err, now)
		return ReloadFailed, err
	}
	if err := tlsChange.RestartNeeded(); err != nil {
		s.log.Warn("TLS change needs a restart; keeping the running TLS settings", "detail", err.Error())
	}

	targets.Commit()
	limitsPlan.Commit()
	if err := tlsChange.Commit(); err != nil {
		s.log.Warn("certificate files are in use but will not be reloaded when they change", "error", err.Error())
	}
	// Nothing can fail from here on; the metric says so before the new
	// config answers, so nobody sees it serve while the metric still
	// reports the previous failure.
	s.metrics.ReloadResult(true, now)
	old := s.gw.snap.Swap(snap)
	// The old snapshot's health checks end before the new ones begin, so
	// no target is checked by two snapshots at once.
	old.stop()
	snap.start(s.gw.healthChanged)
	s.cfg, s.cfgHash = cfg, hash
	setLevel(s.level, cfg.Log.Level)
	s.log.Info("config reloaded", "trigger", trigger, "routes", len(cfg.Routes), "upstreams", len(cfg.Upstreams))
	return ReloadApplied, nil
}

func (s *Server) readConfigFile() ([]byte, error) { return os.ReadFile(s.opts.ConfigPath) }

func (s *Server) reloadFailed(trigger string, err error, now time.Time) {
	s.metrics.ReloadResult(false, now)
	for _, line := range problemLines(err) {
		s.log.Error("config reload rejected; the previous config keeps serving", "trigger", trigger, "problem", line)
	}
}

// keepRestartOnly copies into next the settings that only take effect on a
// restart, so that the new snapshot never half-applies them.
func keepRestartOnly(cur, next *config.Config) {
	next.Server.ListenHTTPS = cur.Server.ListenHTTPS
	next.Server.ListenHTTP = cur.Server.ListenHTTP
	next.Server.ListenAdmin = cur.Server.ListenAdmin
	next.Server.StateDir = cur.Server.StateDir
	next.Server.ReadHeaderTimeout = cur.Server.ReadHeaderTimeout
	next.Server.WriteTimeout = cur.Server.WriteTimeout
	next.Server.IdleTimeout = cur.Server.IdleTimeout
	next.Server.MaxHeaderBytes = cur.Server.MaxHeaderBytes
	next.TLS.Mode = cur.TLS.Mode
	next.Cluster = cur.Cluster
}

// newConfigWatcher watches the config file's directory, not the file, so
// editors that save by renaming a temporary file (vim, sed -i, Kubernetes'
// ..data swap) are seen. It is set up before edge says it is serving, so no
// save after that is missed; nil when the file cannot be watched (reloads
// then need SIGHUP or POST /reload).
func (s *Server) newConfigWatcher() *fsnotify.Watcher {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("cannot watch the config file; reload with SIGHUP or POST /reload", "error", err.Error())
		return nil
	}
	dir := filepath.Dir(s.opts.ConfigPath)
	if err := w.Add(dir); err != nil {
		w.Close()
		s.log.Warn("cannot watch the config directory; reload with SIGHUP or POST /reload", "dir", dir, "error", err.Error())
		return nil
	}
	return w
}

// watchConfig reloads when the config file changes. Events are debounced
// because one save is several events, and the file is applied only once it
// stopped changing.
func (s *Server) watchConfig(ctx context.Context, w *fsnotify.Watcher) {
	defer w.Close()
	name := filepath.Base(s.opts.ConfigPath)
	const debounce = 250 * time.Millisecond
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			base := filepath.Base(ev.Name)
			if base == name || base == "..data" {
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("config watcher error", "error", err.Error())
		case <-timer.C:
			data, err := readSettled(ctx, s.readConfigFile, settleInterval, settleTries)
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, errStillChanging):
				// The writer is still at work; its next write is another
				// event, which schedules another look.
				s.log.Info("config file is still being written; waiting for it to settle", "path", s.opts.ConfigPath)
			case err != nil:
				_, _ = s.Reload(TriggerFileChange)
			default:
				// A non-nil slice marks the bytes as settled, even when
				// the file is empty.
				_, _ = s.reload(TriggerFileChange, append([]byte{}, data...))
			}
		}
	}
}

// watchSignals: SIGHUP reloads the config, SIGUSR1 reopens the access log
// file (after logrotate moved it away).
func (s *Server) watchSignals(ctx context.Context, ch <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-ch:
			if sig == syscall.SIGUSR1 {
				s.access.reopen()
				s.log.Info("access log reopened", "trigger", "SIGUSR1")
				continue
			}
			_, _ = s.Reload(TriggerSIGHUP)
		}
	}
}

// Validate loads a config file and reports every problem, as `nginx -t`.
func Validate(path string) (*config.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return config.Parse(data, path)
}
