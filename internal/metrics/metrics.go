// Package metrics names every Prometheus collector edge exports, on the
// project's own registry (plus the Go and process collectors). Labels come
// only from the config or from fixed sets of values: never an openid, an IP
// or a raw path.
package metrics

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the gateway's core collectors. Feature collectors (TLS,
// identity, limits, callbacks) live in their own files of this package.
type Metrics struct {
	Registry *prometheus.Registry

	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	inFlight         prometheus.Gauge
	upstreamRequests *prometheus.CounterVec
	upstreamDuration *prometheus.HistogramVec
	upstreamRetries  *prometheus.CounterVec

	connectionsOpen *prometheus.GaugeVec
	websocketsOpen  prometheus.Gauge
	tlsHandshakes   *prometheus.CounterVec
	h2ResetCloses   prometheus.Counter

	reloads              *prometheus.CounterVec
	lastReloadSuccessful prometheus.Gauge
	lastReloadSuccessTS  prometheus.Gauge
	lastReloadAttemptTS  prometheus.Gauge

	// Feature collectors, each defined in its own file of this package.
	Webhook   *Webhook
	Identity  *Identity
	Limits    *Limits
	TLS       *TLS
	WechatAPI *WechatAPI
	Process   *Process
	WAF       *WAF
	Cache     *Cache
	Cluster   *Cluster
}

// latencyBuckets suit an API gateway: 1 ms to 30 s.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// New registers the core collectors on a fresh registry.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_http_requests_total",
			Help: "Requests answered, by route, method and status code. Route \"\" is no route matched.",
		}, []string{"route", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edge_http_request_duration_seconds",
			Help:    "Time from the request's arrival to the end of the answer, by route.",
			Buckets: latencyBuckets,
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_http_requests_in_flight",
			Help: "Requests being served now.",
		}),
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_upstream_requests_total",
			Help: "Requests sent to upstream targets, by route, target and status code (\"error\" when no answer came or it broke off; a request the client broke, with its body or by leaving, is not counted).",
		}, []string{"route", "target", "code"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edge_upstream_response_duration_seconds",
			Help:    "Time until the upstream's response headers arrived, by route and target.",
			Buckets: latencyBuckets,
		}, []string{"route", "target"}),
		upstreamRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_upstream_retries_total",
			Help: "Requests sent to another target of an upstream, by upstream and reason: \"error\" (the connection failed) or the status of retry_on the last target answered.",
		}, []string{"upstream", "reason"}),
		connectionsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edge_connections_open",
			Help: "Client connections that have served at least one request and are still open, by listener (https, http) and protocol (h1, h2).",
		}, []string{"listener", "protocol"}),
		websocketsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_websockets_open",
			Help: "WebSocket connections being proxied now.",
		}),
		tlsHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_tls_handshakes_total",
			Help: "TLS handshakes on the HTTPS listener by result (ok, error).",
		}, []string{"result"}),
		h2ResetCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_http2_rapid_reset_closes_total",
			Help: "HTTP/2 connections closed (GOAWAY ENHANCE_YOUR_CALM) because the client cancelled too many streams in a short time (rapid reset).",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_config_reloads_total",
			Help: "Config reload attempts by result (success, failure).",
		}, []string{"result"}),
		lastReloadSuccessful: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_config_last_reload_successful",
			Help: "1 if the last config load or reload succeeded, else 0 (the previous config is still serving).",
		}),
		lastReloadSuccessTS: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful config load.",
		}),
		lastReloadAttemptTS: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_config_last_reload_attempt_timestamp_seconds",
			Help: "Unix time of the last config load attempt.",
		}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "edge_build_info",
		Help: "Always 1; the labels say which build is running.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	m.tlsHandshakes.WithLabelValues("ok")
	m.tlsHandshakes.WithLabelValues("error")
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo, m.requests, m.requestDuration, m.inFlight, m.upstreamRequests,
		m.upstreamDuration, m.upstreamRetries, m.connectionsOpen, m.websocketsOpen, m.tlsHandshakes, m.h2ResetCloses, m.reloads, m.lastReloadSuccessful, m.lastReloadSuccessTS,
		m.lastReloadAttemptTS,
	)
	// A registration error here is a programming error (two collectors with
	// one name), never an operator's: fail loudly at start.
	var err error
	if m.Webhook, err = NewWebhook(reg); err != nil {
		panic(err)
	}
	if m.Identity, err = NewIdentity(reg); err != nil {
		panic(err)
	}
	if m.Cluster, err = NewCluster(reg); err != nil {
		panic(err)
	}
	if m.Limits, err = NewLimits(reg); err != nil {
		panic(err)
	}
	if m.TLS, err = NewTLS(reg); err != nil {
		panic(err)
	}
	if m.WechatAPI, err = NewWechatAPI(reg); err != nil {
		panic(err)
	}
	if m.WAF, err = NewWAF(reg); err != nil {
		panic(err)
	}
	m.Process = newProcess(reg)
	m.Cache = newCache(reg)
	return m
}

// InFlight is the gauge of requests being served.
func (m *Metrics) InFlight() prometheus.Gauge { return m.inFlight }

// WebSocketsOpen is the gauge of proxied WebSockets.
func (m *Metrics) WebSocketsOpen() prometheus.Gauge { return m.websocketsOpen }

// ConnectionsOpen is the gauge of open client connections for a listener
// and protocol.
func (m *Metrics) ConnectionsOpen(listener, protocol string) prometheus.Gauge {
	return m.connectionsOpen.WithLabelValues(listener, protocol)
}

// TLSHandshake counts one handshake result.
func (m *Metrics) TLSHandshake(ok bool) {
	if ok {
		m.tlsHandshakes.WithLabelValues("ok").Inc()
		return
	}
	m.tlsHandshakes.WithLabelValues("error").Inc()
}

// HTTP2RapidResetClose counts one connection closed for cancelling too
// many streams.
func (m *Metrics) HTTP2RapidResetClose() { m.h2ResetCloses.Inc() }

// ReloadResult records a config load attempt.
func (m *Metrics) ReloadResult(ok bool, at time.Time) {
	m.lastReloadAttemptTS.Set(float64(at.Unix()))
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.lastReloadSuccessful.Set(1)
		m.lastReloadSuccessTS.Set(float64(at.Unix()))
		return
	}
	m.reloads.WithLabelValues("failure").Inc()
	m.lastReloadSuccessful.Set(0)
}

// ConfigMatchesRunning records that the config file holds the running
// config again (saved back after a rejected edit): the last reload's failure
// no longer describes the file, so the alert on it must clear. No reload is
// counted.
func (m *Metrics) ConfigMatchesRunning() { m.lastReloadSuccessful.Set(1) }

// Methods are the values of the method label; anything else is OTHER.
var Methods = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER"}

// MethodIndex maps a request method to its label index.
func MethodIndex(method string) int {
	for i, m := range Methods[:len(Methods)-1] {
		if m == method {
			return i
		}
	}
	return len(Methods) - 1
}

const minCode, maxCode = 100, 599

// Route holds one route's collectors, resolved once per snapshot so the
// request path does no label lookups after the first request of each
// method/status pair.
type Route struct {
	name     string
	m        *Metrics
	duration prometheus.Observer
	counters [len(Methods)]atomic.Pointer[[maxCode - minCode + 1]atomic.Pointer[prometheus.Counter]]
	targets  atomic.Pointer[map[string]*upstreamHandles]
}

type upstreamHandles struct {
	duration prometheus.Observer
	codes    [maxCode - minCode + 2]atomic.Pointer[prometheus.Counter] // last slot: "error"
}

// Route returns the handles for a route name ("" for unmatched requests).
func (m *Metrics) Route(name string) *Route {
	r := &Route{name: name, m: m, duration: m.requestDuration.WithLabelValues(name)}
	empty := map[string]*upstreamHandles{}
	r.targets.Store(&empty)
	return r
}

// Observe counts one answered request.
func (r *Route) Observe(method string, code int, elapsed time.Duration) {
	r.duration.Observe(elapsed.Seconds())
	if code < minCode || code > maxCode {
		code = 500
	}
	mi := MethodIndex(method)
	table := r.counters[mi].Load()
	if table == nil {
		table = new([maxCode - minCode + 1]atomic.Pointer[prometheus.Counter])
		if !r.counters[mi].CompareAndSwap(nil, table) {
			table = r.counters[mi].Load()
		}
	}
	slot := &table[code-minCode]
	c := slot.Load()
	if c == nil {
		counter := r.m.requests.WithLabelValues(r.name, Methods[mi], strconv.Itoa(code))
		c = &counter
		slot.Store(c)
	}
	(*c).Inc()
}

// ObserveUpstream counts one exchange with a target; code 0 means no answer.
func (r *Route) ObserveUpstream(target string, code int, elapsed time.Duration) {
	h := (*r.targets.Load())[target]
	if h == nil {
		h = r.addTarget(target)
	}
	h.duration.Observe(elapsed.Seconds())
	idx := len(h.codes) - 1
	if code >= minCode && code <= maxCode {
		idx = code - minCode
	}
	c := h.codes[idx].Load()
	if c == nil {
		label := "error"
		if idx < len(h.codes)-1 {
			label = strconv.Itoa(code)
		}
		counter := r.m.upstreamRequests.WithLabelValues(r.name, target, label)
		c = &counter
		h.codes[idx].Store(c)
	}
	(*c).Inc()
}

// addTarget copies the map on write: targets come from the config, so this
// happens once per target per snapshot.
func (r *Route) addTarget(target string) *upstreamHandles {
	for {
		old := r.targets.Load()
		if h := (*old)[target]; h != nil {
			return h
		}
		next := make(map[string]*upstreamHandles, len(*old)+1)
		for k, v := range *old {
			next[k] = v
		}
		h := &upstreamHandles{duration: r.m.upstreamDuration.WithLabelValues(r.name, target)}
		next[target] = h
		if r.targets.CompareAndSwap(old, &next) {
			return h
		}
	}
}

// TargetHealth is one target's state for the health gauge.
type TargetHealth struct {
	Upstream, Target string
	Healthy          bool
}

// RegisterTargetHealth exports edge_upstream_target_healthy, read at scrape
// time from the live snapshot, so a reload never leaves stale series.
func (m *Metrics) RegisterTargetHealth(list func() []TargetHealth) {
	m.Registry.MustRegister(&gaugeList[TargetHealth]{list: list, desc: prometheus.NewDesc(
		"edge_upstream_target_healthy",
		"1 if the target receives traffic (active and passive health), else 0.",
		[]string{"upstream", "target"}, nil),
		point: func(t TargetHealth) (float64, []string) {
			v := 0.0
			if t.Healthy {
				v = 1
			}
			return v, []string{t.Upstream, t.Target}
		}})
}

// gaugeList is a gauge family read at scrape time from a list the gateway
// builds from live state: a series that state no longer has is gone.
type gaugeList[T any] struct {
	list  func() []T
	desc  *prometheus.Desc
	point func(T) (value float64, labels []string)
}

func (c *gaugeList[T]) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *gaugeList[T]) Collect(ch chan<- prometheus.Metric) {
	for _, x := range c.list() {
		v, labels := c.point(x)
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, labels...)
	}
}
