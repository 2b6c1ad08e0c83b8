package identity

import (
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"edge/internal/config"
)

// alipayTokenMethod exchanges a my.getAuthCode code for the user's ids.
const alipayTokenMethod = "alipay.system.oauth.token"

// alipayTimeZone is Beijing time, in which Alipay reads the timestamp
// parameter. A fixed zone is exact (China has kept UTC+8 without daylight
// saving since 1991) and needs no tzdata on the host.
var alipayTimeZone = time.FixedZone("CST", 8*60*60)

// alipayLogin exchanges my.getAuthCode codes with Alipay's open API
// gateway. The private key signs the call and Alipay's public key checks
// the answer, so neither a forged request nor a forged answer gets through.
type alipayLogin struct {
	appID   string
	gateway string
	key     *rsa.PrivateKey
	alipay  *rsa.PublicKey
	client  *http.Client
	now     func() time.Time
}

func newAlipayLogin(cfg *config.App, client *http.Client, now func() time.Time) (*alipayLogin, error) {
	key, err := cfg.AlipayPrivateKey()
	if err != nil {
		return nil, fmt.Errorf("private_key: %w", err)
	}
	pub, err := cfg.LoadAlipayPublicKey()
	if err != nil {
		return nil, fmt.Errorf("alipay_public_key: %w", err)
	}
	return &alipayLogin{appID: cfg.AppID, gateway: cfg.GatewayURL, key: key, alipay: pub, client: client, now: now}, nil
}

// alipayTokenAnswer is the part of the answer edge reads. The access token
// and refresh token are left undecoded: edge has no use for them and they
// must never reach a log line.
type alipayTokenAnswer struct {
	UserID  string `json:"user_id"`
	OpenID  string `json:"open_id"`
	Code    string `json:"code"`
	Msg     string `json:"msg"`
	SubCode string `json:"sub_code"`
	SubMsg  string `json:"sub_msg"`
}

// alipaySuccess is the code of a successful open API call, when an answer
// carries one at all.
const alipaySuccess = "10000"

func (a *alipayLogin) exchange(ctx context.Context, code string) (*platformSession, *loginError) {
	params := url.Values{
		"app_id":     {a.appID},
		"method":     {alipayTokenMethod},
		"format":     {"JSON"},
		"charset":    {"utf-8"},
		"sign_type":  {"RSA2"},
		"timestamp":  {a.now().In(alipayTimeZone).Format(time.DateTime)},
		"version":    {"1.0"},
		"grant_type": {"authorization_code"},
		"code":       {code},
	}
	digest := sha256.Sum256(alipaySignContent(params))
	sig, err := rsa.SignPKCS1v15(rand.Reader, a.key, crypto.SHA256, digest[:])
	if err != nil {
		return nil, platformDown(fmt.Errorf("signing the %s call: %w", alipayTokenMethod, err))
	}
	params.Set("sign", base64.StdEncoding.EncodeToString(sig))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.gateway, strings.NewReader(params.Encode()))
	if err != nil {
		return nil, platformDown(fmt.Errorf("building the %s request: %w", alipayTokenMethod, redactURL(err)))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded;charset=utf-8")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, platformDown(fmt.Errorf("calling %s: %w", alipayTokenMethod, redactURL(err)))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, platformDown(fmt.Errorf("%s answered HTTP %d", alipayTokenMethod, resp.StatusCode))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPlatformBody))
	if err != nil {
		return nil, platformDown(fmt.Errorf("reading the %s answer: %w", alipayTokenMethod, redactURL(err)))
	}
	return a.answer(body)
}

// answer checks and maps the gateway's answer.
func (a *alipayLogin) answer(body []byte) (*platformSession, *loginError) {
	// RawMessage keeps each object's exact text, which is what Alipay
	// signed: a re-encoding would change key order and escapes.
	var envelope struct {
		Token json.RawMessage `json:"alipay_system_oauth_token_response"`
		Error json.RawMessage `json:"error_response"`
		Sign  string          `json:"sign"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		return nil, platformDown(fmt.Errorf("%s answered something other than JSON (%d bytes)", alipayTokenMethod, len(body)))
	}
	signed, failed := envelope.Token, false
	if len(signed) == 0 || string(signed) == "null" {
		signed, failed = envelope.Error, true
	}
	if len(signed) == 0 || string(signed) == "null" {
		return nil, platformDown(fmt.Errorf("%s answered neither a token nor an error_response", alipayTokenMethod))
	}
	// Alipay leaves some error answers unsigned (when it cannot tell which
	// app called). An unsigned error can only refuse a login, so it is
	// believed; an identity never is.
	if envelope.Sign != "" || !failed {
		if err := a.verify(signed, envelope.Sign); err != nil {
			return nil, platformDown(err)
		}
	}
	var ans alipayTokenAnswer
	if err := json.Unmarshal(signed, &ans); err != nil {
		return nil, platformDown(fmt.Errorf("%s answered an object that is not the documented JSON", alipayTokenMethod))
	}
	if failed || (ans.Code != "" && ans.Code != alipaySuccess) {
		err := fmt.Errorf("%s error %.20s / %.60s: %.200s %.200s", alipayTokenMethod, ans.Code, ans.SubCode, ans.Msg, ans.SubMsg)
		if alipayCodeRejected(ans.SubCode) {
			return nil, codeRejected(err)
		}
		return nil, platformDown(err)
	}
	// Alipay is moving apps from user_id (2088...) to open_id, and an app
	// switched to open_id gets no user_id at all: open_id is the id Alipay
	// means apps to keep.
	openid := cmp.Or(ans.OpenID, ans.UserID)
	if openid == "" {
		return nil, platformDown(fmt.Errorf("%s answered without open_id or user_id", alipayTokenMethod))
	}
	return &platformSession{OpenID: openid}, nil
}

// alipayCodeRejected reports whether an error blames the auth code (invalid,
// expired, already used): isv.code-invalid, isv.code-expired and the like.
// Every other error (a wrong app_id or key, missing permissions, aop.* and
// isp.* outages) is the operator's or Alipay's problem, and a client told
// to fetch a new code would only loop.
func alipayCodeRejected(subCode string) bool {
	return strings.HasPrefix(subCode, "isv.code-")
}

func (a *alipayLogin) verify(signed []byte, sign string) error {
	sig, err := base64.StdEncoding.DecodeString(sign)
	if err != nil || sign == "" {
		return fmt.Errorf("%s answered without a valid base64 sign", alipayTokenMethod)
	}
	digest := sha256.Sum256(signed)
	if rsa.VerifyPKCS1v15(a.alipay, crypto.SHA256, digest[:], sig) != nil {
		return errors.New(alipayTokenMethod + " answer's sign does not verify with alipay_public_key")
	}
	return nil
}

// alipaySignContent is the string Alipay's RSA2 request signature covers:
// every parameter but sign, empty values left out, sorted by name, joined
// as name=value with '&', values unescaped.
func alipaySignContent(params url.Values) []byte {
	var b []byte
	for _, k := range slices.Sorted(maps.Keys(params)) {
		v := params.Get(k)
		if k == "sign" || v == "" {
			continue
		}
		if len(b) > 0 {
			b = append(b, '&')
		}
		b = append(b, k...)
		b = append(b, '=')
		b = append(b, v...)
	}
	return b
}
