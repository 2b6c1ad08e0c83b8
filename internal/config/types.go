package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is written as a Go duration string: "500ms", "10s", "1h30m".
type Duration time.Duration

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// UnmarshalText parses a duration string; negative values are refused.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration; write it like \"500ms\", \"10s\" or \"2m\"", b)
	}
	if v < 0 {
		return fmt.Errorf("%q is negative; a duration must be 0 or more", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration back in Go syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// ByteSize is a number of bytes: an integer, or a string with a unit
// ("512KB", "10MB", "1GiB"; KB and KiB both mean 1024, as in nginx).
type ByteSize int64

// UnmarshalText parses a size with an optional unit.
func (s *ByteSize) UnmarshalText(b []byte) error {
	str := strings.TrimSpace(string(b))
	upper := strings.ToUpper(str)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30},
		{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
	} {
		if strings.HasSuffix(upper, u.suffix) {
			mult = u.mult
			upper = strings.TrimSpace(strings.TrimSuffix(upper, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(upper, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a size; write it like 65536, \"64KB\" or \"10MB\"", str)
	}
	*s = ByteSize(n * mult)
	return nil
}

// Secret is a string that never prints. In TOML it is written as "${ENV_NAME}"
// (read from the environment) or "file:/path" (read from a file, trailing
// newline removed); a plain value is accepted too.
type Secret string

// String redacts the value so a secret cannot reach a log by accident.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString redacts for %#v too.
func (s Secret) GoString() string { return s.String() }

// Value returns the secret itself, for the code that needs it.
func (s Secret) Value() string { return string(s) }
