package nats

import (
	"context"
	"errors"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// natsFailure classifies an error of nats.go in fixed words, naming only the first
// server's host:port and the stream and consumer the spec names: never the text of an
// error, which may quote what the server sent (its -ERR lines, a banner that is not NATS's
// INFO) or a URL.
func natsFailure(o Options, err error) error {
	var qe *queue.Error
	if errors.As(err, &qe) || errors.Is(err, queue.ErrLeaseLost) {
		return err
	}
	addr := o.addr()
	switch {
	case errors.Is(err, natsgo.ErrAuthorization), errors.Is(err, natsgo.ErrAuthExpired),
		errors.Is(err, natsgo.ErrAuthRevoked), errors.Is(err, natsgo.ErrAccountAuthExpired),
		errors.Is(err, natsgo.ErrNkeysNotSupported):
		return queue.Errorf(queue.ReasonAuthFailed, "NATS refused the credentials at %s: check spec.queue.nats's "+
			"userSecretRef and passwordSecretRef, tokenSecretRef, credsSecretRef or nkeySeedSecretRef", addr)
	case errors.Is(err, natsgo.ErrPermissionViolation):
		return queue.Errorf(queue.ReasonAuthFailed, "NATS at %s denied the user a subject it needs (the JetStream API "+
			"of stream %q, or its subjects): check the user's permissions", addr, o.Stream)
	case errors.Is(err, jetstream.ErrInvalidStreamName), errors.Is(err, jetstream.ErrInvalidConsumerName):
		return queue.Errorf(queue.ReasonWrongType, "stream %q or consumer %q is not a valid JetStream name (no whitespace, "+
			". * > / or \\): fix spec.queue.nats.stream or .consumer", o.Stream, o.Consumer)
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return errNoStream(o)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return queue.Errorf(queue.ReasonQueueNotFound, "NATS at %s has no consumer %q on stream %q: fix "+
			"spec.queue.nats.consumer, or let the workers (or qj enqueue) create it", addr, o.Consumer, o.Stream)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, natsgo.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		return queue.Errorf(queue.ReasonQueueNotFound, "NATS at %s has no JetStream for this user's account: enable "+
			"JetStream on the server (and the account), then create stream %q", addr, o.Stream)
	case errors.Is(err, natsgo.ErrSecureConnRequired):
		return queue.Errorf(queue.ReasonTLSFailed, "NATS at %s requires TLS: use a tls:// URL or set spec.queue.nats.tls", addr)
	case errors.Is(err, natsgo.ErrSecureConnWanted):
		return queue.Errorf(queue.ReasonTLSFailed, "NATS at %s does not offer TLS: use a nats:// URL without "+
			"spec.queue.nats.tls, or the server's TLS port", addr)
	case errors.Is(err, natsgo.ErrMaxPayload):
		return queue.Errorf(queue.ReasonConnectionFailed, "an item is larger than the max_payload of NATS at %s "+
			"(1 MB by default): raise it in the server's configuration", addr)
	}
	if cause, ok := queue.TLSCause(err); ok {
		return queue.Errorf(queue.ReasonTLSFailed, "cannot reach NATS at %s over TLS: %s: check spec.queue.nats.tls.caSecretRef "+
			"(the CA that signed the server's certificate), tls.serverName and that the port is the server's", addr, cause)
	}
	if errors.Is(err, natsgo.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return &queue.Error{Reason: queue.ReasonConnectionFailed, NoAnswer: true,
			Message: "cannot reach NATS at " + addr + ": no answer in time"}
	}
	if errors.Is(err, natsgo.ErrConnectionClosed) || errors.Is(err, natsgo.ErrDisconnected) ||
		errors.Is(err, natsgo.ErrConnectionDraining) || errors.Is(err, natsgo.ErrStaleConnection) {
		return queue.Errorf(queue.ReasonConnectionFailed, "cannot reach NATS at %s: the connection was closed", addr)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return queue.Errorf(queue.ReasonConnectionFailed, "NATS at %s refused a JetStream request on stream %q", addr, o.Stream)
	}
	if queue.IsNetFailure(err) {
		return queue.Unanswered(queue.Errorf(queue.ReasonConnectionFailed, "cannot reach NATS at %s: %s", addr, queue.NetCause(err)), err)
	}
	return queue.Errorf(queue.ReasonConnectionFailed, "cannot reach NATS at %s: the server does not answer as a NATS "+
		"server does (check the URL's host and port)", addr)
}

func errNoStream(o Options) *queue.Error {
	return queue.Errorf(queue.ReasonQueueNotFound, "NATS at %s has no stream %q: create it (nats stream add, or qj "+
		"enqueue --declare), or fix spec.queue.nats.stream", o.addr(), o.Stream)
}

// ClientError is natsFailure with the first line of the error it classified, for the
// workers and qj (queue.WithDetail).
func ClientError(o Options, err error) error {
	c := natsFailure(o, err)
	var qe *queue.Error
	if errors.As(c, &qe) && !errors.Is(err, queue.ErrLeaseLost) {
		var orig *queue.Error
		if errors.As(err, &orig) {
			return c
		}
		return queue.WithDetail(qe, err)
	}
	return c
}
