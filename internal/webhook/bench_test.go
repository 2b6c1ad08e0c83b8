package webhook

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"edge/internal/config"
)

// discardWriter is a ResponseWriter that costs nothing, so a benchmark
// measures the verifier alone.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// benchServe checks the same request with vf b.N times, rewinding its
// body, and fails if any run is not passed on.
func benchServe(b *testing.B, vf *Verifier, r *http.Request, body []byte) {
	b.Helper()
	passed := 0
	rd := bytes.NewReader(body)
	rc := io.NopCloser(rd)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rd.Reset(body)
		r.Body = rc
		r.ContentLength = int64(len(body))
		if vf.Check(w, r) {
			passed++
		}
	}
	if passed != b.N || w.code != 0 {
		b.Fatalf("passed %d of %d (status %d)", passed, b.N, w.code)
	}
}

func BenchmarkWechatPushPlaintext(b *testing.B) {
	var v pushVectors
	loadVectors(b, "wechat-message-push.json", &v)
	opts, _ := testOptions(b, time.Now())
	vf, err := New(config.RouteCallback{Verify: config.VerifyWechatPush, WechatPush: &config.WechatPushCallback{Token: config.Secret(v.Token)}}, opts)
	if err != nil {
		b.Fatal(err)
	}
	c := v.PlaintextMode.Valid[0]
	c.Echostr = ""
	body := []byte(`<xml><Content>hello</Content></xml>`)
	benchServe(b, vf, httptest.NewRequest(http.MethodPost, "/push?"+c.query(), nil), body)
}

func BenchmarkWechatPushSafe(b *testing.B) {
	var v pushVectors
	loadVectors(b, "wechat-message-push.json", &v)
	opts, _ := testOptions(b, time.Now())
	cfg := &config.WechatPushCallback{Token: config.Secret(v.Token), EncodingAESKey: config.Secret(v.EncodingAESKey), AppID: v.AppID}
	vf, err := New(config.RouteCallback{Verify: config.VerifyWechatPush, WechatPush: cfg}, opts)
	if err != nil {
		b.Fatal(err)
	}
	c := v.SafeMode.Valid[0]
	benchServe(b, vf, httptest.NewRequest(http.MethodPost, "/push?"+c.query(), nil), c.BodyJSON)
}

func BenchmarkWechatPay(b *testing.B) {
	var v payVectors
	loadVectors(b, "wechatpay-v3-notify.json", &v)
	vf, _ := payVerifier(b, v)
	c := v.Valid[0]
	r := httptest.NewRequest(http.MethodPost, "/notify", nil)
	r.Header = c.header()
	benchServe(b, vf, r, []byte(c.Body))
}

func BenchmarkAlipay(b *testing.B) {
	var v alipayVectors
	loadVectors(b, "alipay-notify.json", &v)
	vf, _ := alipayVerifier(b, v.PublicKeyPEM, config.AlipayCallback{}, 0)
	r := httptest.NewRequest(http.MethodPost, "/notify", nil)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	benchServe(b, vf, r, []byte(v.Valid[0].Form))
}
