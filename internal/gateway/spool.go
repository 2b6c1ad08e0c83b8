package gateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"

	"edge/internal/apierror"
	"edge/internal/proxy"
	"edge/internal/reqctx"
	"edge/internal/waf"
)

// spoolMemory is how much of a body of unknown length is held in memory;
// the rest goes to an unlinked temporary file (nginx's
// client_body_buffer_size and client_body_temp_path).
const spoolMemory = 64 << 10

// spoolBody reads a request body of unknown length (chunked over
// HTTP/1.1, no content-length over HTTP/2) whole before the upstream sees
// the request, as nginx's default proxy_request_buffering does. A body
// with a length is refused above max_body before it is read; one without
// can only be judged once read, and a refused request must never reach
// the upstream, even in part. The body the upstream then gets has a
// Content-Length, unless the client declared trailers (which only chunked
// framing carries). A read error is the client's: the body's own limit
// (413), its pause (408), or a client that left. The firewall has a
// multipart body stored so too, whatever its length, to inspect it whole.
func spoolBody(r *http.Request) (*spooledBody, error) {
	// Not pooled: an upstream that answers early leaves the proxy's body
	// writer reading it after the request is over.
	buf := new(bytes.Buffer)
	n, err := io.CopyN(buf, r.Body, spoolMemory+1)
	var file *os.File
	if err == nil {
		// More than memory holds: the rest goes to disk.
		file, err = os.CreateTemp("", "edge-body-")
		if err != nil {
			return nil, &spoolError{err}
		}
		// Unlinked at once: the open file is all there is, and nothing is
		// left behind whatever happens next.
		_ = os.Remove(file.Name())
		var m int64
		m, err = copyToFile(file, r.Body)
		n += m
		if err == nil {
			if _, serr := file.Seek(0, io.SeekStart); serr != nil {
				err = &spoolError{serr}
			}
		}
	} else if errors.Is(err, io.EOF) {
		err = nil
	}
	if err != nil {
		if file != nil {
			file.Close()
		}
		return nil, err
	}
	r.Body.Close()
	sb := &spooledBody{buf: buf, file: file}
	sb.start()
	r.Body = sb
	if len(r.Trailer) == 0 {
		r.ContentLength = n
		r.TransferEncoding = nil
	}
	return sb, nil
}

// spooledBody is the body read whole. Its Close, which the route plan
// defers (the proxy closes no request body), closes the file under it.
type spooledBody struct {
	io.Reader
	buf  *bytes.Buffer
	file *os.File
	once sync.Once
}

// The firewall reads a stored multipart body through, then rewinds it
// for the upstream.
var _ waf.Stored = (*spooledBody)(nil)

// start reads from the first byte; the file, when there is one, is
// already at its start.
func (b *spooledBody) start() {
	b.Reader = bytes.NewReader(b.buf.Bytes())
	if b.file != nil {
		b.Reader = io.MultiReader(b.Reader, b.file)
	}
}

// Rewind makes the body readable again from its first byte.
func (b *spooledBody) Rewind() error {
	if b.file != nil {
		if _, err := b.file.Seek(0, io.SeekStart); err != nil {
			return &spoolError{err}
		}
	}
	b.start()
	return nil
}

func (b *spooledBody) Close() error {
	b.once.Do(func() {
		if b.file != nil {
			b.file.Close()
		}
	})
	return nil
}

// spoolError is edge's own failure to store a body (a full or read-only
// temporary directory), not the client's.
type spoolError struct{ err error }

func (e *spoolError) Error() string { return "storing the request body: " + e.err.Error() }

// copyToFile copies the body to the file, telling the file's failures
// (spoolError) from the body's.
func copyToFile(file *os.File, body io.Reader) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		m, rerr := body.Read(buf)
		if m > 0 {
			if _, werr := file.Write(buf[:m]); werr != nil {
				return n, &spoolError{werr}
			}
			n += int64(m)
		}
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// answerSpoolFailure answers a body that could not be read whole: the
// client's fault as proxy answers it, or edge's own storage failure,
// which the upstream never saw either (502 with reason body_spool_failed
// in the access log).
func answerSpoolFailure(w http.ResponseWriter, r *http.Request, info *reqctx.Info, err error) {
	var se *spoolError
	if errors.As(err, &se) {
		info.Reason = reasonBodySpoolFailed
		apierror.Write(w, r, apierror.UpstreamDown, "the request body could not be stored before it is sent on")
		return
	}
	proxy.AnswerClientBodyFault(w, r, info, err)
}
