package redis_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/queuetest"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
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
		ReclaimGone:    h.reapGone,
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
	o := redis.Options{Address: h.srv.Addr(), Password: h.password, Key: key, Timeout: 2 * time.Second}
	return queuetest.Queue{
		Name:    key,
		Options: worker.Options{Backend: worker.BackendRedis, Redis: o},
		Conn:    redis.New(o),
	}
}

// enqueue pushes through the backend's Admin as qj enqueue --fifo does (LPUSH, so that
// workers take the items in the order given).
func (h *redisHarness) enqueue(ctx context.Context, q queuetest.Queue, items ...[]byte) error {
	return queuetest.AdminEnqueue(ctx, redis.NewAdmin(q.Options.Redis, 10*time.Second), queue.EnqueueOptions{FIFO: true}, items...)
}

// requeue is what qj requeue does: the worker library's RequeueFailed.
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
	_, err := q.Conn.(*redis.Conn).Reap(ctx, time.Now(), 200*time.Millisecond, nil)
	return err
}

// reapGone is one pass of the reaper told which workers are gone, with the grace of reap.
func (h *redisHarness) reapGone(ctx context.Context, q queuetest.Queue, gone queue.GoneHolders) error {
	_, err := q.Conn.(*redis.Conn).Reap(ctx, time.Now(), 200*time.Millisecond, gone)
	return err
}

func (h *redisHarness) badCredentials(t *testing.T, q queuetest.Queue) (queuetest.Queue, []string) {
	wrong := "wrong-" + servers.RandomString(12)
	o := q.Options.Redis
	o.Password = wrong
	q.Options.Redis = o
	q.Conn = redis.New(o)
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
