package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"edge/internal/apierror"
)

// Releases changes the weight of a route's [routes.release] live, until
// the next reload.
type Releases interface {
	SetReleaseWeight(route string, weight int) (Release, error)
}

// Release is a route's release after a change, as the API answers it.
type Release struct {
	Route    string `json:"route"`
	Upstream string `json:"upstream"` // the next version
	Weight   int    `json:"weight"`
	Was      int    `json:"was"`
	// File is the config file's weight, which the next reload restores.
	File int `json:"file_weight"`
}

// Errors of SetReleaseWeight the API answers as the client's mistake.
var (
	ErrNoRelease = errors.New("no such release")
	ErrBadWeight = errors.New("bad weight")
)

// releaseRoutes serves POST /routes/NAME/release {"weight": N} and its
// two shorthands, promote (100: everyone on next) and rollback (0: only
// the testers in openids).
func releaseRoutes(mux *http.ServeMux, rs Releases) {
	if rs == nil {
		return
	}
	set := func(w http.ResponseWriter, r *http.Request, weight int) {
		rel, err := rs.SetReleaseWeight(r.PathValue("name"), weight)
		switch {
		case errors.Is(err, ErrNoRelease):
			apierror.Write(w, r, apierror.NotFound, err.Error())
			return
		case err != nil:
			apierror.Write(w, r, apierror.BadRequest, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Result string `json:"result"`
			Release
		}{"changed until the next reload", rel})
	}
	mux.HandleFunc("POST /routes/{name}/release", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Weight *int `json:"weight"`
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || req.Weight == nil {
			apierror.Write(w, r, apierror.BadRequest, `send {"weight": N} with N from 0 to 100`)
			return
		}
		set(w, r, *req.Weight)
	})
	mux.HandleFunc("POST /routes/{name}/release/promote", func(w http.ResponseWriter, r *http.Request) { set(w, r, 100) })
	mux.HandleFunc("POST /routes/{name}/release/rollback", func(w http.ResponseWriter, r *http.Request) { set(w, r, 0) })
}
