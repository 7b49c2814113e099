package nats_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/pkg/queue/queuetest"
	"github.com/queuejob/queuejob-operator/pkg/worker"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// TestConformance runs the conformance suite against a nats-server of its own (the suite
// kills and freezes it), with a user and password.
func TestConformance(t *testing.T) {
	srv, err := servers.StartNATSWith(servers.NATSOptions{User: "queuejob", Password: servers.RandomString(16)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	h := &natsHarness{srv: srv}
	queuetest.Run(t, queuetest.Harness{
		Backend:  "nats",
		NewQueue: h.newQueue,
		Enqueue:  h.enqueue,
		Requeue:  h.requeue,
		// The server redelivers a message whose AckWait passed, but only to the next pull,
		// and counts it in flight until then: Reap returns it to the queue's tail.
		Reclaim:        func(ctx context.Context, q queuetest.Queue) error { return h.reap(ctx, q) },
		BadCredentials: h.badCredentials,
		StopServer:     func(*testing.T) { srv.Stop() },
		StartServer:    func(t *testing.T) { h.must(t, srv.Start()) },
		PauseServer:    func(t *testing.T) { h.must(t, srv.Pause()) },
		ResumeServer:   func(t *testing.T) { h.must(t, srv.Resume()) },
		Capabilities: queuetest.Capabilities{
			InFlight: true, DeadLettered: true, FIFO: true,
			// File storage, every publish acknowledged by the server.
			SurvivesRestart: true,
			// A redelivery counts a delivery (NumDelivered).
			ReclaimCountsAttempt: true,
		},
	})
}

// natsHarness is the conformance suite's harness of streams on srv.
type natsHarness struct {
	srv *servers.NATS
}

func (h *natsHarness) options(name string) nats.Options {
	return nats.Options{Servers: []string{h.srv.URL()}, Stream: name, Consumer: "workers",
		User: h.srv.User(), Password: h.srv.Password(), Timeout: 5 * time.Second,
		// The consumer's AckWait is the workers' lease (spec.queue.nats.ackWaitSeconds).
		AckWait: queuetest.LeaseTTL}
}

// newQueue creates a stream (work-queue retention, file storage), as qj enqueue --declare
// does; the first worker creates the durable consumer.
func (h *natsHarness) newQueue(t *testing.T) queuetest.Queue {
	name := "conformance-" + strings.ReplaceAll(t.Name(), "/", "-")
	o := h.options(name)
	a := nats.NewAdmin(o, 10*time.Second)
	defer func() { _ = a.Close() }()
	h.must(t, a.Open(ctx(t)))
	h.must(t, a.Declare(ctx(t)))
	return queuetest.Queue{
		Name:    name,
		Options: worker.Options{Backend: worker.BackendNATS, NATS: o},
		Conn:    nats.New(o),
	}
}

// enqueue publishes through the backend's Admin as qj enqueue does.
func (h *natsHarness) enqueue(ctx context.Context, q queuetest.Queue, items ...[]byte) error {
	return queuetest.AdminEnqueue(ctx, nats.NewAdmin(q.Options.NATS, 10*time.Second), queue.EnqueueOptions{}, items...)
}

// requeue is what qj requeue does: the worker library's RequeueFailed.
func (h *natsHarness) requeue(ctx context.Context, q queuetest.Queue, n int) (int, error) {
	o := q.Options
	o.Session = "qj-requeue"
	w, err := worker.New(ctx, o)
	if err != nil {
		return 0, err
	}
	defer func() { _ = w.Close() }()
	return w.RequeueFailed(ctx, n)
}

// reap is the operator's Reap on the probe connection.
func (h *natsHarness) reap(ctx context.Context, q queuetest.Queue) error {
	_, err := q.Conn.(queue.Reaper).Reap(ctx, time.Now(), 0, nil)
	return err
}

// badCredentials is q with the user's password wrong.
func (h *natsHarness) badCredentials(t *testing.T, q queuetest.Queue) (queuetest.Queue, []string) {
	wrong := "wrong-" + servers.RandomString(12)
	o := q.Options.NATS
	o.Password = wrong
	q.Options.NATS = o
	q.Conn = nats.New(o)
	return q, []string{wrong, h.srv.Password()}
}

func (h *natsHarness) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
