package gateway

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"time"

	"edge/internal/config"
)

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
	redeploy := config.RedeployNeeded(s.cfg, cfg)
	// listen_admin changes only on a restart: judged with the running one,
	// a file that moves the admin listener to loopback and drops the token
	// would leave the listener open to the network without it.
	if cfg.Server.AdminUnguarded() != "" {
		err := fmt.Errorf("%s: server.admin_token: the admin listener stays on %q until edge restarts, so it keeps needing a token; keep admin_token until the restart that moves it to loopback", s.opts.ConfigPath, cfg.Server.ListenAdmin)
		s.reloadFailed(trigger, err, now)
		return ReloadFailed, err
	}

	// Everything the config needs is read and compiled before any of it
	// goes live (routes and upstream targets, limits with their IP list
	// files, certificates), so a failure anywhere leaves all of it as it
	// was; then everything switches at once.
	next, err := s.gw.Prepare(cfg)
	if err != nil {
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

	if err := tlsChange.Commit(); err != nil {
		s.log.Warn("certificate files are in use but will not be reloaded when they change", "error", err.Error())
	}
	// Nothing can fail from here on; the metric says so before the new
	// config answers, so nobody sees it serve while the metric still
	// reports the previous failure.
	s.metrics.ReloadResult(true, now)
	next.Apply()
	s.cfg, s.cfgHash = cfg, hash
	// After the swap: the new snapshot's health settings are the ones the
	// new instances are checked with.
	s.gw.changeInstances(cfg, redeploy, next.slots)
	if wx := s.gw.lasting.wechat; wx != nil {
		wx.SetApps(cfg.Apps)
	}
	setLevel(s.level, cfg.Log.Level)
	s.setLastReload(trigger, ReloadApplied, nil, now)
	s.log.Info("config reloaded", "trigger", trigger, "routes", len(cfg.Routes), "upstreams", len(cfg.Upstreams))
	return ReloadApplied, nil
}

func (s *Server) readConfigFile() ([]byte, error) { return os.ReadFile(s.opts.ConfigPath) }

func (s *Server) reloadFailed(trigger string, err error, now time.Time) {
	s.metrics.ReloadResult(false, now)
	s.setLastReload(trigger, ReloadFailed, err, now)
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
	next.Server.ListenWechatAPI = cur.Server.ListenWechatAPI
	next.WechatAPI = cur.WechatAPI
	next.Server.StateDir = cur.Server.StateDir
	next.Server.ReadHeaderTimeout = cur.Server.ReadHeaderTimeout
	next.Server.WriteTimeout = cur.Server.WriteTimeout
	next.Server.IdleTimeout = cur.Server.IdleTimeout
	next.Server.MaxHeaderBytes = cur.Server.MaxHeaderBytes
	// The listeners read PROXY headers from the sources they started with;
	// the connection caps must keep exempting exactly those.
	next.Server.ProxyProtocolFrom = cur.Server.ProxyProtocolFrom
	next.TLS.Mode = cur.TLS.Mode
	next.Cluster = cur.Cluster
	config.KeepRun(cur, next)
}
