// Package apierror writes the answers edge makes itself, in the shape of
// docs/signature.md: {"code":..,"msg":..,"request_id":..}.
package apierror

import (
	"net/http"
	"strconv"
	"sync"

	"edge/internal/reqctx"
)

// Code is one of edge's error codes; its first three digits are the
// HTTP status.
type Code int

// The codes of docs/signature.md, which says what a client does about each:
// a new one is added there in the same change.
const (
	// BadRequest: a request edge will not guess the meaning of (a path
	// other servers read differently, a malformed login body, broken
	// chunked framing).
	BadRequest        Code = 40001
	AuthMissing       Code = 40101 // Authorization missing, token malformed or forged
	TokenExpired      Code = 40102
	BadSignature      Code = 40103 // signature header missing/malformed/mismatch, unsigned payload refused
	StaleTimestamp    Code = 40104
	Replayed          Code = 40105
	LoginCodeRejected Code = 40106 // the platform refused the code; a malformed login body is BadRequest
	BasicAuthFailed   Code = 40107 // auth_basic: credentials missing or wrong
	Forbidden         Code = 40301 // IP denied, banned, Referer/app check failed
	// WAFBlocked: the firewall (waf = "block") found an attack in the
	// request; the same request will always be refused.
	WAFBlocked Code = 40302
	NotFound   Code = 40401
	// RequestTimeout: the client paused longer than server.read_timeout
	// while sending a body (nginx answers 408 to a client_body_timeout as
	// well).
	RequestTimeout Code = 40801
	BodyTooLarge   Code = 41301
	RateLimited    Code = 42901
	// HeadTooLarge: the request line and headers are over
	// server.max_header_bytes; the connection is closed.
	HeadTooLarge Code = 43101
	UpstreamDown Code = 50201
	PlatformDown Code = 50202
	// Unavailable: Redis, which a check needs, does not answer and the
	// config says to refuse rather than skip the check
	// ([sessions] revocation_failure or nonce_failure = "closed"), or an
	// admin change could not be shared with the other replicas.
	Unavailable     Code = 50301
	UpstreamTimeout Code = 50401
)

// Status is the HTTP status of the code.
func (c Code) Status() int { return int(c) / 100 }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// Write sends the JSON error for code with msg. msg is plain text chosen by
// edge, never client input or a secret. The request id comes from the
// request's reqctx.Info when there is one.
func Write(w http.ResponseWriter, r *http.Request, code Code, msg string) {
	var id string
	if info := reqctx.FromRequest(r); info != nil {
		id = info.RequestID
	}
	WriteWithID(w, code, msg, id)
}

// WriteWithID is Write for callers that hold the request id themselves.
func WriteWithID(w http.ResponseWriter, code Code, msg, requestID string) {
	bp := bufPool.Get().(*[]byte)
	b := AppendJSON((*bp)[:0], code, msg, requestID)
	h := w.Header()
	h["Content-Type"] = []string{"application/json; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h["Cache-Control"] = []string{"no-store"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(code.Status())
	_, _ = w.Write(b)
	*bp = b
	bufPool.Put(bp)
}

// AppendJSON appends the error body to b.
func AppendJSON(b []byte, code Code, msg, requestID string) []byte {
	b = append(b, `{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"msg":`...)
	b = strconv.AppendQuote(b, msg)
	b = append(b, `,"request_id":`...)
	b = strconv.AppendQuote(b, requestID)
	return append(b, '}')
}
