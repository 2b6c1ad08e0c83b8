package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// callbackDir writes the key files the callback configs below refer to.
func callbackDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkix1, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	privDER, _ := x509.MarshalPKCS8PrivateKey(rk)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x5157F09E), Subject: pkix.Name{CommonName: "platform"},
		NotBefore: time.Unix(1700000000, 0), NotAfter: time.Unix(1900000000, 0)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rk.PublicKey, rk)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"pub.pem":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix1}),
		"pkcs1.pem":   pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rk.PublicKey)}),
		"bare.txt":    []byte(base64.StdEncoding.EncodeToString(pkix1) + "\n"),
		"cert.pem":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}),
		"ec.pem":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPub}),
		"private.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
		"junk.pem":    []byte("not a key\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// callbackRoute is a whole config whose one route carries the given keys.
func callbackRoute(lines ...string) string {
	return strings.Join(append([]string{
		`[[upstreams]]`,
		`name = "app"`,
		`targets = ["127.0.0.1:3000"]`,
		`[[routes]]`,
		`name = "cb"`,
		`path = "/cb"`,
		`upstream = "app"`,
	}, lines...), "\n") + "\n"
}

func TestCallbackValid(t *testing.T) {
	dir := callbackDir(t)
	t.Setenv("PUSH_TOKEN", "CDo67mBo63zjZQK5V7")
	cfg, err := Parse([]byte(callbackRoute(
		`verify = "wechatpay_v3"`,
		`[routes.wechatpay]`,
		`keys = [{ serial = "PUB_KEY_ID_0114", public_key = "pub.pem" }, { certificate = "cert.pem" }, { serial = "pub_key_id_2", public_key = "pkcs1.pem" }]`,
		`[[routes]]`,
		`name = "push"`,
		`path = "/push"`,
		`upstream = "app"`,
		`verify = "wechat_push"`,
		`[routes.wechat_push]`,
		`token = "${PUSH_TOKEN}"`,
		`encoding_aes_key = "ru4E51QYL7X6cQHKpNSxTJUf2feHe6idIrQlgxBzSy4"`,
		`appid = "wx401a9f6ea4de0051"`,
		`forward_decrypted = true`,
		`[[routes]]`,
		`name = "alipay"`,
		`path = "/alipay"`,
		`upstream = "app"`,
		`verify = "alipay"`,
		`[routes.alipay]`,
		`public_key = "bare.txt"`,
	)), filepath.Join(dir, "edge.toml"))
	if err != nil {
		t.Fatal(err)
	}
	pay := cfg.Routes[0].WechatPay
	if pay.Window != DefaultWechatPayWindow {
		t.Errorf("window = %v, want the 300s default", pay.Window.Std())
	}
	if pay.Keys[0].PublicKey != filepath.Join(dir, "pub.pem") {
		t.Errorf("public_key %q was not resolved against the config directory", pay.Keys[0].PublicKey)
	}
	keys, err := pay.LoadKeys("")
	if err != nil {
		t.Fatal(err)
	}
	for _, serial := range []string{"PUB_KEY_ID_0114", "5157F09E", "PUB_KEY_ID_2"} {
		if keys[serial] == nil {
			t.Errorf("no key for serial %s; have %v", serial, keys)
		}
	}
	if push := cfg.Routes[1].WechatPush; push.Token.Value() != "CDo67mBo63zjZQK5V7" || !push.ForwardDecrypted {
		t.Errorf("wechat_push = %+v", push)
	}
	ali := cfg.Routes[2].Alipay
	if len(ali.SignTypes) != 1 || ali.SignTypes[0] != "RSA2" {
		t.Errorf("sign_types = %q, want the RSA2-only default", ali.SignTypes)
	}
	if _, err := ali.LoadPublicKey(""); err != nil {
		t.Errorf("bare base64 key: %v", err)
	}
}

func TestCallbackProblems(t *testing.T) {
	dir := callbackDir(t)
	tests := []struct {
		name  string
		lines []string
		key   string
		want  string
	}{
		{"verify typo", []string{`verify = "wechatpay"`}, "routes[0].verify", `did you mean "wechatpay_v3"`},
		{"table missing", []string{`verify = "alipay"`}, "routes[0].alipay", "needs a [routes.alipay] table"},
		{"other table", []string{`verify = "alipay"`, `[routes.alipay]`, `public_key = "pub.pem"`, `[routes.wechatpay]`, `keys = []`}, "routes[0].wechatpay", `verify is "alipay"`},
		{"table without verify", []string{`[routes.wechat_push]`, `token = "abc"`}, "routes[0].wechat_push", `write verify = "wechat_push"`},
		{"token with symbols", []string{`verify = "wechat_push"`, `[routes.wechat_push]`, `token = "s3cret!value"`}, "routes[0].wechat_push.token", "3 to 32 letters or digits"},
		{"aes key short", []string{`verify = "wechat_push"`, `[routes.wechat_push]`, `token = "abc"`, `encoding_aes_key = "abc"`, `appid = "wx1"`}, "routes[0].wechat_push.encoding_aes_key", "43 characters, got 3"},
		{"aes key not base64", []string{`verify = "wechat_push"`, `[routes.wechat_push]`, `token = "abc"`, `encoding_aes_key = "` + strings.Repeat("!", 43) + `"`, `appid = "wx1"`}, "routes[0].wechat_push.encoding_aes_key", "not base64"},
		{"safe mode without appid", []string{`verify = "wechat_push"`, `[routes.wechat_push]`, `token = "abc"`, `encoding_aes_key = "ru4E51QYL7X6cQHKpNSxTJUf2feHe6idIrQlgxBzSy4"`}, "routes[0].wechat_push.appid", "required in safe mode"},
		{"forward in plaintext mode", []string{`verify = "wechat_push"`, `[routes.wechat_push]`, `token = "abc"`, `forward_decrypted = true`}, "routes[0].wechat_push.forward_decrypted", "needs safe mode"},
		{"appid in plaintext mode", []string{`verify = "wechat_push"`, `[routes.wechat_push]`, `token = "abc"`, `appid = "wx1"`}, "routes[0].wechat_push.appid", "only in safe mode"},
		{"no pay keys", []string{`verify = "wechatpay_v3"`, `[routes.wechatpay]`, `keys = []`}, "routes[0].wechatpay.keys", "at least one key"},
		{"public key without serial", []string{`verify = "wechatpay_v3"`, `[routes.wechatpay]`, `keys = [{ public_key = "pub.pem" }]`}, "routes[0].wechatpay.keys[0]", "serial is required"},
		{"both files", []string{`verify = "wechatpay_v3"`, `[routes.wechatpay]`, `keys = [{ serial = "X", public_key = "pub.pem", certificate = "cert.pem" }]`}, "routes[0].wechatpay.keys[0]", "not both"},
		{"missing file", []string{`verify = "wechatpay_v3"`, `[routes.wechatpay]`, `keys = [{ serial = "X", public_key = "nope.pem" }]`}, "routes[0].wechatpay.keys[0]", "no such file"},
		{"private key", []string{`verify = "wechatpay_v3"`, `[routes.wechatpay]`, `keys = [{ serial = "X", public_key = "private.pem" }]`}, "routes[0].wechatpay.keys[0]", "is this a private key"},
		{"ec key", []string{`verify = "wechatpay_v3"`, `[routes.wechatpay]`, `keys = [{ serial = "X", public_key = "ec.pem" }]`}, "routes[0].wechatpay.keys[0]", "not an RSA public key"},
		{"cert serial mismatch", []string{`verify = "wechatpay_v3"`, `[routes.wechatpay]`, `keys = [{ serial = "ABC", certificate = "cert.pem" }]`}, "routes[0].wechatpay.keys[0]", `certificate's serial "5157F09E"`},
		{"not a certificate", []string{`verify = "wechatpay_v3"`, `[routes.wechatpay]`, `keys = [{ certificate = "pub.pem" }]`}, "routes[0].wechatpay.keys[0]", "no PEM CERTIFICATE"},
		{"duplicate serial", []string{`verify = "wechatpay_v3"`, `[routes.wechatpay]`, `keys = [{ serial = "K", public_key = "pub.pem" }, { serial = "k", public_key = "pkcs1.pem" }]`}, "routes[0].wechatpay.keys[1].serial", "already used by keys[0]"},
		{"zero window", []string{`verify = "wechatpay_v3"`, `[routes.wechatpay]`, `keys = [{ serial = "K", public_key = "pub.pem" }]`, `window = "0s"`}, "routes[0].wechatpay.window", "more than 0"},
		{"alipay junk key", []string{`verify = "alipay"`, `[routes.alipay]`, `public_key = "junk.pem"`}, "routes[0].alipay.public_key", "neither PEM nor a base64 public key"},
		{"alipay no key", []string{`verify = "alipay"`, `[routes.alipay]`, `sign_types = ["RSA2"]`}, "routes[0].alipay.public_key", "is required"},
		{"alipay sign type", []string{`verify = "alipay"`, `[routes.alipay]`, `public_key = "pub.pem"`, `sign_types = ["RSA2", "rsa256"]`}, "routes[0].alipay.sign_types[1]", `must be one of "RSA2", "RSA"`},
		{"alipay no sign types", []string{`verify = "alipay"`, `[routes.alipay]`, `public_key = "pub.pem"`, `sign_types = []`}, "routes[0].alipay.sign_types", "at least one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(callbackRoute(tt.lines...)), filepath.Join(dir, "edge.toml"))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want problems", err)
			}
			for _, p := range e.Problems {
				if strings.Contains(p.Msg, "s3cret!value") {
					t.Errorf("problem reveals the token: %v", p)
				}
				if p.Key == tt.key && strings.Contains(p.Msg, tt.want) {
					if p.Line == 0 {
						t.Errorf("problem %v has no line", p)
					}
					return
				}
			}
			t.Fatalf("no problem at %s containing %q in:\n%v", tt.key, tt.want, e)
		})
	}
}
