package webhook

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"encoding/xml"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
)

// FuzzQueryValue checks the map-free query lookup against url.ParseQuery
// wherever the latter accepts the query.
func FuzzQueryValue(f *testing.F) {
	for _, s := range []string{
		"signature=abc&timestamp=1&nonce=2",
		"echostr=a%2Bb%3D&echostr=second",
		"timestamp=1;nonce=2",
		"nonce=%zz&nonce=3",
		"sig%6Eature=x&=&&a",
		"echostr=a+b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		vals, err := url.ParseQuery(raw)
		for _, key := range []string{"signature", "timestamp", "nonce", "echostr", "msg_signature", ""} {
			v, ok := queryValue(raw, key)
			if err != nil {
				continue
			}
			want := vals[key]
			if ok != (len(want) > 0) || ok && v != want[0] {
				t.Fatalf("queryValue(%q, %q) = %q, %v; ParseQuery gives %q", raw, key, v, ok, want)
			}
		}
	})
}

// FuzzEncryptField checks that an accepted body has exactly one Encrypt, and
// that it is what a standard decoder reads.
func FuzzEncryptField(f *testing.F) {
	for _, s := range []string{
		`<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt></xml>`,
		`<?xml version="1.0"?><xml><Encrypt>a<!-- c -->b</Encrypt></xml>`,
		`<xml><Encrypt>a</Encrypt><x:Encrypt xmlns:x="u">b</x:Encrypt></xml>`,
		`<xml><Encrypt><b>x</b></Encrypt></xml>`,
		`<a><Encrypt>1</Encrypt></a><b/>`,
		`{"ToUserName":"gh_x","Encrypt":"abc\/="}`,
		`{"Encrypt":"a","ENCRYPT":"b"}`,
		`{"Encrypt":1}`,
		`{"Encrypt":"a"} {}`,
		` {"nested":{"Encrypt":"x"},"Encrypt":"y"}`,
		`Encrypt=abc`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := encryptField(body)
		if err != nil {
			return
		}
		trimmed := bytes.TrimLeft(body, " \t\r\n")
		if trimmed[0] == '{' {
			var m map[string]json.RawMessage
			if jerr := json.Unmarshal(body, &m); jerr != nil {
				t.Fatalf("accepted %q, which encoding/json refuses: %v", body, jerr)
			}
			var got string
			if jerr := json.Unmarshal(m["Encrypt"], &got); jerr != nil || got != v {
				t.Fatalf("extracted %q from %q; encoding/json reads %q", v, body, got)
			}
			return
		}
		var doc struct {
			Encrypt []string `xml:"Encrypt"`
		}
		if xerr := xml.Unmarshal(body, &doc); xerr != nil {
			t.Fatalf("accepted %q, which encoding/xml refuses: %v", body, xerr)
		}
		if len(doc.Encrypt) != 1 || doc.Encrypt[0] != v {
			t.Fatalf("extracted %q from %q; encoding/xml reads %q", v, body, doc.Encrypt)
		}
	})
}

// FuzzParseForm checks the form parser against url.ParseQuery: the same
// pairs when it accepts, and never a repeated key.
func FuzzParseForm(f *testing.F) {
	for _, s := range []string{
		"a=1&b=2&sign=x%2By&sign_type=RSA2",
		"total_amount=1&total_amount=2",
		"a=1;b=2",
		"a=%zz",
		"=&&b",
		"subject=%E4%BC%9A%E5%91%98+%E6%9C%88",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pairs, err := parseForm(s, nil)
		vals, qerr := url.ParseQuery(s)
		if err != nil {
			if qerr == nil && !errors.Is(err, errDupParam) {
				t.Fatalf("parseForm(%q) failed (%v) where ParseQuery succeeds", s, err)
			}
			return
		}
		if qerr != nil {
			t.Fatalf("parseForm accepted %q, ParseQuery refuses: %v", s, qerr)
		}
		if len(pairs) != len(vals) {
			t.Fatalf("parseForm(%q) gave %d pairs, ParseQuery %d keys", s, len(pairs), len(vals))
		}
		if !slices.IsSortedFunc(pairs, func(a, b field) int { return strings.Compare(a.key, b.key) }) {
			t.Fatalf("pairs of %q are not sorted", s)
		}
		for _, p := range pairs {
			if v := vals[p.key]; len(v) != 1 || v[0] != p.value {
				t.Fatalf("parseForm(%q): %q=%q, ParseQuery has %q", s, p.key, p.value, v)
			}
		}
	})
}

// FuzzWechatPayHeaders drives the verifier with arbitrary headers and body:
// the only requests that may reach the upstream are the signed one.
func FuzzWechatPayHeaders(f *testing.F) {
	var v payVectors
	loadVectors(f, "wechatpay-v3-notify.json", &v)
	for _, c := range append(append([]payCase(nil), v.Valid...), v.Invalid...) {
		h := c.Headers
		f.Add(h["Wechatpay-Signature"], h["Wechatpay-Timestamp"], h["Wechatpay-Nonce"], h["Wechatpay-Serial"], h["Wechatpay-Signature-Type"], []byte(c.Body))
	}
	vf, _ := payVerifier(f, v)
	valid := v.Valid[0]
	f.Fuzz(func(t *testing.T, sig, ts, nonce, serial, sigType string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/notify", bytes.NewReader(body))
		r.Header = http.Header{
			"Wechatpay-Signature": {sig}, "Wechatpay-Timestamp": {ts}, "Wechatpay-Nonce": {nonce},
			"Wechatpay-Serial": {serial}, "Wechatpay-Signature-Type": {sigType},
		}
		w := httptest.NewRecorder()
		reached := vf.Check(w, r)
		if !reached {
			if w.Code != 401 && w.Code != 413 || !strings.HasPrefix(w.Body.String(), `{"code":"FAIL"`) {
				t.Fatalf("rejection answered %d %q", w.Code, w.Body)
			}
			return
		}
		vh := valid.Headers
		if sig != vh["Wechatpay-Signature"] || ts != vh["Wechatpay-Timestamp"] || nonce != vh["Wechatpay-Nonce"] ||
			!strings.EqualFold(serial, vh["Wechatpay-Serial"]) || string(body) != valid.Body {
			t.Fatalf("unsigned notification reached the upstream: %q %q %q %q %q", sig, ts, nonce, serial, body)
		}
	})
}

// FuzzWechatPushRequest drives the safe-mode verifier with arbitrary
// queries and bodies: whatever reaches the upstream carries the signed
// ciphertext.
func FuzzWechatPushRequest(f *testing.F) {
	var v pushVectors
	loadVectors(f, "wechat-message-push.json", &v)
	for _, c := range append(append([]pushCase(nil), v.SafeMode.Valid...), v.SafeMode.Invalid...) {
		method := http.MethodPost
		if c.Echostr != "" {
			method = http.MethodGet
		}
		f.Add(method, c.query(), []byte(c.BodyJSON))
	}
	f.Add(http.MethodPost, "msg_signature=x", []byte(`<xml><Encrypt>AAAA</Encrypt></xml>`))
	opts, _ := testOptions(f, time.Now())
	cfg := &config.WechatPushCallback{Token: config.Secret(v.Token), EncodingAESKey: config.Secret(v.EncodingAESKey), AppID: v.AppID}
	vf, err := New(config.RouteCallback{Verify: config.VerifyWechatPush, WechatPush: cfg}, opts)
	if err != nil {
		f.Fatal(err)
	}
	var signed string
	if err := json.Unmarshal(v.SafeMode.Valid[0].BodyJSON, &struct{ Encrypt *string }{&signed}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, query string, body []byte) {
		if method != http.MethodGet {
			method = http.MethodPost
		}
		r := httptest.NewRequest(method, "/push", bytes.NewReader(body))
		r.URL.RawQuery = query
		w := httptest.NewRecorder()
		reached := vf.Check(w, r)
		if !slices.Contains([]int{200, 401, 413}, w.Code) {
			t.Fatalf("answered %d", w.Code)
		}
		if reached {
			if enc, err := encryptField(body); err != nil || enc != signed {
				t.Fatalf("body %q without the signed ciphertext reached the upstream", body)
			}
		}
	})
}

// FuzzAlipayForm drives the Alipay verifier with arbitrary forms: whatever
// reaches the upstream signs the same content as the vector.
func FuzzAlipayForm(f *testing.F) {
	var v alipayVectors
	loadVectors(f, "alipay-notify.json", &v)
	for _, c := range v.Valid {
		f.Add(c.Form, "")
	}
	for _, c := range v.Invalid {
		f.Add(c.Form, "total_amount=0.01")
	}
	vf, _ := alipayVerifier(f, v.PublicKeyPEM, config.AlipayCallback{}, 0)
	want := sha256.Sum256([]byte(v.Valid[0].StringToSign))
	f.Fuzz(func(t *testing.T, form, query string) {
		r := httptest.NewRequest(http.MethodPost, "/notify", strings.NewReader(form))
		r.URL.RawQuery = query
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		reached := vf.Check(w, r)
		if !reached {
			if w.Body.String() != "failure" {
				t.Fatalf("rejection answered %q", w.Body)
			}
			return
		}
		pairs, err := parseForm(form, nil)
		if err != nil || !bytes.Equal(signDigest(pairs, crypto.SHA256), want[:]) {
			t.Fatalf("form %q that does not sign the vector's content reached the upstream", form)
		}
	})
}
