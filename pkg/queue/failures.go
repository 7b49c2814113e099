package queue

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
)

// A probe connects wherever a QueueJob's spec says, and whoever may create a QueueJob
// reads its status: so no message of a probe carries bytes the peer sent (a banner, an
// error reply, an HTTP status text, a certificate's names), only a fixed phrase for the
// class of failure and what the user wrote (the address, the field to fix). Otherwise the
// operator would be a port scanner that grabs banners for anyone who may create QueueJobs.
// The workers and qj, which run as the user against the user's own queue, may add the
// peer's words (WithDetail). Each backend classifies its client library's errors in its
// own package (pkg/queue/redis/errors.go, pkg/queue/rabbitmq/errors.go) with these.

// WithDetail adds the first line of the error it classified to a fixed message, for the
// workers and tools, which run as the user against the user's own queue.
func WithDetail(e *Error, cause error) *Error {
	if e == cause {
		return e
	}
	return &Error{Reason: e.Reason, Message: e.Message + " (" + firstLine(cause.Error()) + ")"}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// IsNetFailure reports whether err is an error of the connection itself (Go's net
// package, a deadline, the peer closing it), whose words Go makes up locally.
func IsNetFailure(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) || ClosedByPeer(err)
}

// ClosedByPeer reports whether the peer closed or reset the connection.
func ClosedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// NetCause says in a few fixed words why a connection failed.
func NetCause(err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	var errno syscall.Errno
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &dnsErr):
		return "cannot resolve the host name"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "no answer in time"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case ClosedByPeer(err):
		return "the connection was closed"
	case errors.As(err, &errno):
		return errno.Error() // Go's words for a local system error
	case errors.As(err, &certErr):
		return "its TLS certificate was not accepted"
	default:
		return "the connection failed"
	}
}

// CauseText is the text of the error a worker's handler failed an item with, as it is
// logged and stored beside a dead-lettered item: at most 500 bytes and "...".
func CauseText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 500 {
		s = s[:500] + "..."
	}
	return s
}
