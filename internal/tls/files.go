package tls

import (
	"crypto/sha256"
	stdtls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"edge/internal/config"
)

// reloadDebounce gathers the burst of events one certificate rotation makes
// (certbot writes several files; Kubernetes swaps a symlinked directory) into
// one reload.
const reloadDebounce = 250 * time.Millisecond

// filePair is one configured cert/key pair and what was last loaded from it.
type filePair struct {
	files config.CertificateFiles
	cert  *stdtls.Certificate
	// sum is the digest of the bytes cert was loaded from; an event that
	// leaves the bytes unchanged does nothing.
	sum [sha256.Size]byte
	// badSum is the digest of the last broken content, so a broken file is
	// logged once and not on every unrelated event in its directory.
	badSum [sha256.Size]byte
}

// loadPair reads and parses a pair. The digest covers what was read even on
// failure (a missing file digests as empty), which is what makes "log once"
// work for broken and missing files alike.
func loadPair(f config.CertificateFiles) (*stdtls.Certificate, [sha256.Size]byte, error) {
	certPEM, certErr := os.ReadFile(f.Cert)
	keyPEM, keyErr := os.ReadFile(f.Key)
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if certErr != nil {
		return nil, sum, fmt.Errorf("reading certificate: %w", certErr)
	}
	if keyErr != nil {
		return nil, sum, fmt.Errorf("reading key of %s: %w", f.Cert, keyErr)
	}
	cert, err := stdtls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error from crypto/tls names the problem but never the key.
		return nil, sum, fmt.Errorf("loading %s with key %s: %w", f.Cert, f.Key, err)
	}
	if len(certNames(cert.Leaf)) == 0 {
		return nil, sum, fmt.Errorf("certificate %s names no host (no DNS or IP subject alternative name)", f.Cert)
	}
	return &cert, sum, nil
}

// certNames are the names SNI can select a certificate by: its DNS and IP
// subject alternative names, or its common name when it has none (old
// certificates; browsers ignore the CN but mini-program clients are not
// browsers).
func certNames(leaf *x509.Certificate) []string {
	names := make([]string, 0, len(leaf.DNSNames)+len(leaf.IPAddresses))
	names = append(names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		names = append(names, leaf.Subject.CommonName)
	}
	return names
}

// loadPairs loads every pair or fails with all problems at once: at start-up
// and on a config change a broken file is an error to fix, not something to
// serve around.
func loadPairs(list []config.CertificateFiles) ([]*filePair, error) {
	pairs := make([]*filePair, 0, len(list))
	var errs []error
	for _, f := range list {
		cert, sum, err := loadPair(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pairs = append(pairs, &filePair{files: f, cert: cert, sum: sum})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return pairs, nil
}

// reloadPairsLocked re-reads every pair after a file event. A pair whose new
// content is broken keeps serving its previous certificate. It returns the
// pairs whose certificate changed, to be logged once they serve. m.mu must
// be held.
func (m *Manager) reloadPairsLocked() []*filePair {
	var changed []*filePair
	for _, p := range m.pairs {
		cert, sum, err := loadPair(p.files)
		switch {
		case sum == p.sum:
		case err != nil:
			if sum != p.badSum {
				p.badSum = sum
				m.logger.Warn("certificate files changed but cannot be used; keeping the previous certificate",
					"cert", p.files.Cert, "key", p.files.Key, "error", err)
			}
		default:
			p.cert, p.sum, p.badSum = cert, sum, [sha256.Size]byte{}
			changed = append(changed, p)
		}
	}
	return changed
}

// warnExpired logs a pair whose certificate is expired. It is still served:
// refusing to start would take every other name down with it, and the
// operator sees both the log line and the clients' errors.
func (m *Manager) warnExpired(p *filePair) {
	if na := p.cert.Leaf.NotAfter; m.now().After(na) {
		m.logger.Warn("certificate has expired; replace the file", "cert", p.files.Cert, "not_after", na)
	}
}

// watchDirs returns the directories holding the pairs' files. Directories
// and not files are watched because rotation usually replaces a file (rename
// or symlink swap), which ends a watch on the file itself.
func watchDirs(pairs []*filePair) map[string]bool {
	dirs := make(map[string]bool)
	for _, p := range pairs {
		for _, f := range []string{p.files.Cert, p.files.Key} {
			if abs, err := filepath.Abs(f); err == nil {
				dirs[filepath.Dir(abs)] = true
			}
		}
	}
	return dirs
}

// syncWatchLocked makes the watcher follow exactly the pairs' directories.
// m.mu must be held.
func (m *Manager) syncWatchLocked() error {
	want := watchDirs(m.pairs)
	var errs []error
	for d := range m.watched {
		if !want[d] {
			if err := m.fsw.Remove(d); err != nil && !errors.Is(err, fsnotify.ErrNonExistentWatch) {
				errs = append(errs, fmt.Errorf("unwatching %s: %w", d, err))
			}
			delete(m.watched, d)
		}
	}
	for d := range want {
		if !m.watched[d] {
			if err := m.fsw.Add(d); err != nil {
				errs = append(errs, fmt.Errorf("watching %s for certificate changes: %w", d, err))
				continue
			}
			m.watched[d] = true
		}
	}
	return errors.Join(errs...)
}

// watchLoop turns file events into debounced reloads until the manager
// closes.
func (m *Manager) watchLoop() {
	defer m.wg.Done()
	timer := time.NewTimer(reloadDebounce)
	timer.Stop()
	for {
		select {
		case <-m.done:
			timer.Stop()
			return
		case ev, ok := <-m.fsw.Events:
			if !ok {
				return
			}
			// A chmod alone changes no content.
			if ev.Op == fsnotify.Chmod {
				continue
			}
			timer.Reset(reloadDebounce)
		case err, ok := <-m.fsw.Errors:
			if !ok {
				return
			}
			m.logger.Warn("watching certificate files", "error", err)
		case <-timer.C:
			m.mu.Lock()
			changed := m.reloadPairsLocked()
			if len(changed) > 0 {
				m.rebuildLocked()
			}
			// Logged once the new certificates answer handshakes.
			for _, p := range changed {
				m.logger.Info("certificate reloaded", "cert", p.files.Cert,
					"names", certNames(p.cert.Leaf), "not_after", p.cert.Leaf.NotAfter)
				m.warnExpired(p)
			}
			m.mu.Unlock()
		}
	}
}
