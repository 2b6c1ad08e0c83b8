package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"gopkg.in/natefinch/lumberjack.v2"

	"edge/internal/config"
	"edge/internal/reqctx"
)

// accessLog writes one JSON line per request. Lines are built by hand into a
// pooled buffer (no reflection, no map) and written through a buffered
// writer flushed a few times a second, so logging costs no syscall per
// request, with the fields of log.access_fields. The query string is logged
// with the values of log.mask_query names replaced by ***: login codes,
// tokens and phone numbers stay out of log files that many people can read.
type accessLog struct {
	mu   sync.Mutex
	out  io.Writer
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

func newAccessLog(out io.Writer) *accessLog {
	a := &accessLog{out: out, w: bufio.NewWriterSize(out, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go a.flushLoop()
	return a
}

// accessWriter is standard output, or the rotating file of log.access_file.
func accessWriter(lc config.Log, stdout io.Writer) (io.Writer, error) {
	if lc.AccessFile == "" {
		return stdout, nil
	}
	f, err := os.OpenFile(lc.AccessFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening log.access_file: %w", err)
	}
	f.Close()
	return &lumberjack.Logger{
		Filename:   lc.AccessFile,
		MaxSize:    int(max(lc.AccessMaxSize>>20, 1)),
		MaxBackups: lc.AccessMaxBackups,
		LocalTime:  false,
	}, nil
}

// reopen flushes and closes the file so the next line opens the path
// again: after logrotate moved the old file away, that makes a new one.
func (a *accessLog) reopen() {
	a.mu.Lock()
	defer a.mu.Unlock()
	_ = a.w.Flush()
	if f, ok := a.out.(*lumberjack.Logger); ok {
		_ = f.Close()
	}
}

func (a *accessLog) flushLoop() {
	defer close(a.done)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			a.flush()
			return
		case <-t.C:
			a.flush()
		}
	}
}

func (a *accessLog) flush() {
	a.mu.Lock()
	_ = a.w.Flush()
	a.mu.Unlock()
}

// close flushes, stops the flusher and closes the file.
func (a *accessLog) close() {
	close(a.stop)
	<-a.done
	if f, ok := a.out.(*lumberjack.Logger); ok {
		_ = f.Close()
	}
}

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// accessFormat is the compiled [log] access_fields and mask_query, part
// of the snapshot.
type accessFormat struct {
	fields []accessField
	// text, when set (log.access_format), writes lines from this template
	// instead of JSON with fields.
	text []textPart
	// mask are the lowercased query names whose values are hidden.
	mask []string
}

// textPart is a piece of access_format: literal text, or (empty text) the
// value of field.
type textPart struct {
	text  string
	field accessField
}

type accessField uint8

// The fields a line may carry, in config.AccessFields' names. upstream,
// target and upstream_ms appear only on proxied requests, openid only when
// verified, reason only when edge answered itself, waf and waf_rules only
// on routes with the firewall and when rules matched, query only when there
// is one, user_agent and referer only when sent.
const (
	fieldTime accessField = iota
	fieldRequestID
	fieldClientIP
	fieldMethod
	fieldHost
	fieldPath
	fieldQuery
	fieldProto
	fieldStatus
	fieldBytes
	fieldDuration
	fieldRoute
	fieldUpstream
	fieldTarget
	fieldUpstreamMS
	fieldOpenID
	fieldReason
	fieldWAF
	fieldWAFRules
	fieldCache
	fieldUserAgent
	fieldReferer
	nFields
	// What only access_format writes, in config.AccessFormatExtras' order.
	fieldRequest
	fieldRequestURI
	fieldTimeLocal
	fieldRequestTime
	fieldUpstreamTime
)

// fieldKeys are the fields' JSON keys with the separator before them,
// indexed like config.AccessFields.
var fieldKeys = [nFields]string{
	`,"time":`, `,"request_id":`, `,"client_ip":`, `,"method":`, `,"host":`, `,"path":`,
	`,"query":`, `,"proto":`, `,"status":`, `,"bytes":`, `,"duration_ms":`, `,"route":`,
	`,"upstream":`, `,"target":`, `,"upstream_ms":`, `,"openid":`, `,"reason":`,
	`,"waf":`, `,"waf_rules":`, `,"cache":`, `,"user_agent":`, `,"referer":`,
}

// compileAccessFormat maps the validated field names to their fields.
func compileAccessFormat(lc config.Log) *accessFormat {
	f := &accessFormat{}
	for _, name := range lc.AccessFields {
		f.fields = append(f.fields, accessField(slices.Index(config.AccessFields, name)))
	}
	// Validated already: an error cannot happen here.
	parts, _ := config.ParseAccessFormat(lc.AccessFormat)
	for _, p := range parts {
		fd := fieldRequest + accessField(slices.Index(config.AccessFormatExtras, p.Var))
		if i := slices.Index(config.AccessFields, p.Var); i >= 0 {
			fd = accessField(i)
		}
		f.text = append(f.text, textPart{text: p.Text, field: fd})
	}
	for _, n := range lc.MaskQuery {
		f.mask = append(f.mask, strings.ToLower(n))
	}
	return f
}

func (a *accessLog) write(r *http.Request, info *reqctx.Info, status int, bytes int64, elapsed time.Duration, f *accessFormat) {
	bp := lineBufs.Get().(*[]byte)
	b := appendAccessLine((*bp)[:0], r, info, status, bytes, elapsed, f)
	a.mu.Lock()
	_, _ = a.w.Write(b)
	a.mu.Unlock()
	*bp = b
	lineBufs.Put(bp)
}

// appendAccessLine writes every field with a comma before it, then turns
// the first comma into the opening brace: fields that are absent for this
// request need no bookkeeping.
func appendAccessLine(b []byte, r *http.Request, info *reqctx.Info, status int, bytes int64, elapsed time.Duration, f *accessFormat) []byte {
	if f.text != nil {
		return appendTextLine(b, r, info, status, bytes, elapsed, f)
	}
	start := len(b)
	for _, fd := range f.fields {
		switch fd {
		case fieldTime:
			b = append(append(b, fieldKeys[fd]...), '"')
			b = append(info.Start.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00"), '"')
		case fieldRequestID:
			b = appendJSONString(append(b, fieldKeys[fd]...), info.RequestID)
		case fieldClientIP:
			b = append(append(b, fieldKeys[fd]...), '"')
			if info.ClientIP.IsValid() {
				b = info.ClientIP.AppendTo(b)
			}
			b = append(b, '"')
		case fieldMethod:
			b = appendJSONString(append(b, fieldKeys[fd]...), r.Method)
		case fieldHost:
			b = appendJSONString(append(b, fieldKeys[fd]...), r.Host)
		case fieldPath:
			b = appendJSONString(append(b, fieldKeys[fd]...), r.URL.Path)
		case fieldQuery:
			if r.URL.RawQuery != "" {
				b = append(append(b, fieldKeys[fd]...), '"')
				b = append(appendMaskedQuery(b, r.URL.RawQuery, f.mask, appendJSONChars), '"')
			}
		case fieldProto:
			b = appendJSONString(append(b, fieldKeys[fd]...), r.Proto)
		case fieldStatus:
			b = strconv.AppendInt(append(b, fieldKeys[fd]...), int64(status), 10)
		case fieldBytes:
			b = strconv.AppendInt(append(b, fieldKeys[fd]...), bytes, 10)
		case fieldDuration:
			b = appendMS(append(b, fieldKeys[fd]...), elapsed)
		case fieldRoute:
			b = appendJSONString(append(b, fieldKeys[fd]...), info.Route)
		case fieldUpstreamMS:
			if info.Target != "" {
				b = appendMS(append(b, fieldKeys[fd]...), info.UpstreamDuration)
			}
		default:
			if v := optionalField(fd, r, info); v != "" {
				b = appendJSONString(append(b, fieldKeys[fd]...), v)
			}
		}
	}
	if len(b) > start {
		b[start] = '{'
	} else {
		b = append(b, '{')
	}
	return append(b, "}\n"...)
}

// appendTextLine writes a line of access_format. A value that is absent
// is "-", as nginx writes it; values are escaped (appendLogText) so that
// no request can start a line of its own.
func appendTextLine(b []byte, r *http.Request, info *reqctx.Info, status int, bytes int64, elapsed time.Duration, f *accessFormat) []byte {
	for _, p := range f.text {
		if p.text != "" {
			b = append(b, p.text...)
			continue
		}
		start := len(b)
		switch p.field {
		case fieldTime:
			b = info.Start.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
		case fieldTimeLocal:
			b = info.Start.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
		case fieldRequestID:
			b = appendLogText(b, info.RequestID)
		case fieldClientIP:
			if info.ClientIP.IsValid() {
				b = info.ClientIP.AppendTo(b)
			}
		case fieldMethod:
			b = appendLogText(b, r.Method)
		case fieldHost:
			b = appendLogText(b, r.Host)
		case fieldPath:
			b = appendLogText(b, r.URL.Path)
		case fieldQuery:
			b = appendMaskedQuery(b, r.URL.RawQuery, f.mask, appendLogText)
		case fieldRequestURI:
			b = appendRequestURI(b, r, f.mask)
		case fieldRequest:
			b = append(appendLogText(b, r.Method), ' ')
			b = append(appendRequestURI(b, r, f.mask), ' ')
			b = appendLogText(b, r.Proto)
		case fieldProto:
			b = appendLogText(b, r.Proto)
		case fieldStatus:
			b = strconv.AppendInt(b, int64(status), 10)
		case fieldBytes:
			b = strconv.AppendInt(b, bytes, 10)
		case fieldDuration:
			b = appendMS(b, elapsed)
		case fieldRequestTime:
			b = appendSeconds(b, elapsed)
		case fieldRoute:
			b = appendLogText(b, info.Route)
		case fieldUpstreamMS:
			if info.Target != "" {
				b = appendMS(b, info.UpstreamDuration)
			}
		case fieldUpstreamTime:
			if info.Target != "" {
				b = appendSeconds(b, info.UpstreamDuration)
			}
		default:
			b = appendLogText(b, optionalField(p.field, r, info))
		}
		if len(b) == start {
			b = append(b, '-')
		}
	}
	return append(b, '\n')
}

func appendRequestURI(b []byte, r *http.Request, mask []string) []byte {
	b = appendLogText(b, r.URL.Path)
	if r.URL.RawQuery != "" {
		b = appendMaskedQuery(append(b, '?'), r.URL.RawQuery, mask, appendLogText)
	}
	return b
}

// appendSeconds writes d as nginx's $request_time does: seconds with
// millisecond precision.
func appendSeconds(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d.Milliseconds())/1000, 'f', 3, 64)
}

// appendLogText writes s into a text line as nginx's log_format escapes
// it: ", \ and control characters as \xHH, so a hostile path or header
// cannot end the line, forge another or break a quoted field.
func appendLogText(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' || c < 0x20 || c == 0x7f {
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return b
}

// optionalField is the value of a string field left out when empty.
func optionalField(fd accessField, r *http.Request, info *reqctx.Info) string {
	switch fd {
	case fieldUpstream:
		if info.Target != "" {
			return info.Upstream
		}
	case fieldTarget:
		return info.Target
	case fieldOpenID:
		return info.OpenID
	case fieldReason:
		return info.Reason
	case fieldWAF:
		return info.WAF
	case fieldWAFRules:
		return info.WAFRules
	case fieldCache:
		return info.Cache
	case fieldUserAgent:
		return firstValue(r.Header["User-Agent"])
	case fieldReferer:
		return firstValue(r.Header["Referer"])
	}
	return ""
}

func firstValue(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func appendMS(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', 3, 64)
}

// appendMaskedQuery writes the raw query with the values of the names in
// mask (lowercase) replaced by ***. Both & and ; end a pair: some upstream
// frameworks still split on ;, and a value they read must not slip past.
func appendMaskedQuery(b []byte, q string, mask []string, escape func([]byte, string) []byte) []byte {
	for {
		end := strings.IndexAny(q, "&;")
		pair := q
		if end >= 0 {
			pair = q[:end]
		}
		if eq := strings.IndexByte(pair, '='); eq >= 0 && masked(pair[:eq], mask) {
			b = escape(b, pair[:eq+1])
			b = append(b, "***"...)
		} else {
			b = escape(b, pair)
		}
		if end < 0 {
			return b
		}
		b = append(b, q[end])
		q = q[end+1:]
	}
}

// masked reports whether the raw query name is one of mask. The name is
// compared as the upstream will read it (percent-decoded, + as a space,
// any case), so "%63ode" or "Code" is masked like "code", without
// allocating a decoded copy.
func masked(raw string, mask []string) bool {
	for _, name := range mask {
		if queryNameIs(raw, name) {
			return true
		}
	}
	return false
}

func queryNameIs(raw, name string) bool {
	j := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(raw) && isHex(raw[i+1]) && isHex(raw[i+2]):
			c = unhex(raw[i+1])<<4 | unhex(raw[i+2])
			i += 2
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if j >= len(name) || name[j] != c {
			return false
		}
		j++
	}
	return j == len(name)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as a JSON string; invalid UTF-8 becomes U+FFFD
// and control characters are escaped, so a hostile path cannot break a line.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendJSONChars(b, s)
	return append(b, '"')
}

// appendJSONChars is appendJSONString without the quotes.
func appendJSONChars(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}
