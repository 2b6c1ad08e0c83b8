package admin

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/config"
	"edge/internal/identity"
	"edge/internal/process"
)

type fakeGateway struct {
	deployErr error
	server    config.Server
}

func (f *fakeGateway) Ready() bool                 { return true }
func (f *fakeGateway) Reload() (string, error)     { return "reloaded", nil }
func (f *fakeGateway) Server() *config.Server      { return &f.server }
func (f *fakeGateway) Sealer() *identity.Sealer    { return nil }
func (f *fakeGateway) Processes() (bool, []string) { return true, nil }
func (f *fakeGateway) Upstreams() []Upstream {
	return []Upstream{{Name: "api", Instances: []process.Status{{PID: 42}}}}
}
func (f *fakeGateway) Deploy(string) (process.Deployed, error) {
	return process.Deployed{Version: 3, Replaced: 1}, f.deployErr
}

// TestDeployAnswers: POST /upstreams/NAME/deploy answers JSON whatever the
// outcome, with the status saying which: unknown upstream, busy, failed,
// succeeded; GET /upstreams lists the instances.
func TestDeployAnswers(t *testing.T) {
	cases := []struct {
		err    error
		status int
		body   string
	}{
		{nil, 200, `{"replaced":1,"result":"succeeded","upstream":"api","version":3}`},
		{ErrNotRun, 404, `{"error":"no upstream of that name has [upstreams.run]","result":"not found","upstream":"api"}`},
		{process.ErrDeploying, 409, `{"error":"a deploy of this upstream is already running","result":"busy","upstream":"api"}`},
		{errors.New("instance 0 of version 3 did not pass"), 500, `{"error":"instance 0 of version 3 did not pass","replaced":1,"result":"failed","upstream":"api","version":3}`},
	}
	for _, tc := range cases {
		h := Handler(Options{Gateway: &fakeGateway{deployErr: tc.err}, Registry: prometheus.NewRegistry(), Bans: http.NotFoundHandler(), Log: slog.New(slog.DiscardHandler)})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "http://127.0.0.1/upstreams/api/deploy", nil))
		if rec.Code != tc.status || strings.TrimSpace(rec.Body.String()) != tc.body || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("deploy error %v: %d %s, want %d %s", tc.err, rec.Code, rec.Body, tc.status, tc.body)
		}
	}
	h := Handler(Options{Gateway: &fakeGateway{}, Registry: prometheus.NewRegistry(), Bans: http.NotFoundHandler(), Log: slog.New(slog.DiscardHandler)})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://127.0.0.1/upstreams", nil))
	b, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 || !strings.Contains(string(b), `{"upstreams":[{"name":"api","deploying":false,"instances":[{"instance":0,"version":0,"state":"","pid":42,`) {
		t.Errorf("GET /upstreams: %d %s", rec.Code, b)
	}
}

// TestDeployNeedsToken: with admin_token set, a deploy without it is
// refused before it reaches the gateway.
func TestDeployNeedsToken(t *testing.T) {
	g := &fakeGateway{deployErr: errors.New("must not be called")}
	g.server.AdminToken = config.Secret("s3cret")
	h := Handler(Options{Gateway: g, Registry: prometheus.NewRegistry(), Bans: http.NotFoundHandler(), Log: slog.New(slog.DiscardHandler)})
	for _, path := range []string{"/upstreams/api/deploy", "/upstreams"} {
		method := "POST"
		if path == "/upstreams" {
			method = "GET"
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "http://127.0.0.1"+path, nil))
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%s %s without the token: %d", method, path, rec.Code)
		}
	}
}
