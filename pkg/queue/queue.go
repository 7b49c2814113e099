// Package queue is what every queue backend shares, without Kubernetes: a connection to
// one queue (Conn) and its optional capabilities (Reaper), what a probe counts (Counts),
// the worker side pkg/worker drives (Consumer, its taken items Lease), qj's side (Admin),
// the errors of probes with their reasons, the fixed phrases of failures, TLS, and the
// QUEUEJOB_* variables every worker pod gets. The workers (pkg/worker,
// cmd/queuejob-worker, the examples) build on it and on the backends' wire packages
// (pkg/queue/redis, pkg/queue/rabbitmq) alone, so that their static binaries carry no
// Kubernetes packages.
//
// The Kubernetes side lives beside it: pkg/queue/backends (a backend, its Source, the
// Registry), and each backend's kube package (pkg/queue/redis/kube, ...) that maps a
// QueueJob's spec.queue onto its wire package. See docs/backends.md for adding one.
package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Conn is a connection to one queue. Implementations are safe for use by one goroutine
// at a time; the controller serialises the reconciles of a QueueJob.
type Conn interface {
	// Probe counts the queue's items. Errors are *Error with a reason.
	Probe(ctx context.Context) (Counts, error)
	// Close releases the connection.
	Close() error
}

// Reaper is implemented by connections whose protocol leases items to workers: Reap
// returns to the queue items whose lease expired, so that a crashed worker loses none.
// An item is only reclaimed once it has been seen without a lease on two calls at least
// grace apart, which leaves a worker time to write the lease of an item it has just
// taken. Items whose holder gone says is gone (its pod ended) go back at once, leased or
// not, where the protocol records the holder (Redis lists and streams); gone may be nil.
type Reaper interface {
	Reap(ctx context.Context, now time.Time, grace time.Duration, gone GoneHolders) (reclaimed int, err error)
}

// Counts is what a probe of a queue counted.
type Counts struct {
	// Ready is the number of items waiting to be taken.
	Ready int64
	// InFlight is the number of items taken by a worker and not yet finished, where the
	// queue's protocol tells; zero where it does not.
	InFlight int64
	// DeadLettered is the number of items in the queue's dead-letter list or queue now
	// (Redis: <key>:failed; RabbitMQ: <queue>.failed), 0 if there is none. Items of
	// earlier runs count too: it is a gauge, not this run's tally.
	DeadLettered int64
	// DeadLetteredUnknown says the dead-letter list could not be read (a Redis ACL user
	// without access to it): DeadLettered is then 0 whatever it holds.
	DeadLetteredUnknown bool
	// InFlightUnknown says the backend could not count in-flight items (RabbitMQ without
	// its management API): InFlight is then 0 whatever workers hold, so a drained-looking
	// queue proves nothing while workers run, and no wave may end on these counts.
	InFlightUnknown bool
	// Redelivered is the number of items delivered more than once (their worker
	// crashed, or its lease expired) and not acknowledged since, where the backend
	// counts them (NATS: num_redelivered, which on the consumers the backend accepts
	// counts in-flight items only); 0 where it does not.
	Redelivered int64
	// Lag is how old the counts may be (RabbitMQ's management API refreshes its counts
	// every few seconds): a queue must look drained at least this long before a wave
	// ends because of it.
	Lag time.Duration
}

// Reasons of probe errors; they are the reasons of the QueueReachable=False condition.
const (
	ReasonConnectionFailed = "ConnectionFailed"
	ReasonAuthFailed       = "AuthFailed"
	ReasonQueueNotFound    = "QueueNotFound"
	ReasonWrongType        = "WrongType"
	ReasonSecretNotFound   = "SecretNotFound"
	// ReasonTLSFailed says the TLS connection failed: the server's certificate was not
	// accepted (wrong CA, wrong server name), it does not speak TLS, or the TLS settings
	// do not fit the URL.
	ReasonTLSFailed = "TLSFailed"
	// ReasonAddressNotAllowed says the manager's AddressPolicy refused the queue's
	// address: the probe connected to nothing.
	ReasonAddressNotAllowed = "AddressNotAllowed"
)

// Error is a probe error with a reason. Its message never contains credentials.
type Error struct {
	Reason  string
	Message string
	// NoAnswer says the server did not answer at all: the connection was refused, or
	// nothing came back in time. Any answer, even an error, says it is up.
	NoAnswer bool
}

// NoAnswer reports whether err says that the server did not answer at all.
func NoAnswer(err error) bool {
	var qe *Error
	return errors.As(err, &qe) && qe.NoAnswer
}

// Unanswered marks e as NoAnswer if cause is a connection refused or timed out (or a
// host name that does not resolve): the server said nothing.
func Unanswered(e *Error, cause error) *Error {
	var dnsErr *net.DNSError
	var netErr net.Error
	if errors.As(cause, &dnsErr) || errors.Is(cause, syscall.ECONNREFUSED) || errors.Is(cause, syscall.EHOSTUNREACH) ||
		errors.Is(cause, syscall.ENETUNREACH) || errors.Is(cause, context.DeadlineExceeded) ||
		(errors.As(cause, &netErr) && netErr.Timeout()) {
		e.NoAnswer = true
	}
	return e
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an *Error.
func Errorf(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// ReasonOf is the reason of a probe error, ConnectionFailed for errors without one.
func ReasonOf(err error) string {
	var qe *Error
	if errors.As(err, &qe) {
		return qe.Reason
	}
	return ReasonConnectionFailed
}

// Address is a place a backend connects to, and the field of the spec that says where
// (for the manager's AddressPolicy, pkg/queue/backends).
type Address struct {
	HostPort string
	Field    string
}
