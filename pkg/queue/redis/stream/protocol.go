// Package stream is the Redis Streams backend on Redis's wire, without Kubernetes: a
// stream is the QueueJob's queue and one consumer group its workers. It holds the
// protocol's names and scripts (protocol.go), the operator's probe and reaper (conn.go),
// the worker side (worker.go), qj's side (admin.go) and the worker's read-back of its
// QUEUEJOB_REDIS_STREAM_* variables (env.go). It shares its client, TLS, error
// classification and write watch with the list backend (pkg/queue/redis). The Kubernetes
// side (spec.queue.redisStream -> Options) is pkg/queue/redis/stream/kube.
package stream

import (
	"context"
	"crypto/tls"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// The protocol (docs/queues-and-workers.md says it to users):
//
//   - <stream> holds the items, one entry each: the field "item" (FieldItem) holds the
//     item's bytes, and the optional field "attempts" (FieldAttempts) the attempts it has
//     had (none: 0). A producer in any language enqueues with XADD <stream> * item <bytes>.
//   - <group>, a consumer group of <stream>, is the workers; each worker reads as the
//     consumer named by its session (the pod's name and a random suffix). Workers and qj
//     enqueue create it at ID 0 with MKSTREAM; the operator's probe never writes.
//   - An entry delivered to a consumer and not yet acknowledged is in flight; its pending
//     idle time is its lease, which the worker renews (XCLAIM to itself, JUSTID) every
//     third of the lease (the shorter of the worker's own and the reaper's).
//   - A read (or CompleteAndTake's MULTI) that failed may have run on the server, its
//     reply lost: the entry it delivered is pending for the session, which no lease
//     holds. The session's next Take first reads its own pending entries (XREADGROUP
//     ... 0) and hands out those no lease holds, their attempt unchanged.
//   - Completing an entry acknowledges and deletes it (XACK + XDEL, one MULTI): a
//     completed item is gone. Other consumer groups on the same stream are not supported.
//   - Returning an entry to the queue (a failed attempt, a give-back, the reaper's
//     reclaim) adds its fields as a new entry at the end of the stream with the new count
//     of attempts, and acknowledges and deletes the old one, in one script.
//   - <stream>:failed (FailedKey) is the dead-letter stream: entries keep their fields,
//     with "attempts" and "error" (FieldError, the handler's error text).

// Fields of the entries.
const (
	// FieldItem holds the item's bytes. An entry without it is dead-lettered when taken.
	FieldItem = "item"
	// FieldAttempts is how many attempts the item has had; absent is 0.
	FieldAttempts = "attempts"
	// FieldError is, in <stream>:failed, why the last attempt failed.
	FieldError = "error"
)

// FailedKey is the dead-letter stream of stream.
func FailedKey(stream string) string { return stream + ":failed" }

// Options locate a stream and its consumer group on a Redis server.
type Options struct {
	Address, Username, Password string
	DB                          int
	// TLS, if set, makes the connection use TLS with this configuration.
	TLS *tls.Config
	// Timeout bounds dialing and each command; 5s if zero.
	Timeout time.Duration
	// Stream is the stream's key, Group its consumer group.
	Stream, Group string
	// LeaseTTL is how long an entry may stay pending without a renewal before the
	// operator's reaper returns it to the queue (spec.queue.redisStream.leaseSeconds;
	// EnvLeaseSeconds in worker pods); queue.DefaultLeaseTTL if zero. A Consumer's lease
	// is the shorter of this and its queue.ConsumerOptions.LeaseTTL, so that a worker
	// with a longer lease of its own still renews before the reaper takes its entry.
	LeaseTTL time.Duration
	// MaxScan bounds how many expired entries one Reap returns; 1000 if zero.
	MaxScan int64
}

// Server is the list backend's Options of the same server, with the stream as the key
// (what the write watch watches).
func (o Options) Server() redis.Options {
	return redis.Options{Address: o.Address, Username: o.Username, Password: o.Password, DB: o.DB,
		TLS: o.TLS, Timeout: o.Timeout, Key: o.Stream}
}

func (o Options) withDefaults() Options {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = queue.DefaultLeaseTTL
	}
	if o.MaxScan <= 0 {
		o.MaxScan = 1000
	}
	return o
}

// Wording is how this backend's errors name its settings.
var Wording = redis.Wording{
	Field: "spec.queue.redisStream",
	NoPerm: "the stream commands (XREADGROUP, XACK, XADD, XDEL, XCLAIM, XPENDING, XINFO, XGROUP, XLEN, XRANGE), " +
		"TYPE and EVAL on the stream and its :failed stream",
	WrongType: "Redis at %s says a key of the queue is not a stream: point spec.queue.redisStream.stream " +
		"at a stream (its :failed key must be a stream too)",
}

// failure classifies an error of go-redis in this backend's words.
func failure(o Options, err error) *queue.Error {
	return redis.Failure(Wording, o.Address, o.TLS != nil, err)
}

// ClientError classifies an error of a worker's or a tool's client: failure's message,
// with go-redis's words after it (they run as the user, against the user's own queue).
func ClientError(o Options, err error) error {
	return queue.WithDetail(failure(o, err), err)
}

// ensureGroup creates the consumer group at ID 0, and the stream if missing
// (XGROUP CREATE ... 0 MKSTREAM); a group that exists already is left as it is.
func ensureGroup(ctx context.Context, c goredis.Cmdable, o Options) error {
	err := c.XGroupCreateMkStream(ctx, o.Stream, o.Group, "0").Err()
	if err != nil && goredis.HasErrorPrefix(err, "BUSYGROUP") {
		return nil
	}
	return err
}

// isNoGroup says the stream or its group is missing (NOGROUP; "no such key").
func isNoGroup(err error) bool {
	return goredis.HasErrorPrefix(err, "NOGROUP") || goredis.HasErrorPrefix(err, "ERR no such key")
}
