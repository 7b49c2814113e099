package main

import "testing"

func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name, gomemlimit, limit string
		want                    int64
		err                     bool
	}{
		{name: "the chart's default limit, 256Mi", limit: "268435456", want: 241591905},
		{name: "GOMEMLIMIT set: the runtime's own", gomemlimit: "100MiB", limit: "268435456"},
		{name: "no limit known", limit: ""},
		{name: "a limit with a unit (a divisor in the downward API)", limit: "256Mi", err: true},
		{name: "zero", limit: "0", err: true},
		{name: "an unlimited node's allocatable", limit: "9223372036854775807", want: 8301034833169298220},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := memoryLimit(tc.gomemlimit, tc.limit)
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("memoryLimit(%q, %q) = %d, %v; want %d, error %v", tc.gomemlimit, tc.limit, got, err, tc.want, tc.err)
			}
		})
	}
}
