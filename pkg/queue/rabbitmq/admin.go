package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	amqp "github.com/rabbitmq/amqp091-go"
)

var (
	_ queue.Admin    = (*Admin)(nil)
	_ queue.Declarer = (*Admin)(nil)
)

// enqueueBatch is how many messages Admin.Enqueue publishes before waiting for their
// confirms.
const enqueueBatch = 1000

// Admin is qj's side of a RabbitMQ queue: enqueue (declaring the queue), inspect, count
// the dead-lettered messages. Its errors never quote the URL.
type Admin struct {
	o       Options
	timeout time.Duration
	// conn is Open's connection.
	conn *amqp.Connection
}

// NewAdmin returns qj's side of the queue of o, each call bounded by timeout.
func NewAdmin(o Options, timeout time.Duration) *Admin {
	return &Admin{o: o, timeout: timeout}
}

// Probe counts the queue with the operator's probe (its checks and messages, which never
// quote the URL): ready messages and, with inFlight and a management URL, those in flight.
func (a *Admin) Probe(ctx context.Context, inFlight bool) (queue.Counts, error) {
	return a.probe(ctx, a.o.Queue, inFlight)
}

func (a *Admin) probe(ctx context.Context, queueName string, inFlight bool) (queue.Counts, error) {
	o := a.o
	o.Queue = queueName
	o.Timeout = a.timeout
	if !inFlight {
		o.ManagementURL = ""
	}
	p := New(o)
	defer func() { _ = p.Close() }()
	return p.Probe(ctx)
}

// Open opens an AMQP connection to the broker.
func (a *Admin) Open(context.Context) error {
	uri, err := amqp.ParseURI(a.o.URL)
	if err != nil {
		return fmt.Errorf("the RabbitMQ URL is not a valid AMQP URL: special characters in the user and password must be percent-encoded")
	}
	cfg := amqp.Config{
		Dial:       amqp.DefaultDial(a.timeout),
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "qj enqueue"},
	}
	if uri.Scheme == "amqps" {
		c := &tls.Config{MinVersion: tls.VersionTLS12}
		if a.o.TLS != nil {
			c = a.o.TLS.Clone()
		}
		if c.ServerName == "" {
			c.ServerName = uri.Host
		}
		cfg.TLSClientConfig = c
	}
	conn, err := amqp.DialConfig(a.o.URL, cfg)
	if err != nil {
		return fmt.Errorf("connecting to RabbitMQ at %s: %s", AddrOf(a.o.URL), amqpCause(err))
	}
	a.conn = conn
	return nil
}

// Close closes Open's connection.
func (a *Admin) Close() error {
	if a.conn == nil {
		return nil
	}
	return a.conn.Close()
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

// Declare declares a durable classic queue, as the Kubernetes docs' job-wq-1 does with
// amqp-declare-queue -d.
func (a *Admin) Declare(context.Context) error {
	ch, err := a.conn.Channel()
	if err != nil {
		return fmt.Errorf("opening a channel: %s", amqpCause(err))
	}
	defer func() { _ = ch.Close() }()
	if _, err := ch.QueueDeclare(a.o.Queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declaring queue %q: %s", a.o.Queue, amqpCause(err))
	}
	return nil
}

// Enqueue publishes each item as a persistent message to the default exchange, routed to
// the queue, with publisher confirms: a message counts as enqueued once the broker
// confirmed it. Mandatory publishing (Publisher, which the workers'
// republishes use too) makes an unroutable message (the queue was deleted meanwhile) an
// error instead of a silent drop. A queue is first in, first out: o.FIFO is not
// supported. Call Open first.
func (a *Admin) Enqueue(ctx context.Context, next func() (string, error), added func(int64), o queue.EnqueueOptions) (pushed, unsure int64, err error) {
	if o.FIFO {
		return 0, 0, queue.ErrNotSupported
	}
	ch, err := a.conn.Channel()
	if err != nil {
		return 0, 0, fmt.Errorf("opening a channel: %s", amqpCause(err))
	}
	defer func() { _ = ch.Close() }()
	pub, err := NewPublisher(ch, enqueueBatch)
	if err != nil {
		return 0, 0, fmt.Errorf("turning on publisher confirms: %s", amqpCause(err))
	}
	e := &confirmedEnqueue{pub: pub, queue: a.o.Queue, added: added, pending: make([]*amqp.DeferredConfirmation, 0, enqueueBatch)}
	for {
		item, rerr := next()
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			if err := e.wait(ctx); err != nil {
				return e.pushed, e.unsure, err
			}
			return e.pushed, e.unsure, rerr
		}
		dc, err := pub.Publish(ctx, a.o.Queue, amqp.Publishing{
			DeliveryMode: amqp.Persistent,
			ContentType:  "text/plain",
			Body:         []byte(item),
		})
		if err != nil {
			werr := e.wait(ctx)
			e.unsure++
			if werr != nil {
				return e.pushed, e.unsure, werr
			}
			return e.pushed, e.unsure, fmt.Errorf("publishing: %s", amqpCause(err))
		}
		e.pending = append(e.pending, dc)
		if len(e.pending) == enqueueBatch {
			if err := e.wait(ctx); err != nil {
				return e.pushed, e.unsure, err
			}
		}
	}
	return e.pushed, e.unsure, e.wait(ctx)
}

// confirmedEnqueue counts the messages of an Enqueue as their confirms come.
type confirmedEnqueue struct {
	pub   *Publisher
	queue string
	added func(int64)
	// pending are the messages published and not yet confirmed.
	pending        []*amqp.DeferredConfirmation
	pushed, unsure int64
}

// wait waits for the pending messages' confirms.
func (e *confirmedEnqueue) wait(ctx context.Context) error {
	defer func() { e.pending = e.pending[:0] }()
	for i, dc := range e.pending {
		err := e.pub.Confirmed(ctx, e.queue, dc)
		switch {
		case errors.Is(err, ErrUnroutable):
			// This message's return, or a later one's that was confirmed first.
			e.unsure += int64(len(e.pending) - i)
			return err
		case errors.Is(err, ErrNacked):
			e.unsure += int64(len(e.pending) - i - 1)
			return err
		case err != nil:
			e.unsure += int64(len(e.pending) - i)
			return fmt.Errorf("waiting for the broker's confirms: %s", amqpCause(err))
		}
		e.pushed++
		e.added(1)
	}
	return nil
}

// Inspection is what qj inspect shows of a RabbitMQ queue: counts only (AMQP cannot look
// at a message without taking it).
type Inspection struct {
	Queue string `json:"queue"`
	Ready int64  `json:"ready"`
	// InFlight counts the messages delivered and not yet acknowledged, from the management
	// API (as the operator counts them); null without one.
	InFlight *int64 `json:"inFlight"`
	// FailedQueue is the dead-letter queue; Failed counts its messages, null when it does
	// not exist.
	FailedQueue string `json:"failedQueue"`
	Failed      *int64 `json:"failed"`
}

// Inspect shows the counts of Probe (with inFlight) and counts the dead-letter queue. It
// returns an *Inspection.
func (a *Admin) Inspect(ctx context.Context, _ int64, counts queue.Counts) (any, error) {
	in := &Inspection{Queue: a.o.Queue, Ready: counts.Ready, FailedQueue: FailedQueue(a.o.Queue)}
	if !counts.InFlightUnknown {
		n := counts.InFlight
		in.InFlight = &n
	}
	failed, err := a.probe(ctx, in.FailedQueue, false)
	switch {
	case err == nil:
		n := failed.Ready
		in.Failed = &n
	case queue.ReasonOf(err) != queue.ReasonQueueNotFound:
		return nil, fmt.Errorf("counting the dead-letter queue %q: %w", in.FailedQueue, err)
	}
	return in, nil
}

// CountFailed counts <queue>.failed; none if it does not exist.
func (a *Admin) CountFailed(ctx context.Context) (int64, string, error) {
	where := FailedQueue(a.o.Queue)
	c, err := a.probe(ctx, where, false)
	if queue.ReasonOf(err) == queue.ReasonQueueNotFound {
		return 0, where, nil
	}
	return c.Ready, where, err
}
