package webhook

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
)

type pushCase struct {
	Timestamp    string          `json:"timestamp"`
	Nonce        string          `json:"nonce"`
	Echostr      string          `json:"echostr"`
	Signature    string          `json:"signature"`
	MsgSignature string          `json:"msg_signature"`
	EncryptType  string          `json:"encrypt_type"`
	BodyJSON     json.RawMessage `json:"body_json"`
	Plaintext    string          `json:"plaintext"`
	Reason       string          `json:"reason"`
}

func (c pushCase) query() string {
	q := url.Values{"timestamp": {c.Timestamp}, "nonce": {c.Nonce}}
	for k, v := range map[string]string{"signature": c.Signature, "msg_signature": c.MsgSignature, "echostr": c.Echostr, "encrypt_type": c.EncryptType} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q.Encode()
}

type pushVectors struct {
	Token          string `json:"token"`
	EncodingAESKey string `json:"encoding_aes_key"`
	AppID          string `json:"appid"`
	PlaintextMode  struct {
		Valid, Invalid []pushCase
	} `json:"plaintext_mode"`
	SafeMode struct {
		Valid, Invalid []pushCase
	} `json:"safe_mode"`
	OfficialExamples struct {
		Token string
		Valid []pushCase
	} `json:"official_examples"`
}

func pushFront(t *testing.T, cfg config.WechatPushCallback) *front {
	t.Helper()
	opts, _ := testOptions(t, time.Now())
	vf, err := New(config.RouteCallback{Verify: config.VerifyWechatPush, WechatPush: &cfg}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return newFront(t, vf)
}

func TestWechatPushVectors(t *testing.T) {
	var v pushVectors
	loadVectors(t, "wechat-message-push.json", &v)
	plain := config.WechatPushCallback{Token: config.Secret(v.Token)}
	safe := config.WechatPushCallback{Token: config.Secret(v.Token), EncodingAESKey: config.Secret(v.EncodingAESKey), AppID: v.AppID}
	decrypted := safe
	decrypted.ForwardDecrypted = true

	t.Run("plaintext/valid", func(t *testing.T) {
		f := pushFront(t, plain)
		for _, c := range v.PlaintextMode.Valid {
			if got := f.do(t, http.MethodGet, c.query(), nil, nil); got.status != 200 || got.body != c.Echostr {
				t.Errorf("GET %+v: got %d %q, want 200 %q", c, got.status, got.body, c.Echostr)
			}
			body := []byte("<xml><Content>hi " + c.Nonce + "</Content></xml>")
			if got := f.do(t, http.MethodPost, c.query(), nil, body); got.status != 200 {
				t.Errorf("POST %+v: got %d %q", c, got.status, got.body)
			}
		}
		if n := len(f.up.received()); n != len(v.PlaintextMode.Valid) {
			t.Errorf("upstream got %d posts, want %d (GET checks are answered by edge)", n, len(v.PlaintextMode.Valid))
		}
	})
	t.Run("plaintext/invalid", func(t *testing.T) {
		f := pushFront(t, plain)
		for _, c := range v.PlaintextMode.Invalid {
			for _, m := range []string{http.MethodGet, http.MethodPost} {
				got := f.do(t, m, c.query(), nil, []byte("<xml/>"))
				if got.status != 401 || got.reason != "bad_signature" || !strings.Contains(got.body, `"code":40103`) {
					t.Errorf("%s %s: got %d %q reason %q", m, c.Reason, got.status, got.body, got.reason)
				}
			}
		}
		if n := len(f.up.received()); n != 0 {
			t.Errorf("upstream reached %d times", n)
		}
	})
	t.Run("official examples", func(t *testing.T) {
		f := pushFront(t, config.WechatPushCallback{Token: config.Secret(v.OfficialExamples.Token)})
		for _, c := range v.OfficialExamples.Valid {
			if got := f.do(t, http.MethodPost, c.query(), nil, []byte("{}")); got.status != 200 {
				t.Errorf("%+v: got %d %q", c, got.status, got.body)
			}
		}
	})
	t.Run("safe/valid", func(t *testing.T) {
		f := pushFront(t, safe)
		fd := pushFront(t, decrypted)
		for _, c := range v.SafeMode.Valid {
			if c.Echostr != "" {
				for _, ff := range []*front{f, fd} {
					if got := ff.do(t, http.MethodGet, c.query(), nil, nil); got.status != 200 || got.body != c.Plaintext {
						t.Errorf("GET check: got %d %q, want 200 %q", got.status, got.body, c.Plaintext)
					}
				}
				continue
			}
			if got := f.do(t, http.MethodPost, c.query(), nil, c.BodyJSON); got.status != 200 {
				t.Errorf("POST: got %d %q", got.status, got.body)
			}
			if got := fd.do(t, http.MethodPost, c.query(), nil, c.BodyJSON); got.status != 200 {
				t.Errorf("POST forward_decrypted: got %d %q", got.status, got.body)
			}
			if b := f.up.received(); len(b) != 1 || !bytes.Equal(b[0], c.BodyJSON) {
				t.Errorf("upstream got %q, want the original body", b)
			}
			if b := fd.up.received(); len(b) != 1 || string(b[0]) != c.Plaintext {
				t.Errorf("forward_decrypted upstream got %q, want %q", b, c.Plaintext)
			}
		}
	})
	t.Run("safe/invalid", func(t *testing.T) {
		f := pushFront(t, safe)
		want := map[string]string{"decrypts, but for another appid": "wrong_appid"}
		for _, c := range v.SafeMode.Invalid {
			reason, ok := want[c.Reason]
			if !ok {
				t.Fatalf("vector reason %q has no expected rejection; add it to the test", c.Reason)
			}
			if got := f.do(t, http.MethodPost, c.query(), nil, c.BodyJSON); got.status != 401 || got.reason != reason {
				t.Errorf("%s: got %d %q reason %q", c.Reason, got.status, got.body, got.reason)
			}
		}
		if n := len(f.up.received()); n != 0 {
			t.Errorf("upstream reached %d times", n)
		}
	})
}

type payVectors struct {
	Now          int64  `json:"now"`
	PublicKeyPEM string `json:"public_key_pem"`
	PublicKeyID  string `json:"public_key_id"`
	Valid        []payCase
	Invalid      []payCase
}

type payCase struct {
	Headers map[string]string
	Body    string
	Reason  string
}

func (c payCase) header() http.Header {
	h := http.Header{}
	for k, v := range c.Headers {
		if v != "" {
			h.Set(k, v)
		}
	}
	return h
}

func payVerifier(t testing.TB, v payVectors) (*Verifier, Options) {
	t.Helper()
	opts, _ := testOptions(t, time.Unix(v.Now, 0))
	path := writeFile(t, t.TempDir(), "pub_key.pem", v.PublicKeyPEM)
	cfg := &config.WechatPayCallback{Keys: []config.WechatPayKey{{Serial: v.PublicKeyID, PublicKey: path}}}
	vf, err := New(config.RouteCallback{Verify: config.VerifyWechatPayV3, WechatPay: cfg}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return vf, opts
}

func TestWechatPayVectors(t *testing.T) {
	var v payVectors
	loadVectors(t, "wechatpay-v3-notify.json", &v)
	vf, _ := payVerifier(t, v)
	f := newFront(t, vf)
	for _, c := range v.Valid {
		if got := f.do(t, http.MethodPost, "", c.header(), []byte(c.Body)); got.status != 200 || got.body != "success" {
			t.Errorf("valid: got %d %q", got.status, got.body)
		}
	}
	if b := f.up.received(); len(b) != len(v.Valid) || string(b[0]) != v.Valid[0].Body {
		t.Fatalf("upstream got %q, want the body byte for byte", b)
	}
	want := map[string]string{
		"body changed": "bad_signature",
		"timestamp older than 5 minutes, though correctly signed": "stale_timestamp",
		"unknown serial":                    "unknown_serial",
		"signature probe from the platform": "sign_test",
		"signature header missing":          "bad_request",
	}
	for _, c := range v.Invalid {
		reason, ok := want[c.Reason]
		if !ok {
			t.Fatalf("vector reason %q has no expected rejection; add it to the test", c.Reason)
		}
		got := f.do(t, http.MethodPost, "", c.header(), []byte(c.Body))
		var answer struct{ Code, Message string }
		if err := json.Unmarshal([]byte(got.body), &answer); err != nil || answer.Code != "FAIL" || answer.Message == "" {
			t.Errorf("%s: answer %q is not the platform's failure JSON", c.Reason, got.body)
		}
		if got.status != 401 || got.reason != reason {
			t.Errorf("%s: got %d reason %q, want 401 %q", c.Reason, got.status, got.reason, reason)
		}
	}
	if n := len(f.up.received()); n != len(v.Valid) {
		t.Errorf("upstream reached %d times, want %d", n, len(v.Valid))
	}
}

type alipayVectors struct {
	PublicKeyPEM string `json:"public_key_pem"`
	Valid        []struct {
		Form         string
		StringToSign string `json:"string_to_sign"`
	}
	Invalid []struct{ Form, Reason string }
}

func alipayVerifier(t testing.TB, pemKey string, cfg config.AlipayCallback, maxBody int64) (*Verifier, Options) {
	t.Helper()
	opts, _ := testOptions(t, time.Now())
	opts.MaxBody = maxBody
	opts.Dir = t.TempDir()
	writeFile(t, opts.Dir, "alipay.pem", pemKey)
	cfg.PublicKey = "alipay.pem" // relative: resolved against Options.Dir
	vf, err := New(config.RouteCallback{Verify: config.VerifyAlipay, Alipay: &cfg}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return vf, opts
}

var formHeader = http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"}}

func TestAlipayVectors(t *testing.T) {
	var v alipayVectors
	loadVectors(t, "alipay-notify.json", &v)
	vf, _ := alipayVerifier(t, v.PublicKeyPEM, config.AlipayCallback{}, 0)
	f := newFront(t, vf)
	for _, c := range v.Valid {
		pairs, err := parseForm(c.Form, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := signDigest(pairs, crypto.SHA256), sha256.Sum256([]byte(c.StringToSign)); !bytes.Equal(got, want[:]) {
			t.Errorf("string to sign differs from the vector's %q", c.StringToSign)
		}
		if got := f.do(t, http.MethodPost, "", formHeader, []byte(c.Form)); got.status != 200 || got.body != "success" {
			t.Errorf("valid: got %d %q", got.status, got.body)
		}
	}
	if b := f.up.received(); len(b) != 1 || string(b[0]) != v.Valid[0].Form {
		t.Fatalf("upstream got %q, want the form byte for byte", b)
	}
	want := map[string]string{"amount changed": "bad_signature", "sign missing": "bad_signature"}
	for _, c := range v.Invalid {
		reason, ok := want[c.Reason]
		if !ok {
			t.Fatalf("vector reason %q has no expected rejection; add it to the test", c.Reason)
		}
		if got := f.do(t, http.MethodPost, "", formHeader, []byte(c.Form)); got.status != 400 || got.body != "failure" || got.reason != reason {
			t.Errorf("%s: got %d %q reason %q", c.Reason, got.status, got.body, got.reason)
		}
	}
	if n := len(f.up.received()); n != 1 {
		t.Errorf("upstream reached %d times, want 1", n)
	}
}
