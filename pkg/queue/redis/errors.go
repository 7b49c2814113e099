package redis

import (
	"errors"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// A probe names nothing the peer sent (see pkg/queue/failures.go): these classify the
// errors of go-redis in fixed words.

// Wording is what the messages of a backend on Redis name: the spec field of its
// settings, and what its keys must be. The list backend's is ListWording; another
// backend on the same server (pkg/queue/redis/stream) has its own.
type Wording struct {
	// Field is the spec field of the backend's settings, spec.queue.redis.
	Field string
	// NoPerm ends the message of a NOPERM reply: which commands and keys the ACL user of
	// <Field>.username needs.
	NoPerm string
	// WrongType is the message of a WRONGTYPE reply (with %s for the address).
	WrongType string
}

// ListWording is the wording of the Redis list backend.
var ListWording = Wording{
	Field: "spec.queue.redis",
	NoPerm: "the list commands, EXISTS and EVAL on the key and its :processing and " +
		":leased_by_session: keys",
	WrongType: "Redis at %s says a key of the queue is not a list: point " +
		"spec.queue.redis.key at a list (its :processing key must be a list too)",
}

// redisFailure classifies an error of go-redis in the list backend's words (Failure).
func redisFailure(addr string, overTLS bool, err error) *queue.Error {
	return Failure(ListWording, addr, overTLS, err)
}

// Failure classifies an error of go-redis in fixed words: the address, the fields of w,
// and the prefix of a Redis error reply among those Redis sends, are all it names.
func Failure(w Wording, addr string, overTLS bool, err error) *queue.Error {
	var qe *queue.Error
	var reply goredis.Error
	switch {
	case errors.As(err, &qe):
		return qe
	case errors.As(err, &reply):
		return redisReplyFailure(w, addr, reply.Error())
	}
	if cause, ok := queue.TLSCause(err); ok {
		if !overTLS {
			return queue.Unanswered(queue.Errorf(queue.ReasonTLSFailed, "cannot reach Redis at %s: %s", addr, cause), err)
		}
		return queue.Unanswered(queue.Errorf(queue.ReasonTLSFailed, "cannot reach Redis at %s over TLS: %s: check %s.tls.caSecretRef "+
			"(the CA that signed the server's certificate), tls.serverName (a name the certificate is valid for) "+
			"and that %s.address is the server's TLS port", addr, cause, w.Field, w.Field), err)
	}
	switch {
	case !overTLS && queue.ClosedByPeer(err):
		return queue.Errorf(queue.ReasonConnectionFailed, "cannot reach Redis at %s: the server closed the connection: "+
			"if it only accepts TLS, set %s.tls", addr, w.Field)
	case queue.IsNetFailure(err), errors.Is(err, goredis.ErrClosed), errors.Is(err, goredis.ErrPoolTimeout):
		return queue.Unanswered(queue.Errorf(queue.ReasonConnectionFailed, "cannot reach Redis at %s: %s", addr, queue.NetCause(err)), err)
	default:
		// go-redis could not parse the answer: an SSH or a web server, say.
		return queue.Errorf(queue.ReasonConnectionFailed, "the server at %s does not answer as a Redis server does: "+
			"check %s.address", addr, w.Field)
	}
}

// redisReplyKinds are the first words of the error replies Redis sends that the probe
// names: a reply's first word is named only if it is one of these, and nothing after it
// ever is.
var redisReplyKinds = map[string]bool{
	"ERR": true, "BUSY": true, "LOADING": true, "MASTERDOWN": true, "READONLY": true, "MOVED": true,
	"ASK": true, "CLUSTERDOWN": true, "TRYAGAIN": true, "CROSSSLOT": true, "NOREPLICAS": true,
	"OOM": true, "MISCONF": true, "NOSCRIPT": true, "EXECABORT": true,
	// Of streams (pkg/queue/redis/stream).
	"NOGROUP": true, "BUSYGROUP": true,
}

// redisAuthErrors are ERR replies of older servers that mean the credentials were
// refused, matched whole or by their start.
var redisAuthErrors = []string{"ERR invalid password", "ERR invalid username-password pair",
	"ERR AUTH <password> called without any password", "ERR Client sent AUTH, but no password is set"}

// redisReplyFailure classifies a Redis error reply by its first word.
func redisReplyFailure(w Wording, addr, reply string) *queue.Error {
	kind, _, _ := strings.Cut(reply, " ")
	switch kind {
	case "WRONGPASS", "NOAUTH":
		return redisAuthFailure(w, addr)
	case "NOPERM":
		return queue.Errorf(queue.ReasonAuthFailed, "Redis at %s denied a command to the user: grant the ACL user of "+
			"%s.username %s", addr, w.Field, w.NoPerm)
	case "WRONGTYPE":
		return queue.Errorf(queue.ReasonWrongType, w.WrongType, addr)
	case "LOADING":
		return queue.Errorf(queue.ReasonConnectionFailed, "Redis at %s is loading its data set: it answers once it has loaded it", addr)
	}
	for _, a := range redisAuthErrors {
		if strings.HasPrefix(reply, a) {
			return redisAuthFailure(w, addr)
		}
	}
	if redisReplyKinds[kind] {
		return queue.Errorf(queue.ReasonConnectionFailed, "Redis at %s answered with an error reply (%s): check %s.address "+
			"(a primary, not a replica or a cluster node) and the server's health", addr, kind, w.Field)
	}
	return queue.Errorf(queue.ReasonConnectionFailed, "the server at %s answered with an error reply that Redis does not send: "+
		"check %s.address", addr, w.Field)
}

func redisAuthFailure(w Wording, addr string) *queue.Error {
	return queue.Errorf(queue.ReasonAuthFailed, "Redis refused the credentials at %s: check %s.username and the "+
		"Secret of %s.passwordSecretRef", addr, w.Field, w.Field)
}
