package queue

import (
	"testing"
	"time"
)

// The worker-side clock of a lease the server keeps: it starts no later than the server's,
// and runs out a margin early.
func TestLeaseClock(t *testing.T) {
	sent := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	ttl := 10 * time.Second
	for _, c := range []struct {
		name string
		got  time.Time
		want time.Time
	}{
		{"an answer at once: the request's time", sent.Add(50 * time.Millisecond), sent},
		{"a read that waited: its answer less the margin", sent.Add(5 * time.Second), sent.Add(4 * time.Second)},
	} {
		if got := LeaseStart(sent, c.got, ttl); !got.Equal(c.want) {
			t.Errorf("%s: LeaseStart = %s, want %s", c.name, got, c.want)
		}
	}
	if LeaseExpired(time.Now().Add(-8*time.Second), ttl) {
		t.Error("8 s into a 10 s lease: expired, want not yet")
	}
	if !LeaseExpired(time.Now().Add(-9*time.Second), ttl) {
		t.Error("9 s into a 10 s lease: not expired, want expired (a tenth early)")
	}
}
