package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
)

// Backends, as in QUEUEJOB_BACKEND.
const (
	BackendRedis    = "redis"
	BackendRabbitMQ = "rabbitmq"
	BackendNATS     = "nats"
	// BackendRedisStream is a Redis stream and its consumer group.
	BackendRedisStream = "redis-stream"
)

// Defaults of Options.
const (
	DefaultLeaseTTL    = queue.DefaultLeaseTTL
	DefaultMaxAttempts = 5
	DefaultWait        = time.Second
	DefaultPrefetch    = 1
)

// DeadLetterMode says how a RabbitMQ worker dead-letters a message after its attempts.
type DeadLetterMode = queue.DeadLetterMode

const (
	// DeadLetterQueue publishes the message to the queue <queue>.failed, declaring it
	// (durable) if missing, and then acks it (declared again if it was deleted while the
	// worker ran). It works on any queue.
	DeadLetterQueue = queue.DeadLetterQueue
	// DeadLetterReject rejects the message without requeue, so the broker routes it to
	// the queue's dead-letter exchange. Only for queues that have one (the
	// x-dead-letter-exchange argument or policy): the broker drops the messages it
	// rejects otherwise.
	DeadLetterReject = queue.DeadLetterReject
)

// Headers of messages a RabbitMQ worker republishes.
const (
	// HeaderAttempts counts the failed attempts of a message's earlier copies: a failed
	// message is republished with it incremented (and dead-lettered copies keep it).
	HeaderAttempts = rabbitmq.HeaderAttempts
	// HeaderError is the last failure's cause, on dead-lettered copies.
	HeaderError = rabbitmq.HeaderError
)

// FailedQueue is the queue RabbitMQ workers dead-letter to with DeadLetterQueue.
func FailedQueue(queueName string) string { return rabbitmq.FailedQueue(queueName) }

// Environment variables a worker reads besides those the operator sets from the queue
// (see OptionsFromEnv); the pod template may set them.
const (
	// EnvLeaseSeconds is Options.LeaseTTL in seconds.
	EnvLeaseSeconds = "QUEUEJOB_LEASE_SECONDS"
	// EnvMaxAttempts is Options.MaxAttempts; a negative number never dead-letters.
	EnvMaxAttempts = "QUEUEJOB_MAX_ATTEMPTS"
	// EnvRabbitMQPrefetch is Options.Prefetch.
	EnvRabbitMQPrefetch = "QUEUEJOB_RABBITMQ_PREFETCH"
	// EnvRabbitMQDeadLetter is Options.DeadLetter: queue or reject.
	EnvRabbitMQDeadLetter = "QUEUEJOB_RABBITMQ_DEAD_LETTER"
)

// Errors of Lease and of an Item's methods; test for them with errors.Is.
var (
	// ErrEmpty says the queue is empty: no item is ready and none is in flight (on
	// RabbitMQ without a management URL, no message is ready and this worker holds none).
	ErrEmpty = errors.New("the queue is empty")
	// ErrLeaseLost says the worker lost the item: its lease expired and the reaper
	// returned it to the queue, or another worker holds it now (Redis), or the channel it
	// came on closed (RabbitMQ). It may run again elsewhere.
	ErrLeaseLost = queue.ErrLeaseLost
	// ErrReleased says the item went back to the queue because the context given to
	// Lease was cancelled (the worker is shutting down).
	ErrReleased = errors.New("the item was returned to the queue on shutdown")
	// ErrFinished says the item was already completed, failed or released.
	ErrFinished = errors.New("the item is already finished")
	// ErrNotSupported says the backend cannot do what was asked.
	ErrNotSupported = queue.ErrNotSupported
)

// Options configure a Worker.
type Options struct {
	// Backend is BackendRedis, BackendRabbitMQ or BackendNATS.
	Backend string
	// Redis locates the list (Address, Key, DB, Username, Password, TLS) when Backend is
	// BackendRedis. MaxScan is not used.
	Redis redis.Options
	// RabbitMQ locates the queue (URL, Queue, TLS) when Backend is BackendRabbitMQ. With
	// a ManagementURL, Empty also counts the messages other workers hold.
	RabbitMQ rabbitmq.Options
	// NATS locates the stream and its durable consumer (Servers, Stream, Consumer,
	// credentials, TLS) when Backend is BackendNATS. A consumer the worker creates has
	// AckWait NATS.AckWait, or LeaseTTL if that is zero.
	NATS nats.Options
	// RedisStream locates the stream and its group (Address, Stream, Group, DB,
	// Username, Password, TLS) when Backend is BackendRedisStream. Its LeaseTTL is the
	// reaper's lease (30s if zero): a worker's lease is the shorter of it and LeaseTTL
	// below. MaxScan is not used.
	RedisStream stream.Options
	// LeaseTTL is the expiry of a Redis lease, renewed every LeaseTTL/3 while the item is
	// held; DefaultLeaseTTL if zero. A worker that dies keeps its item at most this long
	// (plus the reaper's grace). RabbitMQ has no leases.
	LeaseTTL time.Duration
	// MaxAttempts is how many attempts an item gets before it is dead-lettered;
	// DefaultMaxAttempts if zero, never dead-lettered if negative.
	MaxAttempts int
	// Session names the lease holder: the value of Redis lease keys, and the RabbitMQ
	// consumer tag. Hostname (the pod's name) and a random suffix if empty.
	Session string
	// Wait is how long Lease waits for an item at a time before it checks again whether
	// the queue is empty; DefaultWait if zero.
	Wait time.Duration
	// Prefetch is the RabbitMQ consumer's prefetch count; DefaultPrefetch if zero.
	Prefetch int
	// DeadLetter is how RabbitMQ messages are dead-lettered; DeadLetterQueue if empty.
	DeadLetter DeadLetterMode
	// Logger gets a line for each dead-lettered item, lost lease and item returned on
	// shutdown; slog.Default() if nil. Items' contents are never logged.
	Logger *slog.Logger
}

// OptionsFromEnv reads Options from the environment the operator gives worker pods:
// QUEUEJOB_BACKEND and the QUEUEJOB_REDIS_* or QUEUEJOB_RABBITMQ_* variables of the queue
// (credentials and CA included), and, if set, EnvLeaseSeconds, EnvMaxAttempts,
// EnvRabbitMQPrefetch and EnvRabbitMQDeadLetter. Change what you like before New.
func OptionsFromEnv() (Options, error) { return optionsFromEnv(os.Getenv) }

func optionsFromEnv(getenv func(string) string) (Options, error) {
	var o Options
	if o.Backend = getenv(queue.EnvBackend); o.Backend == "" {
		return o, fmt.Errorf("%s is not set: is this a pod of a QueueJob with spec.queue?", queue.EnvBackend)
	}
	b, err := backendNamed(o.Backend)
	if err != nil {
		return o, fmt.Errorf("%s=%q: %w", queue.EnvBackend, o.Backend, err)
	}
	if err := b.fromEnv(getenv, &o); err != nil {
		return o, err
	}
	if v := getenv(EnvLeaseSeconds); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("%s=%q: want a positive number of seconds", EnvLeaseSeconds, v)
		}
		o.LeaseTTL = time.Duration(n) * time.Second
	}
	if v := getenv(EnvMaxAttempts); v != "" {
		if o.MaxAttempts, err = strconv.Atoi(v); err != nil {
			return o, fmt.Errorf("%s=%q: want a number", EnvMaxAttempts, v)
		}
	}
	if v := getenv(EnvRabbitMQPrefetch); v != "" {
		if o.Prefetch, err = strconv.Atoi(v); err != nil || o.Prefetch <= 0 {
			return o, fmt.Errorf("%s=%q: want a positive number", EnvRabbitMQPrefetch, v)
		}
	}
	if v := getenv(EnvRabbitMQDeadLetter); v != "" {
		o.DeadLetter = DeadLetterMode(v)
	}
	return o, nil
}

// Worker takes items from one queue. It is safe for concurrent use: several goroutines
// may each lease and work on items (on RabbitMQ, at most Prefetch at a time).
type Worker struct {
	opts Options
	log  *slog.Logger
	b    queue.Consumer
	// closed stops the keepers of items still held when the worker is closed.
	closed chan struct{}
	once   sync.Once
}

// New returns a Worker for the queue of o. It connects at once, so that a wrong address,
// password or certificate fails here with a message that says what to fix.
func New(ctx context.Context, o Options) (*Worker, error) {
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.LeaseTTL < 30*time.Millisecond {
		return nil, fmt.Errorf("LeaseTTL %s is too short to be renewed", o.LeaseTTL)
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxAttempts < 0 {
		o.MaxAttempts = 0 // the scripts' "never"
	}
	if o.Wait <= 0 {
		o.Wait = DefaultWait
	}
	if o.Prefetch <= 0 {
		o.Prefetch = DefaultPrefetch
	}
	switch o.DeadLetter {
	case "":
		o.DeadLetter = DeadLetterQueue
	case DeadLetterQueue, DeadLetterReject:
	default:
		return nil, fmt.Errorf("DeadLetter %q: want %s or %s", o.DeadLetter, DeadLetterQueue, DeadLetterReject)
	}
	if o.Session == "" {
		o.Session = queue.NewSession()
	}
	w := &Worker{opts: o, log: o.Logger, closed: make(chan struct{})}
	if w.log == nil {
		w.log = slog.Default()
	}
	b, err := backendNamed(o.Backend)
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", o.Backend, err)
	}
	if w.b, err = b.open(ctx, &o, w.consumerOptions()); err != nil {
		return nil, err
	}
	return w, nil
}

// consumerOptions are the settings of the worker's backend.
func (w *Worker) consumerOptions() queue.ConsumerOptions {
	o := w.opts
	return queue.ConsumerOptions{Session: o.Session, LeaseTTL: o.LeaseTTL, MaxAttempts: o.MaxAttempts,
		Prefetch: o.Prefetch, DeadLetter: o.DeadLetter, Logger: w.log}
}

// FromEnv returns a Worker configured by OptionsFromEnv.
func FromEnv() (*Worker, error) {
	o, err := OptionsFromEnv()
	if err != nil {
		return nil, err
	}
	return New(context.Background(), o)
}

// Options are the worker's settings, defaults filled in.
func (w *Worker) Options() Options { return w.opts }

// Lease takes the next item and leases it, waiting for one while the queue has items in
// flight (another worker's item may yet come back). It returns ErrEmpty once nothing is
// ready and nothing is in flight, and ctx's error if ctx is cancelled first.
//
// ctx governs the item: if it is cancelled before the item is completed, failed or
// released, the item goes back to the queue at once (see the package doc on shutdown).
// The item must be finished with Complete, Fail or Release.
func (w *Worker) Lease(ctx context.Context) (*Item, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := w.b.Take(ctx, 0)
		if err != nil {
			return nil, err
		}
		if h == nil {
			empty, err := w.b.Empty(ctx)
			if err != nil {
				return nil, err
			}
			if empty {
				return nil, ErrEmpty
			}
			if h, err = w.b.Take(ctx, w.opts.Wait); err != nil {
				return nil, err
			}
			if h == nil {
				continue
			}
		}
		if err := ctx.Err(); err != nil {
			// Taken as ctx was cancelled: give it back now.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
			defer cancel()
			if rerr := h.Release(rctx); rerr != nil && !errors.Is(rerr, ErrLeaseLost) {
				w.log.Warn("Failed to return an item on shutdown", "error", rerr)
			}
			return nil, err
		}
		return newItem(ctx, w, h), nil
	}
}

// Empty reports whether the queue has no item ready and none in flight. On RabbitMQ
// without a management URL it only sees the ready messages and those this worker holds.
func (w *Worker) Empty(ctx context.Context) (bool, error) { return w.b.Empty(ctx) }

// Failed lists the dead-lettered items: Redis's <key>:failed (newest first), RabbitMQ's
// <queue>.failed (oldest first; ErrNotSupported with DeadLetterReject, where the broker's
// dead-letter exchange decides where they go).
func (w *Worker) Failed(ctx context.Context) ([][]byte, error) { return w.b.Failed(ctx) }

// RequeueFailed moves up to n dead-lettered items (all if n <= 0), oldest first, back to
// the queue behind the waiting items, with a fresh count of attempts; it returns how many
// moved.
func (w *Worker) RequeueFailed(ctx context.Context, n int) (int, error) {
	return w.b.RequeueFailed(ctx, n)
}

// Close closes the connection. Items still held are returned by the queue's own means
// (Redis: their leases expire; RabbitMQ: the broker requeues them): Release them first.
func (w *Worker) Close() error {
	w.once.Do(func() { close(w.closed) })
	return w.b.Close()
}
