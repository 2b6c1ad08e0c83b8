package webhook

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
)

const (
	pushToken  = "edgeToken42"
	pushAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	pushAppID  = "wx1234567890abcdef"
)

// sealPush encrypts msg the way the platform does in safe mode; the random
// prefix is fixed so every run sees the same ciphertext.
func sealPush(t testing.TB, aesKey, appid, msg string) string {
	t.Helper()
	key, err := config.WechatPushAESKey(config.Secret(aesKey))
	if err != nil {
		t.Fatal(err)
	}
	plain := append([]byte("0123456789abcdef"), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(plain[16:], uint32(len(msg)))
	plain = append(append(plain, msg...), appid...)
	pad := 32 - len(plain)%32
	plain = append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(plain, plain)
	return base64.StdEncoding.EncodeToString(plain)
}

func pushSign(parts ...string) string {
	slices.Sort(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(sum[:])
}

func safeQuery(enc string) string {
	return url.Values{
		"timestamp": {"1772538177"}, "nonce": {"42"}, "encrypt_type": {"aes"},
		"msg_signature": {pushSign(pushToken, "1772538177", "42", enc)},
	}.Encode()
}

func TestWechatPushSafeMode(t *testing.T) {
	const msg = `<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Content><![CDATA[你好]]></Content></xml>`
	good := sealPush(t, pushAESKey, pushAppID, msg)
	otherApp := sealPush(t, pushAESKey, "wx0000000000000000", msg)
	otherKey := sealPush(t, "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut", pushAppID, msg)
	xmlBody := func(enc string) string {
		return "<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>"
	}
	tests := []struct {
		name      string
		method    string
		query     string
		body      string
		maxBody   int64
		chunked   bool
		forward   bool
		status    int
		reason    string
		upstream  string // body the upstream must receive; "" = never reached
		answer    string // edge's own answer to a GET check
		clHeader  string // Content-Length the upstream must see
		wantedErr string // substring of the JSON error code
	}{
		{name: "xml", method: "POST", query: safeQuery(good), body: xmlBody(good), status: 200, upstream: xmlBody(good)},
		{name: "json", method: "POST", query: safeQuery(good), body: `{"ToUserName":"gh_x","Encrypt":"` + good + `"}`, status: 200, upstream: `{"ToUserName":"gh_x","Encrypt":"` + good + `"}`},
		{name: "json escaped slash", method: "POST", query: safeQuery(good), body: `{"Encrypt":"` + strings.ReplaceAll(good, "/", `\/`) + `"}`, status: 200, upstream: `{"Encrypt":"` + strings.ReplaceAll(good, "/", `\/`) + `"}`},
		{name: "chunked", method: "POST", query: safeQuery(good), body: xmlBody(good), chunked: true, status: 200, upstream: xmlBody(good)},
		{name: "forward decrypted", method: "POST", query: safeQuery(good), body: xmlBody(good), forward: true, status: 200, upstream: msg, clHeader: strconv.Itoa(len(msg))},
		{name: "url check", method: "GET", query: safeQuery(good) + "&echostr=" + url.QueryEscape(good), status: 200, answer: msg},
		{name: "url check without echostr", method: "GET", query: safeQuery(good), status: 401, reason: "bad_request"},
		{name: "url check for another app", method: "GET", query: safeQuery(otherApp) + "&echostr=" + url.QueryEscape(otherApp), status: 401, reason: "wrong_appid"},
		{name: "another app", method: "POST", query: safeQuery(otherApp), body: xmlBody(otherApp), status: 401, reason: "wrong_appid", wantedErr: "40103"},
		{name: "another aes key", method: "POST", query: safeQuery(otherKey), body: xmlBody(otherKey), status: 401, reason: "decrypt_failed"},
		{name: "signature of other ciphertext", method: "POST", query: safeQuery(otherApp), body: xmlBody(good), status: 401, reason: "bad_signature"},
		{name: "no msg_signature", method: "POST", query: "timestamp=1&nonce=2", body: xmlBody(good), status: 401, reason: "bad_signature"},
		{name: "plaintext signature only", method: "POST", query: "timestamp=1772538177&nonce=42&signature=" + pushSign(pushToken, "1772538177", "42"), body: xmlBody(good), status: 401, reason: "bad_signature"},
		{name: "duplicate Encrypt xml", method: "POST", query: safeQuery(good), body: "<xml><Encrypt>" + good + "</Encrypt><Encrypt>AAAA</Encrypt></xml>", status: 401, reason: "bad_body"},
		{name: "duplicate Encrypt json", method: "POST", query: safeQuery(good), body: `{"Encrypt":"AAAA","Encrypt":"` + good + `"}`, status: 401, reason: "bad_body"},
		{name: "case variant json", method: "POST", query: safeQuery(good), body: `{"encrypt":"AAAA","Encrypt":"` + good + `"}`, status: 401, reason: "bad_body"},
		{name: "no Encrypt", method: "POST", query: safeQuery(good), body: `{"MsgType":"text"}`, status: 401, reason: "bad_body"},
		{name: "not xml or json", method: "POST", query: safeQuery(good), body: "Encrypt=" + good, status: 401, reason: "bad_body"},
		{name: "too large", method: "POST", query: safeQuery(good), body: xmlBody(good), maxBody: 64, status: 413, reason: "body_too_large", wantedErr: "41301"},
		{name: "too large chunked", method: "POST", query: safeQuery(good), body: xmlBody(good), maxBody: 64, chunked: true, status: 413, reason: "body_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, reg := testOptions(t, time.Now())
			opts.MaxBody = tt.maxBody
			cfg := &config.WechatPushCallback{Token: pushToken, EncodingAESKey: pushAESKey, AppID: pushAppID, ForwardDecrypted: tt.forward}
			vf, err := New(config.RouteCallback{Verify: config.VerifyWechatPush, WechatPush: cfg}, opts)
			if err != nil {
				t.Fatal(err)
			}
			f := newFront(t, vf)
			got := f.doBody(t, tt.method, tt.query, nil, tt.body, tt.chunked)
			if got.status != tt.status || got.reason != tt.reason {
				t.Fatalf("got %d reason %q (%q), want %d %q", got.status, got.reason, got.body, tt.status, tt.reason)
			}
			if tt.answer != "" && got.body != tt.answer {
				t.Errorf("answer %q, want %q", got.body, tt.answer)
			}
			if tt.wantedErr != "" && !strings.Contains(got.body, `"code":`+tt.wantedErr) {
				t.Errorf("answer %q lacks code %s", got.body, tt.wantedErr)
			}
			checkUpstream(t, f, tt.upstream, tt.clHeader)
			kind := map[string]string{"kind": "wechat_push", "route": "cb"}
			if tt.reason == "" {
				if n := counterValue(t, reg, "edge_callbacks_verified_total", kind); n != 1 {
					t.Errorf("verified counter %v, want 1", n)
				}
			} else if n := counterValue(t, reg, "edge_callbacks_rejected_total", map[string]string{"kind": "wechat_push", "reason": tt.reason}); n != 1 {
				t.Errorf("rejected counter %v, want 1", n)
			}
		})
	}
}

func TestWechatPushPlaintextPassesBodyUnread(t *testing.T) {
	f := pushFront(t, config.WechatPushCallback{Token: pushToken})
	q := url.Values{"timestamp": {"1"}, "nonce": {"2"}, "signature": {pushSign(pushToken, "1", "2")}}.Encode()
	body := strings.Repeat("x", 3<<20) // beyond DefaultMaxBody: plaintext mode does not buffer
	if got := f.doBody(t, "POST", q, nil, body, true); got.status != 200 {
		t.Fatalf("got %d %q", got.status, got.body)
	}
	checkUpstream(t, f, body, "")
}

// doBody sends body, chunked (no Content-Length) when asked.
func (f *front) doBody(t *testing.T, method, query string, hdr http.Header, body string, chunked bool) result {
	t.Helper()
	if !chunked {
		return f.do(t, method, query, hdr, []byte(body))
	}
	// A MultiReader hides the length, so the body goes chunked.
	return f.send(t, method, query, hdr, io.MultiReader(strings.NewReader(body)))
}

func checkUpstream(t *testing.T, f *front, want, contentLength string) {
	t.Helper()
	got := f.up.received()
	if want == "" {
		if len(got) != 0 {
			t.Errorf("upstream reached with %q", got)
		}
		return
	}
	if len(got) != 1 || string(got[0]) != want {
		t.Errorf("upstream got %d bodies, want exactly %q", len(got), want)
		return
	}
	if contentLength != "" {
		f.up.mu.Lock()
		cl := f.up.hdrs[0].Get("Content-Length")
		f.up.mu.Unlock()
		if cl != contentLength {
			t.Errorf("upstream Content-Length %q, want %q", cl, contentLength)
		}
	}
}

func paySign(t testing.TB, k *rsa.PrivateKey, ts, nonce, body string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(ts + "\n" + nonce + "\n" + body + "\n"))
	sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func TestWechatPayKeysAndWindow(t *testing.T) {
	var v payVectors
	loadVectors(t, "wechatpay-v3-notify.json", &v)
	key := testKey()
	certSerial := big.NewInt(0x5157F09EFDC096DE)
	dir := t.TempDir()
	cfg := &config.WechatPayCallback{Keys: []config.WechatPayKey{
		{Serial: v.PublicKeyID, PublicKey: writeFile(t, dir, "vector.pem", v.PublicKeyPEM)},
		{Certificate: writeFile(t, dir, "platform.pem", certificatePEM(t, key, certSerial))},
	}}
	now := time.Unix(1772538184, 0)
	const body = `{"id":"x","event_type":"TRANSACTION.SUCCESS"}`
	at := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	headers := func(serial, ts string, mutate func(http.Header)) http.Header {
		h := http.Header{
			"Wechatpay-Serial":         {serial},
			"Wechatpay-Timestamp":      {ts},
			"Wechatpay-Nonce":          {"n0nce"},
			"Wechatpay-Signature":      {paySign(t, key, ts, "n0nce", body)},
			"Wechatpay-Signature-Type": {"WECHATPAY2-SHA256-RSA2048"},
		}
		if mutate != nil {
			mutate(h)
		}
		return h
	}
	tests := []struct {
		name    string
		hdr     http.Header
		maxBody int64
		status  int
		reason  string
	}{
		{"certificate serial", headers("5157F09EFDC096DE", at(0), nil), 0, 200, ""},
		{"serial in lower case", headers("5157f09efdc096de", at(0), nil), 0, 200, ""},
		{"299s old", headers("5157F09EFDC096DE", at(-299*time.Second), nil), 0, 200, ""},
		{"299s ahead", headers("5157F09EFDC096DE", at(299*time.Second), nil), 0, 200, ""},
		{"300s old", headers("5157F09EFDC096DE", at(-300*time.Second), nil), 0, 401, "stale_timestamp"},
		{"300s ahead", headers("5157F09EFDC096DE", at(300*time.Second), nil), 0, 401, "stale_timestamp"},
		{"huge timestamp", headers("5157F09EFDC096DE", "-9223372036854775808", nil), 0, 401, "stale_timestamp"},
		{"timestamp not a number", headers("5157F09EFDC096DE", "12ab", nil), 0, 401, "bad_request"},
		{"signed by another key than the serial's", headers(v.PublicKeyID, at(0), nil), 0, 401, "bad_signature"},
		{"no signature type is fine", headers("5157F09EFDC096DE", at(0), func(h http.Header) { h.Del("Wechatpay-Signature-Type") }), 0, 200, ""},
		{"other signature type", headers("5157F09EFDC096DE", at(0), func(h http.Header) { h.Set("Wechatpay-Signature-Type", "SM2") }), 0, 401, "bad_request"},
		{"no nonce", headers("5157F09EFDC096DE", at(0), func(h http.Header) { h.Del("Wechatpay-Nonce") }), 0, 401, "bad_request"},
		{"nonce changed", headers("5157F09EFDC096DE", at(0), func(h http.Header) { h.Set("Wechatpay-Nonce", "other") }), 0, 401, "bad_signature"},
		{"signature not base64", headers("5157F09EFDC096DE", at(0), func(h http.Header) { h.Set("Wechatpay-Signature", "%%%") }), 0, 401, "bad_signature"},
		{"signature too long", headers("5157F09EFDC096DE", at(0), func(h http.Header) { h.Set("Wechatpay-Signature", strings.Repeat("A", 4096)) }), 0, 401, "bad_signature"},
		{"too large", headers("5157F09EFDC096DE", at(0), nil), 16, 413, "body_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, _ := testOptions(t, now)
			opts.MaxBody = tt.maxBody
			vf, err := New(config.RouteCallback{Verify: config.VerifyWechatPayV3, WechatPay: cfg}, opts)
			if err != nil {
				t.Fatal(err)
			}
			f := newFront(t, vf)
			got := f.do(t, "POST", "", tt.hdr, []byte(body))
			if got.status != tt.status || got.reason != tt.reason {
				t.Fatalf("got %d reason %q (%q), want %d %q", got.status, got.reason, got.body, tt.status, tt.reason)
			}
			if tt.status != 200 {
				if !strings.HasPrefix(got.body, `{"code":"FAIL","message":"`) {
					t.Errorf("answer %q is not the platform's failure JSON", got.body)
				}
				checkUpstream(t, f, "", "")
				return
			}
			checkUpstream(t, f, body, "")
		})
	}
}

func alipayForm(t testing.TB, k *rsa.PrivateKey, signType string, params url.Values) string {
	t.Helper()
	pairs, err := parseForm(params.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	hash := crypto.SHA256
	if signType == "RSA" {
		hash = crypto.SHA1
	}
	sig, err := rsa.SignPKCS1v15(nil, k, hash, signDigest(pairs, hash))
	if err != nil {
		t.Fatal(err)
	}
	params.Set("sign_type", signType)
	params.Set("sign", base64.StdEncoding.EncodeToString(sig))
	return params.Encode()
}

func TestAlipayRules(t *testing.T) {
	key := testKey()
	params := func() url.Values {
		return url.Values{
			"app_id": {"2021000000000001"}, "out_trade_no": {"o1"}, "total_amount": {"88.88"},
			"subject": {"会员 月卡"}, "buyer_logon_id": {""}, "trade_status": {"TRADE_SUCCESS"},
		}
	}
	rsa2 := alipayForm(t, key, "RSA2", params())
	rsa1 := alipayForm(t, key, "RSA", params())
	tests := []struct {
		name    string
		cfg     config.AlipayCallback
		method  string
		query   string
		ctype   string
		body    string
		maxBody int64
		status  int
		reason  string
	}{
		{name: "rsa2", body: rsa2, status: 200},
		{name: "rsa2 with charset gbk label", ctype: "application/x-www-form-urlencoded;charset=GBK", body: rsa2, status: 200},
		{name: "rsa refused by default", body: rsa1, status: 400, reason: "sign_type"},
		{name: "rsa allowed", cfg: config.AlipayCallback{SignTypes: []string{"RSA", "RSA2"}}, body: rsa1, status: 200},
		{name: "rsa2 not allowed", cfg: config.AlipayCallback{SignTypes: []string{"RSA"}}, body: rsa2, status: 400, reason: "sign_type"},
		{name: "sign_type relabelled", cfg: config.AlipayCallback{SignTypes: []string{"RSA", "RSA2"}}, body: strings.Replace(rsa1, "sign_type=RSA&", "sign_type=RSA2&", 1), status: 400, reason: "bad_signature"},
		{name: "app id matches", cfg: config.AlipayCallback{AppID: "2021000000000001"}, body: rsa2, status: 200},
		{name: "app id of another app", cfg: config.AlipayCallback{AppID: "2021000000000002"}, body: rsa2, status: 400, reason: "wrong_appid"},
		{name: "repeated amount", body: rsa2 + "&total_amount=0.01", status: 400, reason: "bad_body"},
		{name: "amount in the query too", query: "total_amount=0.01", body: rsa2, status: 200},
		{name: "unrelated query", query: "edge_route=pay", body: rsa2, status: 200},
		{name: "semicolon", body: rsa2 + ";x=1", status: 400, reason: "bad_body"},
		{name: "bad escape", body: rsa2 + "&x=%zz", status: 400, reason: "bad_body"},
		{name: "sign not base64", body: strings.Replace(rsa2, "sign=", "sign=%25", 1), status: 400, reason: "bad_signature"},
		{name: "json content type", ctype: "application/json", body: rsa2, status: 400, reason: "bad_request"},
		{name: "GET", method: "GET", body: rsa2, status: 400, reason: "bad_request"},
		{name: "too large", body: rsa2, maxBody: 100, status: 413, reason: "body_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vf, _ := alipayVerifier(t, publicKeyPEM(t, key), tt.cfg, tt.maxBody)
			f := newFront(t, vf)
			method := cmpOr(tt.method, "POST")
			hdr := http.Header{"Content-Type": {cmpOr(tt.ctype, "application/x-www-form-urlencoded")}}
			got := f.do(t, method, tt.query, hdr, []byte(tt.body))
			if got.status != tt.status || got.reason != tt.reason {
				t.Fatalf("got %d reason %q (%q), want %d %q", got.status, got.reason, got.body, tt.status, tt.reason)
			}
			if tt.status == 200 {
				checkUpstream(t, f, tt.body, "")
				return
			}
			if got.body != "failure" {
				t.Errorf("answer %q, want failure", got.body)
			}
			checkUpstream(t, f, "", "")
		})
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestNewRefusesBadSettings(t *testing.T) {
	opts, _ := testOptions(t, time.Now())
	dir := t.TempDir()
	priv := writeFile(t, dir, "priv.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	tests := []struct {
		name string
		cb   config.RouteCallback
		opts func(Options) Options
		want string
	}{
		{name: "no metrics", cb: config.RouteCallback{Verify: config.VerifyAlipay}, opts: func(o Options) Options { o.Metrics = nil; return o }, want: "metrics"},
		{name: "verify without table", cb: config.RouteCallback{Verify: config.VerifyAlipay}, want: "no matching settings"},
		{name: "unknown verify", cb: config.RouteCallback{Verify: "stripe", Alipay: &config.AlipayCallback{}}, want: "no matching settings"},
		{name: "empty token", cb: config.RouteCallback{Verify: config.VerifyWechatPush, WechatPush: &config.WechatPushCallback{}}, want: "token"},
		{name: "short aes key", cb: config.RouteCallback{Verify: config.VerifyWechatPush, WechatPush: &config.WechatPushCallback{Token: "abc", EncodingAESKey: "short", AppID: "wx1"}}, want: "43 characters"},
		{name: "safe mode without appid", cb: config.RouteCallback{Verify: config.VerifyWechatPush, WechatPush: &config.WechatPushCallback{Token: "abc", EncodingAESKey: pushAESKey}}, want: "appid"},
		{name: "forward without aes", cb: config.RouteCallback{Verify: config.VerifyWechatPush, WechatPush: &config.WechatPushCallback{Token: "abc", ForwardDecrypted: true}}, want: "forward_decrypted"},
		{name: "no pay keys", cb: config.RouteCallback{Verify: config.VerifyWechatPayV3, WechatPay: &config.WechatPayCallback{}}, want: "no keys"},
		{name: "private key as pay key", cb: config.RouteCallback{Verify: config.VerifyWechatPayV3, WechatPay: &config.WechatPayCallback{Keys: []config.WechatPayKey{{Serial: "PUB_KEY_ID_1", PublicKey: priv}}}}, want: "private key"},
		{name: "missing alipay key", cb: config.RouteCallback{Verify: config.VerifyAlipay, Alipay: &config.AlipayCallback{PublicKey: dir + "/nope.pem"}}, want: "no such file"},
		{name: "unknown sign type", cb: config.RouteCallback{Verify: config.VerifyAlipay, Alipay: &config.AlipayCallback{PublicKey: writeFile(t, dir, "a.pem", publicKeyPEM(t, testKey())), SignTypes: []string{"SM2"}}}, want: "sign type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := opts
			if tt.opts != nil {
				o = tt.opts(o)
			}
			_, err := New(tt.cb, o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error about %q", err, tt.want)
			}
		})
	}
}
