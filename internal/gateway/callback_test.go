package gateway

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// TestCallbacksPassOnlyWhatIsSigned: the Alipay signature covers the form
// body, WeChat Pay's the body and its own headers; neither covers the query
// string, so that of a verified notification never reaches the upstream,
// whatever it names (?refund_amount=999 would otherwise reach a framework
// that merges query and form parameters).
func TestCallbacksPassOnlyWhatIsSigned(t *testing.T) {
	var vectors struct {
		PublicKeyPEM string `json:"public_key_pem"`
		Valid        []struct{ Form string }
	}
	raw, err := os.ReadFile(filepath.Join(testpeer.RepoRoot(t), "testdata", "vectors", "alipay-notify.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &vectors); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	alipayKey := filepath.Join(dir, "alipay.pem")
	if err := os.WriteFile(alipayKey, []byte(vectors.PublicKeyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	payKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&payKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	payPub := filepath.Join(dir, "wechatpay.pem")
	if err := os.WriteFile(payPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startBackend(t, "b", nil)
	e := startEdge(t, fmt.Sprintf(`
[[upstreams]]
name = "b"
targets = [%q]
[[routes]]
name = "alipay"
path = "/alipay/notify"
upstream = "b"
verify = "alipay"
[routes.alipay]
public_key = %q
[[routes]]
name = "wechatpay"
path = "/wechatpay/notify"
upstream = "b"
verify = "wechatpay_v3"
[routes.wechatpay]
keys = [{ serial = "PUB_KEY_ID_TEST", public_key = %q }]
`, b.addr, alipayKey, payPub))

	payBody := `{"id":"EV-1","event_type":"TRANSACTION.SUCCESS"}`
	payHeaders := func() http.Header {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		sum := sha256.Sum256([]byte(ts + "\nn0nce\n" + payBody + "\n"))
		sig, err := rsa.SignPKCS1v15(nil, payKey, crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{
			"Content-Type": {"application/json"}, "Wechatpay-Serial": {"PUB_KEY_ID_TEST"}, "Wechatpay-Timestamp": {ts},
			"Wechatpay-Nonce": {"n0nce"}, "Wechatpay-Signature": {base64.StdEncoding.EncodeToString(sig)},
		}
	}
	for _, query := range []string{"", "?refund_amount=999", "?total_amount=0.01", "?a=1&b=%zz", "?"} {
		resp, body := e.do(t, http.MethodPost, e.url("api.example.com", "/alipay/notify"+query), strings.NewReader(vectors.Valid[0].Form),
			http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"}})
		if resp.StatusCode != http.StatusOK || body != "b POST /alipay/notify" {
			t.Errorf("alipay with %q: %d, the upstream received %q; want 200 and the path without a query", query, resp.StatusCode, body)
		}
		resp, body = e.do(t, http.MethodPost, e.url("api.example.com", "/wechatpay/notify"+query), strings.NewReader(payBody), payHeaders())
		if resp.StatusCode != http.StatusOK || body != "b POST /wechatpay/notify" {
			t.Errorf("wechatpay with %q: %d, the upstream received %q; want 200 and the path without a query", query, resp.StatusCode, body)
		}
	}
}
