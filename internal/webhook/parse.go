package webhook

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net/url"
	"slices"
	"strings"
)

// queryValue returns the first value of key in a raw query string without
// building a url.Values map. A malformed escape in the matching pair counts
// as absent, so the caller rejects the request as unsigned.
func queryValue(raw, key string) (string, bool) {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if part == "" || strings.Contains(part, ";") {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, err := unescape(k)
		if err != nil || k != key {
			continue
		}
		v, err = unescape(v)
		if err != nil {
			return "", false
		}
		return v, true
	}
	return "", false
}

// unescape is url.QueryUnescape with the common, allocation-free case of
// nothing to unescape first.
func unescape(s string) (string, error) {
	if !strings.ContainsAny(s, "%+") {
		return s, nil
	}
	return url.QueryUnescape(s)
}

var (
	errNoEncrypt  = errors.New("no Encrypt field")
	errDupEncrypt = errors.New("more than one Encrypt field")
	errBodyFormat = errors.New("body is neither XML nor a JSON object")
)

// encryptField extracts the top-level Encrypt field of a safe-mode message,
// XML or JSON. It is strict where a lenient parser would let edge verify one
// value while the upstream reads another: a repeated Encrypt, or a JSON key
// that differs only in case (Go's decoder would match it, Node's would not),
// is an error.
func encryptField(body []byte) (string, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return "", errBodyFormat
	}
	switch trimmed[0] {
	case '<':
		return xmlEncrypt(trimmed)
	case '{':
		return jsonEncrypt(trimmed)
	default:
		return "", errBodyFormat
	}
}

func xmlEncrypt(body []byte) (string, error) {
	dec := xml.NewDecoder(bytes.NewReader(body))
	var (
		depth   int
		found   bool
		inField bool
		value   []byte
		roots   int
	)
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 1 {
				roots++
				if roots > 1 {
					return "", errors.New("more than one root element")
				}
			}
			if inField {
				return "", errors.New("element inside Encrypt")
			}
			if depth == 2 && t.Name.Local == "Encrypt" {
				// A prefixed <x:Encrypt> is a second Encrypt to parsers
				// that ignore namespaces.
				if found || t.Name.Space != "" {
					return "", errDupEncrypt
				}
				found, inField = true, true
			}
		case xml.EndElement:
			depth--
			inField = false
		case xml.CharData:
			if inField {
				value = append(value, t...)
			}
		}
	}
	if !found {
		return "", errNoEncrypt
	}
	return string(value), nil
}

func jsonEncrypt(body []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // the '{' seen by the caller
		return "", err
	}
	var (
		value string
		found bool
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		key, _ := tok.(string)
		if !strings.EqualFold(key, "Encrypt") {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return "", err
			}
			continue
		}
		if key != "Encrypt" || found {
			return "", errDupEncrypt
		}
		tok, err = dec.Token()
		if err != nil {
			return "", err
		}
		if value, found = tok.(string); !found {
			return "", errors.New("the Encrypt field is not a string")
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return "", err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", errors.New("data after the JSON object")
	}
	if !found {
		return "", errNoEncrypt
	}
	return value, nil
}

// field is one decoded form pair.
type field struct{ key, value string }

var errDupParam = errors.New("parameter repeated")

// parseForm decodes an application/x-www-form-urlencoded body into pairs
// sorted by key. A repeated key is an error: frameworks disagree on which
// copy wins (PHP the last, Java servlets the first), so edge would verify
// one amount and the upstream could read another.
func parseForm(s string, dst []field) ([]field, error) {
	for s != "" {
		var part string
		part, s, _ = strings.Cut(s, "&")
		if part == "" {
			continue
		}
		if strings.Contains(part, ";") {
			return nil, errors.New("semicolon in form")
		}
		k, v, _ := strings.Cut(part, "=")
		k, err := unescape(k)
		if err != nil {
			return nil, err
		}
		if v, err = unescape(v); err != nil {
			return nil, err
		}
		dst = append(dst, field{k, v})
	}
	slices.SortFunc(dst, func(a, b field) int { return strings.Compare(a.key, b.key) })
	for i := 1; i < len(dst); i++ {
		if dst[i].key == dst[i-1].key {
			return nil, errDupParam
		}
	}
	return dst, nil
}

// lookup finds key in pairs sorted by parseForm.
func lookup(pairs []field, key string) (string, bool) {
	i, ok := slices.BinarySearchFunc(pairs, key, func(f field, k string) int { return strings.Compare(f.key, k) })
	if !ok {
		return "", false
	}
	return pairs[i].value, true
}
