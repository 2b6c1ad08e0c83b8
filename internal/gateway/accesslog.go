package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
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
// request. The query string is logged with the values of log.mask_query
// names replaced by ***: login codes, tokens and phone numbers stay out of
// log files that many people can read.
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

func (a *accessLog) write(r *http.Request, info *reqctx.Info, status int, bytes int64, elapsed time.Duration, mask []string) {
	bp := lineBufs.Get().(*[]byte)
	b := appendAccessLine((*bp)[:0], r, info, status, bytes, elapsed, mask)
	a.mu.Lock()
	_, _ = a.w.Write(b)
	a.mu.Unlock()
	*bp = b
	lineBufs.Put(bp)
}

func appendAccessLine(b []byte, r *http.Request, info *reqctx.Info, status int, bytes int64, elapsed time.Duration, mask []string) []byte {
	b = append(b, `{"time":"`...)
	b = info.Start.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","request_id":`...)
	b = appendJSONString(b, info.RequestID)
	b = append(b, `,"client_ip":"`...)
	if info.ClientIP.IsValid() {
		b = info.ClientIP.AppendTo(b)
	}
	b = append(b, `","method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, r.Host)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, r.URL.Path)
	if r.URL.RawQuery != "" {
		b = append(b, `,"query":"`...)
		b = appendMaskedQuery(b, r.URL.RawQuery, mask)
		b = append(b, '"')
	}
	b = append(b, `,"proto":`...)
	b = appendJSONString(b, r.Proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, bytes, 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(elapsed.Microseconds())/1000, 'f', 3, 64)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, info.Route)
	if info.Target != "" {
		b = append(b, `,"upstream":`...)
		b = appendJSONString(b, info.Upstream)
		b = append(b, `,"target":`...)
		b = appendJSONString(b, info.Target)
		b = append(b, `,"upstream_ms":`...)
		b = strconv.AppendFloat(b, float64(info.UpstreamDuration.Microseconds())/1000, 'f', 3, 64)
	}
	if info.OpenID != "" {
		b = append(b, `,"openid":`...)
		b = appendJSONString(b, info.OpenID)
	}
	if info.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, info.Reason)
	}
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendMaskedQuery writes the raw query with the values of the names in
// mask (lowercase) replaced by ***. Both & and ; end a pair: some upstream
// frameworks still split on ;, and a value they read must not slip past.
func appendMaskedQuery(b []byte, q string, mask []string) []byte {
	for {
		end := strings.IndexAny(q, "&;")
		pair := q
		if end >= 0 {
			pair = q[:end]
		}
		if eq := strings.IndexByte(pair, '='); eq >= 0 && masked(pair[:eq], mask) {
			b = appendJSONChars(b, pair[:eq+1])
			b = append(b, "***"...)
		} else {
			b = appendJSONChars(b, pair)
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
