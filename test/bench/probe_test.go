package main

import (
	"context"
	"errors"
	"net"
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

// TestRawDeclareHonoursContext: the raw-declare peer returns at its context's deadline
// from a broker that accepts the connection and never answers, where amqp091's own dial
// would wait 30 s.
func TestRawDeclareHonoursContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent, until the test ends
		}
	}()
	r := &rawDeclare{url: "amqp://guest:guest@" + l.Addr().String() + "/", queue: "q"}
	defer r.close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.probe(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("probe of a silent broker: %v, want the context's deadline", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the probe of a silent broker did not return after its context's deadline")
	}
}
