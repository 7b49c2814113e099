package nats_test

import (
	"errors"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
)

// deadLetter takes the next n messages of o with a consumer allowed one attempt, and fails
// them: they go to the dead letters. It returns the consumer, closed after the test.
func deadLetter(t *testing.T, o nats.Options, n int) *nats.Consumer {
	t.Helper()
	c, err := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	for range n {
		l, err := c.Take(ctx(t), 5*time.Second)
		if err != nil || l == nil {
			t.Fatalf("Take = %v, %v", l, err)
		}
		if dead, err := l.Fail(ctx(t), errors.New("boom")); !dead || err != nil {
			t.Fatalf("Fail = %v, %v", dead, err)
		}
	}
	return c
}

// RequeueItem publishes the one dead letter back to the stream; DropItem deletes a dead
// letter and leaves the stream's ready messages alone.
func TestRequeueAndDropItem(t *testing.T) {
	o := options("items")
	enqueue(t, o, "poison", "other", "poison")
	c := deadLetter(t, o, 2) // poison and other
	a := nats.NewAdmin(o, 10*time.Second)
	defer func() { _ = a.Close() }()

	if ok, err := a.RequeueItem(ctx(t), "missing"); ok || err != nil {
		t.Errorf("RequeueItem(missing) = %v, %v", ok, err)
	}
	if ok, err := a.RequeueItem(ctx(t), "other"); !ok || err != nil {
		t.Fatalf("RequeueItem(other) = %v, %v", ok, err)
	}
	if failed, err := c.Failed(ctx(t)); err != nil || len(failed) != 1 || string(failed[0]) != "poison" {
		t.Errorf("dead letters = %q, %v; want [poison]", failed, err)
	}
	for _, want := range []string{nats.FailedStream(o.Stream), ""} {
		if from, err := a.DropItem(ctx(t), "poison"); from != want || err != nil {
			t.Errorf("DropItem(poison) = %q, %v; want %q", from, err, want)
		}
	}
	// The ready poison and the requeued other are still there, in that order.
	for _, want := range []string{"poison", "other"} {
		l, err := c.Take(ctx(t), 5*time.Second)
		if err != nil || l == nil || string(l.Data()) != want {
			t.Fatalf("Take = %v, %v; want %s", l, err, want)
		}
		if err := l.Complete(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
}

// A dead letter requeued twice (two qj at once, or one tried again after its delete
// failed) is stored once: the copy's message ID names the dead letter.
func TestRequeueOneTwiceStoresOneCopy(t *testing.T) {
	o := options("requeue-twice")
	enqueue(t, o, "a")
	deadLetter(t, o, 1)
	js := rawJetStream(t)
	failed, err := js.Stream(ctx(t), nats.FailedStream(o.Stream))
	if err != nil {
		t.Fatal(err)
	}
	m, err := failed.GetMsg(ctx(t), failed.CachedInfo().State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := nats.RequeueOne(ctx(t), js, o, failed, m); err != nil {
			t.Fatalf("requeue %d: %v", i+1, err)
		}
	}
	s, err := js.Stream(ctx(t), o.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("the stream holds %d copies, want 1", n)
	}
}
