package config

import (
	"fmt"
	"slices"
	"strings"
)

// AccessFormatPart is a piece of a compiled access_format: literal text,
// or the variable Var (a name of AccessFields or of AccessFormatExtras).
type AccessFormatPart struct {
	Text string
	Var  string
}

// AccessFormatExtras are the values access_format can write beyond the
// fields of access_fields, in nginx's forms.
var AccessFormatExtras = []string{
	"request",                // "GET /path?query HTTP/1.1", query masked
	"request_uri",            // /path?query, query masked
	"time_local",             // 30/Nov/2026:18:20:03 +0000
	"request_time",           // seconds, millisecond precision
	"upstream_response_time", // seconds, millisecond precision
}

// accessFormatAliases are nginx's variable names for edge's fields, so an
// nginx log_format can be carried over as written.
var accessFormatAliases = map[string]string{
	"remote_addr":     "client_ip",
	"request_method":  "method",
	"uri":             "path",
	"args":            "query",
	"query_string":    "query",
	"server_protocol": "proto",
	"body_bytes_sent": "bytes",
	"bytes_sent":      "bytes",
	"upstream_addr":   "target",
	"http_user_agent": "user_agent",
	"http_referer":    "referer",
	"time_iso8601":    "time",
	// HIT, MISS, STALE, REVALIDATED or BYPASS, as nginx's mostly are.
	"upstream_cache_status": "cache",
}

// ParseAccessFormat compiles an access_format template: text with $name
// or ${name} variables (edge's field names, nginx's names for them, and
// AccessFormatExtras); $$ is a dollar sign.
func ParseAccessFormat(s string) ([]AccessFormatPart, error) {
	var parts []AccessFormatPart
	var text strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			text.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			text.WriteByte('$')
			i++
			continue
		}
		name, n := variableName(s[i+1:])
		if name == "" {
			return nil, fmt.Errorf("a $ at byte %d is followed by no variable name; write $$ for a dollar sign", i)
		}
		v, ok := accessFormatVar(name)
		if !ok {
			return nil, fmt.Errorf("$%s is not a variable edge knows; use one of %s", name, strings.Join(AccessFormatVariables(), ", "))
		}
		if text.Len() > 0 {
			parts = append(parts, AccessFormatPart{Text: text.String()})
			text.Reset()
		}
		parts = append(parts, AccessFormatPart{Var: v})
		i += n
	}
	if text.Len() > 0 {
		parts = append(parts, AccessFormatPart{Text: text.String()})
	}
	return parts, nil
}

// variableName reads a variable's name at the start of s (after the $):
// {name}, or the longest run of letters, digits and _; n is the bytes it
// took.
func variableName(s string) (name string, n int) {
	if strings.HasPrefix(s, "{") {
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", 0
		}
		return s[1:end], end + 1
	}
	for n < len(s) && (s[n] == '_' || 'a' <= s[n] && s[n] <= 'z' || 'A' <= s[n] && s[n] <= 'Z' || '0' <= s[n] && s[n] <= '9') {
		n++
	}
	return s[:n], n
}

func accessFormatVar(name string) (string, bool) {
	if alias, ok := accessFormatAliases[name]; ok {
		return alias, true
	}
	if slices.Contains(AccessFields, name) || slices.Contains(AccessFormatExtras, name) {
		return name, true
	}
	return "", false
}

// AccessFormatVariables are every name access_format knows, sorted.
func AccessFormatVariables() []string {
	names := append(slices.Clone(AccessFields), AccessFormatExtras...)
	for alias := range accessFormatAliases {
		names = append(names, alias)
	}
	slices.Sort(names)
	return names
}
