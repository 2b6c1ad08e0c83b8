package metrics

import "github.com/prometheus/client_golang/prometheus"

// ReleaseWeight is the live weight of a route's [routes.release].
type ReleaseWeight struct {
	Route  string
	Weight int
}

// RegisterReleaseWeights exports edge_route_release_weight, read at scrape
// time from the live snapshot: a live change shows at once, and a reload
// shows the file's value.
func (m *Metrics) RegisterReleaseWeights(list func() []ReleaseWeight) {
	m.Registry.MustRegister(&gaugeList[ReleaseWeight]{list: list, desc: prometheus.NewDesc(
		"edge_route_release_weight",
		"Percent of a route's requests (or users, by openid) sent to its release's next upstream, as now set: the file's value, or a live change through the admin API until the next reload. Testers in the release's openids go to next whatever it is.",
		[]string{"route"}, nil),
		point: func(r ReleaseWeight) (float64, []string) { return float64(r.Weight), []string{r.Route} }})
}
