package config

import (
	"sort"

	"github.com/pelletier/go-toml/v2/unstable"
)

// lineIndex maps every key path written in a TOML document to its line, so
// that problems found long after parsing (a route naming a missing upstream)
// still point at the right line. Paths use the same syntax as Problem.Key.
type lineIndex struct {
	lines map[string]int
	// arrays counts the [[x]] headers seen per array path, to give each
	// array-of-tables element its running index.
	arrays map[string]int
	// newlines holds the offset of every '\n', for a binary search from a
	// byte offset to a line.
	newlines []int
}

// indexLines builds the key path -> line index of a document that already
// decoded without error. A parse error cannot happen then; should the two
// parsers ever disagree, the index is simply partial and problems fall back
// to the line of a parent key.
func indexLines(data []byte) map[string]int {
	ix := lineIndex{lines: make(map[string]int), arrays: make(map[string]int)}
	for i, b := range data {
		if b == '\n' {
			ix.newlines = append(ix.newlines, i)
		}
	}
	var p unstable.Parser
	p.Reset(data)
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			table = ix.header(e, false)
		case unstable.ArrayTable:
			table = ix.header(e, true)
		case unstable.KeyValue:
			ix.keyValue(table, e)
		}
	}
	return ix.lines
}

func (ix *lineIndex) lineOf(r unstable.Range) int {
	return sort.SearchInts(ix.newlines, int(r.Offset)) + 1
}

// set keeps the first line a path appears on: where a table is opened, not
// where a later dotted key adds to it.
func (ix *lineIndex) set(path string, line int) {
	if _, ok := ix.lines[path]; !ok {
		ix.lines[path] = line
	}
}

// header indexes a [a.b] or [[a.b]] header and returns the path its keys
// belong to. A part naming an array of tables refers to its last element,
// as TOML specifies.
func (ix *lineIndex) header(e *unstable.Node, array bool) string {
	path, line := "", 0
	it := e.Key()
	for it.Next() {
		k := it.Node()
		if line == 0 {
			line = ix.lineOf(k.Raw)
		}
		path = joinKey(path, string(k.Data))
		ix.set(path, line)
		n := ix.arrays[path]
		switch {
		case it.IsLast() && array:
			ix.arrays[path] = n + 1
			path = indexKey(path, n)
			ix.set(path, line)
		case !it.IsLast() && n > 0:
			path = indexKey(path, n-1)
		}
	}
	return path
}

func (ix *lineIndex) keyValue(table string, e *unstable.Node) {
	line := ix.lineOf(e.Raw)
	path := table
	it := e.Key()
	for it.Next() {
		path = joinKey(path, string(it.Node().Data))
		ix.set(path, line)
	}
	ix.value(path, e.Value(), line)
}

// value indexes the insides of inline tables and arrays; elements without a
// position of their own (nested arrays) take the line of their key.
func (ix *lineIndex) value(path string, v *unstable.Node, line int) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			ix.keyValue(path, it.Node())
		}
	case unstable.Array:
		i := 0
		it := v.Children()
		for it.Next() {
			el := it.Node()
			l := line
			if el.Raw.Length > 0 {
				l = ix.lineOf(el.Raw)
			}
			p := indexKey(path, i)
			ix.set(p, l)
			ix.value(p, el, l)
			i++
		}
	}
}
