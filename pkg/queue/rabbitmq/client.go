package rabbitmq

import (
	"context"
	"errors"
	"net"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// Connecting the way the controller does (the same URL checks, TLS settings and error
// messages), for a worker or a tool.

// Dial opens an AMQP connection to the broker of o as the probe does: the URL is
// checked first (no message ever quotes it), amqps uses o.TLS (the system's roots and the
// URL's host by default), and errors are *Error with a reason. The dial and the AMQP
// handshake are bounded by ctx and o.Timeout (5s if zero); name is the connection's name
// in the management UI.
func Dial(ctx context.Context, o Options, name string) (*amqp.Connection, error) {
	r := New(Options{URL: o.URL, Queue: o.Queue, TLS: o.TLS, Timeout: o.Timeout})
	if r.uriErr != nil {
		return nil, r.uriErr
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	conn, err := amqp.DialConfig(o.URL, amqp.Config{
		Dial: func(network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the handshake too; amqp091 clears the deadline once it is done.
			if deadline, ok := ctx.Deadline(); ok {
				_ = c.SetDeadline(deadline)
			}
			return c, nil
		},
		TLSClientConfig: r.tlsClientConfig(),
		Heartbeat:       10 * time.Second,
		Properties:      amqp.Table{"connection_name": name},
	})
	if err != nil {
		return nil, withReplyText(rabbitError(err, rabbitAddr(r.uri)), err)
	}
	return conn, nil
}

// ClientError classifies an error of amqp091 on a connection of Dial: an *Error
// with a reason, whose message names at most the URL's host and port, and ends with the
// broker's reply text: a worker or a tool runs as the user, against the user's own broker.
func ClientError(o Options, err error) error {
	uri, uerr := parseRabbitURL(o.URL)
	if uerr != nil {
		return uerr
	}
	return withReplyText(rabbitError(err, rabbitAddr(uri)), err)
}

// withReplyText adds the reply text of an AMQP error to the message it was classified as
// (never the text of another error, which may quote the URL).
func withReplyText(classified, cause error) error {
	var qe *queue.Error
	var ae *amqp.Error
	if !errors.As(classified, &qe) || !errors.As(cause, &ae) || ae.Reason == "" {
		return classified
	}
	return &queue.Error{Reason: qe.Reason, Message: qe.Message + " (" + ae.Reason + ")"}
}
