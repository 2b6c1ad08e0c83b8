// Package live owns the in-process traffic counters the admin dashboard
// draws from: per route, requests by status class and a latency
// histogram, counted with atomic adds on the request path, and a ring of
// per-second samples taken by one goroutine. Without Prometheus, a solo
// operator still sees the last minutes of traffic.
package live

import (
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Window is how many one-second samples the ring keeps.
const Window = 300

// nBuckets latency buckets: bucket i holds durations below 2^i
// microseconds (bucket 0: under 1 µs); the last one everything longer
// (over about 17 minutes). Doubling buckets bound a percentile's error to
// a factor of two, enough to tell 5 ms from 500 ms on a chart.
const nBuckets = 31

// Classes are the status classes counted: 1xx … 5xx.
const Classes = 5

// Route is one route's counters. A request adds to them with two atomic
// adds and no lock; they outlive reloads (keyed by the route's name), so a
// reload does not blank the chart.
type Route struct {
	name    string
	classes [Classes]atomic.Uint64
	latency [nBuckets]atomic.Uint64
}

// Observe counts one answered request. Safe on a nil Route (a recorder
// that is off).
func (r *Route) Observe(code int, elapsed time.Duration) {
	if r == nil {
		return
	}
	c := code/100 - 1
	if c < 0 || c >= Classes {
		c = Classes - 1
	}
	r.classes[c].Add(1)
	r.latency[bucket(elapsed)].Add(1)
}

func bucket(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	return min(bits.Len64(us), nBuckets-1)
}

// bucketUpper is the upper bound of bucket i, the value a percentile in
// it is reported as (a pessimistic estimate).
func bucketUpper(i int) time.Duration {
	return time.Duration(uint64(1)<<uint(i)) * time.Microsecond
}

// sample is one second of traffic over all routes.
type sample struct {
	at      int64 // unix seconds
	classes [Classes]uint64
	latency [nBuckets]uint64
}

// routeState is what the recorder remembers of a route between ticks:
// its totals at the last tick and at each of the last 60.
type routeState struct {
	r      *Route
	last   [Classes]uint64
	lastL  [nBuckets]uint64
	totals [61]uint64 // ring of request totals, one per tick
}

// Recorder holds the routes' counters and the ring of samples.
type Recorder struct {
	mu     sync.Mutex
	routes map[string]*routeState
	ring   [Window]sample
	n      int // samples in the ring
	head   int // index of the next sample
	ticks  int
}

// NewRecorder returns an empty recorder; Run samples it.
func NewRecorder() *Recorder {
	return &Recorder{routes: make(map[string]*routeState)}
}

// Route returns the counters of a route name ("" for requests no route
// matched), the same ones for the same name across reloads. Called when a
// config is compiled, never per request; the names come from the config,
// so the map is as bounded as the config is.
func (rc *Recorder) Route(name string) *Route {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if st := rc.routes[name]; st != nil {
		return st.r
	}
	r := &Route{name: name}
	rc.routes[name] = &routeState{r: r}
	return r
}

// Run takes a sample every second until stop is closed.
func (rc *Recorder) Run(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			rc.Tick(now)
		}
	}
}

// Tick records the traffic since the previous tick as the sample of now.
// Run calls it every second; tests call it with their own clock.
func (rc *Recorder) Tick(now time.Time) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	s := sample{at: now.Unix()}
	slot := rc.ticks % len(routeState{}.totals)
	for _, st := range rc.routes {
		var total uint64
		for c := range st.r.classes {
			v := st.r.classes[c].Load()
			s.classes[c] += v - st.last[c]
			st.last[c] = v
			total += v
		}
		for b := range st.r.latency {
			v := st.r.latency[b].Load()
			s.latency[b] += v - st.lastL[b]
			st.lastL[b] = v
		}
		st.totals[slot] = total
	}
	rc.ticks++
	rc.ring[rc.head] = s
	rc.head = (rc.head + 1) % Window
	rc.n = min(rc.n+1, Window)
}

// Point is one second of traffic: requests, the share of them answered
// 5xx, and the latency percentiles of that second (0 without requests).
type Point struct {
	At        int64   `json:"t"`
	Requests  uint64  `json:"requests"`
	ErrorRate float64 `json:"error_rate"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
}

// Summary is the traffic over the last Seconds seconds.
type Summary struct {
	Seconds   int     `json:"seconds"`
	RPS       float64 `json:"rps"`
	ErrorRate float64 `json:"error_rate"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
}

// Traffic is the chart's data: every sample in the ring, oldest first,
// and the summary of the last minute.
type Traffic struct {
	Points     []Point `json:"points"`
	LastMinute Summary `json:"last_minute"`
}

// Traffic returns the ring's samples and the last minute's summary.
func (rc *Recorder) Traffic() Traffic {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := Traffic{Points: make([]Point, 0, rc.n)}
	var minute sample
	seconds := 0
	for i := range rc.n {
		s := &rc.ring[(rc.head-rc.n+i+Window)%Window]
		out.Points = append(out.Points, s.point())
		if i >= rc.n-60 {
			seconds++
			for c := range s.classes {
				minute.classes[c] += s.classes[c]
			}
			for b := range s.latency {
				minute.latency[b] += s.latency[b]
			}
		}
	}
	p := minute.point()
	out.LastMinute = Summary{Seconds: seconds, ErrorRate: p.ErrorRate, P50Ms: p.P50Ms, P99Ms: p.P99Ms}
	if seconds > 0 {
		out.LastMinute.RPS = float64(p.Requests) / float64(seconds)
	}
	return out
}

func (s *sample) point() Point {
	p := Point{At: s.at}
	for _, v := range s.classes {
		p.Requests += v
	}
	if p.Requests == 0 {
		return p
	}
	p.ErrorRate = float64(s.classes[4]) / float64(p.Requests)
	p.P50Ms = percentile(&s.latency, p.Requests, 0.50)
	p.P99Ms = percentile(&s.latency, p.Requests, 0.99)
	return p
}

func percentile(h *[nBuckets]uint64, total uint64, q float64) float64 {
	rank := uint64(q*float64(total-1)) + 1
	var seen uint64
	for i, v := range h {
		seen += v
		if seen >= rank {
			return float64(bucketUpper(i)) / float64(time.Millisecond)
		}
	}
	return float64(bucketUpper(nBuckets-1)) / float64(time.Millisecond)
}

// RouteTraffic is one route's live numbers: its rate over the last
// minute (or as much of it as was sampled) and its answers by status
// class since edge started.
type RouteTraffic struct {
	RPS     float64           `json:"rps"`
	Classes map[string]uint64 `json:"classes"`
}

// Routes returns the live numbers of the named routes.
func (rc *Recorder) Routes(names []string) map[string]RouteTraffic {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string]RouteTraffic, len(names))
	ring := len(routeState{}.totals)
	span := min(rc.ticks-1, ring-1)
	for _, name := range slices.Compact(slices.Sorted(slices.Values(names))) {
		st := rc.routes[name]
		if st == nil {
			continue
		}
		rt := RouteTraffic{Classes: make(map[string]uint64, Classes)}
		for c := range st.r.classes {
			rt.Classes[string(rune('1'+c))+"xx"] = st.r.classes[c].Load()
		}
		if span > 0 {
			newest := st.totals[(rc.ticks-1)%ring]
			oldest := st.totals[(rc.ticks-1-span)%ring]
			rt.RPS = float64(newest-oldest) / float64(span)
		}
		out[name] = rt
	}
	return out
}
