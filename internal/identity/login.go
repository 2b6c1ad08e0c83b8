package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/apierror"
	"edge/internal/config"
	"edge/internal/reqctx"
)

const (
	// maxLoginBody bounds {"code": ...} from the client.
	maxLoginBody = 4 << 10
	// maxPlatformBody bounds what edge reads from code2Session and hooks.
	maxPlatformBody = 64 << 10
	maxLoginCode    = 128
)

// Results of a login, the values of the metric's result label.
const (
	loginOK            = "ok"
	loginCodeRejected  = "code_rejected"
	loginPlatformError = "platform_error"
	loginHookError     = "hook_error"
	loginBadRequest    = "bad_request"
)

// The code2Session errcodes of spec/platforms.md. Errcodes not listed are
// misconfiguration or platform trouble, never the user's fault, and are
// answered like a platform outage.
var code2SessionErrors = map[int]apierror.Code{
	-1:    apierror.PlatformDown,      // system busy
	40029: apierror.LoginCodeRejected, // invalid code
	40163: apierror.LoginCodeRejected, // code already used
	40226: apierror.LoginCodeRejected, // high-risk user blocked
	45011: apierror.PlatformDown,      // minute quota reached
}

type loginHandler struct {
	svc *Service
	app *app
	// exchange trades the client's code for the user's identity with the
	// app's platform.
	exchange func(ctx context.Context, code string) (*platformSession, *loginError)
	// getCode is the client API that hands out login codes, named in
	// answers so a developer knows what to call again.
	getCode string
	hook    string
	timeout time.Duration
	results map[string]prometheus.Counter
}

func (s *Service) newLoginHandler(a *app) (*loginHandler, error) {
	h := &loginHandler{svc: s, app: a, hook: a.cfg.LoginHook, timeout: a.cfg.LoginTimeout.Std()}
	switch a.cfg.Platform {
	case config.PlatformAlipay:
		al, err := newAlipayLogin(&a.cfg, s.opts.Client, s.opts.Now)
		if err != nil {
			return nil, err
		}
		h.exchange, h.getCode = al.exchange, "my.getAuthCode"
	default:
		base, err := url.Parse(a.cfg.Code2SessionURL)
		if err != nil {
			return nil, fmt.Errorf("code2session_url: %w", err)
		}
		w := &wechatLogin{base: base, appID: a.cfg.AppID, secret: a.cfg.Secret, client: s.opts.Client}
		h.exchange, h.getCode = w.code2Session, "wx.login"
	}
	if s.opts.Metrics != nil {
		h.results = make(map[string]prometheus.Counter, 5)
		for _, r := range []string{loginOK, loginCodeRejected, loginPlatformError, loginHookError, loginBadRequest} {
			h.results[r] = s.opts.Metrics.Login(a.cfg.Name, r)
		}
	}
	return h, nil
}

// platformSession is the identity a platform vouches for: code2Session's
// answer, or the openid of an Alipay login (which has no SessionKey).
// SessionKey must never reach a log line or the client; only the login
// hook receives it.
type platformSession struct {
	OpenID     string `json:"openid"`
	UnionID    string `json:"unionid"`
	SessionKey string `json:"session_key"`
	ErrCode    int    `json:"errcode"`
	ErrMsg     string `json:"errmsg"`
}

// loginError is a failed login: what the client is told and what the log
// records.
type loginError struct {
	code   apierror.Code
	result string
	msg    string // for the client
	err    error  // for the log; never holds a secret
}

func (h *loginHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		apierror.Write(w, r, apierror.NotFound, "the login endpoint answers POST only")
		return
	}
	answer, lerr := h.login(r)
	if lerr != nil {
		h.count(lerr.result)
		if lerr.err != nil {
			h.svc.opts.Log.WarnContext(r.Context(), "login failed", "app", h.app.cfg.Name, "result", lerr.result, "err", lerr.err)
		}
		if info := reqctx.FromRequest(r); info != nil {
			info.Reason = "login_" + lerr.result
		}
		apierror.Write(w, r, lerr.code, lerr.msg)
		return
	}
	h.count(loginOK)
	hdr := w.Header()
	hdr["Content-Type"] = []string{"application/json; charset=utf-8"}
	hdr["Cache-Control"] = []string{"no-store"}
	hdr["Content-Length"] = []string{strconv.Itoa(len(answer))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(answer)
}

func (h *loginHandler) count(result string) {
	if c := h.results[result]; c != nil {
		c.Inc()
	}
}

func (h *loginHandler) login(r *http.Request) ([]byte, *loginError) {
	var req struct {
		Code string `json:"code"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxLoginBody+1))
	if err != nil || len(body) > maxLoginBody || json.Unmarshal(body, &req) != nil || !validLoginCode(req.Code) {
		// Not 40106: that tells the client to call wx.login again, and a
		// client that builds the body wrong would loop on it forever.
		return nil, &loginError{code: apierror.BadRequest, result: loginBadRequest, msg: `send {"code": "<code from ` + h.getCode + `>"} as JSON`}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	ps, lerr := h.exchange(ctx, req.Code)
	if lerr != nil {
		if lerr.code == apierror.LoginCodeRejected {
			lerr.msg = "the login code was rejected; call " + h.getCode + " again"
		}
		return nil, lerr
	}
	appid := h.app.cfg.AppID
	token, sess, err := h.svc.sealer.Issue(appid, ps.OpenID, ps.UnionID)
	if err != nil {
		return nil, &loginError{code: apierror.PlatformDown, result: loginPlatformError, msg: "the platform returned an unusable identity", err: err}
	}
	data := map[string]any{}
	if h.hook != "" {
		hctx, hcancel := context.WithTimeout(r.Context(), h.timeout)
		defer hcancel()
		extra, err := h.callHook(hctx, ps, appid)
		if err != nil {
			return nil, &loginError{code: apierror.UpstreamDown, result: loginHookError, msg: "the app could not complete the login", err: err}
		}
		for k, v := range extra {
			data[k] = v
		}
	}
	// edge's own fields win over the hook's.
	data["token"] = token
	data["sign_key"] = sess.SignKey()
	data["expires_in"] = int64(sess.Expires.Sub(sess.Issued) / time.Second)
	if h.app.cfg.ExposeOpenID {
		data["openid"] = ps.OpenID
	}
	if info := reqctx.FromRequest(r); info != nil {
		info.OpenID, info.UnionID, info.AppID = ps.OpenID, ps.UnionID, appid
	}
	answer, err := json.Marshal(struct {
		Code int            `json:"code"`
		Msg  string         `json:"msg"`
		Data map[string]any `json:"data"`
	}{0, "ok", data})
	if err != nil {
		return nil, &loginError{code: apierror.UpstreamDown, result: loginHookError, msg: "the app could not complete the login", err: fmt.Errorf("encoding the login answer: %w", err)}
	}
	return answer, nil
}

// validLoginCode accepts what wx.login and my.getAuthCode return: short,
// printable, no spaces. The platform judges the rest.
func validLoginCode(s string) bool {
	if s == "" || len(s) > maxLoginCode {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// platformDown is a login the platform could not serve: not the user's
// fault, so the client tries again later rather than asking for a new code
// in a loop.
func platformDown(err error) *loginError {
	return &loginError{code: apierror.PlatformDown, result: loginPlatformError, msg: "the login service of the platform is unavailable; try again", err: err}
}

// codeRejected is a login whose code the platform refused; the handler
// words the answer for the platform's client API.
func codeRejected(err error) *loginError {
	return &loginError{code: apierror.LoginCodeRejected, result: loginCodeRejected, err: err}
}

// wechatLogin exchanges wx.login codes with code2Session.
type wechatLogin struct {
	base   *url.URL
	appID  string
	secret config.Secret
	client *http.Client
}

func (w *wechatLogin) code2Session(ctx context.Context, code string) (*platformSession, *loginError) {
	u := *w.base
	q := u.Query()
	q.Set("appid", w.appID)
	q.Set("secret", w.secret.Value())
	q.Set("js_code", code)
	q.Set("grant_type", "authorization_code")
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, platformDown(fmt.Errorf("building the code2Session request: %w", redactURL(err)))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, platformDown(fmt.Errorf("calling code2Session: %w", redactURL(err)))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, platformDown(fmt.Errorf("code2Session answered HTTP %d", resp.StatusCode))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPlatformBody))
	if err != nil {
		return nil, platformDown(fmt.Errorf("reading the code2Session answer: %w", redactURL(err)))
	}
	var ps platformSession
	if err := json.Unmarshal(body, &ps); err != nil {
		return nil, platformDown(fmt.Errorf("code2Session answered something other than JSON (%d bytes)", len(body)))
	}
	if ps.ErrCode != 0 {
		code, known := code2SessionErrors[ps.ErrCode]
		err := fmt.Errorf("code2Session errcode %d: %.200s", ps.ErrCode, ps.ErrMsg)
		if known && code == apierror.LoginCodeRejected {
			return nil, codeRejected(err)
		}
		return nil, platformDown(err)
	}
	if ps.OpenID == "" || ps.SessionKey == "" {
		return nil, platformDown(errors.New("code2Session answered without openid or session_key"))
	}
	return &ps, nil
}

// callHook POSTs the new login to the app and returns the "data" object of
// its answer. The session_key travels only here.
func (h *loginHandler) callHook(ctx context.Context, ps *platformSession, appid string) (map[string]json.RawMessage, error) {
	payload, err := json.Marshal(map[string]string{
		"openid": ps.OpenID, "unionid": ps.UnionID, "session_key": ps.SessionKey, "appid": appid,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the login hook request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.hook, bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("building the login hook request: %w", redactURL(err))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.svc.opts.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling the login hook: %w", redactURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("the login hook answered HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPlatformBody))
	if err != nil {
		return nil, fmt.Errorf("reading the login hook answer: %w", redactURL(err))
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var answer struct {
		Data map[string]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, fmt.Errorf("the login hook answered something other than a JSON object with an object \"data\" (%d bytes)", len(body))
	}
	return answer.Data, nil
}

// redactURL drops the URL from a *url.Error: the code2Session URL carries
// the app secret, which must never reach a log line.
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
