package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const identityBase = `
[[upstreams]]
name = "api"
targets = ["127.0.0.1:9000"]

[[apps]]
name = "shop"
appid = "wx0123456789abcdef"
secret = "app-secret"

[sessions]
secrets = ["0123456789abcdef0123456789abcdef"]
`

func TestIdentityDefaults(t *testing.T) {
	cfg, err := Parse([]byte(identityBase+`
[[routes]]
name = "api"
path = "/api/"
upstream = "api"
auth = "signed"
`), filepath.Join(t.TempDir(), "edge.toml"))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Apps[0]
	if a.Platform != "wechat" || a.Code2SessionURL != DefaultCode2SessionURL || a.LoginPath != "/edge/login" || a.LoginTimeout.Std() != 5*time.Second {
		t.Errorf("app defaults: %+v", a)
	}
	s := cfg.Sessions
	if s.TTL.Std() != 2*time.Hour || s.Skew.Std() != 300*time.Second || s.NonceCacheSize != DefaultNonceCacheSize {
		t.Errorf("session defaults: %+v", s)
	}
	if cfg.Routes[0].Auth != AuthSigned {
		t.Errorf("auth %q", cfg.Routes[0].Auth)
	}
}

func TestIdentityProblems(t *testing.T) {
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	os.WriteFile(filepath.Join(dir, "rsa.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	for _, tc := range []struct {
		name, toml, key, msg string
	}{
		{"valid", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n", "", ""},
		{"unknown auth", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"sigend\"\n", "routes[0].auth", `did you mean "signed"`},
		{"unknown app", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"token\"\napp = \"shp\"\n", "routes[0].app", `did you mean "shop"`},
		{"alipay", strings.Replace(identityBase, `secret = "app-secret"`, "secret = \"app-secret\"\nplatform = \"alipay\"", 1), "apps[0].platform", "not supported yet"},
		{"no app secret", strings.Replace(identityBase, `secret = "app-secret"`, "", 1), "apps[0].secret", "is required"},
		{"bad code2session url", strings.Replace(identityBase, `secret = "app-secret"`, "secret = \"s\"\ncode2session_url = \"ftp://x\"", 1), "apps[0].code2session_url", "not an absolute"},
		{"login path", strings.Replace(identityBase, `secret = "app-secret"`, "secret = \"s\"\nlogin_path = \"login\"", 1), "apps[0].login_path", "starting with '/'"},
		{"secret too short", strings.Replace(identityBase, `0123456789abcdef0123456789abcdef`, "short", 1), "sessions.secrets[0]", "at least 32"},
		{"no sessions", strings.Replace(identityBase, `secrets = ["0123456789abcdef0123456789abcdef"]`, "", 1), "sessions.secrets", "at least one secret"},
		{"skew", identityBase + "skew = \"2h\"\n", "sessions.skew", "between 1s and 1h"},
		{"unsigned on token route", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"token\"\nallow_unsigned_payload = true\n", "routes[0].allow_unsigned_payload", "signed"},
		{"release_only alone", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nrelease_only = true\n", "routes[0].release_only", "referer_check"},
		{"trusted_header without proxies", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"trusted_header\"\n", "routes[0].auth", "trusted_proxies"},
		{"jwt without table", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"jwt\"\n", "routes[0].jwt", "needs a [routes.jwt]"},
		{"jwt table on token route", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"token\"\n[routes.jwt]\nalg = \"HS256\"\n", "routes[0].jwt", "auth is \"token\""},
		{"jwt hs256 short", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"jwt\"\n[routes.jwt]\nalg = \"HS256\"\nsecret = \"short\"\n", "routes[0].jwt.secret", "at least 32"},
		{"jwt rs256 with a secret", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"jwt\"\n[routes.jwt]\nalg = \"RS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n", "routes[0].jwt", "exactly one of"},
		{"jwt es256 with an rsa key", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"jwt\"\n[routes.jwt]\nalg = \"ES256\"\npublic_key_file = \"rsa.pem\"\n", "routes[0].jwt.public_key_file", "not a key for ES256"},
		{"jwks missing", identityBase + "\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"jwt\"\n[routes.jwt]\nalg = \"RS256\"\njwks_file = \"nope.json\"\n", "routes[0].jwt.jwks_file", "reading key set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.toml), filepath.Join(dir, "edge.toml"))
			if tc.key == "" {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("want problems, got %v", err)
			}
			for _, p := range cerr.Problems {
				if p.Key == tc.key && strings.Contains(p.Msg, tc.msg) {
					return
				}
			}
			t.Errorf("no problem at %s mentioning %q in:\n%v", tc.key, tc.msg, err)
		})
	}
}

func TestIdentityJWTValid(t *testing.T) {
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	os.WriteFile(filepath.Join(dir, "rsa.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	cfg, err := Parse([]byte(identityBase+"\n[[routes]]\nname = \"r\"\nupstream = \"api\"\nauth = \"jwt\"\n[routes.jwt]\nalg = \"RS256\"\npublic_key_file = \"rsa.pem\"\n"),
		filepath.Join(dir, "edge.toml"))
	if err != nil {
		t.Fatal(err)
	}
	j := cfg.Routes[0].JWT
	if j.PublicKeyFile != filepath.Join(dir, "rsa.pem") || j.OpenIDClaim != "sub" || j.Leeway.Std() != time.Minute {
		t.Errorf("jwt %+v", j)
	}
}
