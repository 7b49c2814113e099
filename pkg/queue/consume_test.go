package queue

import (
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestConsumerOptionsWithDefaults(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	given := ConsumerOptions{Session: "pod-1", LeaseTTL: time.Minute, MaxAttempts: 3, Prefetch: 4,
		DeadLetter: DeadLetterReject, Logger: logger}
	if diff := cmp.Diff(given, given.WithDefaults(), cmp.Comparer(func(a, b *slog.Logger) bool { return a == b })); diff != "" {
		t.Errorf("WithDefaults changed settings given (-want +got):\n%s", diff)
	}

	got := ConsumerOptions{Prefetch: -1}.WithDefaults()
	want := ConsumerOptions{LeaseTTL: DefaultLeaseTTL, Prefetch: 1, DeadLetter: DeadLetterQueue}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(ConsumerOptions{}, "Session", "Logger")); diff != "" {
		t.Errorf("WithDefaults of empty settings (-want +got):\n%s", diff)
	}
	if got.Session == "" {
		t.Error("WithDefaults left the Session empty: StopTaking would cancel the consumer tag \"\"")
	}
	if got.Logger != slog.Default() {
		t.Errorf("WithDefaults Logger = %v, want slog.Default()", got.Logger)
	}
	if other := (ConsumerOptions{}).WithDefaults(); other.Session == got.Session {
		t.Errorf("two sessions generated are both %q", got.Session)
	}
}
