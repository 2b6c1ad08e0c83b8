package config

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// decoder fills a Config from the generic values toml.Unmarshal produced,
// by reflection over the Config type. It runs once per load, never per
// request, and records a problem for every key it cannot take instead of
// stopping at the first.
type decoder struct {
	c *checker
}

var (
	durationType        = reflect.TypeFor[Duration]()
	byteSizeType        = reflect.TypeFor[ByteSize]()
	secretType          = reflect.TypeFor[Secret]()
	prefixType          = reflect.TypeFor[netip.Prefix]()
	targetType          = reflect.TypeFor[Target]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// maxSecretFile bounds a file: secret, so a mistaken path (a log, a device)
// cannot make a load read without end.
const maxSecretFile = 64 << 10

func (d *decoder) fail(key, format string, args ...any) {
	d.c.add(key, format, args...)
	d.c.failed[key] = true
}

func (d *decoder) wrongType(key string, raw any, want string) {
	d.fail(key, "must be %s, not %s", want, describe(raw))
}

// value decodes raw into v, which holds its defaults already.
func (d *decoder) value(key string, raw any, v reflect.Value) {
	switch v.Type() {
	case targetType:
		if s, ok := raw.(string); ok {
			v.Addr().Interface().(*Target).Address = d.str(key, s)
			return
		}
		if _, ok := raw.(map[string]any); !ok {
			d.wrongType(key, raw, `a string like "127.0.0.1:3000" or a table like { address = "127.0.0.1:3000", weight = 2 }`)
			return
		}
	case prefixType:
		d.prefix(key, raw, v)
		return
	case secretType:
		if s, ok := raw.(string); ok {
			v.SetString(d.secret(key, s))
		} else {
			d.wrongType(key, raw, `a string (the value, "${ENV_NAME}" or "file:/path")`)
		}
		return
	case byteSizeType:
		if n, ok := raw.(int64); ok {
			if n < 0 {
				d.fail(key, "must be 0 or more, not %d", n)
				return
			}
			v.SetInt(n)
			return
		}
	}
	if v.Kind() != reflect.Pointer && reflect.PointerTo(v.Type()).Implements(textUnmarshalerType) {
		s, ok := raw.(string)
		if !ok {
			d.wrongType(key, raw, textHint(v.Type()))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(d.str(key, s))); err != nil {
			d.fail(key, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		elem := reflect.New(v.Type().Elem())
		setDefaults(elem.Elem())
		d.value(key, raw, elem.Elem())
		v.Set(elem)
	case reflect.Struct:
		d.table(key, raw, v)
	case reflect.Slice:
		arr, ok := raw.([]any)
		if !ok {
			d.wrongType(key, raw, "an array, like [ ... ]")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(arr), len(arr))
		for i, el := range arr {
			e := s.Index(i)
			setDefaults(e)
			d.value(indexKey(key, i), el, e)
		}
		v.Set(s)
	case reflect.Map:
		d.mapValue(key, raw, v)
	case reflect.String:
		if s, ok := raw.(string); ok {
			v.SetString(d.str(key, s))
		} else {
			d.wrongType(key, raw, "a string")
		}
	case reflect.Bool:
		if b, ok := raw.(bool); ok {
			v.SetBool(b)
		} else {
			d.wrongType(key, raw, "true or false")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := raw.(int64)
		switch {
		case !ok:
			d.wrongType(key, raw, "an integer")
		case v.OverflowInt(n):
			d.fail(key, "%d is too large for this setting", n)
		default:
			v.SetInt(n)
		}
	case reflect.Float32, reflect.Float64:
		switch n := raw.(type) {
		case float64:
			v.SetFloat(n)
		case int64:
			v.SetFloat(float64(n))
		default:
			d.wrongType(key, raw, "a number")
		}
	default:
		d.fail(key, "has a Go type the config decoder does not support (%s); this is a bug in edge", v.Type())
	}
}

// table decodes a TOML table into a struct; fields of anonymous embedded
// structs are keys of this same table.
func (d *decoder) table(key string, raw any, v reflect.Value) {
	m, ok := raw.(map[string]any)
	if !ok {
		d.wrongType(key, raw, "a table ([name] with keys below it, or { key = value })")
		return
	}
	fields, names := tomlFields(v.Type())
	for _, name := range sortedKeys(m) {
		k := joinKey(key, name)
		idx, ok := fields[name]
		if !ok {
			d.unknown(k, name, names)
			continue
		}
		d.value(k, m[name], v.FieldByIndex(idx))
	}
}

func (d *decoder) unknown(key, name string, known []string) {
	if s := closest(name, known); s != "" {
		d.fail(key, "unknown key; did you mean %q?", s)
		return
	}
	d.fail(key, "unknown key; the keys allowed here are %s", quoteList(known))
}

func (d *decoder) mapValue(key string, raw any, v reflect.Value) {
	m, ok := raw.(map[string]any)
	if !ok {
		d.wrongType(key, raw, `a table, like { "X-Name" = "value" }`)
		return
	}
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		d.fail(key, "has a Go map type the config decoder does not support (%s); this is a bug in edge", t)
		return
	}
	out := reflect.MakeMapWithSize(t, len(m))
	for _, name := range sortedKeys(m) {
		e := reflect.New(t.Elem()).Elem()
		setDefaults(e)
		d.value(joinKey(key, name), m[name], e)
		out.SetMapIndex(reflect.ValueOf(name).Convert(t.Key()), e)
	}
	v.Set(out)
}

// prefix accepts a CIDR or a bare address, which means that one address.
func (d *decoder) prefix(key string, raw any, v reflect.Value) {
	s, ok := raw.(string)
	if !ok {
		d.wrongType(key, raw, `a string like "10.0.0.0/8" or "192.168.1.10"`)
		return
	}
	s = d.str(key, s)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			d.fail(key, "%q is not an IP address or CIDR; write it like \"10.0.0.0/8\", \"192.168.1.10\" or \"2001:db8::/32\"", s)
			return
		}
		p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	}
	v.Set(reflect.ValueOf(p.Masked()))
}

// str expands ${NAME} from the environment; "$${" writes a literal "${".
// Messages name the variable, never the text around it: it may be a secret.
func (d *decoder) str(key, s string) string {
	if !strings.Contains(s, "${") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i])
			b.WriteByte('{')
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		rest := s[i+2:]
		j := strings.IndexByte(rest, '}')
		if j < 0 || !validEnvName(rest[:j]) {
			d.fail(key, `has "${" without a variable name and "}" after it; write ${NAME} (letters, digits, _) to read the environment, or $${ for a literal "${"`)
			return ""
		}
		name := rest[:j]
		val, ok := os.LookupEnv(name)
		if !ok {
			d.fail(key, "environment variable %s is not set; set it in edge's environment (e.g. Environment= or EnvironmentFile= in the systemd unit) or write the value here", name)
		}
		b.WriteString(val)
		s = rest[j+1:]
	}
}

func validEnvName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// secret resolves a Secret: ${ENV} first (so "file:${CREDENTIALS_DIRECTORY}/x"
// works with systemd credentials), then "file:" reads the value from a file.
func (d *decoder) secret(key, s string) string {
	s = d.str(key, s)
	path, ok := strings.CutPrefix(s, "file:")
	if !ok {
		return s
	}
	d.c.resolve(&path)
	b, err := readSecretFile(path)
	if err != nil {
		d.fail(key, "cannot read secret file %q: %v; check the path (relative paths start at the config file's directory) and that edge's user may read it", path, err)
		return ""
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
}

// readSecretFile reads a regular file of bounded size; a FIFO or device
// would block or never end.
func readSecretFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, unwrapPath(err)
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("larger than %d bytes", maxSecretFile)
	}
	return b, nil
}

// unwrapPath drops the path an *fs.PathError repeats, since messages
// already quote it.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// tomlFields maps each TOML key of a struct to its field index path,
// flattening anonymous embedded structs, and lists the keys in field order.
func tomlFields(t reflect.Type) (map[string][]int, []string) {
	fields := make(map[string][]int)
	var names []string
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("toml")
			name, _, _ := strings.Cut(tag, ",")
			idx := append(slices.Clone(prefix), i)
			switch {
			case name == "-":
			case f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct:
				walk(f.Type, idx)
			case !f.IsExported():
			default:
				if name == "" {
					name = f.Name
				}
				fields[name] = idx
				names = append(names, name)
			}
		}
	}
	walk(t, nil)
	return fields, names
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// textHint says what a text-decoded type looks like when given a non-string.
func textHint(t reflect.Type) string {
	switch t {
	case durationType:
		return `a string with a unit, like "10s" or "500ms"`
	case byteSizeType:
		return `an integer or a string like "64KB" or "10MB"`
	}
	return "a string"
}

// describe names the TOML type of a decoded value for messages.
func describe(raw any) string {
	switch raw.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time, toml.LocalDate, toml.LocalDateTime, toml.LocalTime:
		return "a date/time"
	}
	return fmt.Sprintf("a %T", raw)
}

// defaulter is implemented by config types with default values. setDefaults
// is called on a value before the file fills it, so absent keys keep their
// defaults; it must be idempotent (an embedded section's method may also be
// promoted to its parent).
type defaulter interface{ setDefaults() }

// setDefaults applies the defaults of v and of its nested structs.
func setDefaults(v reflect.Value) {
	if v.Kind() != reflect.Struct || !v.CanAddr() {
		return
	}
	if d, ok := v.Addr().Interface().(defaulter); ok {
		d.setDefaults()
	}
	t := v.Type()
	for i := range t.NumField() {
		if t.Field(i).IsExported() {
			setDefaults(v.Field(i))
		}
	}
}
