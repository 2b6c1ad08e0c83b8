package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"time"
)

// IdentitySections are the top-level sections of mini-program identity
// (apps, sessions, signatures).
type IdentitySections struct {
	// Apps are the mini-programs whose users log in through edge, one
	// [[apps]] table each.
	Apps []App `toml:"apps"`
	// Sessions configures the session tokens edge issues at login and the
	// request signature checks.
	Sessions Sessions `toml:"sessions"`
}

// App is one mini-program.
//
//	[[apps]]
//	name       = "shop"
//	platform   = "wechat"
//	appid      = "wx1234567890abcdef"
//	secret     = "${SHOP_APP_SECRET}"
//	login_path = "/edge/login"
//
// An Alipay mini-program signs its login calls instead of sending a secret:
//
//	[[apps]]
//	name              = "shop-alipay"
//	platform          = "alipay"
//	appid             = "2021000000000000"
//	private_key       = "${SHOP_ALIPAY_PRIVATE_KEY}"
//	alipay_public_key = "alipay_public_key.txt"
//	login_path        = "/edge/login-alipay"
type App struct {
	// Name identifies the app in routes (route key app) and metric labels.
	Name string `toml:"name"`
	// Platform is "wechat" (default) or "alipay".
	Platform string `toml:"platform"`
	// AppID is the platform's app id (wx... for WeChat, 16 digits for
	// Alipay).
	AppID string `toml:"appid"`
	// Secret is the WeChat app secret; write "${ENV}" or "file:/path" so
	// it never sits in the file in clear. Alipay apps have none.
	Secret Secret `toml:"secret"`
	// Code2SessionURL is WeChat's login API. Default
	// "https://api.weixin.qq.com/sns/jscode2session"; point it at an egress
	// proxy or, in tests, at a local fake.
	Code2SessionURL string `toml:"code2session_url"`
	// PrivateKey is an Alipay app's own RSA private key (2048 bits): PEM
	// (PKCS#8 or PKCS#1) or the bare base64 the Alipay key tool writes, as
	// "${ENV}" or "file:/path". It signs alipay.system.oauth.token.
	PrivateKey Secret `toml:"private_key"`
	// AlipayPublicKey is a file holding Alipay's public key (not the app's
	// own), in the formats of [routes.alipay] public_key. It verifies
	// Alipay's answers, so a forged answer cannot log anyone in.
	AlipayPublicKey string `toml:"alipay_public_key"`
	// GatewayURL is Alipay's open API gateway. Default
	// "https://openapi.alipay.com/gateway.do"; the sandbox, an egress proxy
	// or, in tests, a local fake.
	GatewayURL string `toml:"gateway_url"`
	// LoginPath is where the mini-program POSTs {"code": ...}, answered by
	// edge itself. Default "/edge/login"; two apps need two paths.
	LoginPath string `toml:"login_path"`
	// LoginTimeout bounds the whole call to the platform, and separately the
	// call to the login hook. Default 5s.
	LoginTimeout Duration `toml:"login_timeout"`
	// LoginHook, when set, is an http(s) URL of the app's own backend that
	// edge POSTs {"openid","unionid","session_key","appid"} to once per
	// login; the "data" object of its JSON answer is merged into the login
	// answer. It is the only place the session_key ever leaves edge.
	LoginHook string `toml:"login_hook"`
	// ExposeOpenID adds "openid" to the login answer. Off by default: the
	// client has no need to know it.
	ExposeOpenID bool `toml:"expose_openid"`
}

// Sessions configures session tokens and signed requests.
//
//	[sessions]
//	secrets = ["${EDGE_SESSION_KEY}", "${EDGE_SESSION_KEY_OLD}"]
//	ttl     = "2h"
type Sessions struct {
	// Secrets seal the session tokens (AES-256-GCM). The first seals new
	// tokens; every one opens them, so a secret is rotated by putting the
	// new one first and removing the old one after one ttl. Each must be at
	// least 32 bytes. Replicas sharing these accept each other's tokens.
	Secrets []Secret `toml:"secrets"`
	// TTL is a token's lifetime. Default 2h.
	TTL Duration `toml:"ttl"`
	// Skew is how far a signed request's X-Edge-Timestamp may be from now.
	// Default 300s. Nonces are remembered for twice this.
	Skew Duration `toml:"skew"`
	// NonceCacheSize caps the nonces remembered in memory (about 64 bytes
	// each) when [cluster] has no Redis. Default 1048576. When it is full,
	// the oldest nonce is forgotten first.
	NonceCacheSize int `toml:"nonce_cache_size"`
	// RevocationFailure is what a token route does while the revocation
	// list in [cluster] redis cannot be read: "open" (default) accepts the
	// token (unless this replica holds its revocation), "closed" refuses
	// it with 50301. Logging every user out during an outage is the price
	// of closed.
	RevocationFailure string `toml:"revocation_failure"`
	// RevocationCheck is where a token route looks a token up in the
	// revocation list: "local" (default) in this replica's copy, kept
	// current by the [cluster] redis pub/sub, whenever the copy is proven
	// complete (the subscription hears its own heartbeat and the list was
	// read since it subscribed), in Redis otherwise; "redis" in Redis on
	// every request (one round trip), for a revocation that must count on
	// every replica the instant Redis has it rather than within about a
	// second.
	RevocationCheck string `toml:"revocation_check"`
	// NonceFailure is what a signed route does while the shared nonce
	// store in [cluster] redis cannot be written: "open" (default) checks
	// the nonce on this replica only (a replay to another replica passes),
	// "closed" refuses the request with 50301.
	NonceFailure string `toml:"nonce_failure"`
}

// The values of sessions.revocation_failure and sessions.nonce_failure.
const (
	FailOpen   = "open"
	FailClosed = "closed"
)

// The values of sessions.revocation_check.
const (
	RevocationCheckLocal = "local"
	RevocationCheckRedis = "redis"
)

// RouteAuth is a route's identity policy, written among the route's keys:
//
//	[[routes]]
//	path     = "/api/"
//	upstream = "api"
//	auth     = "signed"
//	app      = "shop"
type RouteAuth struct {
	// Auth is who may call the route:
	//   "none" (default)   anyone; identity headers from the client are
	//                      still removed
	//   "token"            a valid session token (Authorization: Bearer)
	//   "signed"           a token plus an EDGE-HMAC-SHA256 signature
	//   "jwt"              a JWT issued by the app itself (see jwt)
	//   "trusted_header"   X-WX-OPENID set by a peer in
	//                      server.trusted_proxies (WeChat Cloud Hosting or
	//                      another gateway in front of edge)
	Auth string `toml:"auth"`
	// App names the [[apps]] entry the route belongs to. Needed on token and
	// signed routes only when several apps are configured; a token from
	// another app is then refused.
	App string `toml:"app"`
	// AllowUnsignedPayload lets signed requests carry X-Edge-Body:
	// UNSIGNED-PAYLOAD instead of the body's hash (wx.uploadFile cannot hash
	// its multipart body). Turn it on for upload routes only.
	AllowUnsignedPayload bool `toml:"allow_unsigned_payload"`
	// ForwardAuthorization passes the Authorization header to the upstream.
	// Off by default on token, signed and jwt routes, where edge consumed it;
	// other routes always forward it.
	ForwardAuthorization bool `toml:"forward_authorization"`
	// RefererCheck requires the WeChat Referer
	// (https://servicewechat.com/{appid}/{version}/page-frame.html) to name
	// the route's app, or any configured app when the route names none.
	// Anything can forge a Referer: this stops casual abuse, it is not
	// authentication. Failure is 403.
	RefererCheck bool `toml:"referer_check"`
	// ReleaseOnly, with RefererCheck, also refuses development, trial and
	// review builds (version "0") and the developer tools ("devtools").
	ReleaseOnly bool `toml:"release_only"`
	// JWT configures auth = "jwt"; required there, refused elsewhere.
	JWT *RouteJWT `toml:"jwt"`
}

// RouteJWT verifies tokens an app issues itself.
//
//	[routes.jwt]
//	alg          = "RS256"
//	jwks_file    = "/etc/edge/jwks.json"
//	openid_claim = "openid"
type RouteJWT struct {
	// Alg is the one algorithm accepted: "HS256", "RS256" or "ES256".
	// Tokens naming any other algorithm (including "none") are refused.
	Alg string `toml:"alg"`
	// Secret is the HS256 key, at least 32 bytes ("${ENV}" or "file:").
	Secret Secret `toml:"secret"`
	// PublicKeyFile is a PEM public key or certificate for RS256 / ES256.
	PublicKeyFile string `toml:"public_key_file"`
	// JWKSFile is a JSON Web Key Set file for RS256 / ES256 (keys chosen by
	// the token's kid); read again on every reload.
	JWKSFile string `toml:"jwks_file"`
	// OpenIDClaim is the claim holding the user's openid. Default "sub".
	OpenIDClaim string `toml:"openid_claim"`
	// Issuer, when set, must equal the token's iss.
	Issuer string `toml:"issuer"`
	// Audience, when set, must be one of the token's aud.
	Audience string `toml:"audience"`
	// Leeway tolerates clock differences on exp and nbf. Default 60s.
	Leeway Duration `toml:"leeway"`
}

// The values of a route's auth key.
const (
	AuthNone          = "none"
	AuthToken         = "token"
	AuthSigned        = "signed"
	AuthJWT           = "jwt"
	AuthTrustedHeader = "trusted_header"
)

// Platforms of [[apps]].
const (
	PlatformWechat = "wechat"
	PlatformAlipay = "alipay"
)

// Defaults of the identity sections.
const (
	DefaultCode2SessionURL  = "https://api.weixin.qq.com/sns/jscode2session"
	DefaultAlipayGatewayURL = "https://openapi.alipay.com/gateway.do"
	DefaultLoginPath        = "/edge/login"
	DefaultLoginTimeout     = Duration(5 * time.Second)
	DefaultSessionTTL       = Duration(2 * time.Hour)
	DefaultSkew             = Duration(300 * time.Second)
	DefaultNonceCacheSize   = 1 << 20
	DefaultJWTLeeway        = Duration(60 * time.Second)
	DefaultOpenIDClaim      = "sub"
)

func (a *App) setDefaults() {
	if a.Platform == "" {
		a.Platform = PlatformWechat
	}
	if a.Code2SessionURL == "" {
		a.Code2SessionURL = DefaultCode2SessionURL
	}
	if a.GatewayURL == "" {
		a.GatewayURL = DefaultAlipayGatewayURL
	}
	if a.LoginPath == "" {
		a.LoginPath = DefaultLoginPath
	}
	if a.LoginTimeout == 0 {
		a.LoginTimeout = DefaultLoginTimeout
	}
}

func (s *Sessions) setDefaults() {
	if s.TTL == 0 {
		s.TTL = DefaultSessionTTL
	}
	if s.Skew == 0 {
		s.Skew = DefaultSkew
	}
	if s.NonceCacheSize == 0 {
		s.NonceCacheSize = DefaultNonceCacheSize
	}
	if s.RevocationFailure == "" {
		s.RevocationFailure = FailOpen
	}
	if s.RevocationCheck == "" {
		s.RevocationCheck = RevocationCheckLocal
	}
	if s.NonceFailure == "" {
		s.NonceFailure = FailOpen
	}
}

func (r *RouteAuth) setDefaults() {
	if r.Auth == "" {
		r.Auth = AuthNone
	}
}

func (j *RouteJWT) setDefaults() {
	if j.OpenIDClaim == "" {
		j.OpenIDClaim = DefaultOpenIDClaim
	}
	if j.Leeway == 0 {
		j.Leeway = DefaultJWTLeeway
	}
}

// JWTKey is one key a jwt route accepts.
type JWTKey struct {
	// ID is the JWKS kid; "" for a key from secret or public_key_file,
	// which matches any token.
	ID string
	// Key is []byte (HS256), *rsa.PublicKey (RS256) or *ecdsa.PublicKey
	// on P-256 (ES256).
	Key any
}

// LoadKeys reads the route's JWT keys the way the gateway uses them, so
// that validation and the running gateway agree on what a key file means.
func (j *RouteJWT) LoadKeys() ([]JWTKey, error) {
	switch j.Alg {
	case "HS256":
		if len(j.Secret.Value()) < 32 {
			return nil, errors.New("the HS256 secret must be at least 32 bytes")
		}
		return []JWTKey{{Key: []byte(j.Secret.Value())}}, nil
	case "RS256", "ES256":
	default:
		return nil, fmt.Errorf("unknown alg %q", j.Alg)
	}
	if j.JWKSFile != "" {
		return loadJWKS(j.JWKSFile, j.Alg)
	}
	b, err := os.ReadFile(j.PublicKeyFile)
	if err != nil {
		return nil, fmt.Errorf("reading public key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block", j.PublicKeyFile)
	}
	var pub any
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("%s holds a %q PEM block; want PUBLIC KEY or CERTIFICATE", j.PublicKeyFile, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", j.PublicKeyFile, err)
	}
	if !jwtKeyFits(j.Alg, pub) {
		return nil, fmt.Errorf("%s is not a key for %s", j.PublicKeyFile, j.Alg)
	}
	return []JWTKey{{Key: pub}}, nil
}

func jwtKeyFits(alg string, key any) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return alg == "RS256" && k.N.BitLen() >= 2048
	case *ecdsa.PublicKey:
		return alg == "ES256" && k.Curve == elliptic.P256()
	}
	return false
}

// maxJWKSFile bounds a key set file read at every reload.
const maxJWKSFile = 1 << 20

func loadJWKS(path, alg string) ([]JWTKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading key set: %w", err)
	}
	defer f.Close()
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			Alg string `json:"alg"`
			N   string `json:"n"`
			E   string `json:"e"`
			Crv string `json:"crv"`
			X   string `json:"x"`
			Y   string `json:"y"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(f, maxJWKSFile)).Decode(&set); err != nil {
		return nil, fmt.Errorf("parsing key set %s: %w", path, err)
	}
	var keys []JWTKey
	for i, k := range set.Keys {
		if (k.Use != "" && k.Use != "sig") || (k.Alg != "" && k.Alg != alg) {
			continue
		}
		var pub any
		switch {
		case k.Kty == "RSA" && alg == "RS256":
			n, err1 := base64.RawURLEncoding.DecodeString(k.N)
			e, err2 := base64.RawURLEncoding.DecodeString(k.E)
			if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
				return nil, fmt.Errorf("key set %s: keys[%d] has a malformed n or e", path, i)
			}
			exp := 0
			for _, b := range e {
				exp = exp<<8 | int(b)
			}
			pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
		case k.Kty == "EC" && k.Crv == "P-256" && alg == "ES256":
			x, err1 := base64.RawURLEncoding.DecodeString(k.X)
			y, err2 := base64.RawURLEncoding.DecodeString(k.Y)
			if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
				return nil, fmt.Errorf("key set %s: keys[%d] has a malformed x or y", path, i)
			}
			p, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
			if err != nil {
				return nil, fmt.Errorf("key set %s: keys[%d]: %w", path, i, err)
			}
			pub = p
		default:
			continue
		}
		if !jwtKeyFits(alg, pub) {
			return nil, fmt.Errorf("key set %s: keys[%d] is too weak for %s", path, i, alg)
		}
		keys = append(keys, JWTKey{ID: k.Kid, Key: pub})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key set %s has no %s signing key", path, alg)
	}
	return keys, nil
}

// AlipayPrivateKey parses an Alipay app's private_key the way login uses
// it, so that validation and the running gateway agree on what it means.
// Errors describe the key, never its contents.
func (a *App) AlipayPrivateKey() (*rsa.PrivateKey, error) {
	return parseRSAPrivateKey(a.PrivateKey.Value())
}

// LoadAlipayPublicKey reads alipay_public_key, a path Parse has made
// absolute.
func (a *App) LoadAlipayPublicKey() (*rsa.PublicKey, error) {
	if a.AlipayPublicKey == "" {
		return nil, errors.New("is required: the file holding Alipay's public key (not the app's own; open.alipay.com, the app's development settings), which verifies Alipay's login answers")
	}
	return readRSAPublicKey(a.AlipayPublicKey, true)
}

// parseRSAPrivateKey accepts a PEM private key (PKCS#8 or PKCS#1) and the
// bare base64 DER that Alipay's key tool writes, which is what operators
// most often have at hand.
func parseRSAPrivateKey(v string) (*rsa.PrivateKey, error) {
	if v == "" {
		return nil, errors.New(`is required: the app's RSA private key, as "${ENV_NAME}" or "file:/path" (PEM or the base64 of Alipay's key tool)`)
	}
	var der []byte
	if block, _ := pem.Decode([]byte(v)); block != nil {
		if block.Type != "PRIVATE KEY" && block.Type != "RSA PRIVATE KEY" {
			return nil, fmt.Errorf("holds a %q PEM block; expected PRIVATE KEY or RSA PRIVATE KEY (the app's private key, not a public key)", block.Type)
		}
		der = block.Bytes
	} else {
		var err error
		if der, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(v), "")); err != nil {
			return nil, errors.New("is neither PEM nor a base64 private key")
		}
	}
	var key any
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(der); err != nil {
			return nil, errors.New("is not a PKCS#8 or PKCS#1 private key")
		}
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("is not an RSA key; Alipay's RSA2 signs with RSA")
	}
	if rk.N.BitLen() < 2048 {
		return nil, fmt.Errorf("is a %d-bit key; RSA2 needs 2048 bits", rk.N.BitLen())
	}
	return rk, nil
}

// LoginRouteName is the route name of an app's login endpoint, as it appears
// in metrics, the access log and [[limits]] routes lists.
func LoginRouteName(app string) string { return "login_" + app }
