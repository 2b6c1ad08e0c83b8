package identity

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/config"
	"edge/internal/reqctx"
	"edge/internal/testpeer"
)

func BenchmarkOpenToken(b *testing.B) {
	s := newSealer(b, testpeer.NewClock(time.Now()), nil, testSecret2, testSecret1)
	tok, _, _ := s.Issue(testAppID, "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "o6_bmasdasdsad6_2sgVt7hMZOPfL")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Open(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCanonicalQuery(b *testing.B) {
	var c canonicalQuery
	q := "q=%E5%B0%8F%E7%A8%8B%E5%BA%8F&page=2&b=x+y&a=1&a=0&empty=&flag"
	b.ReportAllocs()
	for b.Loop() {
		c.canonical(q)
	}
}

func BenchmarkStripClientIdentity(b *testing.B) {
	base := http.Header{
		"Accept": {"*/*"}, "User-Agent": {"MicroMessenger/8.0"}, "Referer": {"https://servicewechat.com/wx/1/page-frame.html"},
		"Content-Type": {"application/json"}, "Authorization": {"Bearer x"}, "X-Edge-Nonce": {"n"},
	}
	h := make(http.Header, len(base))
	b.ReportAllocs()
	for b.Loop() {
		for k, v := range base {
			h[k] = v
		}
		StripClientIdentity(h)
	}
}

func BenchmarkMemoryNonces(b *testing.B) {
	m := NewMemoryNonces(1 << 16)
	ctx := context.Background()
	now := time.Unix(1000, 0)
	var id TokenID
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		i++
		binary.LittleEndian.PutUint64(id[:], i)
		m.Record(ctx, nonceKey(id, "P7rnMXnYhAyv9noD8R0Q8c_MsIwm"), now, 10*time.Minute)
	}
}

// BenchmarkSignedRequest is the whole policy check on a signed POST with a
// small JSON body: token, signature, nonce, headers.
func BenchmarkSignedRequest(b *testing.B) {
	benchmarkPolicy(b, "signed")
}

// BenchmarkTokenRequest is the policy check on a token route.
func BenchmarkTokenRequest(b *testing.B) {
	benchmarkPolicy(b, "token")
}

// BenchmarkTokenRevocationCheck is the policy check on a token route with
// the revocation list in a real Redis, checked in a complete copy
// (revocation_check = "local") or with a ZSCORE per request ("redis").
func BenchmarkTokenRevocationCheck(b *testing.B) {
	rds := testpeer.Redis(b)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	defer rdb.Close()
	feed := &stubFeed{}
	feed.current.Store(true)
	for _, check := range []string{config.RevocationCheckLocal, config.RevocationCheckRedis} {
		b.Run(check, func(b *testing.B) {
			cfg := testConfig()
			cfg.Sessions.RevocationCheck = check
			benchmarkPolicyOf(b, "token", cfg, Options{Redis: rdb, Revocations: NewRevocations(rdb, feed, nil, nil)})
		})
	}
}

func benchmarkPolicy(b *testing.B, auth string) {
	benchmarkPolicyOf(b, auth, testConfig(), Options{})
}

func benchmarkPolicyOf(b *testing.B, auth string, cfg *config.Config, opts Options) {
	now := testpeer.NewClock(time.Unix(1772538184, 0))
	opts.Now, opts.Nonces = now.Now, NewMemoryNonces(1<<20)
	s := newService(b, cfg, opts)
	tok, sess, _ := s.Sealer().Issue(testAppID, "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "")
	p, err := s.Policy(testRoute(auth))
	if err != nil {
		b.Fatal(err)
	}
	body := `{"sku":"AXUusVVu","qty":7}`
	key := []byte(sess.SignKey())
	ts := strconv.FormatInt(now.Now().Unix(), 10)
	sg := &signer{mac: hmacSHA256{inner: sha256.New(), outer: sha256.New()}, body: sha256.New()}
	sg.body.Write([]byte(body))
	bodyHash := []byte(hex.EncodeToString(sg.body.Sum(nil)))
	info := reqctx.New(time.Now())
	ctx := reqctx.With(context.Background(), info)
	rec := httptest.NewRecorder()
	var n uint64
	b.ReportAllocs()
	b.StopTimer()
	for range b.N {
		n++
		nonce := "nonce-" + strconv.FormatUint(n, 36) + "-0123456789"
		req, _ := http.NewRequestWithContext(ctx, "POST", "/api/orders?page=2&a=1", strings.NewReader(body))
		req.RequestURI = "/api/orders?page=2&a=1"
		req.Header = http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}}
		if auth == "signed" {
			sum, _ := sg.sign(key, "POST", "/api/orders", "page=2&a=1", ts, nonce, bodyHash)
			req.Header["X-Edge-Timestamp"] = []string{ts}
			req.Header["X-Edge-Nonce"] = []string{nonce}
			req.Header["X-Edge-Signature"] = []string{hex.EncodeToString(sum[:])}
		}
		b.StartTimer()
		ok := p.Check(rec, req, info)
		b.StopTimer()
		if !ok {
			b.Fatalf("refused: %d %s", rec.Code, rec.Body.String())
		}
	}
}
