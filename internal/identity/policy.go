package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/apierror"
	"edge/internal/config"
	"edge/internal/httphdr"
	"edge/internal/reqctx"
)

// Canonical names of the headers the upstream receives (docs/signature.md).
const (
	hdrOpenID  = "X-Wx-Openid"
	hdrAppID   = "X-Wx-Appid"
	hdrUnionID = "X-Wx-Unionid"
	hdrAuth    = "Authorization"
)

// defaultMaxBody applies when a route has no max_body (only in-process
// callers; the config always sets one).
const defaultMaxBody = 1 << 20

// maxTrustedValue bounds identity values believed from a trusted proxy.
const maxTrustedValue = 128

// StripClientIdentity removes every header a client could use to claim an
// identity or forge edge's own signature headers (httphdr.EdgeOwned). Every
// route's Policy calls it, including auth = "none", so such a header past
// the identity check is always edge's own.
func StripClientIdentity(h http.Header) {
	for k := range h {
		if httphdr.EdgeOwned(k) {
			delete(h, k)
		}
	}
}

// Policy is the compiled auth policy of one route.
type Policy struct {
	svc           *Service
	mode          string
	app           *app // nil: any configured app
	allowUnsigned bool
	forwardAuth   bool
	maxBody       int64
	referer       *refererPolicy
	jwt           *jwtVerifier
	rejected      map[apierror.Code]prometheus.Counter
}

// rejectCodes are the answers a Policy can give.
var rejectCodes = []apierror.Code{
	apierror.AuthMissing, apierror.TokenExpired, apierror.BadSignature,
	apierror.StaleTimestamp, apierror.Replayed, apierror.Forbidden, apierror.BodyTooLarge,
	apierror.Unavailable,
}

// Policy compiles a route's auth policy (config keys auth, app,
// allow_unsigned_payload, forward_authorization, referer_check,
// release_only, jwt). Every route gets one: on auth = "none" it only strips
// client identity headers. Nothing is parsed per request.
func (s *Service) Policy(rt *config.Route) (*Policy, error) {
	r := &Policy{
		svc:           s,
		mode:          rt.Auth,
		allowUnsigned: rt.AllowUnsignedPayload,
		forwardAuth:   rt.ForwardAuthorization,
		maxBody:       defaultMaxBody,
	}
	if r.mode == "" {
		r.mode = config.AuthNone
	}
	if rt.MaxBody != nil {
		r.maxBody = int64(*rt.MaxBody)
	}
	if rt.App != "" {
		a, ok := s.byName[rt.App]
		if !ok {
			return nil, fmt.Errorf("route %q: no app named %q", rt.Name, rt.App)
		}
		r.app = a
	}
	switch r.mode {
	case config.AuthNone, config.AuthTrustedHeader:
	case config.AuthToken, config.AuthSigned:
		if s.sealer == nil {
			return nil, fmt.Errorf("route %q: auth %q needs sessions.secrets", rt.Name, r.mode)
		}
	case config.AuthJWT:
		if rt.JWT == nil {
			return nil, fmt.Errorf("route %q: auth \"jwt\" needs a jwt table", rt.Name)
		}
		v, err := newJWTVerifier(rt.JWT, s.opts.Now)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", rt.Name, err)
		}
		r.jwt = v
	default:
		return nil, fmt.Errorf("route %q: unknown auth %q", rt.Name, r.mode)
	}
	if rt.RefererCheck {
		r.referer = s.refererPolicy(r.app, rt.ReleaseOnly)
	}
	if s.opts.Metrics != nil {
		r.rejected = make(map[apierror.Code]prometheus.Counter, len(rejectCodes))
		for _, c := range rejectCodes {
			r.rejected[c] = s.opts.Metrics.Rejected(rt.Name, int(c))
		}
	}
	return r, nil
}

// identity is what a policy established about the caller.
type identity struct {
	openid, unionid, appid string
}

// Check applies the policy to req, whose Info is info: it establishes the
// caller's identity, records it in info and hands it to the upstream in the
// X-WX-* headers, in place of whatever identity headers the client sent. It
// reports whether the request may go on; if not, it has answered.
func (r *Policy) Check(w http.ResponseWriter, req *http.Request, info *reqctx.Info) bool {
	if r.referer != nil && !r.referer.allows(req.Header) {
		r.reject(w, req, info, apierror.Forbidden, "this client is not allowed here")
		return false
	}
	var id identity
	code, msg := apierror.Code(0), ""
	consumedAuth := false
	switch r.mode {
	case config.AuthToken, config.AuthSigned:
		consumedAuth = true
		var sess Session
		sess, code, msg = r.session(req)
		id = identity{openid: sess.OpenID, unionid: sess.UnionID, appid: sess.AppID}
		if code == 0 && r.mode == config.AuthSigned {
			// The token is authentic, so a failure from here on is this
			// user's: bans and the access log attribute a bad signature or
			// a replay to the openid rather than to the client's address.
			id.note(info)
			code, msg = r.svc.verifySignature(req, &sess, r.allowUnsigned, r.maxBody)
		}
	case config.AuthJWT:
		consumedAuth = true
		id.openid, code, msg = r.jwtIdentity(req)
		if r.app != nil {
			id.appid = r.app.cfg.AppID
		}
	case config.AuthTrustedHeader:
		id, code, msg = r.trustedIdentity(req, info)
	}
	if code != 0 {
		r.reject(w, req, info, code, msg)
		return false
	}
	h := req.Header
	StripClientIdentity(h)
	if consumedAuth && !r.forwardAuth {
		delete(h, hdrAuth)
	}
	if id.openid != "" {
		// One backing array for the three header values.
		vals := [...]string{id.openid, id.appid, id.unionid}
		all := vals[:]
		h[hdrOpenID] = all[0:1:1]
		if id.appid != "" {
			h[hdrAppID] = all[1:2:2]
		}
		if id.unionid != "" {
			h[hdrUnionID] = all[2:3:3]
		}
		id.note(info)
	}
	return true
}

// note records the identity in the request's Info for the limits, bans and
// the access log.
func (id identity) note(info *reqctx.Info) {
	info.OpenID, info.UnionID, info.AppID = id.openid, id.unionid, id.appid
}

func (r *Policy) reject(w http.ResponseWriter, req *http.Request, info *reqctx.Info, code apierror.Code, msg string) {
	if c := r.rejected[code]; c != nil {
		c.Inc()
	}
	info.Reason = reasonWord(code)
	if r.svc.opts.OnReject != nil {
		r.svc.opts.OnReject(req, code)
	}
	apierror.Write(w, req, code, msg)
}

func reasonWord(code apierror.Code) string {
	switch code {
	case apierror.AuthMissing:
		return "auth_missing"
	case apierror.TokenExpired:
		return "token_expired"
	case apierror.BadSignature:
		return "bad_signature"
	case apierror.StaleTimestamp:
		return "stale_timestamp"
	case apierror.Replayed:
		return "replayed"
	case apierror.Forbidden:
		return "referer_refused"
	case apierror.BodyTooLarge:
		return "body_too_large"
	case apierror.Unavailable:
		return "redis_unavailable"
	}
	return "auth_failed"
}

// Bearer returns the token of a single "Authorization: Bearer <token>": the
// one reading of the header for routes and the admin listener alike.
func Bearer(h http.Header) (string, bool) {
	v := h[hdrAuth]
	if len(v) != 1 || len(v[0]) < 7 || !strings.EqualFold(v[0][:7], "bearer ") {
		return "", false
	}
	tok := strings.TrimLeft(v[0][7:], " ")
	return tok, tok != ""
}

func (r *Policy) session(req *http.Request) (Session, apierror.Code, string) {
	tok, ok := Bearer(req.Header)
	if !ok {
		return Session{}, apierror.AuthMissing, "send Authorization: Bearer <token> from the login"
	}
	sess, err := r.svc.sealer.Open(tok)
	switch {
	case errors.Is(err, ErrTokenExpired):
		return sess, apierror.TokenExpired, "the token has expired; log in again"
	case err != nil:
		return sess, apierror.AuthMissing, "the token is not valid"
	case r.app != nil && sess.AppID != r.app.cfg.AppID:
		return sess, apierror.AuthMissing, "the token belongs to another app"
	}
	if r.svc.sealer.held.has(sess.ID) {
		return sess, apierror.TokenExpired, "the token was revoked; log in again"
	}
	// The copy refused above whatever it holds; when complete, what it
	// does not hold is not revoked, and Redis is not asked.
	if r.svc.sealer.revoked == nil || r.svc.revocationLocal && r.svc.sealer.held.complete() {
		return sess, 0, ""
	}
	var revoked, checked bool
	if now := r.svc.opts.Now(); r.svc.opts.RedisGate.allow(now) {
		ctx, cancel := r.svc.redisContext(req)
		var err error
		revoked, err = r.svc.sealer.Revoked(ctx, &sess)
		r.svc.opts.RedisGate.result(ctx, now, err)
		cancel()
		checked = err == nil
	}
	switch {
	case revoked:
		return sess, apierror.TokenExpired, "the token was revoked; log in again"
	case !checked && r.svc.revocationClosed:
		return sess, apierror.Unavailable, "the revocation list cannot be checked now; try again later"
	}
	return sess, 0, ""
}

// verifySignature runs the checks of docs/signature.md after the token's,
// in the order given there. The one departure: UNSIGNED-PAYLOAD on a route that does
// not allow it is refused once the signature has matched but before the
// nonce is recorded, so a refused request never burns a nonce.
func (s *Service) verifySignature(req *http.Request, sess *Session, allowUnsigned bool, maxBody int64) (apierror.Code, string) {
	p, err := parseSigHeaders(req.Header)
	if err != nil {
		return apierror.BadSignature, "the X-Edge-Timestamp, X-Edge-Nonce and X-Edge-Signature headers are required and well formed"
	}
	now := s.opts.Now()
	skew := int64(s.skew / time.Second)
	if d := now.Unix() - p.timestamp; d > skew || d < -skew {
		return apierror.StaleTimestamp, "X-Edge-Timestamp is too far from the server's clock"
	}
	sg := signerPool.Get().(*signer)
	defer signerPool.Put(sg)
	var bodyHash [2 * sha256.Size]byte
	if p.unsigned {
		copy(bodyHash[:], unsignedPayload)
	} else {
		code, msg := readAndHashBody(req, sg, maxBody, &bodyHash)
		if code != 0 {
			return code, msg
		}
	}
	key := sess.appendSignKey(sg.key[:0])
	hashLen := 2 * sha256.Size
	if p.unsigned {
		hashLen = len(unsignedPayload)
	}
	sum, ok := sg.sign(key, req.Method, signPath(req), req.URL.RawQuery, p.tsRaw, p.nonce, bodyHash[:hashLen])
	if !ok || !equalMAC(&sum, &p.signature) {
		return apierror.BadSignature, "the signature does not match the request"
	}
	if p.unsigned && !allowUnsigned {
		return apierror.BadSignature, "this route requires the body's hash; UNSIGNED-PAYLOAD is not allowed"
	}
	// A shared store that fails falls back to this replica's memory (the
	// gate logs the outage once), unless nonce_failure is closed.
	ctx, cancel := s.redisContext(req)
	fresh, err := s.opts.Nonces.Record(ctx, nonceKey(sess.ID, p.nonce), now, 2*s.skew)
	cancel()
	switch {
	case !fresh:
		return apierror.Replayed, "this nonce was already used"
	case err != nil && s.nonceClosed:
		return apierror.Unavailable, "the shared nonce store cannot be checked now; try again later with a new nonce"
	}
	return 0, ""
}

// readAndHashBody reads the body (at most maxBody bytes), writes the hex
// SHA-256 of it into out and gives the request a replayable copy for the
// upstream.
func readAndHashBody(req *http.Request, sg *signer, maxBody int64, out *[2 * sha256.Size]byte) (apierror.Code, string) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		copy(out[:], emptyBodyHash)
		return 0, ""
	}
	if req.ContentLength > maxBody {
		return apierror.BodyTooLarge, "the request body is too large"
	}
	body, tooLarge, err := readBody(req.Body, req.ContentLength, maxBody)
	switch {
	case tooLarge:
		return apierror.BodyTooLarge, "the request body is too large"
	case err != nil:
		return apierror.BadSignature, "the request body could not be read"
	}
	_ = req.Body.Close()
	sg.body.Reset()
	sg.body.Write(body)
	hex.Encode(out[:], sg.body.Sum(sg.sum[:0]))
	req.Body = &replayBody{Reader: bytes.NewReader(body)}
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return &replayBody{Reader: bytes.NewReader(body)}, nil }
	return 0, ""
}

// readBody reads all of r, at most limit bytes, in one allocation when the
// length is declared (the usual case) and doubling otherwise.
func readBody(r io.Reader, declared, limit int64) (body []byte, tooLarge bool, err error) {
	size := int64(512)
	if declared > 0 {
		size = declared + 1 // room to see a body longer than declared
	}
	buf := make([]byte, 0, min(size, limit+1))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, true, nil
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), int(limit)+1)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, true, nil
		}
		if err == io.EOF {
			return buf, false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// replayBody is the already read body handed on to the upstream.
type replayBody struct{ *bytes.Reader }

func (*replayBody) Close() error { return nil }

func (r *Policy) trustedIdentity(req *http.Request, info *reqctx.Info) (identity, apierror.Code, string) {
	if !info.PeerTrusted {
		return identity{}, apierror.AuthMissing, "this route accepts only requests relayed by a trusted proxy"
	}
	h := req.Header
	openid, ok := single(h, hdrOpenID)
	if !ok || !validTrustedValue(openid) {
		return identity{}, apierror.AuthMissing, "the trusted proxy sent no valid X-WX-OPENID"
	}
	id := identity{openid: openid}
	if v, ok := single(h, hdrUnionID); ok && validTrustedValue(v) {
		id.unionid = v
	}
	if v, ok := single(h, hdrAppID); ok && validTrustedValue(v) {
		id.appid = v
	} else if r.app != nil {
		id.appid = r.app.cfg.AppID
	}
	return id, 0, ""
}

func validTrustedValue(s string) bool {
	if s == "" || len(s) > maxTrustedValue {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func (r *Policy) jwtIdentity(req *http.Request) (string, apierror.Code, string) {
	tok, ok := Bearer(req.Header)
	if !ok {
		return "", apierror.AuthMissing, "send Authorization: Bearer <token>"
	}
	openid, err := r.jwt.verify(tok)
	switch {
	case errors.Is(err, ErrTokenExpired):
		return "", apierror.TokenExpired, "the token has expired"
	case err != nil:
		return "", apierror.AuthMissing, "the token is not valid"
	}
	return openid, 0, ""
}

// refererPolicy is the WeChat Referer check of one route:
// https://servicewechat.com/{appid}/{version}/page-frame.html
type refererPolicy struct {
	appids      []string
	releaseOnly bool
}

const wechatRefererPrefix = "https://servicewechat.com/"

func (s *Service) refererPolicy(a *app, releaseOnly bool) *refererPolicy {
	p := &refererPolicy{releaseOnly: releaseOnly}
	if a != nil {
		p.appids = []string{a.cfg.AppID}
		return p
	}
	for _, a := range s.apps {
		p.appids = append(p.appids, a.cfg.AppID)
	}
	return p
}

func (p *refererPolicy) allows(h http.Header) bool {
	ref, ok := single(h, "Referer")
	if !ok {
		return false
	}
	rest, ok := strings.CutPrefix(ref, wechatRefererPrefix)
	if !ok {
		return false
	}
	appid, rest, ok1 := strings.Cut(rest, "/")
	version, page, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || page != "page-frame.html" || version == "" {
		return false
	}
	known := false
	for _, id := range p.appids {
		known = known || id == appid
	}
	if !known {
		return false
	}
	if p.releaseOnly {
		if version == "0" {
			return false
		}
		for i := 0; i < len(version); i++ {
			if version[i] < '0' || version[i] > '9' {
				return false
			}
		}
	}
	return true
}
