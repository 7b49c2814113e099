package redis_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue/protocol"
	"github.com/queuejob/queuejob-operator/pkg/queue/queuetest"
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
	h := &redisHarness{srv: srv, password: password}
	queuetest.Run(t, queuetest.Harness{
		Backend:        "redis",
		NewQueue:       h.newQueue,
		Enqueue:        h.enqueue,
		Requeue:        h.requeue,
		Reclaim:        h.reap,
		BadCredentials: h.badCredentials,
		StopServer:     func(*testing.T) { srv.Stop() },
		StartServer:    func(t *testing.T) { h.must(t, srv.Start(h.dialable)) },
		PauseServer:    func(t *testing.T) { h.must(t, srv.Pause()) },
		ResumeServer:   func(t *testing.T) { h.must(t, srv.Resume()) },
		Capabilities: queuetest.Capabilities{
			InFlight: true, DeadLettered: true, FIFO: true,
			// The test server keeps nothing on disk.
			SurvivesRestart: false,
			// Attempts are counted when an item is leased.
			ReclaimCountsAttempt: true,
		},
	})
}

// redisHarness is the conformance suite's harness of Redis lists on srv, whose password
// (requirepass) is password. Its helpers are methods, so that the package's other tests
// may use any name.
type redisHarness struct {
	srv      *servers.Server
	password string
}

// newQueue locates a fresh list; a short timeout, so that a frozen server fails a call
// within the suite's bounds.
func (h *redisHarness) newQueue(t *testing.T) queuetest.Queue {
	key := "conformance-" + strings.ReplaceAll(t.Name(), "/", "-")
	o := protocol.RedisOptions{Address: h.srv.Addr(), Password: h.password, Key: key, Timeout: 2 * time.Second}
	return queuetest.Queue{
		Name:    key,
		Options: worker.Options{Backend: worker.BackendRedis, Redis: o},
		Conn:    protocol.NewRedis(o),
	}
}

// enqueue pushes items at the head of the list one by one, so that workers, which take
// from the tail, take them in the order given (qj enqueue --fifo).
//
// merge: use the backend's admin Enqueue (fifo).
func (h *redisHarness) enqueue(ctx context.Context, q queuetest.Queue, items ...[]byte) error {
	o := q.Options.Redis
	c := protocol.NewRedisClient(o, 1)
	defer func() { _ = c.Close() }()
	for _, it := range items {
		if err := c.LPush(ctx, o.Key, it).Err(); err != nil {
			return err
		}
	}
	return nil
}

// requeue is what qj requeue does today.
//
// merge: use the backend's admin Requeue.
func (h *redisHarness) requeue(ctx context.Context, q queuetest.Queue, n int) (int, error) {
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
// with a grace of 200ms for an item seen without a lease (the operator's is about
// max(10 s, 2 × probeIntervalSeconds)).
func (h *redisHarness) reap(ctx context.Context, q queuetest.Queue) error {
	_, err := q.Conn.(*protocol.Redis).Reap(ctx, time.Now(), 200*time.Millisecond)
	return err
}

func (h *redisHarness) badCredentials(t *testing.T, q queuetest.Queue) (queuetest.Queue, []string) {
	wrong := "wrong-" + servers.RandomString(12)
	o := q.Options.Redis
	o.Password = wrong
	q.Options.Redis = o
	q.Conn = protocol.NewRedis(o)
	return q, []string{wrong, h.password}
}

// dialable is the server's ready check: it accepts connections.
func (h *redisHarness) dialable() error {
	c, err := net.DialTimeout("tcp", h.srv.Addr(), time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func (h *redisHarness) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
