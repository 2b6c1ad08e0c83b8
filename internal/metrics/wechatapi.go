package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WechatAPI covers the access_token service and the egress listener. Labels
// are app names from the config and words fixed by edge's code (an API from
// a fixed list, an errcode class): never a token, an appid's secret or a raw
// path.
type WechatAPI struct {
	obtained  *prometheus.GaugeVec
	expiry    *prometheus.GaugeVec
	refreshes *prometheus.CounterVec
	calls     *prometheus.CounterVec
}

// NewWechatAPI creates the collectors and registers them with reg.
func NewWechatAPI(reg prometheus.Registerer) (*WechatAPI, error) {
	m := &WechatAPI{
		obtained: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edge_wechat_token_obtained_timestamp_seconds",
			Help: "Unix time the app's current access_token was issued by WeChat (by this replica or another through Redis); the token's age is time() minus this.",
		}, []string{"app"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edge_wechat_token_expiry_timestamp_seconds",
			Help: "Unix time the app's current access_token expires.",
		}, []string{"app"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_wechat_token_refreshes_total",
			Help: "access_token renewals by app and result: fetched (stable_token called), forced (force_refresh after WeChat rejected the token), shared (another replica fetched it, read from Redis), limited (a forced refresh refused by the 30 s spacing or the daily budget of 20), error (WeChat or Redis failed).",
		}, []string{"app", "result"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_wechat_api_calls_total",
			Help: "Calls forwarded to WeChat's server APIs, by app, API (a fixed list; \"other\" for the rest) and answer class: ok, token (40001/40014/42001), quota (45xxx), busy (-1), error (another errcode), http_error (a non-200 status), unreachable (no answer), overload (refused: wechat_api.max_concurrent in flight).",
		}, []string{"app", "api", "class"}),
	}
	for _, c := range []prometheus.Collector{m.obtained, m.expiry, m.refreshes, m.calls} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering wechat api metrics: %w", err)
		}
	}
	return m, nil
}

// Token records the app's current token's issue and expiry times.
func (m *WechatAPI) Token(app string, obtained, expires time.Time) {
	m.obtained.WithLabelValues(app).Set(float64(obtained.Unix()))
	m.expiry.WithLabelValues(app).Set(float64(expires.Unix()))
}

// Refresh counts one renewal of the app's token by result.
func (m *WechatAPI) Refresh(app, result string) { m.refreshes.WithLabelValues(app, result).Inc() }

// Call counts one forwarded call.
func (m *WechatAPI) Call(app, api, class string) { m.calls.WithLabelValues(app, api, class).Inc() }
