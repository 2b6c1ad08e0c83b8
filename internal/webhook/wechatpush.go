package webhook

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"edge/internal/apierror"
	"edge/internal/config"
)

// wechatPush verifies WeChat message push. Rejections are 401 (413 for an
// oversized body) with the spec's JSON error: the platform only looks at
// whether the answer is a success, and an operator reading the access log
// or a curl test gets the same shape as every other edge rejection.
type wechatPush struct {
	token   string
	block   cipher.Block // nil in plaintext mode
	iv      []byte
	appid   string
	forward bool
	maxBody int64
	c       *counters
}

func newWechatPush(cfg *config.WechatPushCallback, opts Options) (*Verifier, error) {
	p := &wechatPush{
		token:   cfg.Token.Value(),
		appid:   cfg.AppID,
		forward: cfg.ForwardDecrypted,
		maxBody: opts.MaxBody,
		c: newCounters(opts, config.VerifyWechatPush,
			reasonBodyTooLarge, reasonBadRequest, reasonBadBody, reasonBadSignature, reasonDecrypt, reasonWrongApp),
	}
	if p.token == "" {
		return nil, fmt.Errorf("route %q: wechat_push.token is empty", opts.Route)
	}
	if cfg.EncodingAESKey != "" {
		key, err := config.WechatPushAESKey(cfg.EncodingAESKey)
		if err != nil {
			return nil, fmt.Errorf("route %q: wechat_push: %w", opts.Route, err)
		}
		if p.appid == "" {
			return nil, fmt.Errorf("route %q: wechat_push.appid is required in safe mode", opts.Route)
		}
		// aes.NewCipher cannot fail on a 32-byte key.
		p.block, _ = aes.NewCipher(key)
		p.iv = key[:aes.BlockSize]
	} else if p.forward {
		return nil, fmt.Errorf("route %q: wechat_push.forward_decrypted needs encoding_aes_key", opts.Route)
	}
	return &Verifier{push: p}, nil
}

func (p *wechatPush) check(w http.ResponseWriter, r *http.Request) bool {
	q := r.URL.RawQuery
	ts, _ := queryValue(q, "timestamp")
	nonce, _ := queryValue(q, "nonce")

	if r.Method == http.MethodGet {
		// The URL check: edge answers it so the upstream never has to hold
		// the token.
		echostr, ok := queryValue(q, "echostr")
		if !ok || echostr == "" {
			p.fail(w, r, reasonBadRequest)
			return false
		}
		if p.block == nil {
			sig, _ := queryValue(q, "signature")
			if !p.signed(sig, ts, nonce, "", false) {
				p.fail(w, r, reasonBadSignature)
				return false
			}
			p.c.verified.Inc()
			writeText(w, echostr)
			return false
		}
		sig, _ := queryValue(q, "msg_signature")
		if !p.signed(sig, ts, nonce, echostr, true) {
			p.fail(w, r, reasonBadSignature)
			return false
		}
		msg, why := p.open(echostr)
		if why != reasonNone {
			p.fail(w, r, why)
			return false
		}
		p.c.verified.Inc()
		writeText(w, string(msg))
		return false
	}

	if p.block == nil {
		// Plaintext mode signs only the query; the body passes untouched.
		sig, _ := queryValue(q, "signature")
		if !p.signed(sig, ts, nonce, "", false) {
			p.fail(w, r, reasonBadSignature)
			return false
		}
		p.c.verified.Inc()
		return true
	}

	body, err := readBody(r, p.maxBody)
	if err != nil {
		p.fail(w, r, bodyReason(err))
		return false
	}
	enc, err := encryptField(body)
	if err != nil {
		p.fail(w, r, reasonBadBody)
		return false
	}
	sig, _ := queryValue(q, "msg_signature")
	if !p.signed(sig, ts, nonce, enc, true) {
		p.fail(w, r, reasonBadSignature)
		return false
	}
	msg, why := p.open(enc)
	if why != reasonNone {
		p.fail(w, r, why)
		return false
	}
	if p.forward {
		replaceBody(r, msg)
	} else {
		setBody(r, body)
	}
	p.c.verified.Inc()
	return true
}

// signed checks sig = hex(sha1(concat(sort([token, ts, nonce, enc?])))).
func (p *wechatPush) signed(sig, ts, nonce, enc string, withEnc bool) bool {
	var want [sha1.Size]byte
	if len(sig) != hex.EncodedLen(len(want)) {
		return false
	}
	if _, err := hex.Decode(want[:], []byte(sig)); err != nil {
		return false
	}
	parts := [4]string{p.token, ts, nonce, enc}
	n := 3
	if withEnc {
		n = 4
	}
	for i := 1; i < n; i++ {
		for j := i; j > 0 && parts[j] < parts[j-1]; j-- {
			parts[j], parts[j-1] = parts[j-1], parts[j]
		}
	}
	var stack [256]byte
	buf := stack[:0]
	for _, s := range parts[:n] {
		buf = append(buf, s...)
	}
	got := sha1.Sum(buf)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// open decrypts a safe-mode ciphertext (already authenticated by
// msg_signature, so there is no padding oracle) and checks the trailing
// appid. reasonNone means success.
func (p *wechatPush) open(enc string) ([]byte, reason) {
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(raw) == 0 || len(raw)%aes.BlockSize != 0 {
		return nil, reasonDecrypt
	}
	cipher.NewCBCDecrypter(p.block, p.iv).CryptBlocks(raw, raw)
	pad := int(raw[len(raw)-1])
	if pad < 1 || pad > 32 || pad > len(raw) {
		return nil, reasonDecrypt
	}
	raw = raw[:len(raw)-pad]
	if len(raw) < 20 {
		return nil, reasonDecrypt
	}
	n := binary.BigEndian.Uint32(raw[16:20])
	if uint64(n) > uint64(len(raw)-20) {
		return nil, reasonDecrypt
	}
	msg, appid := raw[20:20+n], raw[20+n:]
	if string(appid) != p.appid {
		return nil, reasonWrongApp
	}
	return msg, reasonNone
}

func (p *wechatPush) fail(w http.ResponseWriter, r *http.Request, why reason) {
	p.c.reject(r, why)
	if why == reasonBodyTooLarge {
		apierror.Write(w, r, apierror.BodyTooLarge, "callback body too large")
		return
	}
	apierror.Write(w, r, apierror.BadSignature, "callback verification failed")
}

// bodyReason maps a readBody error to its rejection reason.
func bodyReason(err error) reason {
	if errors.Is(err, errTooLarge) {
		return reasonBodyTooLarge
	}
	return reasonBadRequest
}

// writeText answers the URL check. The echo is the platform's own value,
// authenticated by the signature, but it is reflected: never let a browser
// sniff it as HTML.
func writeText(w http.ResponseWriter, s string) {
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(s))}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(s))
}
