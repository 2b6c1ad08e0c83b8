// Package tls owns edge's certificates and TLS policy: where certificates come
// from (an internal development CA, certificate files chosen by SNI, ACME),
// keeping them current while the process runs, and the crypto/tls
// configuration of the HTTPS listener.
package tls

import (
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"edge/internal/config"
)

// ErrNeedsRestart marks a change Update cannot apply to a running listener.
var ErrNeedsRestart = errors.New("needs a restart")

// errNoCertificate is returned for a ClientHello no source can answer; it is
// a fixed value so refusing a handshake does not allocate.
var errNoCertificate = errors.New("no certificate for the requested server name")

// renewCheckEvery is how often the internal leaf's age is checked; its
// lifetime is counted in days, so an hour is precise enough.
const renewCheckEvery = time.Hour

// Recorder receives what the ACME source does; *metrics.TLS implements it.
// Names are configured domains only.
type Recorder interface {
	SetExpiry(name string, notAfter time.Time)
	Order(kind, result string)
	Failure(name string, at time.Time)
	Forget(name string)
}

type nopRecorder struct{}

func (nopRecorder) SetExpiry(string, time.Time) {}
func (nopRecorder) Order(string, string)        {}
func (nopRecorder) Failure(string, time.Time)   {}
func (nopRecorder) Forget(string)               {}

// Option adds what New needs beyond the config.
type Option func(*options)

type options struct {
	redis      Redis
	recorder   Recorder
	deferStart bool
}

// WithDeferredOrders holds the start-up ACME orders until Start is called:
// the CA validates against edge's own listeners, so a gateway calls Start
// once they are bound.
func WithDeferredOrders() Option { return func(o *options) { o.deferStart = true } }

// WithRedis shares the ACME certificate store and the issuance lock with
// the other replicas through Redis ([cluster] redis).
func WithRedis(c Redis) Option { return func(o *options) { o.redis = c } }

// WithRecorder reports certificate expiry and ACME orders, usually to
// *metrics.TLS.
func WithRecorder(r Recorder) Option { return func(o *options) { o.recorder = r } }

// Manager serves certificates to the HTTPS listener and keeps them current.
// The handshake path reads one atomically swapped index; everything else
// (reloads, renewals, Update) happens under mu and publishes a new index.
type Manager struct {
	logger     *slog.Logger
	now        func() time.Time
	mode       string
	minVersion uint16
	recorder   Recorder

	certs atomic.Pointer[certSet]

	mu sync.Mutex
	// mode "internal"
	ca        *localCA
	leaf      *stdtls.Certificate
	leafNames []string
	extra     []string
	// mode "files", and "acme" for the names it does not order
	pairs   []*filePair
	fsw     *fsnotify.Watcher
	watched map[string]bool
	// defaultName answers handshakes no name matches (tls.default_name).
	defaultName string
	// mode "acme"
	acme *acmeSource

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// New builds the manager for cfg. hosts are the route host names (exact and
// "*.wildcard") the gateway serves; stateDir holds what must survive a
// restart. A certificate that cannot be loaded or created is an error: the
// listener must not start without one.
func New(cfg config.TLS, stateDir string, hosts []string, logger *slog.Logger, opts ...Option) (*Manager, error) {
	return newManager(cfg, stateDir, hosts, logger, time.Now, opts...)
}

func newManager(cfg config.TLS, stateDir string, hosts []string, logger *slog.Logger, now func() time.Time, opts ...Option) (*Manager, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o := options{recorder: nopRecorder{}}
	for _, opt := range opts {
		opt(&o)
	}
	minVersion, err := parseMinVersion(cfg.MinVersion)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		logger:      logger,
		now:         now,
		mode:        cfg.Mode,
		minVersion:  minVersion,
		recorder:    o.recorder,
		defaultName: normalizeName(cfg.DefaultName),
		done:        make(chan struct{}),
	}
	if m.mode == "" {
		m.mode = "internal"
	}
	switch m.mode {
	case "internal":
		if err := m.startInternal(cfg, stateDir, hosts); err != nil {
			return nil, err
		}
	case "files":
		if len(cfg.Certificates) == 0 {
			return nil, errors.New("tls.mode \"files\" needs at least one [[tls.certificates]] entry")
		}
		if err := m.startFiles(cfg); err != nil {
			return nil, err
		}
		m.mu.Lock()
		err := m.checkDefaultNameLocked()
		m.mu.Unlock()
		if err != nil {
			m.Close()
			return nil, err
		}
	case "acme":
		if err := m.startFiles(cfg); err != nil {
			return nil, err
		}
		if err := m.startACME(cfg, stateDir, o.redis, o.deferStart); err != nil {
			m.Close()
			return nil, err
		}
	default:
		return nil, fmt.Errorf("tls.mode %q is not supported; use \"internal\", \"files\" or \"acme\"", cfg.Mode)
	}
	return m, nil
}

func parseMinVersion(v string) (uint16, error) {
	switch v {
	case "", "1.2":
		return stdtls.VersionTLS12, nil
	case "1.3":
		return stdtls.VersionTLS13, nil
	default:
		return 0, fmt.Errorf("tls.min_version %q is not supported; use \"1.2\" or \"1.3\"", v)
	}
}

func (m *Manager) startInternal(cfg config.TLS, stateDir string, hosts []string) error {
	if stateDir == "" {
		return errors.New("tls.mode \"internal\" needs server.state_dir to keep its CA")
	}
	ca, created, err := loadOrCreateCA(filepath.Join(stateDir, "internal"), m.now())
	if err != nil {
		return err
	}
	if created {
		m.logger.Info("created the internal development CA; trust it on development machines only", "ca", ca.path)
	}
	m.ca = ca
	m.extra = slices.Clone(cfg.Hosts)
	m.mu.Lock()
	err = m.issueLeafLocked(leafNames(hosts, m.extra))
	m.mu.Unlock()
	if err != nil {
		return err
	}
	m.wg.Add(1)
	go m.renewLoop()
	return nil
}

func (m *Manager) startFiles(cfg config.TLS) error {
	pairs, err := loadPairs(cfg.Certificates)
	if err != nil {
		return err
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("starting the certificate file watcher: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pairs, m.fsw, m.watched = pairs, fsw, make(map[string]bool)
	for _, p := range pairs {
		m.warnExpired(p)
	}
	if err := m.syncWatchLocked(); err != nil {
		fsw.Close()
		return err
	}
	m.rebuildLocked()
	m.wg.Add(1)
	go m.watchLoop()
	return nil
}

// issueLeafLocked signs a new internal leaf for names and publishes it.
// m.mu must be held.
func (m *Manager) issueLeafLocked(names []string) error {
	leaf, err := m.ca.issue(names, m.now())
	if err != nil {
		return fmt.Errorf("issuing the internal certificate: %w", err)
	}
	m.leaf, m.leafNames = leaf, names
	m.rebuildLocked()
	m.logger.Info("issued internal certificate", "names", names, "not_after", leaf.Leaf.NotAfter)
	return nil
}

// renewLoop re-issues the internal leaf before it expires.
func (m *Manager) renewLoop() {
	defer m.wg.Done()
	t := time.NewTicker(renewCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
			m.renewInternal()
		}
	}
}

// renewInternal re-issues the internal leaf once it has used two thirds of
// its lifetime; a failure keeps the current leaf and is retried next check.
func (m *Manager) renewInternal() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !needsRenewal(m.leaf.Leaf, m.now()) {
		return
	}
	if err := m.issueLeafLocked(m.leafNames); err != nil {
		m.logger.Error("renewing the internal certificate; keeping the current one", "error", err)
	}
}

// rebuildLocked publishes a new index from the current sources. m.mu must be
// held.
func (m *Manager) rebuildLocked() {
	set := newCertSet()
	switch m.mode {
	case "internal":
		set.add(m.leaf, m.leafNames)
		// Any name gets the leaf: a developer reaching the gateway by an
		// address not in the list sees a name mismatch, which says more
		// than a failed handshake.
		set.fallback = m.leaf
	case "files", "acme":
		// ACME names first: a name listed in tls.domains is meant to get
		// its own certificate even when a file's wildcard covers it.
		if m.acme != nil {
			for name, st := range m.acme.names {
				if st.cert != nil {
					set.add(st.cert, []string{name})
				} else {
					set.pending[name] = st.ready
				}
			}
		}
		for _, p := range m.pairs {
			set.add(p.cert, certNames(p.cert.Leaf))
		}
		if m.defaultName != "" {
			set.fallback = set.match(m.defaultName)
		}
		if set.fallback == nil && m.mode == "files" {
			set.fallback = m.pairs[0].cert
		}
	}
	m.certs.Store(set)
}

// checkDefaultNameLocked reports a tls.default_name no source can answer.
// m.mu must be held.
func (m *Manager) checkDefaultNameLocked() error {
	if m.defaultName == "" || m.mode == "internal" {
		return nil
	}
	if m.acme != nil && m.acme.names[m.defaultName] != nil {
		return nil
	}
	if m.certs.Load().match(m.defaultName) == nil {
		return fmt.Errorf("tls.default_name %q is covered by no certificate; name one of tls.domains or a name in [[tls.certificates]]", m.defaultName)
	}
	return nil
}

// pendingWait bounds how long a handshake for an ACME name waits for its
// first certificate; longer and the client gives up anyway.
const pendingWait = 10 * time.Second

// getCertificate answers a ClientHello from the current index.
func (m *Manager) getCertificate(hello *stdtls.ClientHelloInfo) (*stdtls.Certificate, error) {
	if m.acme != nil && isChallengeHello(hello) {
		return m.acme.ac.GetCertificate(hello)
	}
	set := m.certs.Load()
	if c := set.match(hello.ServerName); c != nil {
		return c, nil
	}
	if ready := set.pending[strings.ToLower(hello.ServerName)]; ready != nil {
		t := time.NewTimer(pendingWait)
		defer t.Stop()
		select {
		case <-ready:
			if c := m.certs.Load().match(hello.ServerName); c != nil {
				return c, nil
			}
		case <-hello.Context().Done():
		case <-t.C:
		}
	}
	if set.fallback != nil {
		return set.fallback, nil
	}
	return nil, errNoCertificate
}

// CAPath is the internal CA certificate a developer adds to a trust store,
// or "" when the mode is not "internal".
func (m *Manager) CAPath() string {
	if m.ca == nil {
		return ""
	}
	return m.ca.path
}

// Change is a TLS configuration read and checked but not live yet:
// certificate files loaded, an internal leaf issued. A reload prepares every
// part of a config before committing any, so a failure in one leaves all of
// them as they were; a Change that is never committed leaves nothing behind.
type Change struct {
	m *Manager
	// restart lists changed settings that only a restart applies.
	restart []error
	// sameMode is false when tls.mode changed: nothing else is applied.
	sameMode bool

	extra     []string
	leaf      *stdtls.Certificate // nil: the internal leaf stays
	leafNames []string

	pairs        []*filePair
	filesChanged bool
	domains      []string
	defaultName  string
}

// RestartNeeded reports the changed settings that take effect only on a
// restart (wrapping ErrNeedsRestart), or nil.
func (c *Change) RestartNeeded() error { return errors.Join(c.restart...) }

// Prepare reads and checks cfg for a reload: an unreadable certificate, a
// leaf that cannot be issued or a default_name no certificate covers is an
// error, and the running TLS settings stay.
func (m *Manager) Prepare(cfg config.TLS, hosts []string) (*Change, error) {
	c := &Change{m: m}
	mode := cfg.Mode
	if mode == "" {
		mode = "internal"
	}
	if mode != m.mode {
		c.restart = append(c.restart, fmt.Errorf("tls.mode changed from %q to %q: %w", m.mode, mode, ErrNeedsRestart))
		return c, nil
	}
	c.sameMode = true
	if m.acme != nil {
		if err := m.acme.restartNeeded(cfg); err != nil {
			c.restart = append(c.restart, err)
		}
	}
	v, err := parseMinVersion(cfg.MinVersion)
	if err != nil {
		return nil, err
	}
	if v != m.minVersion {
		c.restart = append(c.restart, fmt.Errorf("tls.min_version changed: %w", ErrNeedsRestart))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mode == "internal" {
		c.extra = slices.Clone(cfg.Hosts)
		if names := leafNames(hosts, c.extra); !slices.Equal(names, m.leafNames) {
			leaf, err := m.ca.issue(names, m.now())
			if err != nil {
				return nil, fmt.Errorf("issuing the internal certificate: %w", err)
			}
			c.leaf, c.leafNames = leaf, names
		}
		return c, nil
	}
	c.pairs = m.pairs
	if !slices.Equal(cfg.Certificates, m.currentFiles()) {
		if len(cfg.Certificates) == 0 && m.mode == "files" {
			return nil, errors.New("tls.mode \"files\" needs at least one [[tls.certificates]] entry; keeping the current certificates")
		}
		if c.pairs, err = loadPairs(cfg.Certificates); err != nil {
			return nil, fmt.Errorf("keeping the current certificates: %w", err)
		}
		c.filesChanged = true
	}
	c.domains = cfg.Domains
	c.defaultName = normalizeName(cfg.DefaultName)
	if c.defaultName != "" && !c.covers(c.defaultName) {
		return nil, fmt.Errorf("tls.default_name %q is covered by no certificate; name one of tls.domains or a name in [[tls.certificates]]", c.defaultName)
	}
	return c, nil
}

// covers reports whether the changed config has a certificate for name: an
// ACME domain (ordered if not yet held) or a certificate file.
func (c *Change) covers(name string) bool {
	if c.m.acme != nil && slices.ContainsFunc(c.domains, func(d string) bool { return normalizeName(d) == name }) {
		return true
	}
	set := newCertSet()
	for _, p := range c.pairs {
		set.add(p.cert, certNames(p.cert.Leaf))
	}
	return set.match(name) != nil
}

// Commit makes the change live. Its error is only about watching the new
// certificate files' directories for renewals: the certificates themselves
// are in use.
func (c *Change) Commit() error {
	m := c.m
	if !c.sameMode {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mode == "internal" {
		m.extra = c.extra
		if c.leaf != nil {
			m.leaf, m.leafNames = c.leaf, c.leafNames
			m.rebuildLocked()
			m.logger.Info("issued internal certificate", "names", c.leafNames, "not_after", c.leaf.Leaf.NotAfter)
		}
		return nil
	}
	if c.filesChanged {
		m.pairs = c.pairs
		for _, p := range c.pairs {
			m.warnExpired(p)
		}
	}
	if m.acme != nil {
		m.updateDomainsLocked(c.domains)
	}
	m.defaultName = c.defaultName
	m.rebuildLocked()
	if c.filesChanged {
		return m.syncWatchLocked()
	}
	return nil
}

func (m *Manager) currentFiles() []config.CertificateFiles {
	out := make([]config.CertificateFiles, len(m.pairs))
	for i, p := range m.pairs {
		out[i] = p.files
	}
	return out
}

// Close stops the manager's goroutines. Certificates already handed to the
// listener stay usable; Close is safe to call more than once.
// Start lets ACME orders held by WithDeferredOrders begin. It is safe to
// call more than once, and does nothing in the other modes.
func (m *Manager) Start() {
	if m.acme != nil {
		m.acme.startOnce.Do(func() { close(m.acme.started) })
	}
}

// Close stops the manager's background work.
func (m *Manager) Close() {
	m.closeOnce.Do(func() {
		close(m.done)
		if m.acme != nil {
			m.acme.stop()
		}
		m.wg.Wait()
		if m.fsw != nil {
			m.fsw.Close()
		}
	})
}
