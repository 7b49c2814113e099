package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLineItems(t *testing.T) {
	cases := []struct {
		name      string
		in        string
		jsonLines bool
		want      []string
		wantErr   string
	}{
		{name: "one item a line", in: "a\nb\nc\n", want: []string{"a", "b", "c"}},
		{name: "last line without newline", in: "a\nb", want: []string{"a", "b"}},
		{name: "empty lines skipped", in: "\na\n\n\nb\n\n", want: []string{"a", "b"}},
		{name: "CRLF", in: "a\r\nb\r\n", want: []string{"a", "b"}},
		{name: "spaces kept", in: " a b \n", want: []string{" a b "}},
		{name: "empty input", in: "", want: nil},
		{name: "long line", in: strings.Repeat("x", 200000) + "\ny\n", want: []string{strings.Repeat("x", 200000), "y"}},
		{name: "json strings decoded", in: `"a"` + "\n" + `"b\nc"` + "\n", jsonLines: true, want: []string{"a", "b\nc"}},
		{name: "json values compacted", in: `{"n": 1,  "s": [1, 2]}` + "\n" + `42` + "\n" + `true` + "\n" + `null` + "\n", jsonLines: true,
			want: []string{`{"n":1,"s":[1,2]}`, "42", "true", "null"}},
		{name: "json big numbers kept", in: "12345678901234567890123\n", jsonLines: true, want: []string{"12345678901234567890123"}},
		{name: "json blank lines skipped", in: "\n  \n\"a\"\r\n", jsonLines: true, want: []string{"a"}},
		{name: "json not a value", in: "\"a\"\nnot json\n", jsonLines: true, want: []string{"a"}, wantErr: "items.txt, line 2: not a JSON value"},
		{name: "json two values on a line", in: `"a" "b"` + "\n", jsonLines: true, wantErr: "line 1: not a JSON value (--json-lines): more than one JSON value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(newLineItems(strings.NewReader(tc.in), "items.txt", tc.jsonLines))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("items (-want +got):\n%s", diff)
			}
		})
	}
}

func TestArgItems(t *testing.T) {
	got, err := readAll(&argItems{args: []string{"a", "", "b c"}})
	if err != nil {
		t.Fatal(err)
	}
	// An argument is an item as it is, even an empty one: the user typed it.
	if diff := cmp.Diff([]string{"a", "", "b c"}, got); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}
	got, err = readAll(&argItems{args: []string{`"x\ty"`, `{"a": 1}`}, jsonLines: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"x\ty", `{"a":1}`}, got); diff != "" {
		t.Errorf("json items (-want +got):\n%s", diff)
	}
	if _, err := readAll(&argItems{args: []string{"1", "nope"}, jsonLines: true}); err == nil || !strings.Contains(err.Error(), "argument 2 is not a JSON value") {
		t.Errorf("error %v, want argument 2 named", err)
	}
}

func TestChainItems(t *testing.T) {
	c := chainItems{&argItems{args: []string{"a"}}, newLineItems(strings.NewReader("b\nc\n"), "stdin", false), &argItems{}}
	got, err := readAll(&c)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b", "c"}, got); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                 "plain",
		"a\nb":                  `"a\nb"`,
		strings.Repeat("é", 12): strings.Repeat("é", 9) + "…",
	} {
		if got := printable(in, 10); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
