package config

import (
	"reflect"
	"time"
)

// Defaults returns a config with every default applied and nothing else:
// no upstreams, no routes. Its state_dir is relative ("edge-state"); Parse
// resolves it against the config file's directory.
func Defaults() *Config {
	cfg := &Config{}
	setDefaults(reflect.ValueOf(cfg).Elem())
	return cfg
}

func (s *Server) setDefaults() {
	s.ListenHTTPS = ":443"
	s.ListenHTTP = ":80"
	s.ListenAdmin = "127.0.0.1:9180"
	s.ListenWechatAPI = "off"
	s.StateDir = "edge-state"
	s.ReadHeaderTimeout = Duration(10 * time.Second)
	s.ReadTimeout = Duration(60 * time.Second)
	s.IdleTimeout = Duration(75 * time.Second)
	s.MaxHeaderBytes = 64 << 10
	s.ShutdownGrace = Duration(30 * time.Second)
	s.RedirectHTTP = true
}

func (t *TLS) setDefaults() {
	t.Mode = "internal"
	t.MinVersion = "1.2"
}

func (l *Log) setDefaults() {
	l.Level = "info"
	l.Format = "json"
	on := true
	l.Access = &on
	l.AccessMaxSize = 100 << 20
	l.AccessMaxBackups = 10
	l.MaskQuery = append([]string(nil), DefaultMaskQuery...)
	l.AccessFields = append([]string(nil), DefaultAccessFields...)
}

// DefaultMaskQuery are the query names whose values a mini-program backend
// most often carries in the clear: wx.login codes, session and access
// tokens, phone numbers.
var DefaultMaskQuery = []string{"code", "token", "access_token", "session_key", "password", "secret", "sign", "signature", "msg_signature", "phone", "mobile"}

func (u *Upstream) setDefaults() {
	u.Balance = "round_robin"
	u.HashKey = "ip"
	u.Keepalive = 64
	u.ConnectTimeout = Duration(3 * time.Second)
	u.ResponseHeaderTimeout = Duration(60 * time.Second)
	u.ReadTimeout = Duration(60 * time.Second)
	u.Retries = 1
}

func (t *Target) setDefaults() { t.Weight = 1 }

func (r *Run) setDefaults() {
	r.Instances = 1
	r.PortEnv = "PORT"
	r.StopGrace = Duration(10 * time.Second)
	r.DeployTimeout = Duration(60 * time.Second)
	r.DeployGrace = Duration(30 * time.Second)
	r.MaxSurge = 1
}

func (h *HealthCheck) setDefaults() {
	h.Interval = Duration(5 * time.Second)
	h.Timeout = Duration(2 * time.Second)
	h.HealthyThreshold = 2
	h.UnhealthyThreshold = 2
}

func (p *Passive) setDefaults() {
	p.MaxFails = 3
	p.Window = Duration(10 * time.Second)
	p.Cooldown = Duration(30 * time.Second)
}

// setDefaults of Route also shadows the methods its embedded sections may
// define; those still run, as setDefaults walks every nested struct.
func (r *Route) setDefaults() {
	r.Path = "/"
	r.Index = "index.html"
	r.WAF = WAFOff
	mb := ByteSize(1 << 20)
	r.MaxBody = &mb
}

func (r *Redirect) setDefaults() {
	r.Status = 302
}

func (r *Respond) setDefaults() {
	r.Status = 200
	r.ContentType = "text/plain; charset=utf-8"
}
