package proxy

import (
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"edge/internal/httphdr"
)

// Encoding is a content coding edge compresses answers with.
type Encoding uint8

const (
	EncodingNone Encoding = iota
	EncodingGzip
	EncodingBrotli
	EncodingZstd
)

// String is the coding's token in Content-Encoding.
func (e Encoding) String() string {
	return encodingTokens[e]
}

var encodingTokens = [...]string{EncodingNone: "", EncodingGzip: "gzip", EncodingBrotli: "br", EncodingZstd: "zstd"}

// ParseEncoding reads a config name: "gzip", "br" or "zstd".
func ParseEncoding(s string) (Encoding, bool) {
	for e, tok := range encodingTokens {
		if tok != "" && tok == s {
			return Encoding(e), true
		}
	}
	return EncodingNone, false
}

// GzipOptions configures response compression.
type GzipOptions struct {
	// Encodings are the codings offered, the server's preference first: it
	// breaks ties between codings the client weighs equally. Empty means
	// gzip alone.
	Encodings []Encoding
	// Level is the gzip level, 1 (fastest) to 9 (smallest); any other
	// value means 5, Caddy's default: on API JSON and minified JavaScript
	// its output is within 1% of level 9's and about 10% smaller than
	// level 1's.
	Level int
	// MinSize is the smallest body compressed, in bytes; 0 or less means
	// 1024. Smaller bodies gain less than the gzip framing and CPU cost.
	// Bodies of unknown length are buffered up to MinSize to decide.
	MinSize int
}

const (
	gzipDefaultLevel   = 5
	gzipDefaultMinSize = 1024
)

// brotliLevel is the brotli quality near gzip level 5 in CPU: on 40 KB of
// API JSON, brotli 4 and zstd's default level each came out about a
// quarter smaller than gzip 5 for about 1.3 to 1.6 times its time, while
// brotli 5 took twice gzip's time for 13% more.
const brotliLevel = 4

// gzipWriters holds idle *gzipPooled per gzip level, brotliWriters and
// zstdWriters those of the other codings; a writer carries hundreds of KB
// of compressor state, so making one per response would dominate.
var (
	gzipWriters   [gzip.BestCompression + 1]sync.Pool
	brotliWriters sync.Pool
	zstdWriters   sync.Pool
)

// encoder is what gzip, brotli and zstd writers have in common.
type encoder interface {
	io.Writer
	Flush() error
	Close() error
	Reset(io.Writer)
}

var (
	_ encoder = (*gzip.Writer)(nil)
	_ encoder = (*brotli.Writer)(nil)
	_ encoder = (*zstd.Encoder)(nil)
)

// gzipPooled pairs a writer with the sink it writes to. Resetting a writer
// clears its hash tables, which costs more than compressing a small body,
// so it is done once per response (when taken); the sink lets a pooled
// writer drop the finished response without a second Reset.
type gzipPooled struct {
	gz   encoder
	enc  Encoding
	sink gzipSink
}

type gzipSink struct{ w io.Writer }

func (s *gzipSink) Write(p []byte) (int, error) { return s.w.Write(p) }

// gzipCopyBufs serves ReadFrom, which http.ServeContent and io.Copy use; without
// it every copy through the wrapper would allocate io.Copy's 32 KB buffer.
var gzipCopyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

type gzipHandler struct {
	next    http.Handler
	level   int
	minSize int
	offered []Encoding
	bufs    sync.Pool // *[]byte of cap minSize, for bodies not yet decided
}

// Gzip compresses next's responses with the offered coding the client's
// Accept-Encoding weighs highest (a q=0 refusal is honoured; equal weights
// go to the first offered), when the response has no Content-Encoding, its type is
// compressible, its status is not 1xx, 204, 206 or 304, the request is not
// HEAD, and the body is at least MinSize bytes. Compressed responses lose
// Content-Length and Accept-Ranges, and a strong ETag becomes weak.
// Vary: Accept-Encoding is added to every response of a compressible type,
// compressed or not, so shared caches keep the variants apart.
//
// text/event-stream is never compressed: a mini-program reading chunks
// with wx.request's enableChunked gets no incremental gunzip, so events
// must travel as plain text. Other responses may stream: Flush pushes the
// compressed bytes written so far to the client. Upgrade requests pass
// straight through, and the writer's Unwrap lets http.ResponseController
// reach the connection for hijacking and deadlines.
func Gzip(next http.Handler, opts GzipOptions) http.Handler {
	h := &gzipHandler{next: next, level: opts.Level, minSize: opts.MinSize, offered: opts.Encodings}
	if len(h.offered) == 0 {
		h.offered = gzipOnly
	}
	if h.level < gzip.BestSpeed || h.level > gzip.BestCompression {
		h.level = gzipDefaultLevel
	}
	if h.minSize <= 0 {
		h.minSize = gzipDefaultMinSize
	}
	h.bufs.New = func() any { b := make([]byte, 0, h.minSize); return &b }
	return h
}

func (h *gzipHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.Header["Upgrade"]; ok || r.Method == http.MethodConnect {
		h.next.ServeHTTP(w, r)
		return
	}
	gw := &gzipWriter{rw: w, h: h}
	if r.Method != http.MethodHead {
		gw.enc = Negotiate(r.Header["Accept-Encoding"], h.offered)
	}
	h.next.ServeHTTP(gw, r)
	// Not deferred: a panic (http.ErrAbortHandler from the reverse proxy)
	// aborts the connection, so there is nothing left to finish and the
	// pooled writer is simply dropped.
	gw.finish()
}

type gzipState uint8

const (
	gzipStateNew       gzipState = iota // no status yet
	gzipStateBuffering                  // status held back, body buffered until it reaches minSize
	gzipStateGzip                       // headers sent, body goes through gz
	gzipStatePlain                      // headers sent (or left to rw), body goes to rw as is
)

type gzipWriter struct {
	rw     http.ResponseWriter
	h      *gzipHandler
	enc    Encoding // EncodingNone: the client accepts none offered
	state  gzipState
	status int
	buf    *[]byte
	gz     *gzipPooled
}

var (
	_ http.Flusher  = (*gzipWriter)(nil)
	_ io.ReaderFrom = (*gzipWriter)(nil)
)

func (w *gzipWriter) Header() http.Header { return w.rw.Header() }

// Unwrap is for http.ResponseController.
func (w *gzipWriter) Unwrap() http.ResponseWriter { return w.rw }

func (w *gzipWriter) WriteHeader(status int) {
	if w.state != gzipStateNew {
		return
	}
	if status < 200 {
		// 1xx (103 Early Hints) may be followed by the final status; 101
		// means the connection now belongs to another protocol.
		if status == http.StatusSwitchingProtocols {
			w.state = gzipStatePlain
		}
		w.rw.WriteHeader(status)
		return
	}
	w.status = status
	hdr := w.rw.Header()
	if !gzipEligible(status, hdr) {
		w.sendPlain(false)
		return
	}
	_, typed := hdr["Content-Type"]
	if w.enc == EncodingNone {
		w.sendPlain(typed)
		return
	}
	if cl, ok := gzipContentLength(hdr); ok {
		if cl < int64(w.h.minSize) {
			w.sendPlain(typed)
			return
		}
		if typed {
			w.startGzip()
			return
		}
	}
	w.state = gzipStateBuffering
	w.buf = w.h.bufs.Get().(*[]byte)
}

func (w *gzipWriter) Write(p []byte) (int, error) {
	if w.state == gzipStateNew {
		w.WriteHeader(http.StatusOK)
	}
	switch w.state {
	case gzipStateGzip:
		return w.gz.gz.Write(p)
	case gzipStateBuffering:
		b := *w.buf
		if len(b)+len(p) < w.h.minSize {
			*w.buf = append(b, p...)
			return len(p), nil
		}
		w.decide(p)
		return w.Write(p)
	default:
		return w.rw.Write(p)
	}
}

// ReadFrom lets a plain response keep the connection's own ReadFrom
// (sendfile on cleartext HTTP/1) and gives compressed ones a pooled buffer.
func (w *gzipWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.state == gzipStateNew {
		w.WriteHeader(http.StatusOK)
	}
	if rf, ok := w.rw.(io.ReaderFrom); ok && w.state == gzipStatePlain {
		return rf.ReadFrom(src)
	}
	buf := gzipCopyBufs.Get().(*[32 << 10]byte)
	defer gzipCopyBufs.Put(buf)
	return io.CopyBuffer(gzipWriterOnly{w}, src, buf[:])
}

// gzipWriterOnly hides ReadFrom so io.CopyBuffer does not call it again.
type gzipWriterOnly struct{ io.Writer }

// Flush sends what was written so far. A response still being buffered
// is taken to be a stream and is compressed from here on, whatever its
// final size.
func (w *gzipWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush for http.ResponseController, reporting the error.
func (w *gzipWriter) FlushError() error {
	if w.state == gzipStateNew {
		w.WriteHeader(http.StatusOK)
	}
	if w.state == gzipStateBuffering {
		w.decide(nil)
	}
	if w.state == gzipStateGzip {
		if err := w.gz.gz.Flush(); err != nil {
			return err
		}
	}
	if err := http.NewResponseController(w.rw).Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// decide ends buffering: the body reaches minSize with p, or the handler
// flushed. A body without a Content-Type is sniffed here, because net/http
// would otherwise sniff the compressed bytes and call them
// application/x-gzip.
func (w *gzipWriter) decide(p []byte) {
	hdr := w.rw.Header()
	if _, ok := hdr["Content-Type"]; !ok {
		var head [512]byte
		n := copy(head[:], *w.buf)
		n += copy(head[n:], p)
		if n == 0 {
			w.flushPlain(false)
			return
		}
		ct := http.DetectContentType(head[:n])
		hdr["Content-Type"] = []string{ct}
		if !gzipCompressibleType(ct) {
			w.flushPlain(false)
			return
		}
	}
	w.startGzip()
}

func (w *gzipWriter) startGzip() {
	hdr := w.rw.Header()
	delete(hdr, "Content-Length")
	delete(hdr, "Accept-Ranges")
	hdr["Content-Encoding"] = []string{w.enc.String()}
	gzipAddVary(hdr)
	if et := hdr["Etag"]; len(et) == 1 && strings.HasPrefix(et[0], `"`) {
		hdr["Etag"] = []string{"W/" + et[0]}
	}
	w.rw.WriteHeader(w.status)
	w.gz = getEncoder(w.enc, w.h.level, w.rw)
	w.state = gzipStateGzip
	if w.buf != nil {
		// Errors surface again on the handler's next Write or at finish.
		_, _ = w.gz.gz.Write(*w.buf)
		w.putBuf()
	}
}

// flushPlain sends the held status and buffered body uncompressed.
func (w *gzipWriter) flushPlain(vary bool) {
	w.sendPlain(vary)
	if len(*w.buf) > 0 {
		_, _ = w.rw.Write(*w.buf)
	}
	w.putBuf()
}

// sendPlain sends the held status for a body that is not compressed;
// vary says the body's type is compressible, so the client's
// Accept-Encoding still chose this variant.
func (w *gzipWriter) sendPlain(vary bool) {
	if vary {
		gzipAddVary(w.rw.Header())
	}
	w.state = gzipStatePlain
	w.rw.WriteHeader(w.status)
}

func (w *gzipWriter) putBuf() {
	*w.buf = (*w.buf)[:0]
	w.h.bufs.Put(w.buf)
	w.buf = nil
}

func (w *gzipWriter) finish() {
	switch w.state {
	case gzipStateBuffering:
		hdr := w.rw.Header()
		vary := true
		if _, ok := hdr["Content-Type"]; !ok {
			vary = false
			if len(*w.buf) > 0 {
				ct := http.DetectContentType(*w.buf)
				hdr["Content-Type"] = []string{ct}
				vary = gzipCompressibleType(ct)
			}
		}
		w.flushPlain(vary)
	case gzipStateGzip:
		_ = w.gz.gz.Close()
		w.gz.sink.w = nil
		encoderPool(w.gz.enc, w.h.level).Put(w.gz)
		w.gz = nil
	}
}

func encoderPool(enc Encoding, level int) *sync.Pool {
	switch enc {
	case EncodingBrotli:
		return &brotliWriters
	case EncodingZstd:
		return &zstdWriters
	}
	return &gzipWriters[level]
}

func getEncoder(enc Encoding, level int, dst io.Writer) *gzipPooled {
	if p, ok := encoderPool(enc, level).Get().(*gzipPooled); ok {
		p.sink.w = dst
		p.gz.Reset(&p.sink)
		return p
	}
	p := &gzipPooled{enc: enc, sink: gzipSink{w: dst}}
	var err error
	switch enc {
	case EncodingBrotli:
		p.gz = brotli.NewWriterLevel(&p.sink, brotliLevel)
	case EncodingZstd:
		// One goroutine-free encoder per response: concurrency 1 encodes
		// in Write itself, so nothing outlives the response.
		p.gz, err = zstd.NewWriter(&p.sink, zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	default:
		p.gz, err = gzip.NewWriterLevel(&p.sink, level)
	}
	if err != nil {
		// Gzip keeps level within gzip's range and the zstd options are
		// fixed, so this cannot happen.
		panic(err)
	}
	return p
}

// gzipEligible reports whether a response with this status and
// these headers could be compressed: a body that may carry content, not
// already encoded, of a compressible type.
func gzipEligible(status int, hdr http.Header) bool {
	switch status {
	case http.StatusNoContent, http.StatusPartialContent, http.StatusNotModified:
		return false
	}
	if ce := hdr["Content-Encoding"]; len(ce) > 0 && ce[0] != "" && !strings.EqualFold(ce[0], "identity") {
		return false
	}
	ct, ok := hdr["Content-Type"]
	if !ok {
		// Unknown until the body is sniffed.
		return true
	}
	return len(ct) > 0 && gzipCompressibleType(ct[0])
}

// gzipCompressibleType reports whether a media type is worth compressing:
// text (but not event streams), JSON, JavaScript, XML, SVG, WebAssembly,
// uncompressed fonts and icons.
func gzipCompressibleType(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	if gzipHasPrefixFold(ct, "text/") {
		return !strings.EqualFold(ct, "text/event-stream")
	}
	if gzipHasSuffixFold(ct, "+json") || gzipHasSuffixFold(ct, "+xml") {
		return true
	}
	for _, t := range gzipTypes {
		if strings.EqualFold(ct, t) {
			return true
		}
	}
	return false
}

var gzipTypes = [...]string{
	"application/json",
	"application/javascript",
	"application/x-javascript",
	"application/ecmascript",
	"application/xml",
	"application/wasm",
	"application/x-ndjson",
	"application/yaml",
	"application/x-yaml",
	"application/toml",
	"application/vnd.ms-fontobject",
	"font/ttf",
	"font/otf",
	"image/x-icon",
	"image/vnd.microsoft.icon",
	"image/bmp",
}

func gzipHasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func gzipHasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

func gzipContentLength(hdr http.Header) (int64, bool) {
	v := hdr["Content-Length"]
	if len(v) != 1 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[0], 10, 64)
	return n, err == nil && n >= 0
}

func gzipAddVary(hdr http.Header) {
	for part := range httphdr.Elements(hdr["Vary"]) {
		if part == "*" || strings.EqualFold(part, "Accept-Encoding") {
			return
		}
	}
	hdr["Vary"] = append(hdr["Vary"], "Accept-Encoding")
}

var gzipOnly = []Encoding{EncodingGzip}

// Negotiate picks the coding of offered that Accept-Encoding values weigh
// highest (RFC 9110 section 12.5.3): a coding named with q > 0, or "*" with
// q > 0 for codings not named ("x-gzip" names gzip). Equal weights go to the
// earlier in offered. EncodingNone: none is acceptable. A malformed q
// counts as 1, as most servers treat it.
func Negotiate(values []string, offered []Encoding) Encoding {
	// Weights in thousandths; -1 is not named.
	var named [len(encodingTokens)]int
	for i := range named {
		named[i] = -1
	}
	star := -1
	for elem := range httphdr.Elements(values) {
		coding, params, _ := strings.Cut(elem, ";")
		coding = strings.TrimSpace(coding)
		q := gzipQ(params)
		switch {
		case strings.EqualFold(coding, "gzip") || strings.EqualFold(coding, "x-gzip"):
			named[EncodingGzip] = max(named[EncodingGzip], q)
		case strings.EqualFold(coding, "br"):
			named[EncodingBrotli] = max(named[EncodingBrotli], q)
		case strings.EqualFold(coding, "zstd"):
			named[EncodingZstd] = max(named[EncodingZstd], q)
		case coding == "*":
			star = max(star, q)
		}
	}
	best, bestQ := EncodingNone, 0
	for _, e := range offered {
		q := named[e]
		if q < 0 {
			q = star
		}
		if q > bestQ {
			best, bestQ = e, q
		}
	}
	return best
}

// gzipQ is the q of one Accept-Encoding element's parameters in
// thousandths: 1000 when absent or malformed.
func gzipQ(params string) int {
	for len(params) > 0 {
		var p string
		if i := strings.IndexByte(params, ';'); i >= 0 {
			p, params = params[:i], params[i+1:]
		} else {
			p, params = params, ""
		}
		name, val, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		return parseQ(strings.TrimSpace(val))
	}
	return 1000
}

// parseQ reads a qvalue: "0", "0.", "0.d{1,3}", "1", "1." or "1.0{1,3}".
func parseQ(v string) int {
	if len(v) == 0 || len(v) > 5 || (v[0] != '0' && v[0] != '1') {
		return 1000
	}
	q := int(v[0]-'0') * 1000
	if len(v) == 1 {
		return q
	}
	if v[1] != '.' {
		return 1000
	}
	scale := 100
	for i := 2; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 1000
		}
		q += int(c-'0') * scale
		scale /= 10
	}
	if q > 1000 {
		return 1000
	}
	return q
}
