package queue

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// The worker side of a backend: what pkg/worker drives to take items from one queue. Each
// backend implements Consumer and Lease (pkg/queue/redis/worker.go,
// pkg/queue/rabbitmq/worker.go); pkg/worker/backends.go lists their constructors.

// Errors a Consumer's and a Lease's methods return; pkg/worker exports them as its own
// (worker.ErrLeaseLost, worker.ErrNotSupported). Test for them with errors.Is.
var (
	// ErrLeaseLost says the worker lost the item: its lease expired and the reaper
	// returned it to the queue, or another worker holds it now (Redis), or the channel it
	// came on closed (RabbitMQ). It may run again elsewhere.
	ErrLeaseLost = errors.New("the item's lease was lost")
	// ErrNotSupported says the backend cannot do what was asked.
	ErrNotSupported = errors.New("not supported by this backend")
)

// FinishTimeout bounds a finishing call that the worker makes on its own (returning an
// item on shutdown, renewing a lease, writing the lease of an item taken as its context
// was cancelled), whose caller's context may be gone.
const FinishTimeout = 10 * time.Second

// DeadLetterMode says how a RabbitMQ worker dead-letters a message after its attempts.
type DeadLetterMode string

const (
	// DeadLetterQueue publishes the message to the queue <queue>.failed, declaring it
	// (durable) if missing, and then acks it (declared again if it was deleted while the
	// worker ran). It works on any queue.
	DeadLetterQueue DeadLetterMode = "queue"
	// DeadLetterReject rejects the message without requeue, so the broker routes it to
	// the queue's dead-letter exchange. Only for queues that have one (the
	// x-dead-letter-exchange argument or policy): the broker drops the messages it
	// rejects otherwise.
	DeadLetterReject DeadLetterMode = "reject"
)

// DefaultLeaseTTL is the expiry of a lease whose TTL is not set (pkg/worker's default).
const DefaultLeaseTTL = 30 * time.Second

// A lease a server keeps (a Redis stream entry's idle time, a NATS message's AckWait) runs
// on the server's clock from its delivery; a worker that cannot renew it (cut off, or
// renewing too late) must stop acting on the item before the server may give it to
// another worker. LeaseStart and LeaseExpired are that worker-side clock.

// LeaseMargin is how long before its lease passes a worker takes it as lost: a tenth.
func LeaseMargin(ttl time.Duration) time.Duration { return ttl / 10 }

// LeaseStart is when, at the earliest, the server delivered an item read by a request sent
// at sent and answered at got: sent, or for a read that waited, got less the margin.
func LeaseStart(sent, got time.Time, ttl time.Duration) time.Time {
	if start := got.Add(-LeaseMargin(ttl)); start.After(sent) {
		return start
	}
	return sent
}

// LeaseExpired says whether the lease ttl, less the margin, has passed since renewed (when
// it started or was last renewed, measured from before the request).
func LeaseExpired(renewed time.Time, ttl time.Duration) bool {
	return time.Since(renewed) >= ttl-LeaseMargin(ttl)
}

// ConsumerOptions are a worker's settings that a Consumer follows (pkg/worker's New fills
// them from its Options); each backend's NewConsumer fills in those left empty with
// WithDefaults.
type ConsumerOptions struct {
	// Session names the lease holder: the value of Redis lease keys, the RabbitMQ
	// consumer tag; NewSession() if empty.
	Session string
	// LeaseTTL is the expiry of a lease, renewed every LeaseTTL/3 (Redis);
	// DefaultLeaseTTL if zero (a zero TTL would be a lease that never expires).
	LeaseTTL time.Duration
	// MaxAttempts is how many attempts an item gets before it is dead-lettered; 0 never
	// dead-letters.
	MaxAttempts int
	// Prefetch is how many items the server may deliver ahead (RabbitMQ); at least 1 (0
	// would be no limit at all).
	Prefetch int
	// DeadLetter is how dead-lettered items are stored where a backend has a choice
	// (RabbitMQ); DeadLetterQueue if empty.
	DeadLetter DeadLetterMode
	// Logger gets a line for each item the consumer dead-letters on its own (on take);
	// slog.Default() if nil, as in pkg/worker.
	Logger *slog.Logger
}

// WithDefaults returns o with the settings left empty filled in, for the Consumers'
// constructors: a Consumer can be used without pkg/worker.
func (o ConsumerOptions) WithDefaults() ConsumerOptions {
	if o.Session == "" {
		o.Session = NewSession()
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Prefetch < 1 {
		o.Prefetch = 1
	}
	if o.DeadLetter == "" {
		o.DeadLetter = DeadLetterQueue
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Consumer is a backend's worker side on one queue. It is safe for concurrent use.
type Consumer interface {
	// Take waits up to wait (not at all if 0) for an item and leases it; nil if none
	// came. Items that must be dead-lettered on the way are, and Take goes on.
	Take(ctx context.Context, wait time.Duration) (Lease, error)
	// Empty says whether nothing is ready and nothing is in flight.
	Empty(ctx context.Context) (bool, error)
	// Failed lists the dead-lettered items.
	Failed(ctx context.Context) ([][]byte, error)
	// RequeueFailed moves up to n dead-lettered items (all if n <= 0), oldest first, back
	// to the queue with a fresh count of attempts; it returns how many moved.
	RequeueFailed(ctx context.Context, n int) (int, error)
	// StopTaking is called when the worker shuts down, before its items are returned:
	// nothing more should come to it (RabbitMQ cancels its consumer, which a later Take
	// starts again).
	StopTaking()
	Close() error
}

// CompleteTaker is a Consumer that completes an item and takes the next one in fewer
// round trips than Complete and Take apart: next is nil if none was taken; completeErr
// is the completion's error, err the take's.
type CompleteTaker interface {
	CompleteAndTake(ctx context.Context, l Lease) (next Lease, completeErr, err error)
}

// Lease is an item a Consumer took, held until it is completed, failed or released.
type Lease interface {
	Data() []byte
	// Attempt is 1 the first time the item is taken, 2 after a failure or a crash, ...
	Attempt() int
	// RenewEvery is how often Renew must run; 0 if never.
	RenewEvery() time.Duration
	// Renew extends the lease; false if it was lost.
	Renew(ctx context.Context) (bool, error)
	// Complete, Fail and Release return ErrLeaseLost if the item was lost.
	Complete(ctx context.Context) error
	// Fail counts a failed attempt: the item goes back to the queue, or is dead-lettered
	// after MaxAttempts attempts (deadLettered).
	Fail(ctx context.Context, cause error) (deadLettered bool, err error)
	// Release returns the item to the queue without counting an attempt.
	Release(ctx context.Context) error
}
