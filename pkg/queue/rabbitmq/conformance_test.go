package rabbitmq_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/queuetest"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
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
// with the management API; 5 s calls (a loaded broker answers the management API slowly), so that a frozen broker fails a call within
// the suite's bounds.
func (h *rabbitHarness) newQueue(t *testing.T) queuetest.Queue {
	name := "conformance-" + strings.ReplaceAll(t.Name(), "/", "-")
	ch := servers.AMQPChannel(t, h.srv.URL())
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	o := rabbitmq.Options{URL: h.srv.URL(), Queue: name, ManagementURL: h.srv.ManagementURL(), Timeout: 5 * time.Second}
	return queuetest.Queue{
		Name:    name,
		Options: worker.Options{Backend: worker.BackendRabbitMQ, RabbitMQ: o},
		Conn:    rabbitmq.New(o),
	}
}

// enqueue publishes through the backend's Admin as qj enqueue does: persistent messages,
// mandatory, with publisher confirms.
func (h *rabbitHarness) enqueue(ctx context.Context, q queuetest.Queue, items ...[]byte) error {
	return queuetest.AdminEnqueue(ctx, rabbitmq.NewAdmin(q.Options.RabbitMQ, 10*time.Second), queue.EnqueueOptions{}, items...)
}

// requeue is what qj requeue does: the worker library's RequeueFailed.
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
	q.Conn = rabbitmq.New(o)
	return q, []string{wrong}
}

func (h *rabbitHarness) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
