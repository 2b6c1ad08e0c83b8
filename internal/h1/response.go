package h1

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"edge/internal/httphdr"
)

// response is the http.ResponseWriter of one request on this front. The
// head goes into the connection's buffer when the status is set; the body
// is framed by the Content-Length the handler set, or chunked. Unlike
// net/http it does not sniff a missing Content-Type (nginx does not
// either) and does not turn a short unframed body into a Content-Length.
type response struct {
	c      *conn
	bw     *bufio.Writer
	rwc    net.Conn
	req    *http.Request
	body   *body
	header http.Header

	wroteHead  bool
	status     int
	noBody     bool
	chunked    bool
	declared   int64 // Content-Length the handler set; -1 none
	written    int64
	closeAfter bool
	failed     bool
	// trailers are the names the handler announced in Trailer.
	trailers []string
}

func (w *response) reset(c *conn, bw *bufio.Writer, rwc net.Conn, r *http.Request, b *body) {
	clear(w.header)
	*w = response{c: c, bw: bw, rwc: rwc, req: r, body: b, header: w.header, declared: -1, trailers: w.trailers[:0]}
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.wroteHead {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInterim(code)
		return
	}
	w.wroteHead = true
	w.status = code
	h := w.header
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified || code < 200
	delete(h, "Transfer-Encoding")
	if cl := h["Content-Length"]; len(cl) == 1 {
		if n, ok := httphdr.ParseLength(cl[0]); ok {
			w.declared = n
		} else {
			delete(h, "Content-Length")
		}
	} else if cl != nil {
		delete(h, "Content-Length")
	}
	if code == http.StatusNoContent {
		delete(h, "Content-Length")
		w.declared = -1
	}
	w.chunked = !w.noBody && w.declared < 0
	if w.chunked {
		for k := range httphdr.Elements(h["Trailer"]) {
			w.trailers = append(w.trailers, textproto.CanonicalMIMEHeaderKey(k))
		}
	} else {
		delete(h, "Trailer")
	}
	// A body that failed, or is too long to read and drop after the
	// answer, ends the connection: the client is told so.
	bodyLeft := w.body.failed.Load() || w.body.left.Load() > maxDrain
	if bodyLeft || w.req.Close || w.c.s.draining.Load() || httphdr.HasToken(h["Connection"], "close") {
		w.closeAfter = true
	}
	delete(h, "Connection")

	bw := w.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(statusLine(code))
	bw.WriteString("\r\n")
	writeHeaders(bw, h)
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.Write(httpDate())
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.closeAfter {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
}

// writeInterim sends a 1xx answer at once, with the headers set so far
// (net/http does the same; the proxy removes a hint's headers after it).
func (w *response) writeInterim(code int) {
	bw := w.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(statusLine(code))
	bw.WriteString("\r\n")
	writeHeaders(bw, w.header)
	bw.WriteString("\r\n")
	if bw.Flush() != nil {
		w.failed = true
	}
}

// writeHeaders writes h as net/http would: names it would not send are
// left out, and a line break in a value becomes a space so that no value
// can add a header.
func writeHeaders(bw *bufio.Writer, h http.Header) {
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHead {
		w.WriteHeader(http.StatusOK)
	}
	if w.failed {
		return 0, errWriteFailed
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		w.closeAfter = true
		return 0, http.ErrContentLength
	}
	if len(p) == 0 {
		return 0, nil
	}
	w.written += int64(len(p))
	bw := w.bw
	if w.chunked {
		var size [16]byte
		bw.Write(strconv.AppendInt(size[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		w.failed = true
		return n, errWriteFailed
	}
	return n, nil
}

var errWriteFailed = fmt.Errorf("h1: writing the answer failed")

// FlushError sends what is buffered (http.ResponseController.Flush).
func (w *response) FlushError() error {
	if !w.wroteHead {
		w.WriteHeader(http.StatusOK)
	}
	if w.failed {
		return errWriteFailed
	}
	if err := w.bw.Flush(); err != nil {
		w.failed = true
		return err
	}
	return nil
}

// Flush is FlushError for http.Flusher.
func (w *response) Flush() { _ = w.FlushError() }

// SetReadDeadline, SetWriteDeadline and EnableFullDuplex are what
// http.ResponseController reaches. Reading the body while answering needs
// nothing here: the body is never drained before the handler ends.
func (w *response) SetReadDeadline(t time.Time) error  { return w.rwc.SetReadDeadline(t) }
func (w *response) SetWriteDeadline(t time.Time) error { return w.rwc.SetWriteDeadline(t) }
func (w *response) EnableFullDuplex() error            { return nil }

// CloseAfterReply ends the connection once this answer is out (the proxy
// asks when the rest of the request body is not worth reading).
func (w *response) CloseAfterReply() { w.closeAfter = true }

// finish completes the answer after the handler returned: the status if
// none was written (200 with an empty body, as net/http), the last chunk
// with the trailers, and the flush. False when the connection cannot carry
// another request.
func (w *response) finish() bool {
	if !w.wroteHead {
		if _, ok := w.header["Content-Length"]; !ok && w.req.Method != http.MethodHead {
			w.header["Content-Length"] = zeroLength
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.failed {
		return false
	}
	bw := w.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			for _, v := range w.header[k] {
				writeTrailer(bw, k, v)
			}
		}
		for k, vs := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vs {
					writeTrailer(bw, name, v)
				}
			}
		}
		bw.WriteString("\r\n")
	} else if w.declared >= 0 && w.written < w.declared && !w.noBody {
		// A short body: the client must see the connection end, not the
		// next answer's bytes taken for the rest of this one.
		_ = bw.Flush()
		return false
	}
	if bw.Flush() != nil {
		return false
	}
	return true
}

var zeroLength = []string{"0"}

func writeTrailer(bw *bufio.Writer, k, v string) {
	if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
		return
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// statusLine is "code text", as net/http writes it.
func statusLine(code int) string {
	if code >= 100 && code < 600 {
		if s := statusLines[code]; s != "" {
			return s
		}
	}
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	return strconv.Itoa(code) + " " + text
}

var statusLines = func() [600]string {
	var t [600]string
	for code := 100; code < 600; code++ {
		if text := http.StatusText(code); text != "" {
			t[code] = strconv.Itoa(code) + " " + text
		}
	}
	return t
}()

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// httpDate is the Date header's value, formatted once a second.
func httpDate() []byte {
	now := time.Now().Unix()
	if d := date.Load(); d != nil && d.unix == now {
		return d.text
	}
	d := &cachedDate{unix: now, text: time.Unix(now, 0).UTC().AppendFormat(nil, http.TimeFormat)}
	date.Store(d)
	return d.text
}

type cachedDate struct {
	unix int64
	text []byte
}

var date atomic.Pointer[cachedDate]
