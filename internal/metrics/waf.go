package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// WAF counts the firewall's verdicts by route (a name from the config) and
// action (pass, detect, block, fixed by edge's code), and the rules that
// matched by route and rule id. The ids are bounded by the rule set edge
// embeds: only the OWASP Core Rule Set's attack rules (and "body_limit")
// are ever counted, never anything a client chose.
type WAF struct {
	requests *prometheus.CounterVec
	matches  *prometheus.CounterVec
}

// NewWAF creates the firewall collectors and registers them with reg.
func NewWAF(reg prometheus.Registerer) (*WAF, error) {
	m := &WAF{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_waf_requests_total",
			Help: "Requests the firewall inspected, by what it did: pass, detect (would have refused; the route is in detect mode) or block.",
		}, []string{"route", "action"}),
		matches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_waf_rule_matches_total",
			Help: "Matches of the Core Rule Set's attack rules by rule id (body_limit: a body over waf.body_limit), whatever the action.",
		}, []string{"route", "rule"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.matches} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering waf metrics: %w", err)
		}
	}
	return m, nil
}

// WAFRoute is one route's firewall counters, resolved when the route is
// compiled; a rule's counter is looked up only when the rule matched.
type WAFRoute struct {
	actions [3]prometheus.Counter
	matches *prometheus.CounterVec
	route   string
}

// Route returns the counters of a route. actions names the verdicts in
// the order Count receives them.
func (m *WAF) Route(route string, actions ...string) *WAFRoute {
	r := &WAFRoute{matches: m.matches, route: route}
	for i, a := range actions[:len(r.actions)] {
		r.actions[i] = m.requests.WithLabelValues(route, a)
	}
	return r
}

// Count records one verdict: the action's index and the matched rules.
func (r *WAFRoute) Count(action int, rules []string) {
	r.actions[action].Inc()
	for _, id := range rules {
		r.matches.WithLabelValues(r.route, id).Inc()
	}
}
