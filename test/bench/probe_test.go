package main

import (
	"slices"
	"testing"
	"time"
)

func TestSpreadOffsets(t *testing.T) {
	if got, want := spreadOffsets(1, 2*time.Second), []time.Duration{0}; !slices.Equal(got, want) {
		t.Errorf("spreadOffsets(1) = %v, want %v", got, want)
	}
	if got, want := spreadOffsets(4, 2*time.Second), []time.Duration{0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond}; !slices.Equal(got, want) {
		t.Errorf("spreadOffsets(4) = %v, want %v", got, want)
	}
	off := spreadOffsets(1000, 2*time.Second)
	if len(off) != 1000 || off[0] != 0 || off[999] != 1998*time.Millisecond {
		t.Errorf("spreadOffsets(1000): len %d, first %v, last %v", len(off), off[0], off[len(off)-1])
	}
	for i := 1; i < len(off); i++ {
		if d := off[i] - off[i-1]; d != 2*time.Millisecond {
			t.Fatalf("spreadOffsets(1000): step %d is %v, want 2ms", i, d)
		}
	}
}

func TestWindowIntervals(t *testing.T) {
	for _, c := range []struct{ n, want int }{
		{1, 10},   // 200 probes would take 200 intervals: capped
		{30, 7},   // ceil(200/30)
		{100, 3},  // 2 would do: at least 3
		{1000, 3}, // at least 3
		{0, 3},
	} {
		if got := windowIntervals(c.n, 200, 3, 10); got != c.want {
			t.Errorf("windowIntervals(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}
