package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"edge/internal/answer"
	"edge/internal/apierror"
	"edge/internal/cache"
	"edge/internal/config"
	"edge/internal/identity"
	"edge/internal/limits"
	"edge/internal/live"
	"edge/internal/metrics"
	"edge/internal/process"
	"edge/internal/proxy"
	"edge/internal/reqctx"
	edgetls "edge/internal/tls"
	"edge/internal/waf"
	"edge/internal/webhook"
)

// snapshot is one compiled config. It is never mutated after publication;
// a reload builds a new one and swaps the pointer.
type snapshot struct {
	cfg            *config.Config
	router         *proxy.Router
	routes         []*route
	notFound       *metrics.Route
	notFoundLive   *live.Route
	trustedProxies []netip.Prefix
	accessLog      bool // for requests no route matched
	accessFormat   *accessFormat
	upstreamList   []*proxy.Upstream
	// identity is the compiled identity service (sessions, logins).
	identity *identity.Service
	// logins are the apps' login endpoints by exact path, on any host.
	logins map[string]*route
	// hsts is the Strict-Transport-Security value for HTTPS answers.
	hsts   []string
	port80 port80
	// wafs are the compiled firewall engines by waf.Settings.Key, kept so
	// the next reload reuses those whose settings did not change.
	wafs map[string]*waf.Engine
	// cacheGens are the generation of each cached route's answer-shaping
	// settings (cacheGeneration), which the cache store keeps answers of.
	cacheGens map[string]string

	// cancel ends this snapshot's background work (health checks); nil
	// until start.
	cancel context.CancelFunc
}

// start begins the snapshot's background work once it serves and its
// predecessor's has ended.
func (s *snapshot) start(onChange func(*proxy.Target, bool)) {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, u := range s.upstreamList {
		u.Start(ctx, onChange)
	}
}

// stop ends the background work of a snapshot that has been replaced and
// waits for it.
func (s *snapshot) stop() {
	if s.cancel != nil {
		s.cancel()
	}
	for _, u := range s.upstreamList {
		u.Stop()
	}
}

// route is the compiled plan of one [[routes]] entry or app login
// endpoint: every step's state, bound when the config is compiled and run
// by serve, so a request looks nothing up by name.
type route struct {
	name            string
	metrics         *metrics.Route
	live            *live.Route
	maxBody         int64
	bodyPause       time.Duration // server.read_timeout
	responseHeaders proxy.HeaderRules
	// accessLog is the route's access = …, or log.access when unset
	// (nginx: a location's access_log overrides the server's).
	accessLog bool

	limits    limits.Route
	cors      *answer.CORS      // nil without cors
	basicAuth *answer.BasicAuth // nil without auth_basic
	// identity is nil on login endpoints, which establish an identity
	// rather than check one.
	identity *identity.Policy
	verify   *webhook.Verifier // nil without verify
	waf      *wafStep          // nil with waf = "off"
	// final answers: the upstream, static files, a fixed answer or a
	// login; with the route's error pages and compression around it.
	final http.Handler
	// spoolUnknownLength reads a body of unknown length whole before it
	// goes upstream (spoolBody): on routes that proxy.
	spoolUnknownLength bool
	// release sends a share of the requests to the next version instead
	// of final; nil without [routes.release].
	release *release
	// cache answers GET and HEAD requests from stored answers around
	// the upstream exchange (either version of a release); nil without
	// [routes.cache].
	cache *cache.Policy
}

// staged is a compiled config that does not serve yet: its snapshot, and
// the upstream targets and limits it was compiled against, uncommitted.
type staged struct {
	g       *Gateway
	snap    *snapshot
	targets *proxy.Stage
	limits  *limits.Prepared
	// slots are the instances each upstream edge runs has under this
	// config; the snapshot's targets are theirs.
	slots map[string][]*process.Slot
}

// Prepare compiles cfg against the lasting state without changing what
// serves: a failure leaves everything as it was.
func (g *Gateway) Prepare(cfg *config.Config) (*staged, error) {
	lim, err := g.lasting.limits.Prepare(cfg)
	if err != nil {
		return nil, fmt.Errorf("limits: %w", err)
	}
	slots, err := g.planInstances(cfg)
	if err != nil {
		return nil, err
	}
	targets := g.lasting.targets.Stage()
	snap, err := g.compile(cfg, targets, lim, slots)
	if err != nil {
		return nil, err
	}
	return &staged{g: g, snap: snap, targets: targets, limits: lim, slots: slots}, nil
}

// Apply makes the staged config serve: its targets and limits commit, its
// snapshot is swapped in (the one pointer a request loads), and the
// replaced snapshot's health checks end before the new ones begin, so no
// target is checked by two snapshots at once.
func (st *staged) Apply() {
	st.targets.Commit()
	st.limits.Commit()
	st.g.lasting.cache.Resize(int64(st.snap.cfg.Cache.MaxSize))
	// Before the swap: from here on no answer fetched under a route's old
	// settings is served or stored.
	if n := st.g.lasting.cache.Retain(st.snap.cacheGens); n > 0 {
		st.g.log.Info("cache: dropped the answers of routes whose settings changed", "answers", n)
	}
	if old := st.g.snap.Swap(st.snap); old != nil {
		old.stop()
		st.g.logReleasesReset(old, st.snap)
	}
	st.snap.start(st.g.healthChanged)
}

// compile builds a snapshot from a validated config, taking its upstream
// targets from the stage and binding each route to its limits in the
// prepared limits config, so the snapshot is the one pointer a reload swaps. Nothing goes live and nothing starts: the caller
// commits the stage, swaps the snapshot in and starts it. Errors here are
// the few things validation cannot know (a static root that vanished since).
func (g *Gateway) compile(cfg *config.Config, targets *proxy.Stage, lim *limits.Prepared, slots map[string][]*process.Slot) (*snapshot, error) {
	s := &snapshot{
		cfg:            cfg,
		notFound:       g.metrics.Route(""),
		notFoundLive:   g.live.Route(""),
		trustedProxies: cfg.Server.TrustedProxies,
		accessLog:      cfg.Log.Access == nil || *cfg.Log.Access,
		accessFormat:   compileAccessFormat(cfg.Log),
		cacheGens:      make(map[string]string),
	}
	upstreams := make(map[string]*proxy.Upstream, len(cfg.Upstreams))
	for _, uc := range cfg.Upstreams {
		u, err := g.buildUpstream(uc, targets, slots[uc.Name])
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", uc.Name, err)
		}
		upstreams[uc.Name] = u
		s.upstreamList = append(s.upstreamList, u)
	}
	if v := edgetls.HSTSValue(cfg.TLS.HSTS); v != "" {
		s.hsts = []string{v}
	}
	svc, err := g.identityService(cfg)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	s.identity = svc
	if s.wafs, err = wafEngines(cfg, g.snap.Load()); err != nil {
		return nil, err
	}
	if s.logins, err = g.loginRoutes(svc, lim); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	for _, rt := range s.logins {
		rt.bodyPause = cfg.Server.ReadTimeout.Std()
		rt.accessLog = s.accessLog
	}
	specs := make([]proxy.RouteSpec, len(cfg.Routes))
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		specs[i] = proxy.RouteSpec{Hosts: rc.Hosts, Prefix: rc.Path, BeforeRegex: rc.BeforeRegex, Exact: rc.Exact, Methods: rc.Methods}
		if rc.Regex != "" {
			if specs[i].Regex, err = regexp.Compile(rc.RegexSource()); err != nil {
				return nil, fmt.Errorf("route %q: regex: %w", rc.Name, err)
			}
		}
		rt, err := g.buildRoute(rc, specs[i].Regex, upstreams, svc, lim.Route(rc.Name))
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", rc.Name, err)
		}
		rt.bodyPause = cfg.Server.ReadTimeout.Std()
		rt.accessLog = s.accessLog
		rt.waf = g.buildWAF(rc, cfg.WAF, s.wafs)
		if rc.Cache != nil {
			gen := cacheGeneration(cfg, rc)
			s.cacheGens[rc.Name] = gen
			rt.cache = g.buildCache(rc.Name, gen, rc.Cache, cfg.Cache)
		}
		if rc.Access != nil {
			rt.accessLog = *rc.Access
		}
		s.routes = append(s.routes, rt)
	}
	s.router = proxy.NewRouter(specs)
	for _, rt := range s.routes {
		rt.live = g.live.Route(rt.name)
	}
	for _, rt := range s.logins {
		rt.live = g.live.Route(rt.name)
	}
	return s, nil
}

func (g *Gateway) healthChanged(t *proxy.Target, healthy bool) {
	state := "down"
	if healthy {
		state = "up"
	}
	g.log.Warn("upstream target health changed", "upstream", t.Upstream, "target", t.Addr, "state", state)
}

var balances = map[string]proxy.Balance{
	"round_robin": proxy.RoundRobin, "least_conn": proxy.LeastConn,
	"random_two": proxy.RandomTwo, "hash": proxy.Hash,
}

func (g *Gateway) buildUpstream(uc config.Upstream, stage *proxy.Stage, slots []*process.Slot) (*proxy.Upstream, error) {
	tlsOpts, err := upstreamTLS(uc)
	if err != nil {
		return nil, err
	}
	to := proxy.TransportOptions{
		ConnectTimeout:        uc.ConnectTimeout.Std(),
		ResponseHeaderTimeout: uc.ResponseHeaderTimeout.Std(),
		MaxIdle:               uc.Keepalive,
		IdleTimeout:           upstreamIdleTimeout,
		TLS:                   tlsOpts,
	}
	members := make([]proxy.Member, len(uc.Targets))
	for i, tc := range uc.Targets {
		members[i] = proxy.Member{Target: stage.Target(uc.Name, tc.Address, to), Weight: tc.Weight, Backup: tc.Backup}
	}
	for _, t := range instanceTargets(uc.Name, slots, stage, to) {
		members = append(members, proxy.Member{Target: t, Weight: 1})
	}
	hashHeader := ""
	if h, ok := strings.CutPrefix(uc.HashKey, "header:"); ok {
		hashHeader = textproto.CanonicalMIMEHeaderKey(h)
	}
	u := proxy.NewUpstream(proxy.UpstreamOptions{
		Name:         uc.Name,
		Balance:      balances[uc.Balance],
		HashHeader:   hashHeader,
		Retries:      uc.Retries,
		RetryOn:      uc.RetryOn,
		RetryTimeout: uc.RetryTimeout.Std(),
		ReadTimeout:  uc.ReadTimeout.Std(),
		Passive: proxy.PassiveOptions{
			MaxFails: uc.Passive.MaxFails,
			Window:   uc.Passive.Window.Std(),
			Cooldown: uc.Passive.Cooldown.Std(),
		},
		Health: proxy.HealthOptions{
			Path:               uc.HealthCheck.Path,
			Interval:           uc.HealthCheck.Interval.Std(),
			Timeout:            uc.HealthCheck.Timeout.Std(),
			ExpectStatus:       uc.HealthCheck.ExpectStatus,
			HealthyThreshold:   uc.HealthCheck.HealthyThreshold,
			UnhealthyThreshold: uc.HealthCheck.UnhealthyThreshold,
		},
	}, members)
	u.OnPassiveDown = func(t *proxy.Target) {
		g.log.Warn("upstream target taken out after repeated failures", "upstream", t.Upstream, "target", t.Addr,
			"cooldown", uc.Passive.Cooldown.Std().String())
	}
	u.OnRetry = g.metrics.UpstreamRetries(uc.Name, uc.RetryOn)
	return u, nil
}

// upstreamTLS reads an upstream's TLS files: their contents, not their
// names, decide whether a reload keeps the targets' connections.
func upstreamTLS(uc config.Upstream) (proxy.TLSOptions, error) {
	o := proxy.TLSOptions{Enabled: uc.TLS, ServerName: uc.TLSServerName}
	if !uc.TLS {
		return o, nil
	}
	for _, f := range []struct {
		key, path string
		dst       *string
	}{{"tls_ca", uc.TLSCA, &o.CAPEM}, {"tls_client_cert", uc.TLSClientCert, &o.CertPEM}, {"tls_client_key", uc.TLSClientKey, &o.KeyPEM}} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return o, fmt.Errorf("%s: %w", f.key, err)
		}
		*f.dst = string(b)
	}
	if err := o.Check(); err != nil {
		return o, fmt.Errorf("tls: %w", err)
	}
	return o, nil
}

// upstreamIdleTimeout closes pooled connections nobody used for a minute.
const upstreamIdleTimeout = 60 * time.Second

func headerRules(set map[string]string, remove []string) proxy.HeaderRules {
	var h proxy.HeaderRules
	for _, name := range remove {
		h.Remove = append(h.Remove, textproto.CanonicalMIMEHeaderKey(name))
	}
	for name, v := range set {
		h.Set = append(h.Set, proxy.HeaderValue{Name: textproto.CanonicalMIMEHeaderKey(name), Value: v})
	}
	return h
}

// buildRoute compiles one route's plan; serve runs its steps in order. re
// is the route's compiled regex, nil unless it matches by one.
func (g *Gateway) buildRoute(rc *config.Route, re *regexp.Regexp, upstreams map[string]*proxy.Upstream, svc *identity.Service, lim limits.Route) (*route, error) {
	rt := &route{
		name:            rc.Name,
		metrics:         g.metrics.Route(rc.Name),
		maxBody:         defaultMaxBody,
		responseHeaders: headerRules(rc.SetResponseHeaders, rc.RemoveResponseHeaders),
		limits:          lim,
	}
	if rc.MaxBody != nil {
		rt.maxBody = int64(*rc.MaxBody)
	}
	strip := ""
	if rc.StripPrefix {
		strip = rc.Path
	}
	var readTimeout time.Duration
	if rc.UpstreamReadTimeout != nil {
		readTimeout = rc.UpstreamReadTimeout.Std()
	}
	var rewrite *proxy.Rewrite
	if rc.Rewrite != nil {
		from, err := regexp.Compile(rc.Rewrite.From)
		if err != nil {
			return nil, fmt.Errorf("rewrite.from: %w", err)
		}
		to, err := proxy.ParseTemplate(rc.Rewrite.To)
		if err != nil {
			return nil, fmt.Errorf("rewrite.to: %w", err)
		}
		rewrite = &proxy.Rewrite{From: from, To: to}
	}
	var h http.Handler
	var err error
	switch {
	case rc.Upstream != "":
		rt.spoolUnknownLength = true
		h = proxy.NewProxy(proxy.ProxyOptions{
			Route:          rc.Name,
			Upstream:       upstreams[rc.Upstream],
			StripPrefix:    strip,
			Rewrite:        rewrite,
			RequestHeaders: headerRules(rc.SetRequestHeaders, rc.RemoveRequestHeaders),
			WebSocket:      rc.WebSocket,
			ReadTimeout:    readTimeout,
			WebSocketsOpen: g.metrics.WebSocketsOpen(),
			Logger:         g.log,
		})
		if rc.Release != nil {
			rt.release = newRelease(rc.Release, proxy.ForUpstream(h, upstreams[rc.Release.Upstream], readTimeout))
		}
	case rc.Static != "":
		prefix := ""
		if rc.Path != "/" {
			prefix = rc.Path
		}
		h, err = proxy.NewStatic(proxy.StaticOptions{Root: rc.Static, Index: rc.Index, SPA: rc.SPA, StripPrefix: prefix, Precompressed: rc.Precompressed})
		if err != nil {
			return nil, err
		}
	case rc.Respond != nil:
		h = respondHandler(*rc.Respond)
	case rc.Redirect != nil:
		to, err := proxy.ParseTemplate(rc.Redirect.To)
		if err != nil {
			return nil, fmt.Errorf("redirect.to: %w", err)
		}
		h = proxy.NewRedirect(re, to, rc.Redirect.Status)
	default:
		return nil, fmt.Errorf("no upstream, static, respond or redirect")
	}
	wrap, err := rt.buildAnswers(rc)
	if err != nil {
		return nil, err
	}
	h = wrap(h)
	if rt.release != nil {
		rt.release.next = wrap(rt.release.next)
	}
	rt.final = h
	if rc.Verify != "" {
		rt.verify, err = webhook.New(rc.RouteCallback, webhook.Options{
			Route: rc.Name, Dir: filepath.Dir(g.configPath), MaxBody: rt.maxBody, Metrics: g.metrics.Webhook,
		})
		if err != nil {
			return nil, err
		}
	}
	if rt.identity, err = svc.Policy(rc); err != nil {
		return nil, err
	}
	return rt, nil
}

// defaultMaxBody is nginx's client_max_body_size default.
const defaultMaxBody = 1 << 20

func respondHandler(rc config.Respond) http.Handler {
	body := []byte(rc.Body)
	ctype := rc.ContentType
	if ctype == "" {
		ctype = "text/plain; charset=utf-8"
	}
	status := rc.Status
	if status == 0 {
		status = http.StatusOK
	}
	length := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{ctype}
		h["Content-Length"] = []string{length}
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	})
}

// route finds the route for r. It cleans the path first (dot segments,
// repeated slashes) so that "/public/../admin" is matched, and forwarded, as
// "/admin", and refuses paths that other servers read differently: a
// route's rules cannot be sidestepped by path tricks. No route: nil, with
// the reason in info.
func (s *snapshot) route(r *http.Request, info *reqctx.Info) *route {
	p, ok := proxy.CleanPath(r.URL.Path)
	if !ok {
		info.Reason = reasonAmbiguousPath
		return nil
	}
	if p != r.URL.Path {
		r.URL.Path = p
		r.URL.RawPath = ""
	}
	if len(s.logins) > 0 {
		if rt := s.logins[p]; rt != nil {
			return rt
		}
	}
	i := s.router.Match(r.Host, p, r.Method)
	if i < 0 {
		info.Reason = reasonNoRoute
		return nil
	}
	return s.routes[i]
}

// serve runs a request through the route's plan, top to bottom; a step
// that refuses the request has answered it. The checks that need no
// identity come first, so a denied client costs no signature check; the
// limits that count by openid come once identity has established it.
func (rt *route) serve(w http.ResponseWriter, r *http.Request, info *reqctx.Info) {
	// First, so that every answer below carries the CORS headers a page
	// needs to read it, and a preflight (which carries no credentials) is
	// answered before any check would refuse it.
	if rt.cors != nil {
		var done bool
		if w, done = rt.cors.Handle(w, r); done {
			return
		}
	}
	if r.ContentLength > rt.maxBody {
		info.Reason = reasonBodyTooLarge
		apierror.Write(w, r, apierror.BodyTooLarge, "request body is larger than this route allows")
		return
	}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		lb := &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, rt.maxBody), info: info, pause: rt.bodyPause, w: w}
		if lb.pause > 0 {
			lb.rc = http.NewResponseController(w)
		}
		r.Body = lb
	}
	// Read before basic auth and the identity step remove the headers
	// that say so.
	identified := false
	if rt.cache != nil {
		identified = rt.cache.Identified(r)
	}
	// IP lists, User-Agent rules, IP bans.
	if !rt.limits.Guard(w, r, info) {
		return
	}
	// HTTP basic credentials from the route's htpasswd file.
	if rt.basicAuth != nil && !rt.basicAuth.Check(w, r) {
		return
	}
	// The auth policy; it also strips client-sent identity headers.
	if rt.identity != nil && !rt.identity.Check(w, r, info) {
		return
	}
	// Openid bans, the in-flight cap and the rate rules, all or nothing.
	adm, ok := rt.limits.Admit(w, r, info)
	if !ok {
		return
	}
	defer adm.Release()
	// The firewall is the dearest check (a millisecond or so of CPU), so
	// it comes after every cheap one: a client over its rate limit, banned
	// or without credentials costs no inspection. It comes before
	// anything reaches the upstream, and it reads the body itself (giving
	// it back whole), so the webhook check after it sees the same bytes.
	if rt.waf != nil {
		ok, stored := rt.waf.check(w, r, info)
		if stored != nil {
			defer stored.Close()
		}
		if !ok {
			return
		}
	}
	if rt.verify != nil && !rt.verify.Check(w, r) {
		return
	}
	if rt.spoolUnknownLength && r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody {
		sb, err := spoolBody(r)
		if err != nil {
			answerSpoolFailure(w, r, info, err)
			return
		}
		defer sb.Close()
	}
	h := rt.final
	if rt.release != nil && rt.release.toNext(info) {
		h = rt.release.next
	}
	// Last, so that a stored answer reaches only requests the route's
	// checks let through.
	if rt.cache != nil {
		rt.cache.Serve(w, r, h, identified || info.OpenID != "")
		if v := w.Header()["X-Cache"]; len(v) > 0 {
			info.Cache = v[0]
		}
		return
	}
	h.ServeHTTP(w, r)
}

// limitedBody enforces the route's body limit and server.read_timeout as
// the longest pause between two reads of the body (nginx
// client_body_timeout), and notes in the request's Info why a read failed:
// by the time the error surfaces from the upstream transport, net/http has
// wrapped it in a type errors.As cannot see through.
type limitedBody struct {
	io.ReadCloser
	info  *reqctx.Info
	pause time.Duration
	rc    *http.ResponseController
	w     http.ResponseWriter

	// mu orders StopReading's expired deadline after any deadline Read
	// sets, so that a read in progress or about to start cannot outlive it.
	mu      sync.Mutex
	stopped bool
}

var errBodyStopped = errors.New("the rest of the body is not wanted")

func (b *limitedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return 0, errBodyStopped
	}
	if b.rc != nil {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.pause))
	}
	b.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.stopped {
			// The failure is StopReading's doing, not the client's. The
			// expired deadline stays: net/http then fails at once to drain
			// the rest and closes the connection.
			b.rc = nil
			return n, err
		}
		var tooLarge *http.MaxBytesError
		var ne net.Error
		stalled := errors.As(err, &ne) && ne.Timeout()
		if b.rc != nil && !stalled {
			// The body is over: net/http's background read for the next
			// request must not inherit the deadline (it would cancel this
			// request's context when it fires).
			_ = b.rc.SetReadDeadline(time.Time{})
		}
		// A stalled body keeps its expired deadline: net/http then fails at
		// once to read the rest before answering (or to drain it after),
		// sends the 408 and closes the connection, instead of waiting for
		// a client that stopped sending.
		b.rc = nil
		switch {
		case errors.As(err, &tooLarge):
			b.info.Reason = reasonBodyTooLarge
		case stalled:
			b.info.Reason = reasonBodyTimeout
		}
	}
	return n, err
}

// StopReading is called by the proxy when the upstream has answered in full
// before it had the whole body: the rest is not wanted, and a read waiting
// for the client must end now rather than when the client sends more.
func (b *limitedBody) StopReading() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	b.stopped = true
	_ = http.NewResponseController(b.w).SetReadDeadline(time.Unix(1, 0))
}

const (
	reasonNoRoute         = "no_route"
	reasonAmbiguousPath   = "ambiguous_path"
	reasonUpstreamAborted = "upstream_aborted"
	reasonPanic           = "panic"
	reasonBodyTooLarge    = "body_too_large"
	reasonBodyTimeout     = "client_body_timeout"
	reasonBodySpoolFailed = "body_spool_failed"
	// A head the HTTP/1.1 front refused: a shape servers read differently
	// (400), or larger than server.max_header_bytes (431).
	reasonBadHead         = "bad_head"
	reasonHeadTooLarge    = "head_too_large"
	reasonWAFBlocked      = "waf_blocked"
	reasonWAFBodyTooLarge = "waf_body_too_large"
)
