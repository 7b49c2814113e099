package rabbitmq

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// TestConsumerWithoutLogger: NewConsumer fills in the ConsumerOptions left empty; a
// message dead-lettered on Take with no Logger given panicked (a nil *slog.Logger).
func TestConsumerWithoutLogger(t *testing.T) {
	const name = "consumer-without-logger"
	publish(t, name) // declares it
	ch := servers.AMQPChannel(t, rabbitServer.URL())
	if err := ch.PublishWithContext(ctx(t), "", name, false, false, amqp.Publishing{
		Body: []byte("spent"), Headers: amqp.Table{HeaderAttempts: int32(1)}}); err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(ctx(t), Options{URL: rabbitServer.URL(), Queue: name}, queue.ConsumerOptions{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if l, err := c.Take(ctx(t), 2*time.Second); l != nil || err != nil {
		t.Fatalf("Take = %v, %v; want nothing: the only message was dead-lettered", l, err)
	}
	failed, err := c.Failed(ctx(t))
	if err != nil || len(failed) != 1 || string(failed[0]) != "spent" {
		t.Errorf("Failed = %q, %v; want the dead-lettered message", failed, err)
	}
}
