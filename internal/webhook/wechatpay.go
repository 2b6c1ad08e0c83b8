package webhook

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"edge/internal/config"
)

// signTestPrefix marks the platform's deliberate probes: a merchant that
// accepts one is not verifying signatures.
const signTestPrefix = "WECHATPAY/SIGNTEST/"

// wechatPay verifies WeChat Pay API v3 notifications. The body reaches the
// upstream byte for byte: the upstream decrypts the resource with its APIv3
// key, which edge never holds.
type wechatPay struct {
	keys    map[string]*rsa.PublicKey // by upper-case serial
	window  time.Duration
	now     func() time.Time
	maxBody int64
	c       *counters
}

func newWechatPay(cfg *config.WechatPayCallback, opts Options) (*Verifier, error) {
	keys, err := cfg.LoadKeys(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("route %q: wechatpay: %w", opts.Route, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("route %q: wechatpay: no keys configured", opts.Route)
	}
	window := cfg.Window.Std()
	if window <= 0 {
		window = config.DefaultWechatPayWindow.Std()
	}
	p := &wechatPay{
		keys:    keys,
		window:  window,
		now:     opts.Now,
		maxBody: opts.MaxBody,
		c: newCounters(opts, config.VerifyWechatPayV3,
			reasonBodyTooLarge, reasonBadRequest, reasonBadSignature, reasonStaleTimestamp, reasonUnknownSerial, reasonSignTest),
	}
	return &Verifier{body: &bodyVerifier{verify: p.verify, fail: writePayFailure, c: p.c}}, nil
}

// verify checks the headers before reading the body, so probes, stale and
// unknown-key notifications cost no body read.
func (p *wechatPay) verify(r *http.Request) ([]byte, reason) {
	hdr := r.Header
	sig := hdr.Get("Wechatpay-Signature")
	ts := hdr.Get("Wechatpay-Timestamp")
	nonce := hdr.Get("Wechatpay-Nonce")
	serial := hdr.Get("Wechatpay-Serial")
	if sig == "" || ts == "" || nonce == "" || serial == "" {
		return nil, reasonBadRequest
	}
	if t := hdr.Get("Wechatpay-Signature-Type"); t != "" && t != "WECHATPAY2-SHA256-RSA2048" {
		return nil, reasonBadRequest
	}
	if strings.HasPrefix(sig, signTestPrefix) {
		return nil, reasonSignTest
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, reasonBadRequest
	}
	// Compared in seconds: time.Unix of a hostile value could overflow a
	// time.Duration difference.
	diff := p.now().Unix() - sec
	if diff < 0 {
		diff = -diff
	}
	if diff < 0 || diff >= int64(p.window/time.Second) {
		return nil, reasonStaleTimestamp
	}
	key, ok := p.keys[strings.ToUpper(serial)]
	if !ok {
		return nil, reasonUnknownSerial
	}
	var sigBuf [1024]byte // RSA up to 8192 bits
	if base64.StdEncoding.DecodedLen(len(sig)) > len(sigBuf) {
		return nil, reasonBadSignature
	}
	n, err := base64.StdEncoding.Decode(sigBuf[:], []byte(sig))
	if err != nil {
		return nil, reasonBadSignature
	}
	body, err := readBody(r, p.maxBody)
	if err != nil {
		return nil, bodyReason(err)
	}
	h := sha256.New()
	var head [96]byte
	h.Write(append(append(append(append(head[:0], ts...), '\n'), nonce...), '\n'))
	h.Write(body)
	h.Write(newline)
	var digest [sha256.Size]byte
	if rsa.VerifyPKCS1v15(key, crypto.SHA256, h.Sum(digest[:0]), sigBuf[:n]) != nil {
		return nil, reasonBadSignature
	}
	return body, reasonNone
}

var newline = []byte{'\n'}

// payFailures are the platform's failure answers, built once: the message is
// fixed by edge, never taken from the request.
var payFailures = func() (m [numReasons][]byte) {
	msgs := map[reason]string{
		reasonBodyTooLarge:   "notification body too large",
		reasonBadRequest:     "missing or malformed Wechatpay headers",
		reasonBadSignature:   "signature verification failed",
		reasonStaleTimestamp: "timestamp outside the allowed window",
		reasonUnknownSerial:  "unknown Wechatpay-Serial",
		reasonSignTest:       "signature verification failed",
	}
	for why, msg := range msgs {
		m[why] = []byte(`{"code":"FAIL","message":` + strconv.Quote(msg) + `}`)
	}
	return m
}()

// writePayFailure answers in the platform's format: 401, or 413 for an
// oversized body; any 4xx/5xx makes the platform retry for about 24 hours.
func writePayFailure(w http.ResponseWriter, why reason) {
	status := http.StatusUnauthorized
	if why == reasonBodyTooLarge {
		status = http.StatusRequestEntityTooLarge
	}
	b := payFailures[why]
	h := w.Header()
	h["Content-Type"] = []string{"application/json; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
