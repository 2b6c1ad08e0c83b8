package wechatapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"edge/internal/admin"
	"edge/internal/apierror"
)

// wechatHosts are the hosts an absolute-form request (the app's HTTP_PROXY
// pointing here) may name; all of them go to wechat_api.base_url. Any
// other host is refused: the listener is not an open proxy.
func wechatHost(host string) bool {
	return host == "api.weixin.qq.com" || host == "api2.weixin.qq.com" || strings.HasSuffix(host, ".api.weixin.qq.com")
}

// appHeader names the app when several are configured and the path has no
// /{appid}/ prefix. WeChat Cloud Hosting's header of the same name carries
// the appid too.
const appHeader = "X-Wx-Appid"

// peekLimit is how much of WeChat's answer is read before it is passed on:
// enough for any error object, and the whole of most answers.
const peekLimit = 64 << 10

// replayLimit is the largest request body kept to be sent again after a
// token error; a larger one (a media upload) is streamed once.
const replayLimit = 1 << 20

// ServeHTTP serves the egress listener: GET /wechat/token, and every other
// request forwarded to WeChat with the app's access_token.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A page in a browser on this machine reaches a loopback listener too,
	// as with the admin listener: by rebinding its own name (refused by
	// Host) or by a cross-origin POST (refused by Sec-Fetch-Site / Origin).
	// Either would call WeChat as the app.
	if r.URL.Host == "" && !s.opts.Config.AllowRemote && !admin.HostAllowed(r.Host, nil) {
		apierror.Write(w, r, apierror.Forbidden, "the WeChat API listener answers only IP addresses and localhost in Host")
		return
	}
	if s.crossOrigin.Check(r) != nil {
		apierror.Write(w, r, apierror.Forbidden, "cross-origin request to the WeChat API listener refused")
		return
	}
	if r.Method == http.MethodConnect {
		apierror.Write(w, r, apierror.BadRequest, "CONNECT is not supported: call http://api.weixin.qq.com/... (plain http) through this proxy; edge adds the access_token and calls WeChat over https itself")
		return
	}
	if r.URL.Host != "" {
		host := strings.ToLower(r.URL.Hostname())
		if !wechatHost(host) {
			apierror.Write(w, r, apierror.Forbidden, "this proxy only forwards to api.weixin.qq.com")
			return
		}
	} else if r.URL.Path == "/wechat/token" {
		s.serveToken(w, r)
		return
	}
	a, path, msg := s.pickApp(r, r.URL.Path)
	if a == nil {
		apierror.Write(w, r, apierror.BadRequest, msg)
		return
	}
	s.forward(w, r, a, path)
}

// pickApp finds the app a request is for: a /{appid}/ path prefix, the
// X-Wx-Appid header, or the only app. It returns the path to call at
// WeChat, or a message for the client.
func (s *Service) pickApp(r *http.Request, path string) (*appToken, string, string) {
	apps := s.apps.Load()
	if rest, ok := strings.CutPrefix(path, "/"); ok {
		if id, tail, ok := strings.Cut(rest, "/"); ok {
			if a := apps.byID[id]; a != nil {
				return a, "/" + tail, ""
			}
		}
	}
	if id := r.Header.Get(appHeader); id != "" {
		if a := apps.byID[id]; a != nil {
			return a, path, ""
		}
		return nil, "", "X-Wx-Appid names no configured WeChat app"
	}
	if len(apps.order) == 1 {
		return apps.order[0], path, ""
	}
	if len(apps.order) == 0 {
		return nil, "", "no WeChat app is configured"
	}
	return nil, "", "several WeChat apps are configured: name one with a /{appid}/ path prefix or the X-Wx-Appid header"
}

func (s *Service) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		apierror.Write(w, r, apierror.BadRequest, "GET /wechat/token?appid=... only")
		return
	}
	apps := s.apps.Load()
	var a *appToken
	if id := r.URL.Query().Get("appid"); id != "" {
		a = apps.byID[id]
	} else if len(apps.order) == 1 {
		a = apps.order[0]
	}
	if a == nil {
		apierror.Write(w, r, apierror.BadRequest, "appid must name a configured WeChat app: GET /wechat/token?appid=wx...")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.Config.Timeout.Std())
	defer cancel()
	t, err := s.Token(ctx, a)
	if err != nil {
		apierror.Write(w, r, apierror.PlatformDown, "no access_token: WeChat's stable_token failed; edge's log says why")
		return
	}
	b, _ := json.Marshal(struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}{t.Value, int64(t.Expires.Sub(s.opts.Now()) / time.Second)})
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// forward sends the call to WeChat with the app's token and passes the
// answer back unchanged; a token error is answered by one refresh and one
// retry, when the body could be kept to send again.
func (s *Service) forward(w http.ResponseWriter, r *http.Request, a *appToken, path string) {
	api := apiLabel(path)
	select {
	case s.sem <- struct{}{}:
	default:
		s.call(a, api, "overload")
		apierror.Write(w, r, apierror.RateLimited, "too many calls to WeChat in flight (wechat_api.max_concurrent); retry shortly")
		return
	}
	defer func() { <-s.sem }()
	maxBody := int64(s.opts.Config.MaxBody)
	if r.ContentLength > maxBody {
		apierror.Write(w, r, apierror.BodyTooLarge, "the body is larger than wechat_api.max_body")
		return
	}
	body, replay, err := readPrefix(http.MaxBytesReader(w, r.Body, maxBody), replayLimit)
	if err != nil {
		s.bodyFailed(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.Config.Timeout.Std())
	defer cancel()
	tok, err := s.Token(ctx, a)
	if err != nil {
		s.call(a, api, "unreachable")
		apierror.Write(w, r, apierror.PlatformDown, "no access_token for the app: WeChat's stable_token failed; edge's log says why")
		return
	}
	resp, err := s.send(ctx, r, path, tok.Value, body)
	if err != nil {
		s.unreachable(ctx, w, r, a, api, err)
		return
	}
	head, complete, err := peek(resp.Body)
	class, _ := classify(resp.StatusCode, head, complete)
	if err == nil && class == "token" {
		// The old answer is passed on if no new token comes, or the body
		// was streamed and cannot be sent again: the app's own retry then
		// finds the new token.
		nt, rerr := s.Rejected(ctx, a, tok)
		if rerr == nil && replay != nil {
			s.call(a, api, class)
			resp.Body.Close()
			resp, err = s.send(ctx, r, path, nt.Value, bytes.NewReader(replay))
			if err != nil {
				s.unreachable(ctx, w, r, a, api, err)
				return
			}
			head, complete, err = peek(resp.Body)
			class, _ = classify(resp.StatusCode, head, complete)
		}
	}
	defer resp.Body.Close()
	if err != nil {
		s.unreachable(ctx, w, r, a, api, err)
		return
	}
	s.call(a, api, class)
	copyHeader(w.Header(), resp.Header)
	switch {
	case complete:
		w.Header().Set("Content-Length", strconv.Itoa(len(head)))
	case resp.ContentLength >= 0:
		w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(head)
	if !complete {
		_, _ = io.Copy(w, resp.Body)
	}
}

// readPrefix reads up to limit bytes of body. When the body ends within
// them it returns them as replay (the body may be sent twice); otherwise it
// returns a reader of the whole body, streamed, and no replay.
func readPrefix(body io.Reader, limit int64) (io.Reader, []byte, error) {
	buf, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, nil, err
	}
	if int64(len(buf)) <= limit {
		return bytes.NewReader(buf), buf, nil
	}
	return io.MultiReader(bytes.NewReader(buf), body), nil, nil
}

// peek reads up to peekLimit bytes of an answer; complete is true when that
// was all of it.
func peek(body io.Reader) (head []byte, complete bool, err error) {
	head, err = io.ReadAll(io.LimitReader(body, peekLimit+1))
	if err != nil {
		return nil, false, err
	}
	if len(head) > peekLimit {
		return head, false, nil
	}
	return head, true, nil
}

func (s *Service) bodyFailed(w http.ResponseWriter, r *http.Request, err error) {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		apierror.Write(w, r, apierror.BodyTooLarge, "the body is larger than wechat_api.max_body")
		return
	}
	apierror.Write(w, r, apierror.BadRequest, "the request body could not be read")
}

func (s *Service) unreachable(ctx context.Context, w http.ResponseWriter, r *http.Request, a *appToken, api string, err error) {
	s.call(a, api, "unreachable")
	if r.Context().Err() != nil {
		return
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		apierror.Write(w, r, apierror.BodyTooLarge, "the body is larger than wechat_api.max_body")
		return
	}
	// The URL of the call holds the token: only the cause is logged.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	s.opts.Log.Warn("WeChat API call failed", "app", a.name, "api", api, "error", err.Error())
	if ctx.Err() != nil {
		apierror.Write(w, r, apierror.UpstreamTimeout, "WeChat did not answer within wechat_api.timeout")
		return
	}
	apierror.Write(w, r, apierror.UpstreamDown, "WeChat could not be reached")
}

func (s *Service) call(a *appToken, api, class string) {
	if m := s.opts.Metrics; m != nil {
		m.Call(a.name, api, class)
	}
}

// send makes one call to WeChat: the app's method, path, query (with the
// token set) and headers, minus the hop-by-hop ones.
func (s *Service) send(ctx context.Context, r *http.Request, path, tok string, body io.Reader) (*http.Response, error) {
	u := s.base + path
	if q := withToken(r.URL.RawQuery, tok); q != "" {
		u += "?" + q
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u, body)
	if err != nil {
		return nil, err
	}
	copyHeader(req.Header, r.Header)
	req.Header.Del(appHeader)
	// The transport asks for gzip itself and decompresses, so that an
	// error object can be read.
	req.Header.Del("Accept-Encoding")
	if r.ContentLength >= 0 {
		req.ContentLength = r.ContentLength
	}
	if r.ContentLength == 0 || r.Body == http.NoBody {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	return s.client.Do(req)
}

// withToken replaces any access_token in a raw query with tok, keeping the
// other pairs as the app wrote them.
func withToken(raw, tok string) string {
	var b strings.Builder
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		// Compared decoded: WeChat would read access%5Ftoken as access_token.
		k, _, _ := strings.Cut(pair, "=")
		if dk, err := url.QueryUnescape(k); pair == "" || k == "access_token" || err == nil && dk == "access_token" {
			continue
		}
		b.WriteString(pair)
		b.WriteByte('&')
	}
	b.WriteString("access_token=")
	b.WriteString(url.QueryEscape(tok))
	return b.String()
}

// hopHeaders belong to one connection (RFC 9110 section 7.6.1), or to the
// proxy hop.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization",
	"Proxy-Authenticate", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = append([]string(nil), vs...)
	}
	for _, f := range src.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			dst.Del(strings.TrimSpace(name))
		}
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
	dst.Del("Content-Length")
}
