package gateway

import (
	"fmt"
	"net/http"
	"strings"

	"edge/internal/apierror"
	"edge/internal/config"
	"edge/internal/metrics"
	"edge/internal/reqctx"
	"edge/internal/waf"
)

// wafStep is a route's firewall: the engine its settings compiled to,
// shared with every route of the same settings, and the route's counters.
type wafStep struct {
	engine  *waf.Engine
	metrics *metrics.WAFRoute
}

// wafEngines compiles the engines cfg's routes use, one per distinct
// setting, taking those the serving snapshot already has: the rule set
// takes a fraction of a second and megabytes to compile, and a reload
// that does not touch [waf] should cost neither. A setting the rule set
// refuses fails the reload, naming its key.
func wafEngines(cfg *config.Config, old *snapshot) (map[string]*waf.Engine, error) {
	engines := map[string]*waf.Engine{}
	for i := range cfg.Routes {
		if !cfg.Routes[i].WAFOn() {
			continue
		}
		s := wafSettings(cfg.WAF, cfg.Routes[i].WAF)
		key := s.Key()
		if engines[key] != nil {
			continue
		}
		if old != nil && old.wafs[key] != nil {
			engines[key] = old.wafs[key]
			continue
		}
		e, err := waf.Compile(s)
		if err != nil {
			return nil, fmt.Errorf("waf: %w", err)
		}
		engines[key] = e
	}
	return engines, nil
}

func wafSettings(wc config.WAF, mode string) waf.Settings {
	s := waf.Settings{
		Block:            mode == config.WAFBlock,
		ParanoiaLevel:    wc.ParanoiaLevel,
		AnomalyThreshold: wc.AnomalyThreshold,
		BodyLimit:        int64(wc.BodyLimit),
		ExcludeRules:     wc.ExcludeRules,
	}
	for _, e := range wc.Exclusions {
		s.Exclusions = append(s.Exclusions, waf.Exclusion{Path: e.Path, Rules: e.Rules})
	}
	return s
}

// buildWAF binds a route to its engine; nil when the route has none.
func (g *Gateway) buildWAF(rc *config.Route, wc config.WAF, engines map[string]*waf.Engine) *wafStep {
	if !rc.WAFOn() {
		return nil
	}
	return &wafStep{
		engine:  engines[wafSettings(wc, rc.WAF).Key()],
		metrics: g.metrics.WAF.Route(rc.Name, waf.Pass.String(), waf.Detect.String(), waf.Block.String()),
	}
}

// check inspects the request and refuses it when the engine blocks; a
// detect verdict is only recorded. Either way the access log and the
// metrics say what matched.
//
// A multipart body is inspected whole, its files included, so it is
// first stored whole as one of unknown length is (spoolBody: held to the
// route's max_body, 64KB in memory and the rest on disk): an upload may
// be megabytes, and the upstream must not see a byte of it before the
// verdict.
//
// The stored body, when there is one, is the caller's to close once the
// request is over.
func (s *wafStep) check(w http.ResponseWriter, r *http.Request, info *reqctx.Info) (ok bool, stored *spooledBody) {
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody && waf.StoresWhole(r.Header) {
		var err error
		if stored, err = spoolBody(r); err != nil {
			answerSpoolFailure(w, r, info, err)
			return false, nil
		}
	}
	v := s.engine.Inspect(r, info.ClientIP.String())
	s.metrics.Count(int(v.Action), v.Rules)
	info.WAF = v.Action.String()
	info.WAFRules = strings.Join(v.Rules, ",")
	if v.Action != waf.Block {
		return true, stored
	}
	if v.TooLarge {
		info.Reason = reasonWAFBodyTooLarge
		apierror.Write(w, r, apierror.BodyTooLarge, "request body is larger than the firewall inspects")
		return false, stored
	}
	info.Reason = reasonWAFBlocked
	apierror.Write(w, r, apierror.WAFBlocked, "request refused by the web application firewall")
	return false, stored
}
