package tls

import (
	"fmt"
	"testing"
	"time"

	"edge/internal/config"
)

// TestStatusFiles: the dashboard's list of certificate files, sorted by
// first name, with issuer and expiry and no renewal (edge reloads files,
// it does not renew them).
func TestStatusFiles(t *testing.T) {
	ca, _ := testCA(t)
	dir := t.TempDir()
	aCert, aKey := pairIn(dir, "a")
	bCert, bKey := pairIn(dir, "b")
	b := writePair(t, ca, bCert, bKey, "b.example.com", "*.b.example.com")
	a := writePair(t, ca, aCert, aKey, "a.example.com")
	m, err := New(config.TLS{Mode: "files", Certificates: []config.CertificateFiles{
		{Cert: bCert, Key: bKey}, {Cert: aCert, Key: aKey},
	}}, "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	st := m.Status()
	if st.Mode != "files" || len(st.Certificates) != 2 || st.LastACMEError != "" {
		t.Fatalf("status: %+v", st)
	}
	for i, want := range []struct {
		names  string
		expiry time.Time
	}{{"[a.example.com]", a.NotAfter}, {"[b.example.com *.b.example.com]", b.NotAfter}} {
		c := st.Certificates[i]
		if got := fmt.Sprint(c.Names); got != want.names || c.Source != "files" || c.Issuer != a.Issuer.CommonName ||
			!c.Expiry.Equal(want.expiry) || !c.Renewal.IsZero() || c.Pending {
			t.Errorf("certificate %d: %+v, want names %s expiring %v", i, c, want.names, want.expiry)
		}
	}
}
