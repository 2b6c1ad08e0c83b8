package metrics

import "github.com/prometheus/client_golang/prometheus"

// Cache holds the response cache's collectors.
type Cache struct {
	requests *prometheus.CounterVec
	// Bytes and Entries follow what the store holds.
	Bytes, Entries prometheus.Gauge
}

func newCache(reg *prometheus.Registry) *Cache {
	c := &Cache{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_cache_requests_total",
			Help: "Requests of routes with [routes.cache], by route and result: hit, miss, stale (a stored answer stood in for a failing upstream), revalidated (the upstream confirmed a stored answer with 304) or bypass (not cacheable: a method other than GET and HEAD, an identity, a range).",
		}, []string{"route", "result"}),
		Bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_cache_bytes",
			Help: "Bytes the response cache holds (bodies, headers and bookkeeping), at most cache.max_size.",
		}),
		Entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_cache_entries",
			Help: "Answers the response cache holds.",
		}),
	}
	reg.MustRegister(c.requests, c.Bytes, c.Entries)
	return c
}

// Requests is the counter of one route's requests with one result.
func (c *Cache) Requests(route, result string) prometheus.Counter {
	return c.requests.WithLabelValues(route, result)
}
