package tls

import (
	stdtls "crypto/tls"
	"slices"
	"strings"
	"time"
)

// Certificate describes one certificate edge serves, for the admin
// dashboard: never key material.
type Certificate struct {
	Names  []string  `json:"names"`
	Source string    `json:"source"` // "acme", "files" or "internal"
	Issuer string    `json:"issuer"`
	Expiry time.Time `json:"expiry"`
	// Renewal is when edge renews it; zero for files, which edge only
	// reloads when they change.
	Renewal time.Time `json:"renewal,omitzero"`
	// Pending is an ACME name still waiting for its first certificate.
	Pending bool `json:"pending,omitempty"`
}

// Status is the certificates and the CA's last error.
type Status struct {
	Mode         string        `json:"mode"`
	Certificates []Certificate `json:"certificates"`
	// LastACMEError is the ACME CA's most recent error, and when.
	LastACMEError   string    `json:"last_acme_error,omitempty"`
	LastACMEErrorAt time.Time `json:"last_acme_error_at,omitzero"`
}

// Status lists the certificates the manager serves, sorted by their first
// name.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{Mode: m.mode, Certificates: []Certificate{}}
	add := func(cert *stdtls.Certificate, source string, renewal time.Time) {
		if cert == nil || cert.Leaf == nil {
			return
		}
		leaf := cert.Leaf
		issuer := leaf.Issuer.CommonName
		if issuer == "" && len(leaf.Issuer.Organization) > 0 {
			issuer = leaf.Issuer.Organization[0]
		}
		st.Certificates = append(st.Certificates, Certificate{
			Names: certNames(leaf), Source: source, Issuer: issuer, Expiry: leaf.NotAfter, Renewal: renewal,
		})
	}
	switch m.mode {
	case "internal":
		if m.leaf != nil && m.leaf.Leaf != nil {
			l := m.leaf.Leaf
			add(m.leaf, "internal", l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore)*2/3))
		}
	case "files", "acme":
		for _, p := range m.pairs {
			add(p.cert, "files", time.Time{})
		}
	}
	if s := m.acme; s != nil {
		for name, n := range s.names {
			if n.cert == nil {
				st.Certificates = append(st.Certificates, Certificate{Names: []string{name}, Source: "acme", Pending: true})
				continue
			}
			add(n.cert, "acme", s.renewalAt(n.cert))
		}
		if p := s.lastProblem.Load(); p != nil {
			st.LastACMEError, st.LastACMEErrorAt = p.text, p.at
		}
	}
	slices.SortFunc(st.Certificates, func(a, b Certificate) int {
		return strings.Compare(firstName(a.Names), firstName(b.Names))
	})
	return st
}

func firstName(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// renewalAt is the start of the renewal window due reports.
func (s *acmeSource) renewalAt(cert *stdtls.Certificate) time.Time {
	leaf := cert.Leaf
	threshold := min(leaf.NotAfter.Sub(leaf.NotBefore)/3, 30*24*time.Hour)
	if s.settings.renewBefore > 0 {
		threshold = min(s.settings.renewBefore, 30*24*time.Hour)
	}
	return leaf.NotAfter.Add(-threshold)
}
