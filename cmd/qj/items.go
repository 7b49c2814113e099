package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// itemSource yields the items of an enqueue one at a time, so that a file of millions of
// lines is never held in memory whole.
type itemSource interface {
	// Next returns the next item, or io.EOF after the last one.
	Next() (string, error)
}

// argItems are the items given as arguments, each taken as it is (or, with
// --json-lines, decoded as a JSON value).
type argItems struct {
	args      []string
	i         int
	jsonLines bool
}

func (a *argItems) Next() (string, error) {
	if a.i >= len(a.args) {
		return "", io.EOF
	}
	arg := a.args[a.i]
	a.i++
	if !a.jsonLines {
		return arg, nil
	}
	item, err := decodeJSONItem([]byte(arg))
	if err != nil {
		return "", fmt.Errorf("argument %d is not a JSON value (--json-lines): %v", a.i, err)
	}
	return item, nil
}

// lineItems reads one item a line. A line ends at "\n"; a "\r" before it is dropped (a
// file written on Windows). Empty lines, a last line without "\n" included, are skipped:
// a trailing newline, or a blank line, is never an item. With jsonLines each line is a
// JSON value: a string is decoded ("a\nb" becomes a two-line item), any other value is
// kept as compact JSON ({"n": 1} becomes {"n":1}).
type lineItems struct {
	r         *bufio.Reader
	name      string // the file, "stdin", for messages
	line      int
	jsonLines bool
}

func newLineItems(r io.Reader, name string, jsonLines bool) *lineItems {
	return &lineItems{r: bufio.NewReaderSize(r, 1<<16), name: name, jsonLines: jsonLines}
}

func (l *lineItems) Next() (string, error) {
	for {
		b, err := l.r.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading %s: %w", l.name, err)
		}
		if len(b) == 0 && errors.Is(err, io.EOF) {
			return "", io.EOF
		}
		l.line++
		b = bytes.TrimSuffix(b, []byte("\n"))
		b = bytes.TrimSuffix(b, []byte("\r"))
		if len(b) == 0 || (l.jsonLines && len(bytes.TrimSpace(b)) == 0) {
			if errors.Is(err, io.EOF) {
				return "", io.EOF
			}
			continue
		}
		if !l.jsonLines {
			return string(b), nil
		}
		item, jerr := decodeJSONItem(b)
		if jerr != nil {
			return "", fmt.Errorf("%s, line %d: not a JSON value (--json-lines): %v", l.name, l.line, jerr)
		}
		return item, nil
	}
}

// decodeJSONItem turns one JSON value into an item: a string's text, or any other value
// as compact JSON.
func decodeJSONItem(b []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("more than one JSON value on the line")
	}
	if s, ok := v.(string); ok {
		return s, nil
	}
	var out bytes.Buffer
	if err := json.Compact(&out, bytes.TrimSpace(b)); err != nil {
		return "", err
	}
	return out.String(), nil
}

// chainItems yields the items of each source in turn.
type chainItems []itemSource

func (c *chainItems) Next() (string, error) {
	for len(*c) > 0 {
		item, err := (*c)[0].Next()
		if !errors.Is(err, io.EOF) {
			return item, err
		}
		*c = (*c)[1:]
	}
	return "", io.EOF
}

// readAll drains a source; for tests and small inputs.
func readAll(s itemSource) ([]string, error) {
	var items []string
	for {
		item, err := s.Next()
		if errors.Is(err, io.EOF) {
			return items, nil
		}
		if err != nil {
			return items, err
		}
		items = append(items, item)
	}
}

// printable shows an item on one line of a table: control characters quoted, long items
// cut.
func printable(item string, max int) string {
	s := item
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		s = fmt.Sprintf("%q", s)
	}
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	return s
}
