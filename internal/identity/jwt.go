package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"

	"edge/internal/config"
)

// maxJWTLen bounds the token a client can make edge decode and verify.
const maxJWTLen = 8 << 10

// jwtB64 refuses non-zero padding bits, so a token has one spelling.
var jwtB64 = base64.RawURLEncoding.Strict()

var errJWTInvalid = errors.New("jwt malformed, forged or not valid yet")

// jwtVerifier checks tokens an app issues itself, with exactly one
// algorithm: the alg in the token's header must match the route's, which
// rules out "none" and the HS256-with-a-public-key confusion.
type jwtVerifier struct {
	alg      string
	keys     []config.JWTKey
	claim    string
	issuer   string
	audience string
	leeway   time.Duration
	now      func() time.Time
}

func newJWTVerifier(c *config.RouteJWT, now func() time.Time) (*jwtVerifier, error) {
	keys, err := c.LoadKeys()
	if err != nil {
		return nil, fmt.Errorf("jwt keys: %w", err)
	}
	claim := c.OpenIDClaim
	if claim == "" {
		claim = config.DefaultOpenIDClaim
	}
	return &jwtVerifier{
		alg: c.Alg, keys: keys, claim: claim, issuer: c.Issuer, audience: c.Audience,
		leeway: c.Leeway.Std(), now: now,
	}, nil
}

// verify checks the token's signature and its exp, nbf, iss and aud, and
// returns the openid claim. An expired token gives ErrTokenExpired; exp is
// required.
func (v *jwtVerifier) verify(token string) (string, error) {
	if len(token) > maxJWTLen {
		return "", errJWTInvalid
	}
	h64, rest, ok1 := strings.Cut(token, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s64, ".") {
		return "", errJWTInvalid
	}
	var header struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := decodeJWTPart(h64, &header); err != nil || header.Alg != v.alg || header.Crit != nil {
		return "", errJWTInvalid
	}
	sig, err := jwtB64.DecodeString(s64)
	if err != nil {
		return "", errJWTInvalid
	}
	digest := sha256.Sum256([]byte(token[:len(h64)+1+len(p64)]))
	if !v.checkSignature(header.Kid, token[:len(h64)+1+len(p64)], digest[:], sig) {
		return "", errJWTInvalid
	}
	var claims map[string]json.RawMessage
	if err := decodeJWTPart(p64, &claims); err != nil {
		return "", errJWTInvalid
	}
	now := v.now()
	exp, ok := numericDate(claims["exp"])
	if !ok {
		return "", errJWTInvalid
	}
	if !now.Before(exp.Add(v.leeway)) {
		return "", ErrTokenExpired
	}
	if raw, present := claims["nbf"]; present {
		nbf, ok := numericDate(raw)
		if !ok || now.Add(v.leeway).Before(nbf) {
			return "", errJWTInvalid
		}
	}
	if v.issuer != "" {
		var iss string
		if json.Unmarshal(claims["iss"], &iss) != nil || iss != v.issuer {
			return "", errJWTInvalid
		}
	}
	if v.audience != "" && !hasAudience(claims["aud"], v.audience) {
		return "", errJWTInvalid
	}
	var openid string
	if err := json.Unmarshal(claims[v.claim], &openid); err != nil || !validTrustedValue(openid) {
		return "", errJWTInvalid
	}
	return openid, nil
}

func (v *jwtVerifier) checkSignature(kid, signed string, digest, sig []byte) bool {
	for _, k := range v.keys {
		if kid != "" && k.ID != "" && k.ID != kid {
			continue
		}
		switch key := k.Key.(type) {
		case []byte:
			m := hmac.New(sha256.New, key)
			m.Write([]byte(signed))
			if hmac.Equal(m.Sum(nil), sig) {
				return true
			}
		case *rsa.PublicKey:
			if rsa.VerifyPKCS1v15(key, crypto.SHA256, digest, sig) == nil {
				return true
			}
		case *ecdsa.PublicKey:
			// JWS carries r || s, not ASN.1 (RFC 7518 section 3.4).
			if len(sig) == 64 && ecdsa.Verify(key, digest, new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
				return true
			}
		}
	}
	return false
}

func decodeJWTPart(s string, v any) error {
	b, err := jwtB64.DecodeString(s)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// numericDate parses a JWT NumericDate (seconds, possibly fractional).
func numericDate(raw json.RawMessage) (time.Time, bool) {
	var f float64
	if raw == nil || json.Unmarshal(raw, &f) != nil || math.IsNaN(f) || f < 0 || f > 1<<40 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// hasAudience accepts aud as one string or an array of strings.
func hasAudience(raw json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == want
	}
	var many []string
	if json.Unmarshal(raw, &many) != nil {
		return false
	}
	for _, a := range many {
		if a == want {
			return true
		}
	}
	return false
}
