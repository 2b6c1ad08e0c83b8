package cache

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store is the memory every cached route shares, bounded in bytes and
// evicting the least recently used answer first. It outlives a config:
// a reload changes the bound and keeps the answers of the routes whose
// settings it does not change (Retain).
type Store struct {
	mu      sync.Mutex
	max     int64
	bytes   int64
	count   int64
	keys    map[string]*variants
	flights map[string]*flight
	// gens are the current generation of each cached route, set by
	// Retain; nil (before the first) accepts every answer.
	gens map[string]string
	// head is the most recently used entry, tail the least; the list is
	// threaded through the entries, so a hit allocates nothing.
	head, tail *entry

	bytesGauge, entriesGauge prometheus.Gauge
}

// StoreOptions are a Store's bound and the gauges it keeps current.
type StoreOptions struct {
	MaxSize int64
	// Bytes and Entries, when set, follow what the store holds.
	Bytes, Entries prometheus.Gauge
}

// NewStore makes an empty store.
func NewStore(o StoreOptions) *Store {
	return &Store{
		max: o.MaxSize, keys: make(map[string]*variants), flights: make(map[string]*flight),
		bytesGauge: o.Bytes, entriesGauge: o.Entries,
	}
}

// maxVariants bounds the answers kept for one URL: every distinct value
// of a Vary header a client sends would otherwise add one, and a lookup
// compares them all.
const maxVariants = 16

// variants are the stored answers of one key, one per combination of the
// values of the headers their Vary names.
type variants struct {
	list []*entry
}

// entry is one stored answer. It is never changed once stored (a
// revalidation stores a new one sharing the body), so an answer is
// written to clients outside the lock.
type entry struct {
	key, url, route string
	// gen is the generation of the route's settings it was fetched under.
	gen string
	// vary are the header names the answer varies on, canonical, and
	// values what the request that fetched it sent in them.
	vary, values []string
	// head marks an answer fetched by a HEAD request: it has no body, and
	// only HEAD requests are answered from it.
	head   bool
	status int
	header http.Header
	body   []byte
	etag   string
	// lastModified is the Last-Modified header, zero without one.
	lastModified time.Time
	// base is when the answer was generated: received minus its Age.
	base       time.Time
	freshUntil time.Time
	// staleUntil ends the time the answer may stand in for a failing
	// upstream; never after freshUntil when it must be revalidated.
	staleUntil time.Time
	size       int64

	prev, next *entry
}

// hasValidators reports whether the upstream can confirm the entry with a
// 304.
func (e *entry) hasValidators() bool { return e.etag != "" || !e.lastModified.IsZero() }

// matches reports whether the request's headers hold the values the entry
// was fetched with, for each header its Vary names.
func (e *entry) matches(h http.Header, head bool) bool {
	if e.head && !head {
		return false
	}
	for i, name := range e.vary {
		if joinValues(h[name]) != e.values[i] {
			return false
		}
	}
	return true
}

func joinValues(v []string) string {
	if len(v) == 1 {
		return v[0]
	}
	return strings.Join(v, ", ")
}

// flight is the one fetch of a key in progress (nginx proxy_cache_lock):
// requests for the key wait on done instead of asking the upstream too.
type flight struct {
	done chan struct{}
}

// lookup returns the stored answer for the request's key and headers, or
// nil, and marks it used. With no fresh answer the caller must fetch:
// lead is true when it is the one to do so (it must call land), else fl
// is the fetch to wait for.
func (s *Store) lookup(key string, h http.Header, head bool, now time.Time) (e *entry, fl *flight, lead bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if vs := s.keys[key]; vs != nil {
		// The newest first: a GET answer may sit beside an older HEAD
		// one for the same headers.
		for i := len(vs.list) - 1; i >= 0; i-- {
			if c := vs.list[i]; c.matches(h, head) {
				e = c
				break
			}
		}
	}
	if e != nil {
		switch {
		case now.Before(e.freshUntil):
			s.touch(e)
			return e, nil, false
		case !now.Before(e.staleUntil) && !e.hasValidators():
			// Of no more use: not fresh, too old to stand in for an
			// error, nothing to revalidate with.
			s.remove(e)
			s.report()
			e = nil
		default:
			s.touch(e)
		}
	}
	if fl = s.flights[key]; fl != nil {
		return e, fl, false
	}
	fl = &flight{done: make(chan struct{})}
	s.flights[key] = fl
	return e, fl, true
}

// land ends the fetch of key the caller led, waking its waiters.
func (s *Store) land(key string, fl *flight) {
	s.mu.Lock()
	if s.flights[key] == fl {
		delete(s.flights, key)
	}
	s.mu.Unlock()
	close(fl.done)
}

// put stores e in place of the answer for the same headers, if any, and
// evicts the least recently used answers until the store fits its bound.
func (s *Store) put(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.size > s.max || !s.current(e) {
		return
	}
	if vs := s.keys[e.key]; vs != nil {
		for _, old := range vs.list {
			if replaces(e, old) {
				s.remove(old)
				break
			}
		}
		if len(vs.list) >= maxVariants {
			s.remove(vs.list[0])
		}
	}
	// remove deletes a key whose last answer goes.
	vs := s.keys[e.key]
	if vs == nil {
		vs = &variants{}
		s.keys[e.key] = vs
	}
	vs.list = append(vs.list, e)
	s.pushFront(e)
	s.bytes += e.size
	s.count++
	for s.bytes > s.max && s.tail != nil {
		s.remove(s.tail)
	}
	s.report()
}

// replaces reports whether the new answer n takes the place of old: the
// same Vary values, and not a HEAD answer over one with a body (a GET
// answer serves HEAD requests too).
func replaces(n, old *entry) bool {
	if n.head && !old.head || len(n.vary) != len(old.vary) {
		return false
	}
	for i := range n.vary {
		if n.vary[i] != old.vary[i] || n.values[i] != old.values[i] {
			return false
		}
	}
	return true
}

// remove drops e; it must be stored.
func (s *Store) remove(e *entry) {
	vs := s.keys[e.key]
	for i, c := range vs.list {
		if c == e {
			vs.list = append(vs.list[:i], vs.list[i+1:]...)
			break
		}
	}
	if len(vs.list) == 0 {
		delete(s.keys, e.key)
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
	s.bytes -= e.size
	s.count--
}

func (s *Store) pushFront(e *entry) {
	e.prev, e.next = nil, s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}

func (s *Store) touch(e *entry) {
	if s.head == e {
		return
	}
	if e.prev != nil {
		e.prev.next = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	s.pushFront(e)
}

// drop removes e if it is still stored: an answer past every use.
func (s *Store) drop(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if vs := s.keys[e.key]; vs != nil {
		for _, c := range vs.list {
			if c == e {
				s.remove(e)
				s.report()
				return
			}
		}
	}
}

// current reports whether e was fetched under its route's current
// settings. A fetch that began before a reload changed them ends after
// Retain: its answer has no use (the new settings' keys differ) and is not
// stored to take another's room.
func (s *Store) current(e *entry) bool {
	if s.gens == nil {
		return true
	}
	g, ok := s.gens[e.route]
	return ok && g == e.gen
}

// Retain makes gens, each cached route's current generation (see
// Options.Generation), the only answers kept: those of a route no longer
// cached, or fetched under settings a reload changed, are removed, and
// returned in number. Answers of an unchanged route stay. gens must not
// change afterwards. It cannot fail, so a reload calls it as it applies.
func (s *Store) Retain(gens map[string]string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gens = gens
	n := 0
	for e := s.head; e != nil; {
		next := e.next
		if !s.current(e) {
			s.remove(e)
			n++
		}
		e = next
	}
	s.report()
	return n
}

// Resize sets the bound, evicting at once what no longer fits: a reload
// that lowers [cache] max_size takes effect without a restart.
func (s *Store) Resize(max int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.max = max
	for s.bytes > s.max && s.tail != nil {
		s.remove(s.tail)
	}
	s.report()
}

// Purge removes the answers match selects, given each one's route and
// URL (host and path, and the query if any: "api.example.com/a?b=1"),
// and returns how many it removed.
func (s *Store) Purge(match func(route, url string) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for e := s.head; e != nil; {
		next := e.next
		if match(e.route, e.url) {
			s.remove(e)
			n++
		}
		e = next
	}
	s.report()
	return n
}

// size returns the bytes and answers stored.
func (s *Store) size() (bytes, entries int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes, s.count
}

func (s *Store) report() {
	if s.bytesGauge != nil {
		s.bytesGauge.Set(float64(s.bytes))
	}
	if s.entriesGauge != nil {
		s.entriesGauge.Set(float64(s.count))
	}
}
