package cache

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"edge/internal/httphdr"
)

// Modes of a recorder, chosen when the upstream's status arrives.
const (
	modeNone = iota
	// modeBuffer keeps the answer to store it; the client is answered
	// from the store once it is complete.
	modeBuffer
	// modePass sends the answer on to the client as it comes.
	modePass
	// modeFallback drops an error answer: the stale one stands in.
	modeFallback
)

// recorder is the ResponseWriter the upstream exchange writes to on a
// fetch. It has a header of its own, so that what edge's outer steps put
// on the client's answer (its request id, CORS) is never stored.
type recorder struct {
	w   http.ResponseWriter
	p   *Policy
	h   http.Header
	now time.Time
	// fallback is the stale answer that may stand in for an error.
	fallback     *entry
	revalidating bool

	mode   int
	status int
	fresh  freshness
	body   []byte
}

func (rec *recorder) Header() http.Header { return rec.h }

func (rec *recorder) WriteHeader(code int) {
	if rec.mode != modeNone || code < 200 {
		return
	}
	rec.status = code
	switch {
	case code == http.StatusNotModified && rec.revalidating:
		rec.mode = modeBuffer
		return
	case code >= 500 && rec.fallback != nil:
		rec.mode = modeFallback
		return
	}
	fresh, ok := rec.p.freshness(code, rec.h, rec.now)
	// An event stream is never complete enough to store, and must flow.
	if strings.HasPrefix(rec.h.Get("Content-Type"), "text/event-stream") {
		ok = false
	}
	if n, known := httphdr.ParseLength(rec.h.Get("Content-Length")); ok && (!known || n <= rec.p.maxEntry) {
		rec.mode, rec.fresh = modeBuffer, fresh
		return
	}
	rec.pass()
}

// pass sends the answer on uncached, from the start.
func (rec *recorder) pass() {
	rec.mode = modePass
	h := rec.w.Header()
	for k, v := range rec.h {
		if k == "Vary" {
			h[k] = append(slices.Clip(h[k]), v...)
			continue
		}
		h[k] = v
	}
	h["X-Cache"] = xCache[resultMiss]
	rec.w.WriteHeader(rec.status)
}

// trailers passes on what the exchange put in the header after the body
// of an answer passed on: the exchange holds the recorder's header map,
// not the client's.
func (rec *recorder) trailers() {
	h := rec.w.Header()
	for k, v := range rec.h {
		if strings.HasPrefix(k, http.TrailerPrefix) || httphdr.HasToken(rec.h["Trailer"], k) {
			h[k] = v
		}
	}
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.mode == modeNone {
		rec.WriteHeader(http.StatusOK)
	}
	switch rec.mode {
	case modeFallback:
		return len(b), nil
	case modeBuffer:
		if int64(len(rec.body)+len(b)) <= rec.p.maxEntry {
			rec.body = append(rec.body, b...)
			return len(b), nil
		}
		// Longer than an entry may be: what was kept goes first, then
		// the rest as it comes.
		rec.pass()
		if _, err := rec.w.Write(rec.body); err != nil {
			return 0, err
		}
		rec.body = nil
	}
	return rec.w.Write(b)
}

// Flush matters only to an answer passed on: a stored one is complete
// before the client sees any of it.
func (rec *recorder) Flush() {
	if rec.mode == modePass {
		http.NewResponseController(rec.w).Flush()
	}
}

// Unwrap lets the exchange reach the client's connection (read deadlines,
// closing it after the answer).
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.w }
