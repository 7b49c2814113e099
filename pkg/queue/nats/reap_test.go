package nats_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
)

// crashed takes one item of o with a worker that then goes away without finishing it, and
// waits until its AckWait passed.
func crashed(t *testing.T, o nats.Options) {
	t.Helper()
	c, err := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if l, err := c.Take(ctx(t), 5*time.Second); err != nil || l == nil || l.Attempt() != 1 {
		t.Fatalf("Take = %v, %v", l, err)
	}
	_ = c.Close()
	time.Sleep(o.AckWait + 500*time.Millisecond) // the lease expires: the server's clock, not a sync
}

// takeAttempt takes the next item of o and returns its data and attempt.
func takeAttempt(t *testing.T, o nats.Options) (string, int) {
	t.Helper()
	c, err := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	l, err := c.Take(ctx(t), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l == nil {
		t.Fatal("nothing to take (dead-lettered as delivered too often?)")
	}
	if err := l.Complete(ctx(t)); err != nil {
		t.Fatal(err)
	}
	return string(l.Data()), l.Attempt()
}

// A stream that is full (MaxMsgs, discard new) cannot take the reaper's copy: the reaper
// must not pull the expired message then, or each failed reap would count as an attempt
// and the item be dead-lettered without being tried again.
func TestReapOfAFullStreamChargesNoAttempt(t *testing.T) {
	o := options("reap-full")
	o.AckWait = time.Second
	js := rawJetStream(t)
	_ = js.DeleteStream(ctx(t), o.Stream)
	if _, err := js.CreateStream(ctx(t), jetstream.StreamConfig{Name: o.Stream, Subjects: []string{o.Stream},
		Retention: jetstream.WorkQueuePolicy, MaxMsgs: 1, Discard: jetstream.DiscardNew}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), o.Stream) })
	if _, err := js.Publish(ctx(t), o.Stream, []byte("item")); err != nil {
		t.Fatal(err)
	}
	crashed(t, o)
	conn := nats.New(o)
	defer func() { _ = conn.Close() }()
	for i := 0; i < 3; i++ {
		n, err := conn.Reap(ctx(t), time.Now(), 0, nil)
		t.Logf("Reap %d = %d, %v", i, n, err)
	}
	if data, attempt := takeAttempt(t, o); data != "item" || attempt != 2 {
		t.Errorf("took %q at attempt %d after one crashed attempt, want item at attempt 2", data, attempt)
	}
}

// A reap that has too little time left (less than half of o's timeout before its
// deadline, or none) does not pull: a message pulled and then not republished in time
// keeps the reaper's delivery, which would count as an attempt. With time enough it reaps.
func TestReapStopsWellBeforeTheDeadline(t *testing.T) {
	for _, tc := range []struct {
		name   string
		left   func(o nats.Options) time.Duration
		reaped int
	}{
		{name: "no time left", left: func(nats.Options) time.Duration { return 0 }},
		{name: "just under half the timeout", left: func(o nats.Options) time.Duration { return o.Timeout/2 - 100*time.Millisecond }},
		{name: "plenty", left: func(o nats.Options) time.Duration { return 10 * o.Timeout }, reaped: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := options("reap-deadline-" + strings.ReplaceAll(tc.name, " ", "-"))
			o.AckWait = time.Second
			enqueue(t, o, "item")
			crashed(t, o)
			cons, err := rawJetStream(t).Consumer(ctx(t), o.Stream, o.Consumer)
			if err != nil {
				t.Fatal(err)
			}
			short, cancel := context.WithTimeout(ctx(t), tc.left(o))
			defer cancel()
			n, err := nats.ReapMessages(short, rawJetStream(t), o, cons, 1)
			if n != tc.reaped || tc.reaped > 0 && err != nil {
				t.Errorf("ReapMessages with %v left = %d, %v; want %d reaped", tc.left(o), n, err, tc.reaped)
			}
			if data, attempt := takeAttempt(t, o); data != "item" || attempt != 2 {
				t.Errorf("took %q at attempt %d after one crashed attempt, want item at attempt 2", data, attempt)
			}
		})
	}
}

// A message published after Reap saw nothing ready, and pulled by it, is not a reclaimed
// lease: it is not counted, and keeps attempt 1.
func TestReapCountsOnlyRedeliveries(t *testing.T) {
	o := options("reap-fresh")
	o.AckWait = time.Second
	enqueue(t, o, "old")
	crashed(t, o)
	if _, err := rawJetStream(t).Publish(ctx(t), o.Stream, []byte("fresh")); err != nil {
		t.Fatal(err)
	}
	cons, err := rawJetStream(t).Consumer(ctx(t), o.Stream, o.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	// As if Reap's snapshot (nothing ready, one in flight) had been taken before the publish.
	n, err := nats.ReapMessages(ctx(t), rawJetStream(t), o, cons, 2)
	if err != nil || n != 1 {
		t.Errorf("ReapMessages = %d, %v; want 1 reclaimed (old), fresh not counted", n, err)
	}
	got := map[string]int{}
	for i := 0; i < 2; i++ {
		data, attempt := takeAttempt(t, o)
		got[data] = attempt
	}
	if got["old"] != 2 || got["fresh"] != 1 {
		t.Errorf("attempts = %v, want old 2, fresh 1", got)
	}
}
