package gateway

import (
	"fmt"
	"net/http"
	"os"

	"edge/internal/answer"
	"edge/internal/config"
	"edge/internal/proxy"
)

// buildAnswers compiles the route's answer steps: CORS and basic auth
// into the plan, and returns what wraps a final handler in the error pages
// and compression (compression outermost, so pages are compressed too);
// a release's next version gets the same.
func (rt *route) buildAnswers(rc *config.Route) (func(http.Handler) http.Handler, error) {
	var err error
	if o := rc.CORS; o != nil {
		rt.cors, err = answer.NewCORS(answer.CORSOptions{
			Origins: o.Origins, Methods: o.Methods, Headers: o.Headers, Expose: o.ExposeHeaders,
			Credentials: o.Credentials, MaxAge: o.MaxAge.Std(),
		})
		if err != nil {
			return nil, fmt.Errorf("cors: %w", err)
		}
	}
	if a := rc.AuthBasic; a != nil {
		if rt.basicAuth, err = answer.LoadBasicAuth(a.UserFile, a.Realm, a.ForwardAuthorization); err != nil {
			return nil, fmt.Errorf("auth_basic: %w", err)
		}
	}
	var pages []answer.ErrorPage
	for _, p := range rc.ErrorPages {
		body := []byte(p.Body)
		if p.File != "" {
			if body, err = os.ReadFile(p.File); err != nil {
				return nil, fmt.Errorf("error_pages: %w", err)
			}
		}
		pages = append(pages, answer.ErrorPage{Statuses: p.Status, Body: body, ContentType: p.ContentType})
	}
	var encs []proxy.Encoding
	for _, n := range rc.Encodings() {
		e, _ := proxy.ParseEncoding(n)
		encs = append(encs, e)
	}
	return func(h http.Handler) http.Handler {
		if pages != nil {
			h = answer.ErrorPages(h, pages)
		}
		if encs != nil {
			h = proxy.Gzip(h, proxy.GzipOptions{Encodings: encs})
		}
		return h
	}, nil
}
