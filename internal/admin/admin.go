// Package admin is the admin listener's API: metrics, health and
// readiness, profiles, reload, bans, session revocation, cache purges, the status
// and deploys of the app instances edge runs, and the live dashboard
// with its JSON API (dashboard.go), behind the
// guard that keeps browser pages and strangers out (guard.go).
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"edge/internal/apierror"
	"edge/internal/config"
	"edge/internal/identity"
	"edge/internal/process"
)

// Gateway is what the admin API asks of the running gateway.
type Gateway interface {
	// Ready is false before the listeners are up and during the drain.
	Ready() bool
	// Reload reads and applies the config file (POST /reload).
	Reload() (result string, err error)
	// Server is the running config's [server] section (admin_hosts,
	// admin_token), read per request so a reload applies it.
	Server() *config.Server
	// Sealer opens and revokes session tokens; nil without [sessions].
	Sealer() *identity.Sealer
	// Processes is the state of the app instances edge runs, one line
	// per upstream; ok is false when an upstream has none ready.
	Processes() (ok bool, detail []string)
	// Upstreams are the upstreams edge runs, with their instances.
	Upstreams() []Upstream
	// Deploy replaces an upstream's instances by a rolling deploy and
	// returns when it is over: ErrNotRun for an upstream edge does not
	// run, process.ErrDeploying while another deploy of it runs.
	Deploy(upstream string) (process.Deployed, error)
}

// Upstream is one upstream edge runs, as GET /upstreams lists it.
type Upstream struct {
	Name      string           `json:"name"`
	Deploying bool             `json:"deploying"`
	Instances []process.Status `json:"instances"`
}

// ErrNotRun is Deploy's answer for an upstream without [upstreams.run].
var ErrNotRun = errors.New("no upstream of that name has [upstreams.run]")

// Options are the parts the admin API serves.
type Options struct {
	Gateway  Gateway
	Registry *prometheus.Registry
	// Bans serves /bans and /bans/... (the limits engine's handler).
	Bans http.Handler
	// Releases serves /routes/NAME/release (release.go).
	Releases Releases
	// Cache serves POST /cache/purge (cache.go).
	Cache Purger
	// Dashboard serves the page at /dashboard/ and its /api/...
	// (dashboard.go); nil leaves both out.
	Dashboard Dashboard
	Log       *slog.Logger
}

// Handler is the admin listener's handler.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !o.Gateway.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		// One failed instance leaves the others serving, and the replica
		// ready; an upstream with no instance up cannot be served here,
		// and a load balancer should send its users elsewhere.
		ok, detail := o.Gateway.Processes()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "not ready: an upstream has no instance ready\n")
		} else {
			_, _ = io.WriteString(w, "ready\n")
		}
		for _, line := range detail {
			_, _ = io.WriteString(w, line+"\n")
		}
	})
	// Profiles, as Caddy's admin endpoint offers: the admin listener is
	// loopback-only by default, and guarded.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.Handle("/bans", o.Bans)
	mux.Handle("/bans/", o.Bans)
	releaseRoutes(mux, o.Releases)
	cacheRoutes(mux, o.Cache)
	dashboardRoutes(mux, o.Dashboard)
	mux.HandleFunc("POST /sessions/revoke", func(w http.ResponseWriter, r *http.Request) { revokeSession(w, r, o) })
	mux.HandleFunc("GET /upstreams", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"upstreams": o.Gateway.Upstreams()})
	})
	mux.HandleFunc("POST /upstreams/{name}/deploy", func(w http.ResponseWriter, r *http.Request) { deploy(w, r, o) })
	// Every answer of the API is JSON, a path it does not serve included
	// (ServeMux's own is plain text).
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierror.Write(w, r, apierror.NotFound, "the admin API has no endpoint for this method and path")
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		result, err := o.Gateway.Reload()
		w.Header().Set("Content-Type", "application/json")
		body := map[string]any{"result": result}
		if err != nil {
			body["problems"] = strings.Split(err.Error(), "\n")
			w.WriteHeader(http.StatusUnprocessableEntity)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	return guard(o.Gateway, mux)
}

// deploy answers when the rollout is over, however long it takes; the
// client going away does not stop it, since a half-done rollout is the
// state most worth finishing or undoing deliberately.
func deploy(w http.ResponseWriter, r *http.Request, o Options) {
	name := r.PathValue("name")
	d, err := o.Gateway.Deploy(name)
	body := map[string]any{"upstream": name}
	status := http.StatusOK
	switch {
	case errors.Is(err, ErrNotRun):
		status, body["result"] = http.StatusNotFound, "not found"
	case errors.Is(err, process.ErrDeploying):
		status, body["result"] = http.StatusConflict, "busy"
	case err != nil:
		status, body["result"] = http.StatusInternalServerError, process.DeployFailed
		body["version"], body["replaced"] = d.Version, d.Replaced
	default:
		body["result"] = process.DeploySucceeded
		body["version"], body["replaced"] = d.Version, d.Replaced
	}
	if err != nil {
		body["error"] = err.Error()
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// revokeTimeout bounds the Redis calls of one revocation.
const revokeTimeout = 5 * time.Second

// revokeSession logs a user out everywhere: POST {"token": "..."}. The
// token is put on the revocation list in Redis until it would have expired
// ([cluster] redis is required: without a shared store a token stays valid
// until it expires).
func revokeSession(w http.ResponseWriter, r *http.Request, o Options) {
	var req struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<10)).Decode(&req); err != nil || req.Token == "" {
		apierror.Write(w, r, apierror.BadRequest, `send {"token": "<the session token>"}`)
		return
	}
	sealer := o.Gateway.Sealer()
	if sealer == nil {
		apierror.Write(w, r, apierror.NotFound, "no [sessions] configured: this gateway issues no tokens")
		return
	}
	sess, err := sealer.Open(req.Token)
	switch {
	case errors.Is(err, identity.ErrTokenExpired):
		writeJSON(w, http.StatusOK, map[string]string{"result": "already expired"})
		return
	case err != nil:
		apierror.Write(w, r, apierror.BadRequest, "not a token of this gateway")
		return
	}
	// An operator would rather wait than be told the revocation holds on
	// one replica only, but not for as long as go-redis retries a dead
	// Redis.
	ctx, cancel := context.WithTimeout(r.Context(), revokeTimeout)
	defer cancel()
	switch err := sealer.Revoke(ctx, sess); {
	case errors.Is(err, identity.ErrRevokedHereOnly):
		o.Log.Warn("session revoked on this replica only: redis did not take it", "appid", sess.AppID, "openid", sess.OpenID, "error", err.Error())
		apierror.Write(w, r, apierror.Unavailable, "redis did not take the revocation: this replica refuses the token, the others do not; send the revocation again once redis answers")
		return
	case err != nil:
		apierror.Write(w, r, apierror.NotFound, "revoking a token needs [cluster] redis")
		return
	}
	o.Log.Info("session revoked", "appid", sess.AppID, "openid", sess.OpenID)
	writeJSON(w, http.StatusOK, map[string]string{"result": "revoked"})
}
