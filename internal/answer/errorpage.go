package answer

import (
	"io"
	"net/http"
	"strconv"
)

// ErrorPage is the answer sent instead of the route's own for some
// statuses (nginx error_page with proxy_intercept_errors).
type ErrorPage struct {
	Statuses    []int
	Body        []byte
	ContentType string
}

type errorPage struct {
	status int
	body   []byte
	ctype  []string
	length []string
}

type errorPages struct {
	next  http.Handler
	pages []errorPage
}

// ErrorPages wraps a route's final handler so that an answer with one of
// the pages' statuses, from the upstream or from edge itself (502 when
// no target answers, 504 on a timeout), is replaced by the page, keeping
// the status. The replaced answer's body is discarded unread by the client.
func ErrorPages(next http.Handler, pages []ErrorPage) http.Handler {
	h := &errorPages{next: next}
	for _, p := range pages {
		for _, s := range p.Statuses {
			h.pages = append(h.pages, errorPage{
				status: s,
				body:   p.Body,
				ctype:  []string{p.ContentType},
				length: []string{strconv.Itoa(len(p.Body))},
			})
		}
	}
	return h
}

func (h *errorPages) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.Header["Upgrade"]; ok {
		h.next.ServeHTTP(w, r)
		return
	}
	h.next.ServeHTTP(&pageWriter{ResponseWriter: w, h: h, head: r.Method == http.MethodHead}, r)
}

// pageWriter swaps the answer for a page when the status calls for one.
type pageWriter struct {
	http.ResponseWriter
	h        *errorPages
	head     bool
	sent     bool
	replaced bool
}

// entityHeaders describe the replaced body, not the page.
var entityHeaders = [...]string{"Content-Encoding", "Content-Range", "Accept-Ranges", "Etag", "Last-Modified", "Content-Disposition", "Transfer-Encoding"}

func (w *pageWriter) WriteHeader(code int) {
	if w.sent || code < 200 {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.sent = true
	for i := range w.h.pages {
		p := &w.h.pages[i]
		if p.status != code {
			continue
		}
		w.replaced = true
		hdr := w.ResponseWriter.Header()
		for _, k := range entityHeaders {
			delete(hdr, k)
		}
		hdr["Content-Type"] = p.ctype
		hdr["Content-Length"] = p.length
		hdr["Cache-Control"] = []string{"no-store"}
		w.ResponseWriter.WriteHeader(code)
		if !w.head {
			_, _ = w.ResponseWriter.Write(p.body)
		}
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *pageWriter) Write(b []byte) (int, error) {
	if !w.sent {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps sendfile for static files that are not replaced.
func (w *pageWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.sent {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return io.Copy(io.Discard, src)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{w.ResponseWriter}, src)
}

// writerOnly hides ReadFrom so io.Copy does not call it again.
type writerOnly struct{ io.Writer }

// Flush keeps streaming answers streaming; a page needs none.
func (w *pageWriter) Flush() {
	if !w.sent {
		w.WriteHeader(http.StatusOK)
	}
	if !w.replaced {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

// Unwrap is for http.ResponseController.
func (w *pageWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
