package protocol

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// A probe connects wherever a QueueJob's spec says, and whoever may create a QueueJob
// reads its status: so no message of a probe carries bytes the peer sent (a banner, an
// error reply, an HTTP status text, a certificate's names), only a fixed phrase for the
// class of failure and what the user wrote (the address, the field to fix). Otherwise the
// operator would be a port scanner that grabs banners for anyone who may create QueueJobs.
// The workers and qj, which run as the user against the user's own queue, may add the
// peer's words (withDetail).

// redisFailure classifies an error of go-redis in fixed words: the address, and the
// prefix of a Redis error reply among those Redis sends, are all it names.
func redisFailure(addr string, overTLS bool, err error) *Error {
	var qe *Error
	var reply redis.Error
	switch {
	case errors.As(err, &qe):
		return qe
	case errors.As(err, &reply):
		return redisReplyFailure(addr, reply.Error())
	}
	if cause, ok := tlsCause(err); ok {
		if !overTLS {
			return unanswered(Errorf(ReasonTLSFailed, "cannot reach Redis at %s: %s", addr, cause), err)
		}
		return unanswered(Errorf(ReasonTLSFailed, "cannot reach Redis at %s over TLS: %s: check spec.queue.redis.tls.caSecretRef "+
			"(the CA that signed the server's certificate), tls.serverName (a name the certificate is valid for) "+
			"and that spec.queue.redis.address is the server's TLS port", addr, cause), err)
	}
	switch {
	case !overTLS && closedByPeer(err):
		return Errorf(ReasonConnectionFailed, "cannot reach Redis at %s: the server closed the connection: "+
			"if it only accepts TLS, set spec.queue.redis.tls", addr)
	case isNetFailure(err), errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout):
		return unanswered(Errorf(ReasonConnectionFailed, "cannot reach Redis at %s: %s", addr, netCause(err)), err)
	default:
		// go-redis could not parse the answer: an SSH or a web server, say.
		return Errorf(ReasonConnectionFailed, "the server at %s does not answer as a Redis server does: "+
			"check spec.queue.redis.address", addr)
	}
}

// redisReplyKinds are the first words of the error replies Redis sends that the probe
// names: a reply's first word is named only if it is one of these, and nothing after it
// ever is.
var redisReplyKinds = map[string]bool{
	"ERR": true, "BUSY": true, "LOADING": true, "MASTERDOWN": true, "READONLY": true, "MOVED": true,
	"ASK": true, "CLUSTERDOWN": true, "TRYAGAIN": true, "CROSSSLOT": true, "NOREPLICAS": true,
	"OOM": true, "MISCONF": true, "NOSCRIPT": true, "EXECABORT": true,
}

// redisAuthErrors are ERR replies of older servers that mean the credentials were
// refused, matched whole or by their start.
var redisAuthErrors = []string{"ERR invalid password", "ERR invalid username-password pair",
	"ERR AUTH <password> called without any password", "ERR Client sent AUTH, but no password is set"}

// redisReplyFailure classifies a Redis error reply by its first word.
func redisReplyFailure(addr, reply string) *Error {
	kind, _, _ := strings.Cut(reply, " ")
	switch kind {
	case "WRONGPASS", "NOAUTH":
		return redisAuthFailure(addr)
	case "NOPERM":
		return Errorf(ReasonAuthFailed, "Redis at %s denied a command to the user: grant the ACL user of "+
			"spec.queue.redis.username the list commands, EXISTS and EVAL on the key and its :processing and "+
			":leased_by_session: keys", addr)
	case "WRONGTYPE":
		return Errorf(ReasonWrongType, "Redis at %s says a key of the queue is not a list: point "+
			"spec.queue.redis.key at a list (its :processing key must be a list too)", addr)
	case "LOADING":
		return Errorf(ReasonConnectionFailed, "Redis at %s is loading its data set: it answers once it has loaded it", addr)
	}
	for _, a := range redisAuthErrors {
		if strings.HasPrefix(reply, a) {
			return redisAuthFailure(addr)
		}
	}
	if redisReplyKinds[kind] {
		return Errorf(ReasonConnectionFailed, "Redis at %s answered with an error reply (%s): check spec.queue.redis.address "+
			"(a primary, not a replica or a cluster node) and the server's health", addr, kind)
	}
	return Errorf(ReasonConnectionFailed, "the server at %s answered with an error reply that Redis does not send: "+
		"check spec.queue.redis.address", addr)
}

func redisAuthFailure(addr string) *Error {
	return Errorf(ReasonAuthFailed, "Redis refused the credentials at %s: check spec.queue.redis.username and the "+
		"Secret of spec.queue.redis.passwordSecretRef", addr)
}

// withDetail adds the first line of the error it classified to a fixed message, for the
// workers and tools, which run as the user against the user's own queue.
func withDetail(e *Error, cause error) *Error {
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

// isNetFailure reports whether err is an error of the connection itself (Go's net
// package, a deadline, the peer closing it), whose words Go makes up locally.
func isNetFailure(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) || closedByPeer(err)
}

// closedByPeer reports whether the peer closed or reset the connection.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// netCause says in a few fixed words why a connection failed.
func netCause(err error) string {
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
	case closedByPeer(err):
		return "the connection was closed"
	case errors.As(err, &errno):
		return errno.Error() // Go's words for a local system error
	case errors.As(err, &certErr):
		return "its TLS certificate was not accepted"
	default:
		return "the connection failed"
	}
}
