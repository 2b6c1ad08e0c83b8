package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a config file: where (key path and line)
// and what to do about it.
type Problem struct {
	// Key is the key path, e.g. "upstreams[0].targets[1].weight"; empty for
	// a TOML syntax error.
	Key string
	// Line is 1-based; 0 when the problem has no place in the file.
	Line int
	// Msg says what is wrong and what would be valid.
	Msg string
}

// Error holds every problem found in one config file, so an operator fixes
// them all in one pass instead of one per reload.
type Error struct {
	File     string
	Problems []Problem
}

// Error prints one problem per line as FILE:LINE: KEY: MSG.
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		p.write(&b, e.File)
	}
	return b.String()
}

// In writes the problem as FILE:LINE: KEY: MSG.
func (p Problem) In(file string) string {
	var b strings.Builder
	p.write(&b, file)
	return b.String()
}

func (p Problem) write(b *strings.Builder, file string) {
	b.WriteString(file)
	if p.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
}

// checker is the problem collector shared by the decoder, the core
// validation and the hooks of the identity, callback and limits sections
// (see *_validate.go). It knows where every key was written, so a check only
// names the key path and the line comes for free; it never stops at the
// first problem.
type checker struct {
	// cfg is the config being checked; hooks read other sections from it
	// (e.g. a route naming an app).
	cfg *Config
	// dir is the absolute directory of the config file.
	dir   string
	lines map[string]int
	// failed holds the keys the decoder could not take, so validation does
	// not pile a second, confusing problem on a value that never arrived.
	failed   map[string]bool
	problems []Problem
	warnings []Problem
}

// add records a problem at key. The message says what is wrong and how to
// fix it; it must never include a secret value.
func (c *checker) add(key, format string, args ...any) {
	for k := key; k != ""; k = parentKey(k) {
		if c.failed[k] {
			return
		}
	}
	c.problems = append(c.problems, Problem{Key: key, Line: c.line(key), Msg: fmt.Sprintf(format, args...)})
}

// warn records a setting that is valid but dangerous; it does not fail
// the config.
func (c *checker) warn(key, format string, args ...any) {
	c.warnings = append(c.warnings, Problem{Key: key, Line: c.line(key), Msg: fmt.Sprintf(format, args...)})
}

// line returns the line where key was written or, for a key left to its
// default, where its nearest written parent was (the [[routes]] header of a
// route missing a key); 0 when none was written.
func (c *checker) line(key string) int {
	for key != "" {
		if l, ok := c.lines[key]; ok {
			return l
		}
		key = parentKey(key)
	}
	return 0
}

// has reports whether key was written in the file, for settings whose
// default cannot be told apart from an explicit value.
func (c *checker) has(key string) bool {
	_, ok := c.lines[key]
	return ok
}

// resolve makes a relative file path absolute against the config file's
// directory, so a config means the same thing whatever the working directory.
func (c *checker) resolve(p *string) {
	if *p != "" && !filepath.IsAbs(*p) {
		*p = filepath.Join(c.dir, *p)
	}
}

// oneOf checks an enumerated setting, suggesting the closest allowed value.
func (c *checker) oneOf(key, value string, allowed ...string) bool {
	if slices.Contains(allowed, value) {
		return true
	}
	hint := ""
	if s := closest(value, allowed); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	}
	c.add(key, "%q is not valid%s; must be one of %s", value, hint, quoteList(allowed))
	return false
}

// parentKey drops the last segment of a key path: "a.b[2]" -> "a.b" -> "a".
func parentKey(key string) string {
	if strings.HasSuffix(key, "]") {
		if i := strings.LastIndexByte(key, '['); i >= 0 {
			return key[:i]
		}
	}
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[:i]
	}
	return ""
}

// joinKey appends a table key to a key path.
func joinKey(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// indexKey appends an array index to a key path.
func indexKey(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// quoteList writes names as `"a", "b"` for messages.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// closest returns the candidate an operator most likely meant by word, or ""
// when none is near enough to be a plausible typo.
func closest(word string, candidates []string) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	w := norm(word)
	best, bestDist, bestRaw := "", -1, 0
	for _, c := range candidates {
		n := norm(c)
		raw := editDistance(w, n)
		d := raw
		// One spelling extending the other ("warning" for "warn") is as
		// likely a slip as a typo, however many letters it adds.
		if len(w) >= 3 && len(n) >= 3 && (strings.HasPrefix(w, n) || strings.HasPrefix(n, w)) {
			d = min(d, 1)
		}
		if bestDist < 0 || d < bestDist || d == bestDist && raw < bestRaw {
			best, bestDist, bestRaw = c, d, raw
		}
	}
	if bestDist < 0 || bestDist > max(2, len(word)/3) || bestDist >= len(word) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between two strings, by byte.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// validToken reports whether s is an HTTP token (RFC 9110 section 5.6.2):
// the syntax of header names and methods.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
