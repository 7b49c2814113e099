package redis

import (
	"errors"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// A probe names nothing the peer sent (see pkg/queue/failures.go): these classify the
// errors of go-redis in fixed words.

// redisFailure classifies an error of go-redis in fixed words: the address, and the
// prefix of a Redis error reply among those Redis sends, are all it names.
func redisFailure(addr string, overTLS bool, err error) *queue.Error {
	var qe *queue.Error
	var reply goredis.Error
	switch {
	case errors.As(err, &qe):
		return qe
	case errors.As(err, &reply):
		return redisReplyFailure(addr, reply.Error())
	}
	if cause, ok := queue.TLSCause(err); ok {
		if !overTLS {
			return queue.Unanswered(queue.Errorf(queue.ReasonTLSFailed, "cannot reach Redis at %s: %s", addr, cause), err)
		}
		return queue.Unanswered(queue.Errorf(queue.ReasonTLSFailed, "cannot reach Redis at %s over TLS: %s: check spec.queue.redis.tls.caSecretRef "+
			"(the CA that signed the server's certificate), tls.serverName (a name the certificate is valid for) "+
			"and that spec.queue.redis.address is the server's TLS port", addr, cause), err)
	}
	switch {
	case !overTLS && queue.ClosedByPeer(err):
		return queue.Errorf(queue.ReasonConnectionFailed, "cannot reach Redis at %s: the server closed the connection: "+
			"if it only accepts TLS, set spec.queue.redis.tls", addr)
	case queue.IsNetFailure(err), errors.Is(err, goredis.ErrClosed), errors.Is(err, goredis.ErrPoolTimeout):
		return queue.Unanswered(queue.Errorf(queue.ReasonConnectionFailed, "cannot reach Redis at %s: %s", addr, queue.NetCause(err)), err)
	default:
		// go-redis could not parse the answer: an SSH or a web server, say.
		return queue.Errorf(queue.ReasonConnectionFailed, "the server at %s does not answer as a Redis server does: "+
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
func redisReplyFailure(addr, reply string) *queue.Error {
	kind, _, _ := strings.Cut(reply, " ")
	switch kind {
	case "WRONGPASS", "NOAUTH":
		return redisAuthFailure(addr)
	case "NOPERM":
		return queue.Errorf(queue.ReasonAuthFailed, "Redis at %s denied a command to the user: grant the ACL user of "+
			"spec.queue.redis.username the list commands, EXISTS and EVAL on the key and its :processing and "+
			":leased_by_session: keys", addr)
	case "WRONGTYPE":
		return queue.Errorf(queue.ReasonWrongType, "Redis at %s says a key of the queue is not a list: point "+
			"spec.queue.redis.key at a list (its :processing key must be a list too)", addr)
	case "LOADING":
		return queue.Errorf(queue.ReasonConnectionFailed, "Redis at %s is loading its data set: it answers once it has loaded it", addr)
	}
	for _, a := range redisAuthErrors {
		if strings.HasPrefix(reply, a) {
			return redisAuthFailure(addr)
		}
	}
	if redisReplyKinds[kind] {
		return queue.Errorf(queue.ReasonConnectionFailed, "Redis at %s answered with an error reply (%s): check spec.queue.redis.address "+
			"(a primary, not a replica or a cluster node) and the server's health", addr, kind)
	}
	return queue.Errorf(queue.ReasonConnectionFailed, "the server at %s answered with an error reply that Redis does not send: "+
		"check spec.queue.redis.address", addr)
}

func redisAuthFailure(addr string) *queue.Error {
	return queue.Errorf(queue.ReasonAuthFailed, "Redis refused the credentials at %s: check spec.queue.redis.username and the "+
		"Secret of spec.queue.redis.passwordSecretRef", addr)
}
