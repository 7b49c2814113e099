package redis

import (
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// TestConsumerWithoutLogger: NewConsumer fills in the ConsumerOptions left empty; an item
// dead-lettered on Take with no Logger given panicked (a nil *slog.Logger).
func TestConsumerWithoutLogger(t *testing.T) {
	o := Options{Address: redisServer.Addr(), Key: "consumer-without-logger"}
	client := NewClient(o, 0)
	t.Cleanup(func() { _ = client.Close() })
	// One attempt had already: MaxAttempts 1 dead-letters it on Take.
	if err := client.RPush(ctx(t), o.Key, "spent").Err(); err != nil {
		t.Fatal(err)
	}
	if err := client.HSet(ctx(t), AttemptsKey(o.Key), ItemDigest("spent"), 1).Err(); err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(ctx(t), o, queue.ConsumerOptions{LeaseTTL: time.Minute, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if l, err := c.Take(ctx(t), 0); l != nil || err != nil {
		t.Fatalf("Take = %v, %v; want nothing: the only item was dead-lettered", l, err)
	}
	if n, err := client.LLen(ctx(t), FailedKey(o.Key)).Result(); n != 1 || err != nil {
		t.Errorf("%s holds %d items (%v), want the dead-lettered one", FailedKey(o.Key), n, err)
	}
}
