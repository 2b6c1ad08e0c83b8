package identity

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"edge/internal/config"
)

// maxJWTLen bounds the token a client can make edge decode and verify.
const maxJWTLen = 8 << 10

var errJWTInvalid = errors.New("jwt malformed, forged or not valid yet")

// jwtVerifier checks tokens an app issues itself, with exactly one
// algorithm: the alg in the token's header must match the route's, which
// rules out "none" and the HS256-with-a-public-key confusion.
type jwtVerifier struct {
	parser *jwt.Parser
	keys   []config.JWTKey
	claim  string
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
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{c.Alg}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(c.Leeway.Std()),
		jwt.WithTimeFunc(now),
		// One spelling per token: no padding, no stray bits.
		jwt.WithStrictDecoding(),
	}
	if c.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(c.Issuer))
	}
	if c.Audience != "" {
		opts = append(opts, jwt.WithAudience(c.Audience))
	}
	return &jwtVerifier{parser: jwt.NewParser(opts...), keys: keys, claim: claim}, nil
}

// verify checks the token's signature and its exp, nbf, iss and aud, and
// returns the openid claim. An expired token gives ErrTokenExpired; exp is
// required.
func (v *jwtVerifier) verify(token string) (string, error) {
	// Checked first: the library decodes the header's and the claims' JSON
	// before it checks the signature.
	if len(token) > maxJWTLen {
		return "", errJWTInvalid
	}
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(token, claims, v.key)
	switch {
	// Claims are validated only once the signature holds, so a forged
	// token is never told it expired; an expired one is, whatever else is
	// wrong with its claims.
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", ErrTokenExpired
	case err != nil:
		return "", errJWTInvalid
	}
	openid, ok := claims[v.claim].(string)
	if !ok || !validTrustedValue(openid) {
		return "", errJWTInvalid
	}
	return openid, nil
}

// key offers the keys a token may be signed with: those whose kid matches
// the token's, and those without a kid (secret, public_key_file).
func (v *jwtVerifier) key(t *jwt.Token) (any, error) {
	// The library does not know crit (RFC 7515 section 4.1.11) and so
	// cannot honour any extension it names.
	if _, ok := t.Header["crit"]; ok {
		return nil, errors.New("jwt header has crit")
	}
	kid := ""
	if raw, ok := t.Header["kid"]; ok && raw != nil {
		if kid, ok = raw.(string); !ok {
			return nil, errors.New("jwt kid is not a string")
		}
	}
	var set jwt.VerificationKeySet
	for _, k := range v.keys {
		if kid == "" || k.ID == "" || k.ID == kid {
			set.Keys = append(set.Keys, k.Key)
		}
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("no key with kid %q", kid)
	}
	return set, nil
}
