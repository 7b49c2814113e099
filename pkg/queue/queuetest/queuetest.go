// Package queuetest is the conformance suite of the queue backends: what every backend
// must do, run against the backend's real server. Each backend's folder has a
// conformance_test.go that starts its server (test/servers), fills in a Harness and calls
// Run; docs/backends.md says how to add one.
//
// The suite drives the worker side through pkg/worker's public API (worker.New and the
// Item methods), counts through the backend's probe connection (what the operator counts
// and reaps with), and leaves to the Harness what only the backend knows: where a fresh
// queue is, how items are enqueued and dead letters requeued, how the items of a worker
// that went away come back, and how its server is stopped. It imports no Kubernetes
// package.
package queuetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/worker"
)

// Queue is one queue of the backend's server, fresh for one case.
type Queue struct {
	// Name names the queue in messages: the Redis key, the RabbitMQ queue.
	Name string
	// Options locate the queue for worker.New: Backend and the backend's coordinates.
	// The suite sets LeaseTTL, MaxAttempts, Session, Wait and Logger itself.
	Options worker.Options
	// Conn is the probe connection to the queue; the suite closes it after the case.
	Conn queue.Conn
}

// Capabilities say what the backend promises beyond what every backend must do; the
// suite checks each promise made, and that a backend which does not make one says so
// where the counts have a word for it.
type Capabilities struct {
	// InFlight: Probe counts the items workers hold (Counts.InFlight). A backend that
	// cannot must set Counts.InFlightUnknown instead, which the suite checks.
	InFlight bool
	// DeadLettered: Probe counts the dead-lettered items (Counts.DeadLettered), at the
	// latest once no item is ready: that is when the operator needs the count, and a
	// backend may wait until then to look again for a dead-letter queue it found missing
	// (RabbitMQ's probe looks for a missing <queue>.failed once a minute while messages
	// are ready).
	DeadLettered bool
	// FIFO: one worker leases the items of one Enqueue in the order given, and an item
	// that failed goes behind those waiting.
	FIFO bool
	// SurvivesRestart: the queue's items, ready and in flight, are all there after the
	// server was killed and started again (a durable queue with persistent messages; a
	// Redis server without persistence forgets them).
	SurvivesRestart bool
	// ReclaimCountsAttempt: an item that comes back from a worker that went away without
	// finishing it has had an attempt (Redis counts attempts when an item is leased); if
	// false the attempt is not counted (a classic RabbitMQ queue redelivers it as it was).
	ReclaimCountsAttempt bool
}

// Harness is what a backend's conformance test supplies.
type Harness struct {
	// Backend names the backend in messages.
	Backend string
	// NewQueue returns a fresh, empty queue on the running server, with a probe
	// connection to it.
	NewQueue func(t *testing.T) Queue
	// Enqueue adds items to q such that they are taken in the order given, behind the
	// items already waiting (qj enqueue --fifo).
	Enqueue func(ctx context.Context, q Queue, items ...[]byte) error
	// Requeue moves up to n dead-lettered items of q (all if n <= 0), oldest first, back
	// to q with a fresh count of attempts, as qj requeue does; it returns how many moved.
	Requeue func(ctx context.Context, q Queue, n int) (int, error)
	// Reclaim is one pass of what returns the items of workers that went away (their
	// worker closed without finishing them) once their lease is gone: the suite calls it
	// over and over, as the operator probes, until they are back, and while a live worker
	// holds an item, when it must return nothing. Redis: the reaper (Reap on q.Conn).
	// Nil: the server returns them by itself (RabbitMQ requeues the unacknowledged
	// messages of a closed connection).
	Reclaim func(ctx context.Context, q Queue) error
	// ReclaimGone is one pass of Reclaim told which workers are gone: the items of the
	// sessions gone reports true for (their pods ended) must come back in this pass,
	// whatever their leases, and no other. Nil: the backend cannot tell which worker holds
	// an item (NATS), or need not (RabbitMQ's server requeues a closed connection's
	// messages).
	ReclaimGone func(ctx context.Context, q Queue, gone queue.GoneHolders) error
	// BadCredentials returns q with credentials the server refuses, and the secrets (the
	// wrong password, and the right one if the server has one) that no error may quote.
	BadCredentials func(t *testing.T, q Queue) (bad Queue, secrets []string)
	// StopServer kills the server, its data kept; StartServer starts it again on the same
	// address and returns once it accepts connections. PauseServer freezes it (it accepts
	// connections and answers nothing, SIGSTOP); ResumeServer undoes that.
	StopServer, StartServer, PauseServer, ResumeServer func(t *testing.T)
	// Capabilities are the backend's promises.
	Capabilities Capabilities
}

// Timings of the suite. The lease is short so that expiry and reclaim take a few
// seconds; renewals run every LeaseTTL/3, which leaves a late renewal more than a second
// on a loaded machine.
const (
	// LeaseTTL is the workers' Options.LeaseTTL.
	LeaseTTL = 2 * time.Second
	// waitTimeout bounds every wait for a state: generous, as the machine may be loaded;
	// a conforming backend gets there in well under a second (the RabbitMQ management
	// API's counts lag by up to its statistics interval).
	waitTimeout = 30 * time.Second
	// callTimeout bounds a single call that must not hang, such as a probe of a server
	// that is gone.
	callTimeout = 30 * time.Second
)

// Run runs the conformance suite against h, one subtest a case: first the cases of
// Queue, all at once (each has a queue of its own, and most of their time is spent
// waiting for counts that lag, which go test's -parallel, the number of CPUs by default,
// would serialise), then, one at a time, the cases of Server, which freeze and stop the
// server.
func Run(t *testing.T, h Harness) {
	t.Run("Queue", func(t *testing.T) {
		var wg sync.WaitGroup
		for _, c := range queueCases() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t.Run(c.name, func(t *testing.T) { c.run(t, &h) })
			}()
		}
		wg.Wait()
	})
	t.Run("Server", func(t *testing.T) {
		for _, c := range serverCases() {
			t.Run(c.name, func(t *testing.T) { c.run(t, &h) })
		}
	})
}

// testCase is one case of the suite.
type testCase struct {
	name string
	run  func(t *testing.T, h *Harness)
}

// queueCases are the cases that leave the server alone.
func queueCases() []testCase {
	return []testCase{
		{"Counts", testCounts},
		{"Completion", testCompletion},
		{"EnqueueOrder", testEnqueueOrder},
		{"ArbitraryBytes", testArbitraryBytes},
		{"LeaseExpiryAndReclaim", testLeaseExpiryAndReclaim},
		{"GoneWorkerReclaim", testGoneWorkerReclaim},
		{"GiveBackOnRelease", testGiveBackOnRelease},
		{"GiveBackOnContextCancel", testGiveBackOnContextCancel},
		{"GiveBackOnSIGTERM", testGiveBackOnSIGTERM},
		{"DeadLetterAndRequeue", testDeadLetterAndRequeue},
		{"BadCredentials", testBadCredentials},
	}
}

// serverCases freeze and stop the server: they run one at a time, after queueCases.
func serverCases() []testCase {
	return []testCase{
		{"Frozen", testServerFrozen},
		{"Gone", testServerGone},
	}
}
