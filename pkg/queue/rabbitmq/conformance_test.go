package rabbitmq_test

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue/protocol"
	"github.com/queuejob/queuejob-operator/pkg/queue/queuetest"
	"github.com/queuejob/queuejob-operator/pkg/worker"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// The conformance suite runs against a real rabbitmq-server, with its management plugin,
// that TestMain starts on free ports.
var rabbitServer *servers.RabbitMQ

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		rabbitServer = g.RabbitMQ(servers.RabbitMQOptions{})
	}))
}

func TestConformance(t *testing.T) {
	queuetest.Run(t, queuetest.Harness{
		Backend:  "rabbitmq",
		NewQueue: newQueue,
		Enqueue:  enqueue,
		Requeue:  requeue,
		// The broker requeues the unacknowledged messages of a connection that closed.
		Reclaim:        nil,
		BadCredentials: badCredentials,
		StopServer:     func(*testing.T) { rabbitServer.Stop() },
		StartServer:    func(t *testing.T) { must(t, rabbitServer.Start(servers.AMQPReady)) },
		PauseServer:    func(t *testing.T) { must(t, rabbitServer.Pause()) },
		ResumeServer:   func(t *testing.T) { must(t, rabbitServer.Resume()) },
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

// newQueue declares a durable classic queue, as qj enqueue --declare does, and locates it
// with the management API, so that in-flight messages are counted; a short timeout, so
// that a frozen broker fails a call within the suite's bounds.
func newQueue(t *testing.T) queuetest.Queue {
	name := "conformance-" + strings.ReplaceAll(t.Name(), "/", "-")
	ch := servers.AMQPChannel(t, rabbitServer.URL())
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	o := protocol.RabbitMQOptions{URL: rabbitServer.URL(), Queue: name, ManagementURL: rabbitServer.ManagementURL(), Timeout: 2 * time.Second}
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
func enqueue(ctx context.Context, q queuetest.Queue, items ...[]byte) error {
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
func requeue(ctx context.Context, q queuetest.Queue, n int) (int, error) {
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
func badCredentials(t *testing.T, q queuetest.Queue) (queuetest.Queue, []string) {
	wrong := "wrong-" + servers.RandomString(12)
	u, err := url.Parse(rabbitServer.URL())
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

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
