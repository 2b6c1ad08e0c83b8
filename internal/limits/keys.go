package limits

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"edge/internal/config"
	"edge/internal/reqctx"
)

type partKind uint8

const (
	partOpenID partKind = iota
	partIP
	partRoute
	partAppID
	partHeader
)

type keyPart struct {
	kind   partKind
	header string // canonical name, for partHeader
}

func parseParts(key string) ([]keyPart, error) {
	names, err := config.ParseLimitKey(key)
	if err != nil {
		return nil, err
	}
	parts := make([]keyPart, len(names))
	for i, n := range names {
		switch {
		case n == config.LimitKeyOpenID:
			parts[i].kind = partOpenID
		case n == config.LimitKeyIP:
			parts[i].kind = partIP
		case n == config.LimitKeyRoute:
			parts[i].kind = partRoute
		case n == config.LimitKeyAppID:
			parts[i].kind = partAppID
		default:
			parts[i] = keyPart{kind: partHeader, header: strings.TrimPrefix(n, config.LimitKeyHeader)}
		}
	}
	return parts, nil
}

// maxPartLen bounds one part of a key as stored; a longer value (a header
// is client input) is stored as its SHA-256, so a key's size is bounded.
const maxPartLen = 64

// appendKey writes the bucket key of one request into dst. Each part is
// tagged and length-prefixed, so no header value can forge another part.
// A missing part becomes the client IP when fallback is set; ok is false
// when the key cannot be made (never one bucket for everyone).
func appendKey(dst []byte, parts []keyPart, fallback bool, info *reqctx.Info, r *http.Request, route string) ([]byte, bool) {
	var ip netip.Addr
	var openid, appid string
	if info != nil {
		ip, openid, appid = info.ClientIP.Unmap(), info.OpenID, info.AppID
	}
	for _, p := range parts {
		var tag byte
		var v string
		switch p.kind {
		case partOpenID:
			tag, v = 'o', openid
		case partAppID:
			tag, v = 'a', appid
		case partRoute:
			tag, v = 'r', route
		case partHeader:
			tag = 'h'
			if vs := r.Header[p.header]; len(vs) > 0 {
				v = vs[0]
			}
		case partIP:
			tag = 'i'
		}
		if p.kind != partIP && v == "" && (!fallback || p.kind == partRoute) {
			return dst, false
		}
		if p.kind == partIP || v == "" {
			if !ip.IsValid() {
				return dst, false
			}
			dst = append(dst, 'i', '=')
			dst = ip.AppendTo(dst)
			dst = append(dst, '|')
			continue
		}
		dst = append(dst, tag)
		if len(v) > maxPartLen {
			sum := sha256.Sum256([]byte(v))
			dst = append(dst, '#')
			dst = hex.AppendEncode(dst, sum[:16])
		} else {
			dst = strconv.AppendInt(dst, int64(len(v)), 10)
			dst = append(dst, ':')
			dst = append(dst, v...)
		}
		dst = append(dst, '|')
	}
	return dst, true
}
