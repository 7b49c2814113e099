package rabbitmq_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue/protocol"
	"github.com/queuejob/queuejob-operator/pkg/queue/queuetest"
	"github.com/queuejob/queuejob-operator/pkg/worker"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// TestConformance runs the conformance suite against a rabbitmq-server of its own (the
// suite kills and freezes it), with its management plugin, so that in-flight messages are
// counted.
func TestConformance(t *testing.T) {
	srv, err := servers.StartRabbitMQ(servers.AMQPReady)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	h := &rabbitHarness{srv: srv}
	queuetest.Run(t, queuetest.Harness{
		Backend:  "rabbitmq",
		NewQueue: h.newQueue,
		Enqueue:  h.enqueue,
		Requeue:  h.requeue,
		// The broker requeues the unacknowledged messages of a connection that closed.
		Reclaim:        nil,
		BadCredentials: h.badCredentials,
		StopServer:     func(*testing.T) { srv.Stop() },
		StartServer:    func(t *testing.T) { h.must(t, srv.Start(servers.AMQPReady)) },
		PauseServer:    func(t *testing.T) { h.must(t, srv.Pause()) },
		ResumeServer:   func(t *testing.T) { h.must(t, srv.Resume()) },
		Capabilities: queuetest.Capabilities{
			// With a management URL.
			InFlight: true, DeadLettered: true, FIFO: true,
			// A durable queue of persistent messages, each confirmed.
			SurvivesRestart: true,
			// A classic queue redelivers a message as it was.
			ReclaimCountsAttempt: false,
		},
	})
}

// rabbitHarness is the conformance suite's harness of RabbitMQ queues on srv. Its helpers
// are methods, so that the package's other tests may use any name.
type rabbitHarness struct {
	srv *servers.RabbitMQ
}

// newQueue declares a durable classic queue, as qj enqueue --declare does, and locates it
// with the management API; a short timeout, so that a frozen broker fails a call within
// the suite's bounds.
func (h *rabbitHarness) newQueue(t *testing.T) queuetest.Queue {
	name := "conformance-" + strings.ReplaceAll(t.Name(), "/", "-")
	ch := servers.AMQPChannel(t, h.srv.URL())
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	o := protocol.RabbitMQOptions{URL: h.srv.URL(), Queue: name, ManagementURL: h.srv.ManagementURL(), Timeout: 2 * time.Second}
	return queuetest.Queue{
		Name:    name,
		Options: worker.Options{Backend: worker.BackendRabbitMQ, RabbitMQ: o},
		Conn:    protocol.NewRabbitMQ(o),
	}
}

// enqueue publishes each item as a persistent message with publisher confirms, mandatory,
// as qj enqueue does.
//
// merge: use the backend's admin Enqueue.
func (h *rabbitHarness) enqueue(ctx context.Context, q queuetest.Queue, items ...[]byte) error {
	o := q.Options.RabbitMQ
	conn, err := protocol.DialRabbitMQ(ctx, o, "conformance enqueue")
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	pub, err := protocol.NewRabbitMQPublisher(ch, 0)
	if err != nil {
		return err
	}
	for _, it := range items {
		if err := pub.PublishConfirmed(ctx, o.Queue, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: it}); err != nil {
			return err
		}
	}
	return nil
}

// requeue is what qj requeue does today.
//
// merge: use the backend's admin Requeue.
func (h *rabbitHarness) requeue(ctx context.Context, q queuetest.Queue, n int) (int, error) {
	o := q.Options
	o.Session = "qj-requeue"
	w, err := worker.New(ctx, o)
	if err != nil {
		return 0, err
	}
	defer func() { _ = w.Close() }()
	return w.RequeueFailed(ctx, n)
}

// badCredentials is q with the guest user's password wrong, in the AMQP URL and thus the
// management API's (a management URL without credentials takes the AMQP URL's).
func (h *rabbitHarness) badCredentials(t *testing.T, q queuetest.Queue) (queuetest.Queue, []string) {
	wrong := "wrong-" + servers.RandomString(12)
	u, err := url.Parse(h.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("guest", wrong)
	o := q.Options.RabbitMQ
	o.URL = u.String()
	o.ManagementURL = servers.WithoutUserinfo(t, o.ManagementURL)
	// The default timeout (5 s): the broker answers a refused login after a delay of its
	// own (3 s), and a shorter timeout reports no answer instead.
	o.Timeout = 0
	q.Options.RabbitMQ = o
	q.Conn = protocol.NewRabbitMQ(o)
	return q, []string{wrong}
}

func (h *rabbitHarness) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
