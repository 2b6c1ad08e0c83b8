package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"edge/internal/config"
	"edge/internal/testpeer"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func makeJWT(t testing.TB, alg, kid string, key any, claims map[string]any) string {
	t.Helper()
	hdr := map[string]any{"alg": alg, "typ": "JWT"}
	if kid != "" {
		hdr["kid"] = kid
	}
	return makeJWTHeader(t, hdr, key, claims)
}

// makeJWTHeader signs with the algorithm the key implies, whatever the
// header claims, so tests can send headers a verifier must refuse.
func makeJWTHeader(t testing.TB, hdr, key any, claims map[string]any) string {
	t.Helper()
	hj, _ := json.Marshal(hdr)
	cj, _ := json.Marshal(claims)
	signed := b64(hj) + "." + b64(cj)
	digest := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := key.(type) {
	case []byte:
		m := hmac.New(sha256.New, k)
		m.Write([]byte(signed))
		sig = m.Sum(nil)
	case *rsa.PrivateKey:
		sig, _ = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:])
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case nil:
	}
	return signed + "." + b64(sig)
}

func TestJWT(t *testing.T) {
	dir := t.TempDir()
	now := testpeer.NewClock(time.Unix(1772538184, 0))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hsKey := []byte("an-hs256-secret-of-at-least-32-bytes!!")

	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	rsaPEM := filepath.Join(dir, "rsa.pem")
	os.WriteFile(rsaPEM, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "x": b64(ecKey.X.FillBytes(make([]byte, 32))), "y": b64(ecKey.Y.FillBytes(make([]byte, 32)))},
		{"kty": "EC", "crv": "P-256", "kid": "k2", "x": b64(otherEC.X.FillBytes(make([]byte, 32))), "y": b64(otherEC.Y.FillBytes(make([]byte, 32)))},
		{"kty": "RSA", "kid": "ignored", "n": b64(rsaKey.N.Bytes()), "e": "AQAB"},
	}})
	jwksFile := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwksFile, jwks, 0o600)

	exp := now.Now().Add(time.Hour).Unix()
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"sub": "openid-sub", "openid": "openid-claim", "exp": exp, "iss": "app", "aud": []string{"edge", "x"}}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	hs := &config.RouteJWT{Alg: "HS256", Secret: config.Secret(hsKey), OpenIDClaim: "sub", Leeway: config.Duration(time.Minute)}
	rs := &config.RouteJWT{Alg: "RS256", PublicKeyFile: rsaPEM, OpenIDClaim: "openid", Issuer: "app", Audience: "edge"}
	es := &config.RouteJWT{Alg: "ES256", JWKSFile: jwksFile, OpenIDClaim: "sub"}
	good := makeJWT(t, "HS256", "", hsKey, claims(nil))
	// The last character of a 32-byte signature carries two unused bits:
	// changing them keeps the bytes a lax decoder sees.
	sigAt := len(good) - 1
	rs512, err := jwt.NewWithClaims(jwt.SigningMethodRS512, jwt.MapClaims(claims(nil))).SignedString(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	lax := good[:sigAt] + string(base64URLAlphabet[strings.IndexByte(base64URLAlphabet, good[sigAt])^1])

	for _, tc := range []struct {
		name  string
		cfg   *config.RouteJWT
		token string
		code  int
		want  string
	}{
		{"HS256", hs, makeJWT(t, "HS256", "", hsKey, claims(nil)), 0, "openid-sub"},
		{"RS256 with iss and aud", rs, makeJWT(t, "RS256", "", rsaKey, claims(nil)), 0, "openid-claim"},
		{"ES256 by kid", es, makeJWT(t, "ES256", "k2", otherEC, claims(nil)), 0, "openid-sub"},
		{"ES256 without kid", es, makeJWT(t, "ES256", "", ecKey, claims(nil)), 0, "openid-sub"},
		{"ES256 wrong kid", es, makeJWT(t, "ES256", "k1", otherEC, claims(nil)), 40101, ""},
		{"alg none", hs, makeJWT(t, "none", "", nil, claims(nil)), 40101, ""},
		{"RS512 with the route's RSA key", rs, rs512, 40101, ""},
		{"HS256 signed with the RSA public key", rs, makeJWT(t, "HS256", "", der, claims(nil)), 40101, ""},
		{"wrong key", hs, makeJWT(t, "HS256", "", []byte("another-secret-another-secret-12345"), claims(nil)), 40101, ""},
		{"expired", hs, makeJWT(t, "HS256", "", hsKey, claims(map[string]any{"exp": now.Now().Add(-2 * time.Minute).Unix()})), 40102, ""},
		{"expired within leeway", hs, makeJWT(t, "HS256", "", hsKey, claims(map[string]any{"exp": now.Now().Add(-30 * time.Second).Unix()})), 0, "openid-sub"},
		{"no exp", hs, makeJWT(t, "HS256", "", hsKey, claims(map[string]any{"exp": nil})), 40101, ""},
		{"not yet valid", hs, makeJWT(t, "HS256", "", hsKey, claims(map[string]any{"nbf": now.Now().Add(time.Hour).Unix()})), 40101, ""},
		{"wrong issuer", rs, makeJWT(t, "RS256", "", rsaKey, claims(map[string]any{"iss": "evil"})), 40101, ""},
		{"wrong audience", rs, makeJWT(t, "RS256", "", rsaKey, claims(map[string]any{"aud": "evil"})), 40101, ""},
		{"claim missing", hs, makeJWT(t, "HS256", "", hsKey, claims(map[string]any{"sub": nil})), 40101, ""},
		{"claim not a string", hs, makeJWT(t, "HS256", "", hsKey, claims(map[string]any{"sub": 7})), 40101, ""},
		{"garbage", hs, "a.b.c", 40101, ""},
		{"four parts", hs, makeJWT(t, "HS256", "", hsKey, claims(nil)) + ".x", 40101, ""},
		{"over the size bound", hs, makeJWT(t, "HS256", "", hsKey, claims(map[string]any{"pad": strings.Repeat("a", maxJWTLen)})), 40101, ""},
		{"crit header", hs, makeJWTHeader(t, map[string]any{"alg": "HS256", "crit": []string{"exp"}, "exp": exp}, hsKey, claims(nil)), 40101, ""},
		{"kid not a string", es, makeJWTHeader(t, map[string]any{"alg": "ES256", "kid": 2}, otherEC, claims(nil)), 40101, ""},
		{"signature with padding", hs, good + "=", 40101, ""},
		{"signature with non-zero unused bits", hs, lax, 40101, ""},
		{"nbf within leeway", hs, makeJWT(t, "HS256", "", hsKey, claims(map[string]any{"nbf": now.Now().Add(30 * time.Second).Unix()})), 0, "openid-sub"},
		{"expired and wrong issuer", rs, makeJWT(t, "RS256", "", rsaKey, claims(map[string]any{"exp": now.Now().Add(-time.Minute).Unix(), "iss": "evil"})), 40102, ""},
		{"aud as one string", rs, makeJWT(t, "RS256", "", rsaKey, claims(map[string]any{"aud": "edge"})), 0, "openid-claim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newService(t, testConfig(), Options{Now: now.Now})
			rt := testRoute("jwt")
			rt.JWT = tc.cfg
			rt.App = "shop"
			req := httptest.NewRequest("GET", "/api", nil)
			req.Header.Set("Authorization", "Bearer "+tc.token)
			rec, got := serveThrough(t, s, rt, req, false)
			if tc.code != 0 {
				if got.called || errorCode(t, rec) != tc.code {
					t.Fatalf("answered %d %s", rec.Code, rec.Body.String())
				}
				return
			}
			if !got.called {
				t.Fatalf("refused: %s", rec.Body.String())
			}
			if got.header.Get("X-WX-OPENID") != tc.want || got.header.Get("X-WX-APPID") != testAppID {
				t.Errorf("upstream saw %v", got.header)
			}
		})
	}
}

func FuzzJWT(f *testing.F) {
	hsKey := []byte("an-hs256-secret-of-at-least-32-bytes!!")
	good := makeJWT(f, "HS256", "", hsKey, map[string]any{"sub": "o1", "exp": 1 << 32})
	f.Add(good)
	f.Add("e30.e30.")
	f.Add("..")
	v, err := newJWTVerifier(&config.RouteJWT{Alg: "HS256", Secret: config.Secret(hsKey), OpenIDClaim: "sub"}, time.Now)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if openid, err := v.verify(tok); err == nil && tok != good {
			t.Fatalf("accepted a token never signed: %q -> %q", tok, openid)
		}
	})
}
