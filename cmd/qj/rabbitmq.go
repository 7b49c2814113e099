package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/worker"
)

// failedQueue is the dead-letter queue of a RabbitMQ queue.
func failedQueue(q string) string { return worker.FailedQueue(q) }

// rabbitBatch is how many messages are published before waiting for their confirms.
const rabbitBatch = 1000

// rabbitHost is the host:port of an AMQP URL, the only part of it a message may name (the
// URL may hold the password).
func rabbitHost(raw string) string {
	u, err := amqp.ParseURI(raw)
	if err != nil {
		return "(an invalid AMQP URL)"
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// rabbitProbe counts a queue with pkg/queue's probe (the operator's own checks and
// messages, which never quote the URL): ready messages and, with a management URL, those
// in flight.
func rabbitProbe(ctx context.Context, t *target, queueName string, withManagement bool, timeout time.Duration) (queue.Counts, error) {
	o := *t.RabbitMQ
	o.Queue = queueName
	o.Timeout = timeout
	if !withManagement {
		o.ManagementURL = ""
	}
	b := rabbitmq.New(o)
	defer func() { _ = b.Close() }()
	return b.Probe(ctx)
}

// rabbitConn opens an AMQP connection to the target's broker. Its errors never quote the
// URL.
func rabbitConn(t *target, timeout time.Duration) (*amqp.Connection, error) {
	o := t.RabbitMQ
	uri, err := amqp.ParseURI(o.URL)
	if err != nil {
		return nil, fmt.Errorf("the RabbitMQ URL is not a valid AMQP URL: special characters in the user and password must be percent-encoded")
	}
	cfg := amqp.Config{
		Dial:       amqp.DefaultDial(timeout),
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "qj enqueue"},
	}
	if uri.Scheme == "amqps" {
		c := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.TLS != nil {
			c = o.TLS.Clone()
		}
		if c.ServerName == "" {
			c.ServerName = uri.Host
		}
		cfg.TLSClientConfig = c
	}
	conn, err := amqp.DialConfig(o.URL, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to RabbitMQ at %s: %s%s", rabbitHost(o.URL), amqpCause(err), t.hint())
	}
	return conn, nil
}

// amqpCause says why an AMQP call failed without quoting anything but the broker's reply
// and addresses.
func amqpCause(err error) string {
	var ae *amqp.Error
	var ne net.Error
	switch {
	case errors.As(err, &ae):
		return ae.Reason
	case errors.As(err, &ne):
		return ne.Error()
	case errors.Is(err, amqp.ErrCredentials):
		return "the broker refused the credentials: check the URL's user and password"
	case errors.Is(err, amqp.ErrVhost):
		return "the broker denied access to the URL's virtual host"
	case errors.Is(err, io.EOF):
		return "the connection was closed"
	}
	return "the connection failed"
}

// rabbitEnqueue publishes each item as a persistent message to the default exchange,
// routed to the queue, with publisher confirms: a message counts as enqueued once the
// broker confirmed it. Mandatory publishing (rabbitmq.Publisher, which the
// workers' republishes use too) makes an unroutable message (the queue was deleted
// meanwhile) an error instead of a silent drop.
func rabbitEnqueue(ctx context.Context, conn *amqp.Connection, queueName string, items itemSource, prog *progress) (pushed, unsure int64, err error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, 0, fmt.Errorf("opening a channel: %s", amqpCause(err))
	}
	defer func() { _ = ch.Close() }()
	pub, err := rabbitmq.NewPublisher(ch, rabbitBatch)
	if err != nil {
		return 0, 0, fmt.Errorf("turning on publisher confirms: %s", amqpCause(err))
	}
	pending := make([]*amqp.DeferredConfirmation, 0, rabbitBatch)
	wait := func() error {
		defer func() { pending = pending[:0] }()
		for i, dc := range pending {
			err := pub.Confirmed(ctx, queueName, dc)
			switch {
			case errors.Is(err, rabbitmq.ErrUnroutable):
				// This message's return, or a later one's that was confirmed first.
				unsure += int64(len(pending) - i)
				return err
			case errors.Is(err, rabbitmq.ErrNacked):
				unsure += int64(len(pending) - i - 1)
				return err
			case err != nil:
				unsure += int64(len(pending) - i)
				return fmt.Errorf("waiting for the broker's confirms: %s", amqpCause(err))
			}
			pushed++
			prog.add(1)
		}
		return nil
	}
	for {
		item, rerr := items.Next()
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			if err := wait(); err != nil {
				return pushed, unsure, err
			}
			return pushed, unsure, rerr
		}
		dc, err := pub.Publish(ctx, queueName, amqp.Publishing{
			DeliveryMode: amqp.Persistent,
			ContentType:  "text/plain",
			Body:         []byte(item),
		})
		if err != nil {
			werr := wait()
			unsure++
			if werr != nil {
				return pushed, unsure, werr
			}
			return pushed, unsure, fmt.Errorf("publishing: %s", amqpCause(err))
		}
		pending = append(pending, dc)
		if len(pending) == rabbitBatch {
			if err := wait(); err != nil {
				return pushed, unsure, err
			}
		}
	}
	return pushed, unsure, wait()
}

// rabbitDeclare declares a durable classic queue, as the Kubernetes docs' job-wq-1 does
// with amqp-declare-queue -d.
func rabbitDeclare(conn *amqp.Connection, queueName string) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("opening a channel: %s", amqpCause(err))
	}
	defer func() { _ = ch.Close() }()
	if _, err := ch.QueueDeclare(queueName, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declaring queue %q: %s", queueName, amqpCause(err))
	}
	return nil
}
