package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
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
	if s.TTL.Std() != 2*time.Hour || s.Skew.Std() != 300*time.Second || s.NonceCacheSize != DefaultNonceCacheSize || s.RevocationCheck != RevocationCheckLocal {
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
		{"alipay with a secret", strings.Replace(identityBase, `secret = "app-secret"`, "secret = \"app-secret\"\nplatform = \"alipay\"", 1), "apps[0].secret", "WeChat apps only"},
		{"alipay key on a wechat app", strings.Replace(identityBase, `secret = "app-secret"`, "secret = \"app-secret\"\ngateway_url = \"https://x/gateway.do\"", 1), "apps[0].gateway_url", `platform = "alipay" only`},
		{"no app secret", strings.Replace(identityBase, `secret = "app-secret"`, "", 1), "apps[0].secret", "is required"},
		{"bad code2session url", strings.Replace(identityBase, `secret = "app-secret"`, "secret = \"s\"\ncode2session_url = \"ftp://x\"", 1), "apps[0].code2session_url", "not an absolute"},
		{"login path", strings.Replace(identityBase, `secret = "app-secret"`, "secret = \"s\"\nlogin_path = \"login\"", 1), "apps[0].login_path", "starting with '/'"},
		{"secret too short", strings.Replace(identityBase, `0123456789abcdef0123456789abcdef`, "short", 1), "sessions.secrets[0]", "at least 32"},
		{"no sessions", strings.Replace(identityBase, `secrets = ["0123456789abcdef0123456789abcdef"]`, "", 1), "sessions.secrets", "at least one secret"},
		{"skew", identityBase + "skew = \"2h\"\n", "sessions.skew", "between 1s and 1h"},
		{"failure policies closed", identityBase + "revocation_failure = \"closed\"\nnonce_failure = \"closed\"\n\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n", "", ""},
		{"revocation_failure", identityBase + "revocation_failure = \"fail_closed\"\n", "sessions.revocation_failure", `"fail_closed" is not valid; must be one of "open", "closed"`},
		{"revocation_check redis", identityBase + "revocation_check = \"redis\"\n\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n", "", ""},
		{"revocation_check", identityBase + "revocation_check = \"remote\"\n", "sessions.revocation_check", `"remote" is not valid; must be one of "local", "redis"`},
		{"nonce_failure", identityBase + "nonce_failure = \"shut\"\n", "sessions.nonce_failure", `must be one of "open", "closed"`},
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

// alipayApp is a valid Alipay app on lines 10 to 16 of its config, given
// the app's private key as file:app_private.pem and Alipay's public key as
// alipay_public.txt; extra lines go into its table.
func alipayApp(extra ...string) string {
	return doc(append([]string{
		`[[upstreams]]`,
		`name = "api"`,
		`targets = ["127.0.0.1:9000"]`,
		`[[routes]]`,
		`name = "r"`,
		`upstream = "api"`,
		`auth = "token"`,
		`[sessions]`,
		`secrets = ["0123456789abcdef0123456789abcdef"]`,
		`[[apps]]`,
		`name = "shop"`,
		`platform = "alipay"`,
		`appid = "2021000000000000"`,
		`login_path = "/edge/login-alipay"`,
		`private_key = "file:app_private.pem"`,
		`alipay_public_key = "alipay_public.txt"`,
	}, extra...)...)
}

// writeAlipayKeys writes the files of alipayApp into dir: the app's key as
// PKCS#1 PEM and as the bare base64 PKCS#8 of Alipay's key tool, Alipay's
// public key as that tool's bare base64, and a 1024-bit key.
func writeAlipayKeys(t *testing.T, dir string) {
	t.Helper()
	app, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	alipay, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(app)
	pub, _ := x509.MarshalPKIXPublicKey(&alipay.PublicKey)
	weak8, _ := x509.MarshalPKCS8PrivateKey(weak)
	for name, data := range map[string][]byte{
		"app_private.pem":   pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(app)}),
		"app_private.txt":   []byte(base64.StdEncoding.EncodeToString(pkcs8) + "\n"),
		"app_weak.pem":      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: weak8}),
		"alipay_public.txt": []byte(base64.StdEncoding.EncodeToString(pub)),
		"alipay_public.pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIdentityAlipayValid(t *testing.T) {
	dir := t.TempDir()
	writeAlipayKeys(t, dir)
	for name, text := range map[string]string{
		"pkcs1 pem and bare public key": alipayApp(),
		"bare pkcs8 and pem public key": strings.NewReplacer("app_private.pem", "app_private.txt", "alipay_public.txt", "alipay_public.pem").Replace(alipayApp()),
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := Parse([]byte(text), filepath.Join(dir, "edge.toml"))
			if err != nil {
				t.Fatal(err)
			}
			a := &cfg.Apps[0]
			if a.GatewayURL != DefaultAlipayGatewayURL || a.AlipayPublicKey != filepath.Join(dir, filepath.Base(a.AlipayPublicKey)) {
				t.Errorf("gateway_url %q, alipay_public_key %q", a.GatewayURL, a.AlipayPublicKey)
			}
			if _, err := a.AlipayPrivateKey(); err != nil {
				t.Error(err)
			}
			if _, err := a.LoadAlipayPublicKey(); err != nil {
				t.Error(err)
			}
			if s := fmt.Sprintf("%v %+v", a.PrivateKey, *a); strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, "MII") {
				t.Errorf("the private key prints: %s", s)
			}
		})
	}
}

func TestIdentityAlipayProblems(t *testing.T) {
	dir := t.TempDir()
	writeAlipayKeys(t, dir)
	edit := func(old, new string) string { return strings.Replace(alipayApp(), old, new, 1) }
	for _, tc := range []struct {
		name string
		text string
		want []want
	}{
		{"no private key", edit(`private_key = "file:app_private.pem"`, ``),
			[]want{{"apps[0].private_key", 10, "is required"}}},
		{"private key not a key", edit(`file:app_private.pem`, `not-a-key!`),
			[]want{{"apps[0].private_key", 15, "neither PEM nor a base64 private key"}}},
		{"public key given as the private key", edit(`file:app_private.pem`, `file:alipay_public.pem`),
			[]want{{"apps[0].private_key", 15, `"PUBLIC KEY" PEM block`}}},
		{"weak private key", edit(`file:app_private.pem`, `file:app_weak.pem`),
			[]want{{"apps[0].private_key", 15, "RSA2 needs 2048 bits"}}},
		{"no alipay public key", edit(`alipay_public_key = "alipay_public.txt"`, ``),
			[]want{{"apps[0].alipay_public_key", 10, "is required"}}},
		{"alipay public key is the private key", edit(`"alipay_public.txt"`, `"app_private.pem"`),
			[]want{{"apps[0].alipay_public_key", 16, "is this a private key?"}}},
		{"alipay public key missing", edit(`"alipay_public.txt"`, `"nope.txt"`),
			[]want{{"apps[0].alipay_public_key", 16, "reading key file"}}},
		{"bad gateway url", alipayApp(`gateway_url = "openapi.alipay.com/gateway.do"`),
			[]want{{"apps[0].gateway_url", 17, "not an absolute http:// or https:// URL"}}},
		{"wechat appid", edit(`2021000000000000`, `wx0123456789abcdef`),
			[]want{{"apps[0].appid", 13, "not an Alipay app_id"}}},
		{"code2session_url", alipayApp(`code2session_url = "https://x/sns"`),
			[]want{{"apps[0].code2session_url", 17, "WeChat apps only"}}},
		{"referer check", edit(`auth = "token"`, "auth = \"token\"\nreferer_check = true"),
			[]want{{"routes[0].referer_check", 8, "Alipay clients never send"}}},
		{"every problem at once", edit(`private_key = "file:app_private.pem"`, `gateway_url = "ftp://x"`+"\n"+`secret = "s"`),
			[]want{{"apps[0].private_key", 10, "is required"}, {"apps[0].gateway_url", 15, "not an absolute"}, {"apps[0].secret", 16, "WeChat apps only"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text), filepath.Join(dir, "edge.toml"))
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("want problems, got %v", err)
			}
			wantProblems(t, cerr, tc.want)
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
