package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Load reads and parses the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes a config strictly, applies defaults, resolves relative paths
// against path's directory and validates everything. Any problem in the
// document gives an *Error holding all of them, sorted by line.
func Parse(data []byte, path string) (*Config, error) {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("resolving the config directory: %w", err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{File: path, Problems: []Problem{syntaxProblem(err)}}
	}
	cfg := Defaults()
	cfg.Path = path
	c := &checker{cfg: cfg, dir: dir, lines: indexLines(data), failed: make(map[string]bool)}
	d := decoder{c: c}
	d.table("", doc, reflect.ValueOf(cfg).Elem())
	cfg.validate(c)
	if len(c.problems) > 0 {
		sort.SliceStable(c.problems, func(i, j int) bool {
			a, b := c.problems[i].Line, c.problems[j].Line
			return a != 0 && (b == 0 || a < b)
		})
		return nil, &Error{File: path, Problems: c.problems}
	}
	cfg.Warnings = c.warnings
	return cfg, nil
}

// syntaxProblem turns a TOML error into one problem with its line and column.
func syntaxProblem(err error) Problem {
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return Problem{Msg: fmt.Sprintf("not valid TOML: %v", err)}
	}
	line, col := de.Position()
	return Problem{Line: line, Msg: fmt.Sprintf("TOML syntax error at column %d: %s", col, strings.TrimPrefix(de.Error(), "toml: "))}
}
