package tls

import (
	"bytes"
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"edge/internal/config"
)

const (
	// lockTTL outlives any sane order (seconds with Let's Encrypt) so the
	// lock is not lost mid-order, and frees a name whose holder died.
	lockTTL = 5 * time.Minute
	// lockPoll is how often a replica waiting for another one's order looks
	// for the result in the shared store.
	lockPoll = time.Second
	// retryMin and retryMax bound the backoff between failed first orders.
	retryMin = time.Second
	retryMax = time.Hour
	// orderRetryFloor is autocert's own pause after a failed order (it keeps
	// the failure for a minute); retrying sooner would only replay it.
	orderRetryFloor = time.Minute + time.Second
	// issueTimeout bounds one attempt, as autocert bounds a handshake.
	issueTimeout = 5 * time.Minute
	// problemBodyLimit caps what is read of a CA answer to find its error.
	problemBodyLimit = 1 << 20
)

// acmeSource obtains certificates for the configured domains through
// autocert. Handshakes never reach autocert for a certificate: edge orders
// every name in the background at start, serves what it stored from its own
// index, and learns of autocert's renewals through the store (renewal.go
// of autocert writes the new certificate there). autocert answers the
// challenges (TLS-ALPN-01 here, HTTP-01 through HTTPHandler).
type acmeSource struct {
	// started is closed when orders may begin (see WithDeferredOrders).
	started   chan struct{}
	startOnce sync.Once

	m        *Manager
	ac       *autocert.Manager
	client   *acme.Client
	store    *store
	lock     issueLock
	dirURL   string
	httpc    *http.Client
	settings acmeSettings
	// domains is the host policy's set, read by autocert without m.mu.
	domains atomic.Pointer[map[string]bool]
	// lastProblem is the CA's most recent error, for the log line of the
	// attempt that failed.
	lastProblem atomic.Pointer[caProblem]

	// names is guarded by Manager.mu.
	names map[string]*acmeName

	ctx    context.Context
	cancel context.CancelFunc
}

// acmeName is one configured domain's state. Guarded by Manager.mu.
type acmeName struct {
	cert      *stdtls.Certificate
	ready     chan struct{}
	readyOnce sync.Once
	cancel    context.CancelFunc
	// obtaining is set while edge's own start-up order runs inside
	// autocert, so the store hook tells it from autocert's renewals.
	obtaining bool
	// renewing is set while autocert's renewal timer runs for the name;
	// renewFailed makes its failure counted and logged once.
	renewing    bool
	renewFailed bool
	lockToken   string
}

// acmeSettings are the settings a running autocert cannot change.
type acmeSettings struct {
	email, dirURL, eabKID, eabKey, roots string
	renewBefore                          time.Duration
}

func settingsOf(cfg config.TLS) acmeSettings {
	return acmeSettings{
		email: cfg.Email, dirURL: cfg.DirectoryURL(), eabKID: cfg.EABKeyID,
		eabKey: cfg.EABHMACKey.Value(), roots: cfg.ACMECARoots, renewBefore: cfg.RenewBefore.Std(),
	}
}

type caProblem struct {
	at   time.Time
	text string
}

func (m *Manager) startACME(cfg config.TLS, stateDir string, rc Redis, deferStart bool) error {
	if stateDir == "" {
		return errors.New("tls.mode \"acme\" needs server.state_dir to keep its certificates")
	}
	if len(cfg.Domains) == 0 {
		return errors.New("tls.mode \"acme\" needs tls.domains")
	}
	s := &acmeSource{
		started:  make(chan struct{}),
		m:        m,
		dirURL:   cfg.DirectoryURL(),
		settings: settingsOf(cfg),
		names:    make(map[string]*acmeName),
		store: &store{
			dir:    autocert.DirCache(filepath.Join(stateDir, "acme")),
			logger: m.logger,
		},
		lock: issueLock{ttl: lockTTL},
	}
	if rc != nil {
		s.store.redis = &redisCache{c: rc}
		s.lock.c = rc
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.ACMECARoots != "" {
		pem, err := os.ReadFile(cfg.ACMECARoots)
		if err != nil {
			return fmt.Errorf("reading tls.acme_ca_roots: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls.acme_ca_roots %s holds no PEM certificate", cfg.ACMECARoots)
		}
		base.TLSClientConfig = &stdtls.Config{RootCAs: pool, MinVersion: stdtls.VersionTLS12}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.httpc = &http.Client{Transport: &caTransport{base: base, report: s.caFailed, closed: s.ctx.Done()}}
	s.client = &acme.Client{DirectoryURL: s.dirURL, HTTPClient: s.httpc, UserAgent: "edge"}
	s.ac = &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       &hookedStore{s: s},
		HostPolicy:  s.hostPolicy,
		RenewBefore: cfg.RenewBefore.Std(),
		Client:      s.client,
		Email:       cfg.Email,
	}
	if cfg.EABKeyID != "" {
		key, err := config.DecodeEABKey(cfg.EABHMACKey)
		if err != nil {
			return fmt.Errorf("decoding tls.eab_hmac_key: %w", err)
		}
		s.ac.ExternalAccountBinding = &acme.ExternalAccountBinding{KID: cfg.EABKeyID, Key: key}
	}
	// autocert offers HTTP-01 only once its HTTPHandler has been built, and
	// it picks the challenge types when an order begins. The gateway builds
	// the port-80 handler on the first plain-HTTP request, after the
	// start-up orders below have begun, so without this they would never
	// fall back to HTTP-01 when TLS-ALPN-01 cannot reach the HTTPS listener.
	s.ac.HTTPHandler(nil)
	if !deferStart {
		s.startOnce.Do(func() { close(s.started) })
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acme = s
	m.updateDomainsLocked(cfg.Domains)
	m.rebuildLocked()
	return m.checkDefaultNameLocked()
}

// updateDomainsLocked starts a background order for every new domain and
// stops and forgets the removed ones. m.mu must be held.
func (m *Manager) updateDomainsLocked(domains []string) {
	s := m.acme
	want := make(map[string]bool, len(domains))
	for _, d := range domains {
		want[normalizeName(d)] = true
	}
	s.domains.Store(&want)
	for name, st := range s.names {
		if !want[name] {
			st.cancel()
			delete(s.names, name)
			m.recorder.Forget(name)
		}
	}
	for name := range want {
		if s.names[name] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(s.ctx)
		st := &acmeName{ready: make(chan struct{}), cancel: cancel}
		s.names[name] = st
		m.wg.Add(1)
		go s.drive(ctx, name)
	}
}

// restartNeeded reports changed settings autocert cannot take live.
func (s *acmeSource) restartNeeded(cfg config.TLS) error {
	if settingsOf(cfg) != s.settings {
		return fmt.Errorf("tls ACME account settings (email, acme_ca, acme_staging, eab_*, acme_ca_roots, renew_before) changed: %w", ErrNeedsRestart)
	}
	return nil
}

func (s *acmeSource) stop() { s.cancel() }

// hostPolicy is the only gate to an order: a configured name, compared
// without port and case.
func (s *acmeSource) hostPolicy(_ context.Context, host string) error {
	if (*s.domains.Load())[normalizeName(host)] {
		return nil
	}
	return fmt.Errorf("acme: %q is not in tls.domains", host)
}

// isChallengeHello reports a TLS-ALPN-01 validation connection from the CA.
func isChallengeHello(hello *stdtls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto
}

// HTTPHandler answers ACME HTTP-01 challenges for the configured domains
// and passes every other request to fallback (the redirect to HTTPS). In
// modes other than "acme" it is fallback itself.
func (m *Manager) HTTPHandler(fallback http.Handler) http.Handler {
	if m.acme == nil {
		return fallback
	}
	return m.acme.ac.HTTPHandler(fallback)
}

// drive obtains name's first certificate, retrying with backoff until it
// succeeds or the name is removed; renewals are autocert's from then on.
func (s *acmeSource) drive(ctx context.Context, name string) {
	defer s.m.wg.Done()
	select {
	case <-s.started:
	case <-ctx.Done():
		return
	}
	wait := retryMin
	for {
		err := s.obtain(ctx, name)
		if err == nil || ctx.Err() != nil {
			return
		}
		var oe *orderError
		if errors.As(err, &oe) && oe.ordered {
			wait = max(wait, orderRetryFloor)
		}
		now := time.Now()
		s.m.recorder.Order("issue", "failure")
		s.m.recorder.Failure(name, now)
		attrs := []any{"name", name, "error", err, "retry_in", wait.String()}
		if p := s.lastProblem.Load(); p != nil && oe != nil && !p.at.Before(oe.start) {
			attrs = append(attrs, "ca_error", p.text)
		}
		s.m.logger.Error("acme: obtaining a certificate failed", attrs...)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, retryMax)
	}
}

// orderError is a failed attempt; ordered tells an order that reached
// autocert from a CA that could not be reached at all.
type orderError struct {
	err     error
	ordered bool
	start   time.Time
}

func (e *orderError) Error() string { return e.err.Error() }
func (e *orderError) Unwrap() error { return e.err }

// obtain gets name's certificate into autocert and the index: from the
// store when a valid one is there (a restart, or another replica ordered
// it), else by ordering it while holding the cross-replica lock.
func (s *acmeSource) obtain(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, issueTimeout)
	defer cancel()
	start := time.Now()
	var token string
	order := false
	for {
		data, err := s.store.Get(ctx, name)
		if err == nil && storedValid(data, time.Now()) {
			break
		}
		tok, ok, lerr := s.lock.tryAcquire(ctx, name)
		if lerr != nil {
			// Two replicas ordering is better than none: order anyway.
			s.m.logger.Warn("acme: issuance lock unavailable; ordering without it", "name", name, "error", lerr)
			ok = true
		}
		if ok {
			token, order = tok, true
			// The replica that held the lock may have stored the
			// certificate between the read above and this lock: then
			// there is nothing to order, only the stored one to load.
			if data, err := s.store.Get(ctx, name); err == nil && storedValid(data, time.Now()) {
				order = false
			}
			break
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return &orderError{err: fmt.Errorf("waiting for another replica's order for %s: %w", name, ctx.Err()), start: start}
		case <-t.C:
		}
	}
	defer func() {
		if err := s.lock.release(context.WithoutCancel(ctx), name, token); err != nil {
			s.m.logger.Warn("acme: releasing the issuance lock", "name", name, "error", err)
		}
	}()
	if order {
		// autocert remembers a failed order for a minute; a CA that is not
		// up yet must not cost that minute.
		if err := s.reachable(ctx); err != nil {
			return &orderError{err: err, start: start}
		}
	}

	s.m.mu.Lock()
	st := s.names[name]
	if st != nil {
		st.obtaining = true
	}
	s.m.mu.Unlock()
	if st == nil {
		return nil
	}
	cert, err := s.ac.GetCertificate(&stdtls.ClientHelloInfo{
		ServerName: name,
		// An ECDSA certificate: every client a mini-program platform
		// runs supports it.
		SignatureSchemes: []stdtls.SignatureScheme{stdtls.ECDSAWithP256AndSHA256},
		SupportedCurves:  []stdtls.CurveID{stdtls.CurveP256},
		CipherSuites:     []uint16{stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	})
	s.m.mu.Lock()
	st.obtaining = false
	s.m.mu.Unlock()
	if err != nil {
		return &orderError{err: err, ordered: order, start: start}
	}
	if order {
		s.m.recorder.Order("issue", "success")
		s.m.logger.Info("acme: certificate obtained", "name", name, "not_after", cert.Leaf.NotAfter)
	}
	s.publish(name, cert)
	return nil
}

// reachable checks that the CA's directory answers.
func (s *acmeSource) reachable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.dirURL, nil)
	if err != nil {
		return fmt.Errorf("acme directory %s: %w", s.dirURL, err)
	}
	resp, err := s.httpc.Do(req)
	if err != nil {
		return fmt.Errorf("acme CA unreachable: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, problemBodyLimit))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("acme directory %s answered %s", s.dirURL, resp.Status)
	}
	return nil
}

// publish serves cert for name from now on. The first certificate also
// releases the handshakes waiting for it.
func (s *acmeSource) publish(name string, cert *stdtls.Certificate) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	st := s.names[name]
	if st == nil {
		return
	}
	st.cert = cert
	// Publish the index before waking the waiters, so a handshake woken
	// by ready finds the certificate.
	s.m.rebuildLocked()
	st.readyOnce.Do(func() { close(st.ready) })
	s.m.recorder.SetExpiry(name, cert.Leaf.NotAfter)
}

// storedValid reports whether data (autocert's PEM: key, then chain) holds a
// usable certificate at now.
func storedValid(data []byte, now time.Time) bool {
	cert, err := parseStored(data)
	return err == nil && now.Before(cert.Leaf.NotAfter) && !now.Before(cert.Leaf.NotBefore)
}

// parseStored reads autocert's stored form. crypto/tls picks the key and
// the certificate blocks out of the same PEM bundle.
func parseStored(data []byte) (*stdtls.Certificate, error) {
	cert, err := stdtls.X509KeyPair(data, data)
	if err != nil {
		return nil, fmt.Errorf("parsing a stored certificate: %w", err)
	}
	return &cert, nil
}

// due reports whether a stored certificate is inside its renewal window:
// renewBefore, or autocert's default of a third of its life (at most 30
// days).
func (s *acmeSource) due(cert *stdtls.Certificate, now time.Time) bool {
	return !now.Before(s.renewalAt(cert))
}

// hookedStore is the autocert.Cache autocert sees: the store, plus what
// edge learns from autocert's use of it. A read of a configured name that
// edge did not start is autocert's renewal timer; it takes the
// cross-replica lock there, and the write of the new certificate is the
// renewal's success.
type hookedStore struct {
	s *acmeSource
}

var _ autocert.Cache = (*hookedStore)(nil)

func (h *hookedStore) Get(ctx context.Context, key string) ([]byte, error) {
	data, err := h.s.store.Get(ctx, key)
	if !h.s.beginRenewal(key) {
		return data, err
	}
	return h.s.renewalGate(ctx, key, data, err)
}

func (h *hookedStore) Put(ctx context.Context, key string, data []byte) error {
	if err := h.s.store.Put(ctx, key, data); err != nil {
		return err
	}
	h.s.stored(key, data)
	return nil
}

func (h *hookedStore) Delete(ctx context.Context, key string) error {
	return h.s.store.Delete(ctx, key)
}

// beginRenewal marks a renewal of name as started if the read is
// autocert's own (not edge's start-up order).
func (s *acmeSource) beginRenewal(key string) bool {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	st := s.names[key]
	if st == nil || st.obtaining || st.cert == nil {
		return false
	}
	st.renewing, st.renewFailed = true, false
	return true
}

// renewalGate runs inside autocert's renewal: if another replica renewed
// already, its certificate is returned and autocert adopts it; else the
// replica that takes the lock renews while the others wait for its result.
func (s *acmeSource) renewalGate(ctx context.Context, name string, data []byte, err error) ([]byte, error) {
	for {
		if err == nil {
			if cert, perr := parseStored(data); perr == nil && !s.due(cert, time.Now()) {
				s.endRenewal(name, "")
				s.publish(name, cert)
				return data, nil
			}
		}
		s.m.mu.Lock()
		held := s.names[name] != nil && s.names[name].lockToken != ""
		s.m.mu.Unlock()
		if held {
			// An earlier attempt of this replica still holds the lock
			// (autocert postponed it by its jitter): renew under it.
			return data, err
		}
		token, ok, lerr := s.lock.tryAcquire(ctx, name)
		if lerr != nil {
			s.m.logger.Warn("acme: issuance lock unavailable; renewing without it", "name", name, "error", lerr)
			return data, err
		}
		if ok {
			s.m.mu.Lock()
			if st := s.names[name]; st != nil {
				st.lockToken = token
			}
			s.m.mu.Unlock()
			return data, err
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return data, err
		case <-t.C:
		}
		data, err = s.store.Get(ctx, name)
	}
}

// stored learns of a certificate autocert wrote: a renewal's result.
func (s *acmeSource) stored(key string, data []byte) {
	s.m.mu.Lock()
	st := s.names[key]
	renewing := st != nil && st.renewing && !st.obtaining
	s.m.mu.Unlock()
	if !renewing {
		return
	}
	cert, err := parseStored(data)
	if err != nil {
		s.m.logger.Error("acme: renewed certificate cannot be read back", "name", key, "error", err)
		return
	}
	s.endRenewal(key, "success")
	s.m.logger.Info("acme: certificate renewed", "name", key, "not_after", cert.Leaf.NotAfter)
	s.publish(key, cert)
}

// endRenewal closes a renewal; result "" records nothing (another replica
// renewed).
func (s *acmeSource) endRenewal(name, result string) {
	s.m.mu.Lock()
	var token string
	if st := s.names[name]; st != nil {
		st.renewing = false
		token, st.lockToken = st.lockToken, ""
	}
	s.m.mu.Unlock()
	if result != "" {
		s.m.recorder.Order("renew", result)
	}
	if err := s.lock.release(context.Background(), name, token); err != nil {
		s.m.logger.Warn("acme: releasing the issuance lock", "name", name, "error", err)
	}
}

// caFailed records an error from the CA (or the failure to reach it). A
// renewal under way counts as failed, logged once; autocert retries it
// within the hour and keeps serving the current certificate meanwhile.
func (s *acmeSource) caFailed(text string) {
	now := time.Now()
	s.lastProblem.Store(&caProblem{at: now, text: text})
	s.m.mu.Lock()
	var failed []string
	for name, st := range s.names {
		if st.renewing && !st.renewFailed && !st.obtaining {
			st.renewFailed = true
			failed = append(failed, name)
		}
	}
	s.m.mu.Unlock()
	slices.Sort(failed)
	for _, name := range failed {
		s.m.recorder.Order("renew", "failure")
		s.m.recorder.Failure(name, now)
		s.m.logger.Error("acme: renewing a certificate failed; serving the current one until a retry succeeds",
			"name", name, "ca_error", text)
	}
}

// caTransport watches the ACME client's traffic for the CA's errors, which
// autocert does not pass on (a failed challenge becomes "no viable challenge
// type found"). Problem documents carry no key material.
//
// It also ends ACME for a closed manager: autocert has no Close, and its
// renewal timers would otherwise keep ordering for a manager nobody serves.
type caTransport struct {
	base   http.RoundTripper
	report func(string)
	closed <-chan struct{}
}

// errManagerClosed fails the ACME requests of a closed manager.
var errManagerClosed = errors.New("tls manager closed")

func (t *caTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case <-t.closed:
		return nil, errManagerClosed
	default:
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		t.report(fmt.Sprintf("%s %s: %v", req.Method, req.URL.Redacted(), err))
		return nil, err
	}
	ct := resp.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/problem+json") && !strings.HasPrefix(ct, "application/json") {
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, problemBodyLimit))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the CA's answer: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if p := problemIn(resp.StatusCode, body); p != "" {
		t.report(p)
	}
	return resp, nil
}

// acmeProblem is RFC 8555's error document.
type acmeProblem struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// problemIn finds the CA's error in an answer: a problem document, or the
// error of an invalid authorization, challenge or order. badNonce is the
// ACME client's business (it retries) and not a failure.
func problemIn(status int, body []byte) string {
	var v struct {
		acmeProblem
		Status     string       `json:"status"`
		Error      *acmeProblem `json:"error"`
		Challenges []struct {
			Type  string       `json:"type"`
			Error *acmeProblem `json:"error"`
		} `json:"challenges"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	switch {
	case status >= 400:
		if strings.HasSuffix(v.Type, ":badNonce") {
			return ""
		}
		return fmt.Sprintf("%d %s: %s", status, v.Type, v.Detail)
	case v.Status != "invalid":
		return ""
	case v.Error != nil:
		return fmt.Sprintf("%s: %s", v.Error.Type, v.Error.Detail)
	}
	for _, c := range v.Challenges {
		if c.Error != nil {
			return fmt.Sprintf("%s %s: %s", c.Type, c.Error.Type, c.Error.Detail)
		}
	}
	return "invalid without a reason"
}
