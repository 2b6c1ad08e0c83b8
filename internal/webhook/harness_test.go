package webhook

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/metrics"
	"edge/internal/reqctx"
)

// upstream is a real HTTP server on 127.0.0.1 that records what reaches it.
type upstream struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	hdrs   []http.Header
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("upstream reading body: %v", err)
		}
		u.mu.Lock()
		u.bodies = append(u.bodies, b)
		u.hdrs = append(u.hdrs, r.Header.Clone())
		u.mu.Unlock()
		_, _ = io.WriteString(w, "success")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) received() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]byte(nil), u.bodies...)
}

// front serves vf in front of a reverse proxy to up, the way the gateway
// runs a route, and reports the rejection reason in a response header so
// the test reads it without racing the handler.
type front struct {
	srv *httptest.Server
	up  *upstream
}

const reasonHeader = "X-Test-Reason"

type reasonWriter struct {
	http.ResponseWriter
	info        *reqctx.Info
	wroteHeader bool
}

func (w *reasonWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.Header().Set(reasonHeader, w.info.Reason)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *reasonWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func newFront(t *testing.T, vf *Verifier) *front {
	t.Helper()
	up := newUpstream(t)
	target, err := url.Parse(up.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := reqctx.New(time.Now())
		defer reqctx.Release(info)
		rw, r := &reasonWriter{ResponseWriter: w, info: info}, r.WithContext(reqctx.With(r.Context(), info))
		if vf.Check(rw, r) {
			rp.ServeHTTP(rw, r)
		}
	}))
	t.Cleanup(srv.Close)
	return &front{srv: srv, up: up}
}

// result is what the platform would see.
type result struct {
	status int
	body   string
	reason string
}

func (f *front) do(t *testing.T, method, query string, hdr http.Header, body []byte) result {
	t.Helper()
	return f.send(t, method, query, hdr, bytes.NewReader(body))
}

// send posts body as given: a *bytes.Reader goes with a Content-Length, any
// other reader chunked.
func (f *front) send(t *testing.T, method, query string, hdr http.Header, body io.Reader) result {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+"/cb?"+query, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return result{status: resp.StatusCode, body: string(b), reason: resp.Header.Get(reasonHeader)}
}

// testOptions gives each test its own registry, so counts are exact.
func testOptions(t testing.TB, now time.Time) (Options, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.NewWebhook(reg)
	if err != nil {
		t.Fatal(err)
	}
	return Options{Route: "cb", Metrics: m, Now: func() time.Time { return now }}, reg
}

// counterValue reads one series from reg; 0 when absent.
func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	next:
		for _, m := range fam.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func loadVectors(t testing.TB, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "vectors", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testKey is one RSA key shared by the tests that sign their own messages;
// generating a key per test would dominate the run time.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func publicKeyPEM(t testing.TB, k *rsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// certificatePEM makes a self-signed certificate with the given serial,
// standing in for a WeChat Pay platform certificate.
func certificatePEM(t testing.TB, k *rsa.PrivateKey, serial *big.Int) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Tenpay.com Root CA test"},
		NotBefore:    time.Unix(1700000000, 0),
		NotAfter:     time.Unix(1900000000, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
