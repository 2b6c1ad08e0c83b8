// Package webhook owns the verifiers of platform callbacks (WeChat message
// push, WeChat Pay API v3 notifications, Alipay asynchronous notifications):
// a Verifier compiled once per route that checks the platform's signature
// before a callback reaches the upstream, answers the platform in its own
// failure format, and passes the original body on unchanged.
package webhook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/config"
	"edge/internal/metrics"
	"edge/internal/reqctx"
)

// DefaultMaxBody bounds the body read when the gateway passes no limit:
// callbacks are small, and an unbounded read is never acceptable.
const DefaultMaxBody = 1 << 20

// Options are what the gateway knows about the route beyond its callback
// settings.
type Options struct {
	// Route is the route's name; it labels the metrics.
	Route string
	// Dir is the config file's directory; relative key paths resolve there.
	Dir string
	// MaxBody is the route's max_body; 0 or less means DefaultMaxBody.
	MaxBody int64
	// Now is the clock of the timestamp windows; nil means time.Now.
	Now func() time.Time
	// Metrics counts verified and rejected callbacks; required.
	Metrics *metrics.Webhook
}

// New compiles a route's callback verification: keys are loaded and decoded
// here, once, so the request path only verifies. It is an error to call it
// for a route whose verify is empty.
func New(cb config.RouteCallback, opts Options) (*Verifier, error) {
	if opts.Metrics == nil {
		return nil, errors.New("webhook: metrics are required")
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case cb.Verify == config.VerifyWechatPush && cb.WechatPush != nil:
		return newWechatPush(cb.WechatPush, opts)
	case cb.Verify == config.VerifyWechatPayV3 && cb.WechatPay != nil:
		return newWechatPay(cb.WechatPay, opts)
	case cb.Verify == config.VerifyAlipay && cb.Alipay != nil:
		return newAlipay(cb.Alipay, opts)
	default:
		return nil, fmt.Errorf("route %q: verify %q has no matching settings table", opts.Route, cb.Verify)
	}
}

// Verifier is one route's compiled callback verification: exactly one of
// its fields is set.
type Verifier struct {
	push *wechatPush
	// body verifies WeChat Pay and Alipay, whose checks need the whole body.
	body *bodyVerifier
}

// Check verifies the callback r. It reports whether r goes on to the
// upstream, with the verified body in place of the one read; if not, it has
// answered: a rejection in the platform's own format, or WeChat message
// push's URL check, which edge answers itself.
func (v *Verifier) Check(w http.ResponseWriter, r *http.Request) bool {
	if v.push != nil {
		return v.push.check(w, r)
	}
	return v.body.check(w, r)
}

// reason is why a callback was rejected: a fixed word for the access log
// (reqctx.Info.Reason) and the metrics.
type reason uint8

const (
	reasonNone reason = iota
	reasonBodyTooLarge
	reasonBadRequest // wrong method or content type, missing parameters
	reasonBadBody    // body not parseable (no Encrypt, malformed form)
	reasonBadSignature
	reasonStaleTimestamp
	reasonUnknownSerial
	reasonSignTest // the platform's deliberate WECHATPAY/SIGNTEST/ probe
	reasonSignType // Alipay sign_type not allowed on this route
	reasonDecrypt  // signed correctly but does not decrypt: wrong encoding_aes_key
	reasonWrongApp
	numReasons
)

var reasonWords = [numReasons]string{
	reasonBodyTooLarge:   "body_too_large",
	reasonBadRequest:     "bad_request",
	reasonBadBody:        "bad_body",
	reasonBadSignature:   "bad_signature",
	reasonStaleTimestamp: "stale_timestamp",
	reasonUnknownSerial:  "unknown_serial",
	reasonSignTest:       "sign_test",
	reasonSignType:       "sign_type",
	reasonDecrypt:        "decrypt_failed",
	reasonWrongApp:       "wrong_appid",
}

func (r reason) String() string { return reasonWords[r] }

// counters holds a route's metrics, resolved at compile time so a request
// does no label lookup. Only the reasons a kind can produce get a series.
type counters struct {
	verified prometheus.Counter
	rejected [numReasons]prometheus.Counter
}

func newCounters(opts Options, kind string, reasons ...reason) *counters {
	c := &counters{verified: opts.Metrics.Verified(opts.Route, kind)}
	for _, why := range reasons {
		c.rejected[why] = opts.Metrics.Rejected(opts.Route, kind, why.String())
	}
	return c
}

// reject counts the rejection and records its reason for the access log;
// the caller writes the platform's failure answer.
func (c *counters) reject(r *http.Request, why reason) {
	if ctr := c.rejected[why]; ctr != nil {
		ctr.Inc()
	}
	if info := reqctx.FromRequest(r); info != nil {
		info.Reason = why.String()
	}
}

var errTooLarge = errors.New("body too large")

// readBody reads at most max bytes, sizing the buffer from Content-Length
// so a well-behaved client costs one allocation.
func readBody(r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength > max {
		return nil, errTooLarge
	}
	size := int64(512)
	if r.ContentLength >= 0 {
		// One spare byte lets the final read see EOF without growing.
		size = r.ContentLength + 1
	}
	buf := make([]byte, 0, min(size, max+1))
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Body.Read(buf[len(buf):min(int64(cap(buf)), max+1)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > max {
			return nil, errTooLarge
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return buf, nil
			}
			return nil, fmt.Errorf("reading callback body: %w", err)
		}
	}
}

// bodyReader hands the verified bytes to the next handler; one allocation
// instead of io.NopCloser's two.
type bodyReader struct{ bytes.Reader }

func (*bodyReader) Close() error { return nil }

// bodyVerifier is a callback kind whose check needs the whole body.
type bodyVerifier struct {
	verify func(r *http.Request) ([]byte, reason)
	// fail writes the platform's own failure answer.
	fail func(w http.ResponseWriter, why reason)
	c    *counters
}

// check passes requests whose body verified on, with the body restored
// byte for byte and without the query string; the others get the
// platform's failure answer and go no further.
func (v *bodyVerifier) check(w http.ResponseWriter, r *http.Request) bool {
	body, why := v.verify(r)
	if why != reasonNone {
		v.c.reject(r, why)
		v.fail(w, why)
		return false
	}
	setBody(r, body)
	// The signature covers the body (and WeChat Pay's own headers), never
	// the query, and both platforms call a notify URL without one: a
	// framework that merges query and form parameters would otherwise
	// read ?refund_amount=999 as the platform's.
	r.URL.RawQuery = ""
	r.URL.ForceQuery = false
	v.c.verified.Inc()
	return true
}

// setBody hands b to the next handler as the body, with framing that
// matches it, so the proxy sends a Content-Length the upstream can trust.
func setBody(r *http.Request, b []byte) {
	br := &bodyReader{}
	br.Reset(b)
	r.Body = br
	r.ContentLength = int64(len(b))
	r.TransferEncoding = nil
}

// replaceBody is setBody for a body that differs from what the client sent:
// the Content-Length header changes too, for handlers that read it.
func replaceBody(r *http.Request, b []byte) {
	setBody(r, b)
	r.Header["Content-Length"] = []string{strconv.Itoa(len(b))}
}
