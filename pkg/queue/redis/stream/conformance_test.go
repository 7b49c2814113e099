package stream_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/queuetest"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
	"github.com/queuejob/queuejob-operator/pkg/worker"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// TestConformance runs the conformance suite against a redis-server of its own (the
// suite kills and freezes it), with a password so that bad credentials can be refused.
func TestConformance(t *testing.T) {
	// A random password, so that no fixed word of a message can look like it.
	password := servers.RandomString(20)
	srv, err := servers.StartRedisWith(servers.RedisOptions{Password: password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	h := &streamHarness{srv: srv, password: password}
	queuetest.Run(t, queuetest.Harness{
		Backend:        "redis-stream",
		NewQueue:       h.newQueue,
		Enqueue:        h.enqueue,
		Requeue:        h.requeue,
		Reclaim:        h.reap,
		ReclaimGone:    h.reapGone,
		BadCredentials: h.badCredentials,
		StopServer:     func(*testing.T) { srv.Stop() },
		StartServer:    func(t *testing.T) { h.must(t, srv.Start(h.dialable)) },
		PauseServer:    func(t *testing.T) { h.must(t, srv.Pause()) },
		ResumeServer:   func(t *testing.T) { h.must(t, srv.Resume()) },
		Capabilities: queuetest.Capabilities{
			InFlight: true, DeadLettered: true, FIFO: true,
			// The test server keeps nothing on disk (as the list backend's).
			SurvivesRestart: false,
			// The reaper returns an entry with its attempts plus one.
			ReclaimCountsAttempt: true,
		},
	})
}

// streamHarness is the conformance suite's harness of Redis streams on srv, whose
// password (requirepass) is password.
type streamHarness struct {
	srv      *servers.Server
	password string
}

// newQueue locates a fresh stream and group; the reaper's lease is the suite's, and a
// short timeout makes a frozen server fail a call within the suite's bounds.
func (h *streamHarness) newQueue(t *testing.T) queuetest.Queue {
	key := "conformance-" + strings.ReplaceAll(t.Name(), "/", "-")
	o := stream.Options{Address: h.srv.Addr(), Password: h.password, Stream: key, Group: "workers",
		Timeout: 2 * time.Second, LeaseTTL: queuetest.LeaseTTL}
	return queuetest.Queue{
		Name:    key,
		Options: worker.Options{Backend: worker.BackendRedisStream, RedisStream: o},
		Conn:    stream.New(o),
	}
}

// enqueue adds entries through the backend's Admin, as qj enqueue does.
func (h *streamHarness) enqueue(ctx context.Context, q queuetest.Queue, items ...[]byte) error {
	return queuetest.AdminEnqueue(ctx, stream.NewAdmin(q.Options.RedisStream, 10*time.Second), queue.EnqueueOptions{FIFO: true}, items...)
}

// requeue is what qj requeue does: the worker library's RequeueFailed.
func (h *streamHarness) requeue(ctx context.Context, q queuetest.Queue, n int) (int, error) {
	o := q.Options
	o.Session = "qj-requeue"
	w, err := worker.New(ctx, o)
	if err != nil {
		return 0, err
	}
	defer func() { _ = w.Close() }()
	return w.RequeueFailed(ctx, n)
}

// reap is one pass of the operator's reaper, on the probe connection as in the operator,
// with a grace of 200ms.
func (h *streamHarness) reap(ctx context.Context, q queuetest.Queue) error {
	_, err := q.Conn.(*stream.Conn).Reap(ctx, time.Now(), 200*time.Millisecond, nil)
	return err
}

// reapGone is one pass of the reaper told which workers are gone, with the grace of reap.
func (h *streamHarness) reapGone(ctx context.Context, q queuetest.Queue, gone queue.GoneHolders) error {
	_, err := q.Conn.(*stream.Conn).Reap(ctx, time.Now(), 200*time.Millisecond, gone)
	return err
}

func (h *streamHarness) badCredentials(t *testing.T, q queuetest.Queue) (queuetest.Queue, []string) {
	wrong := "wrong-" + servers.RandomString(12)
	o := q.Options.RedisStream
	o.Password = wrong
	q.Options.RedisStream = o
	q.Conn = stream.New(o)
	return q, []string{wrong, h.password}
}

// dialable is the server's ready check: it accepts connections.
func (h *streamHarness) dialable() error {
	c, err := net.DialTimeout("tcp", h.srv.Addr(), time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func (h *streamHarness) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
