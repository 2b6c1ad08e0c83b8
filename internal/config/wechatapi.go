package config

import (
	"net"
	"net/url"
	"time"
)

// WechatAPI configures the access_token service and the egress listener
// (server.listen_wechat_api) through which upstreams call WeChat's server
// APIs without holding a token.
//
//	[wechat_api]
//	base_url       = "https://api.weixin.qq.com"
//	timeout        = "30s"
//	max_concurrent = 32
type WechatAPI struct {
	// BaseURL is where stable_token and every forwarded call go. Default
	// "https://api.weixin.qq.com"; point it at an egress proxy or, in tests,
	// at a local fake.
	BaseURL string `toml:"base_url"`
	// Timeout bounds one call to WeChat, body upload and answer included.
	// Default 30s.
	Timeout Duration `toml:"timeout"`
	// MaxConcurrent is how many calls may be in flight to WeChat at once;
	// a call beyond it is answered 429 at once. Default 32.
	MaxConcurrent int `toml:"max_concurrent"`
	// MaxBody bounds a forwarded request body (media uploads). Default 20MB.
	MaxBody ByteSize `toml:"max_body"`
	// AllowRemote lets server.listen_wechat_api listen beyond loopback.
	// Anyone who reaches the listener calls WeChat as the app and can read
	// its token, so it is refused unless this is set (and warned about then).
	AllowRemote bool `toml:"allow_remote"`
}

// Defaults of [wechat_api].
const (
	DefaultWechatAPIBase          = "https://api.weixin.qq.com"
	DefaultWechatAPITimeout       = Duration(30 * time.Second)
	DefaultWechatAPIMaxConcurrent = 32
	DefaultWechatAPIMaxBody       = ByteSize(20 << 20)
)

func (w *WechatAPI) setDefaults() {
	w.BaseURL = DefaultWechatAPIBase
	w.Timeout = DefaultWechatAPITimeout
	w.MaxConcurrent = DefaultWechatAPIMaxConcurrent
	w.MaxBody = DefaultWechatAPIMaxBody
}

// WechatAPIOn reports whether the egress listener is configured.
func (s *Server) WechatAPIOn() bool {
	return s.ListenWechatAPI != "" && s.ListenWechatAPI != "off"
}

// validateWechatAPI checks the egress listener and [wechat_api]; it runs
// after [server] and [[apps]] are checked.
func (cfg *Config) validateWechatAPI(c *checker) {
	s, w := &cfg.Server, &cfg.WechatAPI
	const key = "server.listen_wechat_api"
	if checkListen(c, key, s.ListenWechatAPI, true) && s.WechatAPIOn() {
		switch {
		case !ephemeral(s.ListenWechatAPI) && (s.ListenWechatAPI == s.ListenHTTPS || s.ListenWechatAPI == s.ListenHTTP || s.ListenWechatAPI == s.ListenAdmin):
			c.add(key, "%q is also used by another listener; give the WeChat API listener its own address, like \"127.0.0.1:9190\"", s.ListenWechatAPI)
		case !onLoopback(s.ListenWechatAPI) && !w.AllowRemote:
			c.add(key, `%q is not on loopback: anyone who reaches it calls WeChat as your apps and reads their access_token; listen on "127.0.0.1:9190", or set wechat_api.allow_remote = true if a firewall keeps it private`, s.ListenWechatAPI)
		case !onLoopback(s.ListenWechatAPI):
			c.warn(key, "%q is not on loopback (wechat_api.allow_remote is set): only let the app's own hosts reach it", s.ListenWechatAPI)
		}
		if !cfg.hasWechatApp() {
			c.add(key, `is on but no [[apps]] entry has platform = "wechat"; add the app (appid and secret) whose token edge should keep, or set it to "off"`)
		}
	}
	if msg := httpURLProblem(w.BaseURL); msg != "" {
		c.add("wechat_api.base_url", "%s; the default is %q", msg, DefaultWechatAPIBase)
	} else if u, _ := url.Parse(w.BaseURL); (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		c.add("wechat_api.base_url", "%q must be a scheme and host only, like %q; the API paths are added to it", w.BaseURL, DefaultWechatAPIBase)
	} else if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		c.warn("wechat_api.base_url", "%q is plain http to another machine: app secrets and tokens cross the network in clear; use https", w.BaseURL)
	}
	if w.Timeout.Std() <= 0 || w.Timeout.Std() > 10*time.Minute {
		c.add("wechat_api.timeout", `must be more than 0 and at most 10m; the default is "30s"`)
	}
	if w.MaxConcurrent < 1 || w.MaxConcurrent > 10000 {
		c.add("wechat_api.max_concurrent", "must be from 1 to 10000, not %d; the default is %d", w.MaxConcurrent, DefaultWechatAPIMaxConcurrent)
	}
	if w.MaxBody < 1<<10 {
		c.add("wechat_api.max_body", `must be at least 1KB; the default is "20MB" (WeChat's media uploads are at most 10MB)`)
	}
}

func (cfg *Config) hasWechatApp() bool {
	for _, a := range cfg.Apps {
		if a.Platform == PlatformWechat {
			return true
		}
	}
	return false
}

// loopbackHost reports whether a URL's host names this machine.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
