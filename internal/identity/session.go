package identity

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A token is base64url (no padding) of
//
//	version(1) | key id(4) | GCM nonce(12) | AES-256-GCM(payload) | tag(16)
//
// with version and key id as additional data, and the payload
//
//	issued(8) | expires(8) | sign key(32) | len+appid | len+openid | len+unionid
//
// (times as big-endian Unix seconds, lengths one byte). The key id lets a
// verifier holding several secrets try only the one that sealed the token;
// the GCM nonce doubles as the token's id for nonces and revocation.
const (
	tokenVersion   = 1
	kidLen         = 4
	gcmNonceLen    = 12
	signKeyLen     = 32
	tokenHeaderLen = 1 + kidLen + gcmNonceLen
	gcmTagLen      = 16
	payloadFixed   = 8 + 8 + signKeyLen + 3
	maxFieldLen    = 255
	// maxTokenLen bounds the work a forged token can cause: three fields of
	// maxFieldLen plus the fixed parts, base64url encoded.
	maxTokenLen = (tokenHeaderLen+payloadFixed+3*maxFieldLen+gcmTagLen)*4/3 + 4
	// signKeyStrLen is the length of the base64url sign_key the client
	// holds; its bytes are the HMAC key.
	signKeyStrLen = (signKeyLen*8 + 5) / 6
)

// Errors of Sealer.Open. They say nothing secret and are safe to log.
var (
	ErrTokenMalformed = errors.New("token malformed or sealed with an unknown secret")
	ErrTokenExpired   = errors.New("token expired")
	ErrTokenRevoked   = errors.New("token revoked")
	// ErrRevokedHereOnly: Redis did not take the revocation; this replica
	// refuses the token, the others do not know.
	ErrRevokedHereOnly = errors.New("redis did not take the revocation; it holds on this replica only")
)

// TokenID identifies one issued token (never the user).
type TokenID [gcmNonceLen]byte

// Session is what a token carries.
type Session struct {
	ID      TokenID
	AppID   string
	OpenID  string
	UnionID string
	Issued  time.Time
	Expires time.Time
	signKey [signKeyLen]byte
}

// SignKey is the sign_key string the client was given at login; its UTF-8
// bytes are the EDGE-HMAC-SHA256 key.
func (s *Session) SignKey() string {
	return base64.RawURLEncoding.EncodeToString(s.signKey[:])
}

// appendSignKey appends the sign_key string to b without allocating when b
// has room.
func (s *Session) appendSignKey(b []byte) []byte {
	return base64.RawURLEncoding.AppendEncode(b, s.signKey[:])
}

var tokenBufPool = sync.Pool{New: func() any { return new([maxTokenLen]byte) }}

type sealKey struct {
	id   [kidLen]byte
	aead cipher.AEAD
}

// Sealer issues and opens session tokens. It holds no per-session state, so
// every replica sharing the secrets accepts every other replica's tokens.
type Sealer struct {
	keys []sealKey // keys[0] seals
	ttl  time.Duration
	now  func() time.Time
	// revoked, when set, lists revoked token ids in Redis.
	revoked Redis
	// held is this replica's copy of the list; nil: none.
	held *Revocations
}

// MinSecretLen is the shortest accepted session secret.
const MinSecretLen = 32

// NewSealer derives one AES-256-GCM key per secret (the first seals, all
// open) and issues tokens valid for ttl. rdb, when not nil, keeps the
// revocation list; now is the clock (nil: time.Now).
func NewSealer(secrets [][]byte, ttl time.Duration, rdb Redis, now func() time.Time) (*Sealer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no session secret configured")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("session ttl %s must be positive", ttl)
	}
	if now == nil {
		now = time.Now
	}
	s := &Sealer{ttl: ttl, now: now, revoked: rdb}
	for i, secret := range secrets {
		if len(secret) < MinSecretLen {
			return nil, fmt.Errorf("session secret %d is %d bytes; it must be at least %d", i+1, len(secret), MinSecretLen)
		}
		key, err := hkdf.Key(sha256.New, secret, nil, "edge session token v1", 32)
		if err != nil {
			return nil, fmt.Errorf("deriving session key %d: %w", i+1, err)
		}
		id, err := hkdf.Key(sha256.New, secret, nil, "edge session key id v1", kidLen)
		if err != nil {
			return nil, fmt.Errorf("deriving session key id %d: %w", i+1, err)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("session key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("session key %d: %w", i+1, err)
		}
		sk := sealKey{aead: aead}
		copy(sk.id[:], id)
		s.keys = append(s.keys, sk)
	}
	return s, nil
}

// Issue seals a new session with a fresh random sign key.
func (s *Sealer) Issue(appid, openid, unionid string) (string, Session, error) {
	for _, f := range [...]string{appid, openid, unionid} {
		if len(f) > maxFieldLen {
			return "", Session{}, fmt.Errorf("identity field of %d bytes is longer than %d", len(f), maxFieldLen)
		}
	}
	if openid == "" {
		return "", Session{}, errors.New("empty openid")
	}
	now := s.now().Truncate(time.Second)
	sess := Session{
		AppID: appid, OpenID: openid, UnionID: unionid,
		Issued: now, Expires: now.Add(s.ttl),
	}
	if _, err := rand.Read(sess.signKey[:]); err != nil {
		return "", Session{}, fmt.Errorf("reading random sign key: %w", err)
	}
	if _, err := rand.Read(sess.ID[:]); err != nil {
		return "", Session{}, fmt.Errorf("reading random token nonce: %w", err)
	}
	return s.seal(&sess), sess, nil
}

// seal encodes and seals sess with the first key. sess.ID must be fresh
// random bytes: it is the GCM nonce.
func (s *Sealer) seal(sess *Session) string {
	appid, openid, unionid := sess.AppID, sess.OpenID, sess.UnionID
	key := s.keys[0]
	buf := make([]byte, 0, tokenHeaderLen+payloadFixed+len(appid)+len(openid)+len(unionid)+gcmTagLen)
	buf = append(buf, tokenVersion)
	buf = append(buf, key.id[:]...)
	buf = append(buf, sess.ID[:]...)
	payload := binary.BigEndian.AppendUint64(buf[tokenHeaderLen:], uint64(sess.Issued.Unix()))
	payload = binary.BigEndian.AppendUint64(payload, uint64(sess.Expires.Unix()))
	payload = append(payload, sess.signKey[:]...)
	for _, f := range [...]string{appid, openid, unionid} {
		payload = append(payload, byte(len(f)))
		payload = append(payload, f...)
	}
	sealed := key.aead.Seal(payload[:0], sess.ID[:], payload, buf[:1+kidLen])
	return base64.RawURLEncoding.EncodeToString(buf[:tokenHeaderLen+len(sealed)])
}

// Open checks a token and returns its session. A token past its expiry
// returns the session with ErrTokenExpired. The revocation list is not
// consulted here (see Revoked).
func (s *Sealer) Open(token string) (Session, error) {
	if len(token) > maxTokenLen || len(token) < 1 {
		return Session{}, ErrTokenMalformed
	}
	// The buffer goes through the AEAD interface and would escape; pooled.
	rawp := tokenBufPool.Get().(*[maxTokenLen]byte)
	defer tokenBufPool.Put(rawp)
	raw := rawp[:]
	n, ok := decodeBase64URL(raw, token)
	if !ok || n < tokenHeaderLen+payloadFixed+gcmTagLen || raw[0] != tokenVersion {
		return Session{}, ErrTokenMalformed
	}
	var payload []byte
	for i := range s.keys {
		k := &s.keys[i]
		if [kidLen]byte(raw[1:1+kidLen]) != k.id {
			continue
		}
		p, err := k.aead.Open(raw[tokenHeaderLen:tokenHeaderLen], raw[1+kidLen:tokenHeaderLen], raw[tokenHeaderLen:n], raw[:1+kidLen])
		if err == nil {
			payload = p
			break
		}
	}
	if payload == nil {
		return Session{}, ErrTokenMalformed
	}
	var sess Session
	copy(sess.ID[:], raw[1+kidLen:tokenHeaderLen])
	sess.Issued = time.Unix(int64(binary.BigEndian.Uint64(payload)), 0)
	sess.Expires = time.Unix(int64(binary.BigEndian.Uint64(payload[8:])), 0)
	copy(sess.signKey[:], payload[16:16+signKeyLen])
	fields := payload[16+signKeyLen:]
	// One string holds all three fields so a request costs one allocation.
	var spans [3][2]int
	off := 0
	for i := range spans {
		if off >= len(fields) || off+1+int(fields[off]) > len(fields) {
			return Session{}, ErrTokenMalformed
		}
		l := int(fields[off])
		spans[i] = [2]int{off + 1, off + 1 + l}
		off += 1 + l
	}
	if off != len(fields) {
		return Session{}, ErrTokenMalformed
	}
	all := string(fields)
	sess.AppID = all[spans[0][0]:spans[0][1]]
	sess.OpenID = all[spans[1][0]:spans[1][1]]
	sess.UnionID = all[spans[2][0]:spans[2][1]]
	if sess.OpenID == "" {
		return Session{}, ErrTokenMalformed
	}
	if !s.now().Before(sess.Expires) {
		return sess, ErrTokenExpired
	}
	return sess, nil
}

// The revocation list is one sorted set of token ids (hex) scored by the
// token's expiry (Unix seconds), with its marker in the same hash-tagged
// slot: a replica reads the whole list back at start and after a
// reconnect, and on a Redis Cluster the node that holds it restarting
// empty is seen by the marker (see redisbus.Options.Markers) as a single
// node's would be.
const (
	RevokedKey       = "edge:{revoked}"
	RevokedMarkerKey = "edge:{revoked}:marker"
)

// revokeScript adds revocations to the list, drops the ended ones and,
// given a channel, announces what it wrote in the same step: one message,
// the head and then "<token id hex> <expiry>" for each revocation, space
// separated (the payload of EventRevoke), with the expiry the list keeps.
// So no replica trusting its copy of the list can miss a revocation Redis
// took. ARGV: now (Unix seconds), channel ("" for none), head, then pairs
// of (expiry, token id hex). A revocation already there keeps the later
// expiry (compared here rather than with ZADD GT, which Redis before 6.2
// lacks).
var revokeScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local told = {}
for i = 4, #ARGV, 2 do
  local exp = tonumber(ARGV[i])
  local cur = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i + 1]))
  if not cur or cur < exp then
    redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    exp = cur
  end
  told[#told + 1] = ARGV[i + 1] .. ' ' .. string.format('%d', exp)
end
if ARGV[2] ~= '' and #told > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3] .. table.concat(told, ' '))
end
return #told
`)

// Revoke adds the session's token to the revocation list until it would
// have expired anyway. Without Redis there is no list and Revoke fails.
func (s *Sealer) Revoke(ctx context.Context, sess Session) error {
	if s.revoked == nil {
		return errors.New("revoking a token needs [cluster] redis")
	}
	now := s.now()
	if !sess.Expires.After(now) {
		return nil
	}
	s.held.add(sess.ID, sess.Expires.Unix())
	err := writeRevocations(ctx, s.revoked, s.held.feedOf(), now.Unix(), []any{sess.Expires.Unix(), hex.EncodeToString(sess.ID[:])})
	if err != nil {
		s.held.markUnsynced()
		return fmt.Errorf("%w: %w", ErrRevokedHereOnly, err)
	}
	return nil
}

// Revoked reports whether the session's token is on the revocation list:
// this replica's copy first, then the list in Redis (one ZSCORE). Without
// Redis nothing is revoked. When Redis cannot answer, the error says so and
// the caller's revocation_failure policy decides.
func (s *Sealer) Revoked(ctx context.Context, sess *Session) (bool, error) {
	if s.revoked == nil {
		return false, nil
	}
	if s.held.has(sess.ID) {
		return true, nil
	}
	exp, err := s.revoked.ZScore(ctx, RevokedKey, hex.EncodeToString(sess.ID[:])).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking the revocation list: %w", err)
	}
	return int64(exp) > s.now().Unix(), nil
}

// decodeBase64URL decodes unpadded base64url from a string into dst without
// the string-to-bytes copy the standard decoder would need.
func decodeBase64URL(dst []byte, s string) (int, bool) {
	if len(s)%4 == 1 || base64.RawURLEncoding.DecodedLen(len(s)) > len(dst) {
		return 0, false
	}
	n := 0
	var acc uint32
	bits := 0
	for i := 0; i < len(s); i++ {
		v := b64Value[s[i]]
		if v == 0xff {
			return 0, false
		}
		acc = acc<<6 | uint32(v)
		bits += 6
		if bits >= 8 {
			bits -= 8
			dst[n] = byte(acc >> bits)
			n++
		}
	}
	// Unused trailing bits must be zero, as in the strict standard decoder,
	// so that one token has exactly one spelling.
	if acc&(1<<bits-1) != 0 {
		return 0, false
	}
	return n, true
}

var b64Value = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	return t
}()
