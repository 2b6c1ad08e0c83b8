package admin

import (
	"embed"
	"io/fs"
	"net/http"
	"time"
	"unicode/utf8"

	"edge/internal/limits"
	"edge/internal/live"
	"edge/internal/process"
	edgetls "edge/internal/tls"
)

// Dashboard is what the dashboard's JSON API asks of the running gateway.
// Every answer is read when asked, from the current snapshot and the
// in-process counters; none holds a secret.
type Dashboard interface {
	Overview() Overview
	Routes() []RouteView
	UpstreamViews() []UpstreamView
	Security() Security
	Certificates() edgetls.Status
	Traffic() live.Traffic
}

// Overview is GET /api/overview.
type Overview struct {
	Version       string       `json:"version"`
	Started       time.Time    `json:"started"`
	UptimeSeconds int64        `json:"uptime_seconds"`
	Config        string       `json:"config"`
	LastReload    Reload       `json:"last_reload"`
	Traffic       live.Summary `json:"traffic"`
	Routes        int          `json:"routes"`
	Upstreams     int          `json:"upstreams"`
	TargetsUp     int          `json:"targets_up"`
	Targets       int          `json:"targets"`
	Bans          int          `json:"bans"`
}

// Reload is the result of the latest config load: "loaded" at start,
// then "reloaded" or "failed" with every problem.
type Reload struct {
	At       time.Time `json:"at"`
	Trigger  string    `json:"trigger"`
	Result   string    `json:"result"`
	Problems []string  `json:"problems,omitempty"`
}

// RouteView is one route as compiled, with its live traffic.
type RouteView struct {
	Name    string            `json:"name"`
	Hosts   []string          `json:"hosts"`
	Match   string            `json:"match"`
	Methods []string          `json:"methods"`
	Auth    string            `json:"auth"`
	Limits  []string          `json:"limits"`
	Answer  string            `json:"answer"`
	Live    live.RouteTraffic `json:"live"`
}

// UpstreamView is one upstream's targets and, when edge runs it, its
// instances.
type UpstreamView struct {
	Name      string           `json:"name"`
	Targets   []TargetView     `json:"targets"`
	Deploying bool             `json:"deploying,omitempty"`
	Instances []process.Status `json:"instances,omitempty"`
}

// TargetView is one upstream target.
type TargetView struct {
	Addr      string  `json:"addr"`
	Healthy   bool    `json:"healthy"`
	InFlight  int64   `json:"in_flight"`
	LatencyMs float64 `json:"latency_ms"`
	Failures  uint64  `json:"passive_failures"`
}

// Security is GET /api/security. Bans carry their whole subject (lifting
// one names it, as DELETE /bans/{kind}/{key} does); the limited keys,
// which only inform, carry openids shortened.
type Security struct {
	Bans           []limits.BanView    `json:"bans"`
	TopLimited     []limits.LimitedKey `json:"top_limited"`
	AuthRejections map[string]uint64   `json:"auth_rejections"`
}

// ShortOpenID keeps an openid's first and last four characters: enough to
// tell users apart on a screen, too little to act as one.
func ShortOpenID(s string) string {
	if utf8.RuneCountInString(s) <= 10 {
		return s
	}
	r := []rune(s)
	return string(r[:4]) + "…" + string(r[len(r)-4:])
}

//go:embed dashboard
var dashboardFiles embed.FS

// dashboardCSP keeps the page to its own origin: nothing it loads or
// sends can go anywhere but the admin listener, even if a value it shows
// were to carry markup.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func dashboardRoutes(mux *http.ServeMux, d Dashboard) {
	if d == nil {
		return
	}
	static, _ := fs.Sub(dashboardFiles, "dashboard")
	files := http.FileServerFS(static)
	page := func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", dashboardCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		http.StripPrefix("/dashboard", files).ServeHTTP(w, r)
	}
	mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dashboard/", http.StatusFound)
	})
	mux.HandleFunc("GET /dashboard/", page)
	mux.HandleFunc("GET /api/overview", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, d.Overview()) })
	mux.HandleFunc("GET /api/routes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"routes": d.Routes()})
	})
	mux.HandleFunc("GET /api/upstreams", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"upstreams": d.UpstreamViews()})
	})
	mux.HandleFunc("GET /api/security", func(w http.ResponseWriter, r *http.Request) {
		sec := d.Security()
		for i := range sec.TopLimited {
			if sec.TopLimited[i].Kind == "openid" {
				sec.TopLimited[i].Key = ShortOpenID(sec.TopLimited[i].Key)
			}
		}
		writeJSON(w, http.StatusOK, sec)
	})
	mux.HandleFunc("GET /api/certificates", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, d.Certificates()) })
	mux.HandleFunc("GET /api/traffic", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, d.Traffic()) })
}
