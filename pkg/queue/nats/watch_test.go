package nats_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
)

// A core subscriber may hear a publish before JetStream has stored the message, so a
// probe at the first wake can count it not yet: the watch wakes again once the stream has
// had time to store it (make bench's NATS reaction p99 was 2.18 s, a probe interval,
// without the second wake).
func TestWatchWakesAgainAfterAPublish(t *testing.T) {
	o := options("watch-twice")
	js := rawJetStream(t)
	_ = js.DeleteStream(ctx(t), o.Stream)
	if _, err := js.CreateStream(ctx(t), jetstream.StreamConfig{Name: o.Stream, Subjects: []string{o.Stream},
		Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), o.Stream) })

	var mu sync.Mutex
	var wakes []time.Time
	reported := make(chan struct{}, 1)
	w := nats.NewWatch(o, func(rep bool) {
		if rep {
			reported <- struct{}{}
			return
		}
		mu.Lock()
		wakes = append(wakes, time.Now())
		mu.Unlock()
	}, func(bool, error) {})
	defer w.Close()
	select {
	case <-reported:
	case <-time.After(30 * time.Second):
		t.Fatal("the watch did not subscribe within 30s")
	}
	published := time.Now()
	if _, err := js.Publish(ctx(t), o.Stream, []byte("a")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(wakes)
		got := append([]time.Time(nil), wakes...)
		mu.Unlock()
		if n >= 2 {
			if d := got[1].Sub(published); d < nats.WatchSettle {
				t.Errorf("the second wake came %s after the publish, want at least %s", d, nats.WatchSettle)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d wakes within 30s of a publish, want 2 (at once, and once the stream has stored it)", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
