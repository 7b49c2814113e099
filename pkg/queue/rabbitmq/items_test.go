package rabbitmq

import (
	"slices"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// bodies takes every message of q (acknowledging it) and returns their bodies in order.
func bodies(t *testing.T, q string) []string {
	t.Helper()
	ch := servers.AMQPChannel(t, rabbitServer.URL())
	var out []string
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatalf("get from %s: %v", q, err)
		}
		if !ok {
			return out
		}
		out = append(out, string(d.Body))
	}
}

// RequeueItem publishes the one dead letter back and leaves the others where they were,
// in their order; DropItem deletes one dead letter; neither touches the queue's own
// messages, and a missing dead-letter queue holds no item.
func TestRequeueAndDropItem(t *testing.T) {
	q := "items-" + time.Now().Format("150405.000000")
	a := NewAdmin(Options{URL: rabbitServer.URL(), Queue: q}, 10*time.Second)
	t.Cleanup(func() { _ = a.Close() })
	if ok, err := a.RequeueItem(ctx(t), "x"); ok || err != nil {
		t.Errorf("RequeueItem without %s = %v, %v", FailedQueue(q), ok, err)
	}
	publish(t, q, "ready")
	publish(t, FailedQueue(q), "a", "poison", "b", "poison", "other")

	if ok, err := a.RequeueItem(ctx(t), "missing"); ok || err != nil {
		t.Errorf("RequeueItem(missing) = %v, %v", ok, err)
	}
	if ok, err := a.RequeueItem(ctx(t), "other"); !ok || err != nil {
		t.Fatalf("RequeueItem(other) = %v, %v", ok, err)
	}
	for _, want := range []string{FailedQueue(q), FailedQueue(q), ""} {
		if from, err := a.DropItem(ctx(t), "poison"); from != want || err != nil {
			t.Errorf("DropItem(poison) = %q, %v; want %q", from, err, want)
		}
	}
	if got := bodies(t, FailedQueue(q)); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("%s = %q, want [a b] in their order", FailedQueue(q), got)
	}
	if got := bodies(t, q); !slices.Equal(got, []string{"ready", "other"}) {
		t.Errorf("%s = %q, want [ready other]", q, got)
	}
}
