// Package protocol is the queues' protocols without Kubernetes: the key names and scripts
// of the Redis protocol (rediswq's, and the worker library's attempts and dead-letter
// list), the RabbitMQ connection, the probes that count a queue and reap its leases, the
// QUEUEJOB_* variables of worker pods and how a worker reads them back, and the errors
// with their reasons. The workers (pkg/worker, cmd/queuejob-worker, the examples) build on
// it alone, so that their static binaries carry no Kubernetes packages; pkg/queue, the
// operator's side, maps a QueueJob's spec.queue onto it.
package protocol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

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

// unanswered marks e as NoAnswer if cause is a connection refused or timed out (or a
// host name that does not resolve): the server said nothing.
func unanswered(e *Error, cause error) *Error {
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

// Environment variables every worker pod gets; backends add their own.
const (
	EnvBackend = "QUEUEJOB_BACKEND"
	EnvName    = "QUEUEJOB_NAME"
)
