package redis_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue/protocol"
	"github.com/queuejob/queuejob-operator/pkg/queue/queuetest"
	"github.com/queuejob/queuejob-operator/pkg/worker"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// The conformance suite runs against a real redis-server that TestMain starts on a free
// port, with a password so that bad credentials can be refused.
var (
	redisServer *servers.Server
	// redisPassword is random, so that no fixed word of a message can look like it.
	redisPassword = servers.RandomString(20)
)

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		redisServer = g.Redis(servers.RedisOptions{Password: redisPassword})
	}))
}

// reaperGrace is the grace the suite's reaper gives an item seen without a lease; the
// operator's is about max(10 s, 2 × probeIntervalSeconds).
const reaperGrace = 200 * time.Millisecond

func TestConformance(t *testing.T) {
	queuetest.Run(t, queuetest.Harness{
		Backend:  "redis",
		NewQueue: newQueue,
		Enqueue: func(ctx context.Context, q queuetest.Queue, items ...[]byte) error {
			return enqueue(ctx, q.Options.Redis, items)
		},
		Requeue:        requeue,
		Reclaim:        reap,
		BadCredentials: badCredentials,
		StopServer:     func(*testing.T) { redisServer.Stop() },
		StartServer: func(t *testing.T) {
			if err := redisServer.Start(func() error { return dialable(redisServer.Addr()) }); err != nil {
				t.Fatal(err)
			}
		},
		PauseServer:  func(t *testing.T) { must(t, redisServer.Pause()) },
		ResumeServer: func(t *testing.T) { must(t, redisServer.Resume()) },
		Capabilities: queuetest.Capabilities{
			InFlight: true, DeadLettered: true, FIFO: true,
			// The test server keeps nothing on disk.
			SurvivesRestart: false,
			// Attempts are counted when an item is leased.
			ReclaimCountsAttempt: true,
		},
	})
}

// options locate list key on the test server; a short timeout, so that a frozen server
// fails a call within the suite's bounds.
func options(key string) protocol.RedisOptions {
	return protocol.RedisOptions{Address: redisServer.Addr(), Password: redisPassword, Key: key, Timeout: 2 * time.Second}
}

func newQueue(t *testing.T) queuetest.Queue {
	key := "conformance-" + strings.ReplaceAll(t.Name(), "/", "-")
	o := options(key)
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
func enqueue(ctx context.Context, o protocol.RedisOptions, items [][]byte) error {
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

// reap is one pass of the operator's reaper, on the probe connection as in the operator.
func reap(ctx context.Context, q queuetest.Queue) error {
	_, err := q.Conn.(*protocol.Redis).Reap(ctx, time.Now(), reaperGrace)
	return err
}

func badCredentials(t *testing.T, q queuetest.Queue) (queuetest.Queue, []string) {
	wrong := "wrong-" + servers.RandomString(12)
	o := q.Options.Redis
	o.Password = wrong
	q.Options.Redis = o
	q.Conn = protocol.NewRedis(o)
	return q, []string{wrong, redisPassword}
}

func dialable(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
