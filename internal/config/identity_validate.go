package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// validate checks [[apps]] and [sessions]; it runs after the core sections
// are checked.
func (s *IdentitySections) validate(c *checker) {
	names := make(map[string]int, len(s.Apps))
	appids := make(map[string]int, len(s.Apps))
	paths := make(map[string]int, len(s.Apps))
	for i := range s.Apps {
		a := &s.Apps[i]
		key := indexKey("apps", i)
		switch {
		case !validToken(a.Name):
			c.add(key+".name", "%q is not a valid name; use letters, digits, '-' or '_' (routes refer to it with app = ...)", a.Name)
		default:
			if j, dup := names[a.Name]; dup {
				c.add(key+".name", "%q is already the name of apps[%d]; names must be unique", a.Name, j)
			}
			names[a.Name] = i
		}
		c.oneOf(key+".platform", a.Platform, PlatformWechat, PlatformAlipay)
		switch {
		case a.AppID == "" || len(a.AppID) > 64 || !validToken(a.AppID):
			c.add(key+".appid", "must be the mini-program's appid (wx... for WeChat, 16 digits for Alipay), as shown in the platform console")
		default:
			if j, dup := appids[a.AppID]; dup {
				c.add(key+".appid", "%q is already the appid of apps[%d]; each app appears once", a.AppID, j)
			}
			appids[a.AppID] = i
		}
		if a.Platform == PlatformAlipay {
			a.validateAlipay(c, key)
		} else {
			a.validateWechat(c, key)
		}
		switch {
		case !strings.HasPrefix(a.LoginPath, "/") || strings.ContainsAny(a.LoginPath, "?# "):
			c.add(key+".login_path", "%q must be a path starting with '/', like %q", a.LoginPath, DefaultLoginPath)
		default:
			if j, dup := paths[a.LoginPath]; dup {
				c.add(key+".login_path", "%q is already the login path of apps[%d]; give each app its own", a.LoginPath, j)
			}
			paths[a.LoginPath] = i
		}
		if a.LoginTimeout.Std() <= 0 || a.LoginTimeout.Std() > time.Minute {
			c.add(key+".login_timeout", "must be more than 0 and at most 1m (the mini-program itself gives up after 60s); the default is 5s")
		}
		if a.LoginHook != "" {
			if msg := httpURLProblem(a.LoginHook); msg != "" {
				c.add(key+".login_hook", "%s; it is the app's own endpoint that edge POSTs each new login to", msg)
			}
		}
	}
	s.Sessions.validate(c, len(s.Apps) > 0 || c.cfg.routesNeedSessions())
}

func (a *App) validateWechat(c *checker, key string) {
	if a.Secret.Value() == "" {
		c.add(key+".secret", "is required: the app secret from the platform console, written as \"${ENV_NAME}\" or \"file:/path\"")
	}
	if msg := httpURLProblem(a.Code2SessionURL); msg != "" {
		c.add(key+".code2session_url", "%s; the default is %q", msg, DefaultCode2SessionURL)
	}
	for _, k := range []string{"private_key", "alipay_public_key", "gateway_url"} {
		if c.has(key + "." + k) {
			c.add(key+"."+k, "applies to platform = \"alipay\" only; remove it or set platform = \"alipay\"")
		}
	}
}

func (a *App) validateAlipay(c *checker, key string) {
	if strings.Trim(a.AppID, "0123456789") != "" {
		c.add(key+".appid", "%q is not an Alipay app_id; Alipay's are digits only, like \"2021000000000000\" (open.alipay.com, the app's overview)", a.AppID)
	}
	for _, k := range []string{"secret", "code2session_url"} {
		if c.has(key + "." + k) {
			c.add(key+"."+k, "applies to WeChat apps only; an Alipay app signs its login calls with private_key; remove it")
		}
	}
	if msg := httpURLProblem(a.GatewayURL); msg != "" {
		c.add(key+".gateway_url", "%s; the default is %q", msg, DefaultAlipayGatewayURL)
	}
	c.resolve(&a.AlipayPublicKey)
	if _, err := a.AlipayPrivateKey(); err != nil {
		c.add(key+".private_key", "%v", err)
	}
	if _, err := a.LoadAlipayPublicKey(); err != nil {
		c.add(key+".alipay_public_key", "%v", err)
	}
}

func (s *Sessions) validate(c *checker, needed bool) {
	if needed && len(s.Secrets) == 0 {
		c.add("sessions.secrets", "at least one secret is required to seal login tokens: secrets = [\"${EDGE_SESSION_SECRET}\"], 32 random bytes or more (openssl rand -base64 48)")
	}
	for i, sec := range s.Secrets {
		if len(sec.Value()) < 32 {
			c.add(indexKey("sessions.secrets", i), "is %d bytes; a session secret must be at least 32 (openssl rand -base64 48)", len(sec.Value()))
		}
	}
	if s.TTL.Std() < time.Minute || s.TTL.Std() > 30*24*time.Hour {
		c.add("sessions.ttl", "must be between 1m and 720h; the default is 2h")
	}
	if s.Skew.Std() < time.Second || s.Skew.Std() > time.Hour {
		c.add("sessions.skew", "must be between 1s and 1h; the default is 300s")
	}
	if s.NonceCacheSize < 1024 || s.NonceCacheSize > 1<<26 {
		c.add("sessions.nonce_cache_size", "must be between 1024 and 67108864; the default is %d (about 64 MB when full)", DefaultNonceCacheSize)
	}
	c.oneOf("sessions.revocation_failure", s.RevocationFailure, FailOpen, FailClosed)
	c.oneOf("sessions.revocation_check", s.RevocationCheck, RevocationCheckLocal, RevocationCheckRedis)
	c.oneOf("sessions.nonce_failure", s.NonceFailure, FailOpen, FailClosed)
}

// routesNeedSessions reports whether a route checks edge's own tokens.
func (cfg *Config) routesNeedSessions() bool {
	for i := range cfg.Routes {
		if a := cfg.Routes[i].Auth; a == AuthToken || a == AuthSigned {
			return true
		}
	}
	return false
}

// validate checks one route's identity keys; key is the route's path, e.g.
// "routes[3]".
func (r *RouteAuth) validate(c *checker, key string) {
	if !c.oneOf(key+".auth", r.Auth, AuthNone, AuthToken, AuthSigned, AuthJWT, AuthTrustedHeader) {
		return
	}
	apps := c.cfg.Apps
	var names []string
	for _, a := range apps {
		names = append(names, a.Name)
	}
	if r.App != "" {
		found := false
		for _, n := range names {
			found = found || n == r.App
		}
		if !found {
			hint := ""
			if s := closest(r.App, names); s != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", s)
			}
			c.add(key+".app", "no app named %q%s; define it under [[apps]] or use one of: %s", r.App, hint, quoteList(names))
		}
	}
	switch r.Auth {
	case AuthToken, AuthSigned:
		if len(apps) == 0 {
			c.add(key+".auth", "auth = %q needs at least one [[apps]] to log users in", r.Auth)
		} else if len(apps) > 1 && r.App == "" {
			c.add(key+".app", "several apps are configured; say which one this route belongs to: one of %s", quoteList(names))
		}
	case AuthTrustedHeader:
		if len(c.cfg.Server.TrustedProxies) == 0 {
			c.add(key+".auth", "auth = \"trusted_header\" believes X-WX-OPENID only from server.trusted_proxies, and none are configured")
		}
	}
	if r.AllowUnsignedPayload && r.Auth != AuthSigned {
		c.add(key+".allow_unsigned_payload", "applies to auth = \"signed\" only; remove it or set auth = \"signed\"")
	}
	if r.ForwardAuthorization && r.Auth != AuthToken && r.Auth != AuthSigned && r.Auth != AuthJWT {
		c.add(key+".forward_authorization", "routes with auth = %q always forward Authorization; remove it", r.Auth)
	}
	if r.RefererCheck && len(apps) == 0 {
		c.add(key+".referer_check", "needs at least one [[apps]] whose appid the Referer must name")
	}
	if r.RefererCheck && len(apps) > 0 && !refererCheckable(apps, r.App) {
		c.add(key+".referer_check", "checks the WeChat Referer (servicewechat.com), which Alipay clients never send; remove it from routes of Alipay apps")
	}
	if r.ReleaseOnly && !r.RefererCheck {
		c.add(key+".release_only", "works through the Referer; add referer_check = true")
	}
	switch {
	case r.Auth == AuthJWT && r.JWT == nil:
		c.add(key+".jwt", "auth = \"jwt\" needs a [routes.jwt] table with alg and a key")
	case r.Auth != AuthJWT && r.JWT != nil:
		c.add(key+".jwt", "[routes.jwt] is set but auth is %q; write auth = \"jwt\" or remove the table", r.Auth)
	case r.JWT != nil:
		r.JWT.validate(c, key+".jwt")
	}
}

// refererCheckable reports whether the route's app (any app when name is
// empty) can pass the check: only WeChat clients send the Referer it reads.
// An unknown name is reported on its own.
func refererCheckable(apps []App, name string) bool {
	found := false
	for _, a := range apps {
		if name == "" || a.Name == name {
			if a.Platform != PlatformAlipay {
				return true
			}
			found = true
		}
	}
	return !found
}

func (j *RouteJWT) validate(c *checker, key string) {
	if !c.oneOf(key+".alg", j.Alg, "HS256", "RS256", "ES256") {
		return
	}
	c.resolve(&j.PublicKeyFile)
	c.resolve(&j.JWKSFile)
	keySources := 0
	for _, set := range []bool{j.Secret != "", j.PublicKeyFile != "", j.JWKSFile != ""} {
		if set {
			keySources++
		}
	}
	switch {
	case j.Alg == "HS256" && (j.Secret == "" || keySources != 1):
		c.add(key+".secret", "alg = \"HS256\" takes its key from secret only (\"${ENV_NAME}\" or \"file:/path\", 32 bytes or more)")
		return
	case j.Alg != "HS256" && (j.Secret != "" || keySources != 1):
		c.add(key, "alg = %q needs exactly one of public_key_file (PEM) or jwks_file, and no secret", j.Alg)
		return
	}
	if _, err := j.LoadKeys(); err != nil {
		field := ".public_key_file"
		switch {
		case j.Alg == "HS256":
			field = ".secret"
		case j.JWKSFile != "":
			field = ".jwks_file"
		}
		c.add(key+field, "%v", err)
	}
	if !validJWTClaim(j.OpenIDClaim) {
		c.add(key+".openid_claim", "%q is not a claim name; the default is %q", j.OpenIDClaim, DefaultOpenIDClaim)
	}
	if j.Leeway.Std() > 10*time.Minute {
		c.add(key+".leeway", "must be at most 10m; the default is 60s")
	}
}

func validJWTClaim(s string) bool {
	return s != "" && len(s) <= 64 && !strings.ContainsAny(s, "\"\\ \t\r\n")
}

// httpURLProblem returns why s is not an absolute http(s) URL, or "".
func httpURLProblem(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Sprintf("%q is not an absolute http:// or https:// URL", s)
	}
	if u.User != nil {
		return "the URL must not carry credentials"
	}
	return ""
}
