package webhook

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"edge/internal/config"
)

// alipay verifies Alipay asynchronous notifications. Alipay only looks at
// whether the answer body is exactly "success", so a rejection answers 400
// with the body "failure": a client error, which is what a forged or
// tampered notification is, and Alipay retries it on its own schedule.
type alipay struct {
	pub      *rsa.PublicKey
	allowRSA bool // SHA1withRSA
	allowRS2 bool // SHA256withRSA
	appID    string
	maxBody  int64
	c        *counters
}

func newAlipay(cfg *config.AlipayCallback, opts Options) (*Verifier, error) {
	pub, err := cfg.LoadPublicKey(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("route %q: alipay: %w", opts.Route, err)
	}
	a := &alipay{
		pub:     pub,
		appID:   cfg.AppID,
		maxBody: opts.MaxBody,
		c: newCounters(opts, config.VerifyAlipay,
			reasonBodyTooLarge, reasonBadRequest, reasonBadBody, reasonBadSignature, reasonSignType, reasonWrongApp),
	}
	types := cfg.SignTypes
	if len(types) == 0 {
		types = []string{config.DefaultAlipaySignType}
	}
	for _, t := range types {
		switch t {
		case "RSA2":
			a.allowRS2 = true
		case "RSA":
			a.allowRSA = true
		default:
			return nil, fmt.Errorf("route %q: alipay: unknown sign type %q", opts.Route, t)
		}
	}
	return &Verifier{body: &bodyVerifier{verify: a.verify, fail: writeAlipayFailure, c: a.c}}, nil
}

func (a *alipay) verify(r *http.Request) ([]byte, reason) {
	if r.Method != http.MethodPost || !isForm(r.Header.Get("Content-Type")) {
		return nil, reasonBadRequest
	}
	body, err := readBody(r, a.maxBody)
	if err != nil {
		return nil, bodyReason(err)
	}
	var stack [32]field
	pairs, err := parseForm(string(body), stack[:0])
	if err != nil {
		return nil, reasonBadBody
	}
	sign, _ := lookup(pairs, "sign")
	signType, _ := lookup(pairs, "sign_type")
	if sign == "" {
		return nil, reasonBadSignature
	}
	var hash crypto.Hash
	switch {
	case signType == "RSA2" && a.allowRS2:
		hash = crypto.SHA256
	case signType == "RSA" && a.allowRSA:
		hash = crypto.SHA1
	default:
		return nil, reasonSignType
	}
	sig, err := base64.StdEncoding.DecodeString(sign)
	if err != nil {
		return nil, reasonBadSignature
	}
	if rsa.VerifyPKCS1v15(a.pub, hash, signDigest(pairs, hash), sig) != nil {
		return nil, reasonBadSignature
	}
	// Checked after the signature: a genuine notification of another app
	// signed with the same Alipay key must not reach this app's upstream.
	if a.appID != "" {
		if id, _ := lookup(pairs, "app_id"); id != a.appID {
			return nil, reasonWrongApp
		}
	}
	return body, reasonNone
}

// signDigest hashes the string to sign of the official SDK's
// getSignCheckContentV1: pairs sorted by key, sign and sign_type and empty
// values left out, joined as key=value with '&'. Values are the decoded
// bytes, whatever the notification's charset.
func signDigest(pairs []field, hash crypto.Hash) []byte {
	size := 0
	for _, f := range pairs {
		size += len(f.key) + len(f.value) + 2
	}
	buf := make([]byte, 0, size)
	for _, f := range pairs {
		if f.value == "" || f.key == "" || f.key == "sign" || f.key == "sign_type" {
			continue
		}
		if len(buf) > 0 {
			buf = append(buf, '&')
		}
		buf = append(buf, f.key...)
		buf = append(buf, '=')
		buf = append(buf, f.value...)
	}
	if hash == crypto.SHA1 {
		d := sha1.Sum(buf)
		return d[:]
	}
	d := sha256.Sum256(buf)
	return d[:]
}

// isForm reports whether a Content-Type is a URL-encoded form, parameters
// (charset) allowed.
func isForm(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/x-www-form-urlencoded")
}

// writeAlipayFailure answers "failure": anything but "success" makes Alipay
// retry. 400 for a notification that does not verify, 413 for one too large.
func writeAlipayFailure(w http.ResponseWriter, why reason) {
	status := http.StatusBadRequest
	if why == reasonBodyTooLarge {
		status = http.StatusRequestEntityTooLarge
	}
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{"7"}
	h["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(status)
	_, _ = w.Write(failureBody)
}

var failureBody = []byte("failure")
