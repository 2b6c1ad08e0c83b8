package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// UpstreamRetries returns what an upstream calls when a request goes to
// another target, with the status that made it (0: the connection failed).
// The reasons are "error" and the statuses of retry_on, so the labels come
// from the config; every one is there from the start at 0.
func (m *Metrics) UpstreamRetries(upstream string, retryOn []int) func(status int) {
	byStatus := make(map[int]prometheus.Counter, len(retryOn)+1)
	byStatus[0] = m.upstreamRetries.WithLabelValues(upstream, "error")
	for _, code := range retryOn {
		byStatus[code] = m.upstreamRetries.WithLabelValues(upstream, strconv.Itoa(code))
	}
	return func(status int) {
		if c := byStatus[status]; c != nil {
			c.Inc()
		}
	}
}
