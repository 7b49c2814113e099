package queue

import (
	"errors"
	"strings"
	"testing"
)

func TestCauseText(t *testing.T) {
	long := strings.Repeat("x", 600)
	cases := []struct {
		name string
		err  error
		want string
	}{
		{name: "no error", err: nil, want: ""},
		{name: "short", err: errors.New("boom"), want: "boom"},
		{name: "exactly 500 bytes", err: errors.New(long[:500]), want: long[:500]},
		{name: "longer: cut at 500", err: errors.New(long), want: long[:500] + "..."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := CauseText(tc.err); got != tc.want {
				t.Errorf("CauseText = %q (%d bytes), want %d bytes", got, len(got), len(tc.want))
			}
		})
	}
}
