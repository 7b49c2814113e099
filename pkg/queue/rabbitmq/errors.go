package rabbitmq

import (
	"errors"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// rabbitError classifies an error of amqp091 in fixed words, naming only the host:port
// of the URL: never the text of an error that may quote the URL, nor a reply text of the
// peer (any server can send an AMQP Connection.Close with a text of its choosing).
func rabbitError(err error, addr string) error {
	var qe *queue.Error
	if errors.As(err, &qe) || errors.Is(err, ErrNacked) {
		return err // classified already, or a publish the broker refused
	}
	switch {
	case errors.Is(err, amqp.ErrCredentials):
		return errCredentialsRefused(addr)
	case errors.Is(err, amqp.ErrSASL):
		return queue.Errorf(queue.ReasonAuthFailed, "RabbitMQ offers no SASL mechanism the probe can use at %s", addr)
	case errors.Is(err, amqp.ErrVhost):
		return errVhostDenied(addr)
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return amqpFailure(ae, addr)
	}
	if cause, ok := queue.TLSCause(err); ok {
		return queue.Unanswered(queue.Errorf(queue.ReasonTLSFailed, "cannot reach RabbitMQ at %s over TLS: %s: check spec.queue.rabbitmq.tls.caSecretRef "+
			"(the CA that signed the broker's certificate), tls.serverName (a name the certificate is valid for) and that "+
			"the amqps URL's port is the broker's TLS listener", addr, cause), err)
	}
	return queue.Unanswered(queue.Errorf(queue.ReasonConnectionFailed, "cannot reach RabbitMQ at %s: %s", addr, queue.NetCause(err)), err)
}

// errCredentialsRefused and errVhostDenied say what the broker refused, however it said
// so: amqp091's ErrCredentials and ErrVhost while connecting, or a Connection.Close with
// ACCESS_REFUSED or NOT_ALLOWED.
func errCredentialsRefused(addr string) *queue.Error {
	return queue.Errorf(queue.ReasonAuthFailed, "RabbitMQ refused the credentials at %s: check the URL's user and password", addr)
}

func errVhostDenied(addr string) *queue.Error {
	return queue.Errorf(queue.ReasonAuthFailed, "RabbitMQ denied access to the URL's virtual host at %s: check that it "+
		"exists and that the user may use it", addr)
}

// amqpFailure classifies an AMQP error by its reply code: a broker's (or a peer's)
// Connection.Close or Channel.Close, or amqp091's own error of a connection that broke.
func amqpFailure(ae *amqp.Error, addr string) *queue.Error {
	switch {
	case !ae.Server && notAMQP(ae):
		return queue.Errorf(queue.ReasonConnectionFailed, "the server at %s does not answer as an AMQP 0-9-1 broker does: "+
			"check the AMQP URL's host and port", addr)
	case !ae.Server:
		return queue.Errorf(queue.ReasonConnectionFailed, "cannot reach RabbitMQ at %s: the connection failed or was closed", addr)
	case ae.Code == amqp.AccessRefused:
		return errCredentialsRefused(addr)
	case ae.Code == amqp.NotAllowed:
		return errVhostDenied(addr)
	case ae.Code == amqp.NotFound:
		return queue.Errorf(queue.ReasonQueueNotFound, "RabbitMQ has no such queue at %s: declare it, or fix spec.queue.rabbitmq.queue", addr)
	case ae.Code == amqp.ResourceLocked:
		return queue.Errorf(queue.ReasonConnectionFailed, "RabbitMQ at %s refused the queue: it is exclusive to another connection", addr)
	case ae.Code == amqp.ConnectionForced:
		return queue.Errorf(queue.ReasonConnectionFailed, "RabbitMQ at %s closed the connection (it is shutting down, or an "+
			"administrator closed it)", addr)
	default:
		return queue.Errorf(queue.ReasonConnectionFailed, "RabbitMQ at %s closed the connection with an error", addr)
	}
}

// amqpParseErrors are the texts of amqp091's errors for bytes that are not AMQP 0-9-1.
var amqpParseErrors = []*amqp.Error{amqp.ErrFrame, amqp.ErrSyntax, amqp.ErrUnexpectedFrame, amqp.ErrCommandInvalid,
	amqp.ErrFieldType, amqp.ErrFrameTooLarge}

// notAMQP reports whether amqp091 failed to make sense of what the peer sent. When the
// connection breaks over it, amqp091 puts the whole text of its error (Exception (501)
// Reason: "...") into the reason of a new one.
func notAMQP(ae *amqp.Error) bool {
	for _, p := range amqpParseErrors {
		if strings.Contains(ae.Reason, p.Reason) {
			return true
		}
	}
	return strings.Contains(ae.Reason, "Bad method frame")
}
