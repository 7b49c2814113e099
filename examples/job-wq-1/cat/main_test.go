package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCat(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	if err := os.WriteFile(a, []byte("from a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		stdin    string
		want     string
		wantCode int
		wantErr  string
	}{
		// The job-wq-1 worker's use: the message on stdin, printed as it is (no newline added).
		{name: "stdin", stdin: "apple", want: "apple"},
		{name: "dash is stdin", args: []string{"-"}, stdin: "banana", want: "banana"},
		{name: "files and stdin in order", args: []string{a, "-", a}, stdin: "x", want: "from a\nxfrom a\n"},
		{name: "missing file", args: []string{filepath.Join(dir, "nope"), a}, want: "from a\n", wantCode: 1, wantErr: "cat: open "},
		{name: "empty stdin", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut strings.Builder
			code := run(tc.args, strings.NewReader(tc.stdin), &out, &errOut)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.wantCode, errOut.String())
			}
			if out.String() != tc.want {
				t.Errorf("stdout %q, want %q", out.String(), tc.want)
			}
			if !strings.HasPrefix(errOut.String(), tc.wantErr) || (tc.wantErr == "") != (errOut.Len() == 0) {
				t.Errorf("stderr %q, want it to start with %q", errOut.String(), tc.wantErr)
			}
		})
	}
}
