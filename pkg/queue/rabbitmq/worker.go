package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	amqp "github.com/rabbitmq/amqp091-go"
)

var _ queue.Consumer = (*Consumer)(nil)

// Headers of messages the worker republishes.
const (
	// HeaderAttempts counts the failed attempts of a message's earlier copies: a failed
	// message is republished with it incremented (and dead-lettered copies keep it).
	HeaderAttempts = "x-queuejob-attempts"
	// HeaderError is the last failure's cause, on dead-lettered copies.
	HeaderError = "x-queuejob-error"
	// headerDeliveryCount is the quorum queues' count of a message's returns to the queue
	// (rejects with requeue, and consumers that went away with it).
	headerDeliveryCount = "x-delivery-count"
)

// Consumer is the worker side of one RabbitMQ queue: it consumes with manual acks, and
// fails, dead-letters and gives back messages by confirmed republishes. pkg/worker
// drives it.
type Consumer struct {
	o     Options
	co    queue.ConsumerOptions
	conn  *amqp.Connection
	probe *Conn

	mu sync.Mutex
	// ch is the consuming channel, nil until the first Take; pub republishes failed
	// and returned messages on it.
	ch         *amqp.Channel
	pub        *Publisher
	deliveries <-chan amqp.Delivery
	// consuming: the consumer is on (StopTaking cancels it; the next Take starts
	// it again).
	consuming bool
	// failedDeclared: <queue>.failed is known to exist.
	failedDeclared bool
	// pending are messages delivered to the consumer and read from it by Empty, for Take.
	pending []amqp.Delivery
	// held counts the messages delivered and not yet finished.
	held atomic.Int64
}

// NewConsumer connects to the broker of o at once, so that a wrong URL, password or
// certificate fails here with a message that says what to fix.
func NewConsumer(ctx context.Context, o Options, co queue.ConsumerOptions) (*Consumer, error) {
	co = co.WithDefaults()
	conn, err := Dial(ctx, o, "queuejob-worker "+co.Session)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	return &Consumer{o: o, co: co, conn: conn, probe: New(o)}, nil
}

func (c *Consumer) err(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("worker: %w", ClientError(c.o, err))
}

// consume opens the channel and starts the consumer on first use, and again after
// StopTaking.
func (c *Consumer) consume(ctx context.Context) (<-chan amqp.Delivery, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.consuming {
		return c.deliveries, nil
	}
	if c.ch == nil {
		ch, err := c.conn.Channel()
		if err != nil {
			return nil, c.err(ctx, err)
		}
		if err := ch.Qos(c.co.Prefetch, 0, false); err != nil {
			return nil, c.err(ctx, err)
		}
		pub, err := NewPublisher(ch, 0)
		if err != nil {
			return nil, c.err(ctx, err)
		}
		c.ch, c.pub = ch, pub
	}
	d, err := c.ch.Consume(c.o.Queue, c.co.Session, false, false, false, false, nil)
	if err != nil {
		return nil, c.err(ctx, err)
	}
	c.deliveries, c.consuming = d, true
	return d, nil
}

// StopTaking cancels the consumer, so that the broker delivers nothing more: a message
// returned on shutdown would otherwise come straight back to this worker, and a message
// delivered and returned counts a delivery on a quorum queue.
//
// Messages the broker delivered before the cancel (prefetched, up to Prefetch) are still
// on their way through amqp091's buffer, which it flushes and then closes once the
// consumer is cancelled: they are kept in pending, handed out by the next Take, and
// returned by Close, so that none is stranded, unacknowledged, on the channel.
func (c *Consumer) StopTaking() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.consuming {
		return
	}
	c.consuming = false
	if err := c.ch.Cancel(c.co.Session, false); err != nil {
		return // the channel is gone, and its messages are back in the queue
	}
	t := time.NewTimer(drainCancelled)
	defer t.Stop()
	for {
		select {
		case d, ok := <-c.deliveries:
			if !ok {
				return
			}
			c.pending = append(c.pending, d)
		case <-t.C:
			return
		}
	}
}

// drainCancelled bounds how long StopTaking waits for amqp091 to flush the deliveries of a
// cancelled consumer.
const drainCancelled = 5 * time.Second

var errChannelClosed = errors.New("worker: the RabbitMQ channel was closed (connection lost?)")

func (c *Consumer) Take(ctx context.Context, wait time.Duration) (queue.Lease, error) {
	deliveries, err := c.consume(ctx)
	if err != nil {
		return nil, err
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		var d amqp.Delivery
		var ok bool
		c.mu.Lock()
		if len(c.pending) > 0 {
			d, ok = c.pending[0], true
			c.pending = c.pending[1:]
		}
		c.mu.Unlock()
		switch {
		case ok:
		case wait > 0:
			select {
			case d, ok = <-deliveries:
			case <-timeout:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		default:
			select {
			case d, ok = <-deliveries:
			default:
				return nil, nil
			}
		}
		if !ok {
			return nil, errChannelClosed
		}
		c.held.Add(1)
		m := &rabbitLease{c: c, d: d, n: priorAttempts(d.Headers) + 1}
		if max := c.co.MaxAttempts; max > 0 && m.n > max {
			// Returned more than its attempts allow (its consumers went away with it, on a
			// quorum queue): dead-letter it without handing it out.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queue.FinishTimeout)
			err := m.deadLetter(dctx, m.n-1, errors.New("returned to the queue too often (its workers crashed?)"))
			cancel()
			if err != nil {
				return nil, err
			}
			c.co.Logger.Warn("Dead-lettered a message that was returned to the queue more often than MaxAttempts allows",
				"attempts", m.n-1, "queue", c.o.Queue)
			continue
		}
		return m, nil
	}
}

// priorAttempts is how many attempts a message has had: the failed attempts of its earlier
// copies (HeaderAttempts) and its returns to a quorum queue (x-delivery-count).
func priorAttempts(h amqp.Table) int {
	return headerInt(h, HeaderAttempts) + headerInt(h, headerDeliveryCount)
}

func headerInt(h amqp.Table, name string) int {
	switch v := h[name].(type) {
	case int8:
		return int(v)
	case int16:
		return int(v)
	case int32:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	case uint8:
		return int(v)
	case uint16:
		return int(v)
	case uint32:
		return int(v)
	}
	return 0
}

// drainWait bounds how long Empty waits for a message that the broker delivered before it
// counted the queue, on its way through amqp091's buffer.
const drainWait = 250 * time.Millisecond

func (c *Consumer) Empty(ctx context.Context) (bool, error) {
	c.mu.Lock()
	kept := len(c.pending)
	c.mu.Unlock()
	if kept > 0 {
		return false, nil // delivered to this worker, not yet handed out
	}
	deliveries, err := c.consume(ctx)
	if err != nil {
		return false, err
	}
	// Count the ready messages on the consuming channel: the broker sends every message
	// it delivered to this consumer before its answer, so once the answer is here, a
	// message the count misses because it is on its way to this worker is in amqp091's
	// buffer, and a short wait gets it (kept for the next Take).
	c.mu.Lock()
	ch := c.ch
	c.mu.Unlock()
	q, err := ch.QueueDeclarePassive(c.o.Queue, false, false, false, false, nil)
	if err != nil {
		return false, c.err(ctx, err)
	}
	if q.Messages > 0 {
		return false, nil
	}
	t := time.NewTimer(drainWait)
	defer t.Stop()
	select {
	case d, ok := <-deliveries:
		if !ok {
			return false, errChannelClosed
		}
		c.mu.Lock()
		c.pending = append(c.pending, d)
		c.mu.Unlock()
		return false, nil
	case <-t.C:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	if c.held.Load() > 0 {
		return false, nil
	}
	if c.o.ManagementURL == "" {
		return true, nil
	}
	// Other workers' messages in flight, by the management API.
	n, err := c.probe.Probe(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("worker: %w", err)
	}
	return n.Ready == 0 && n.InFlight == 0 && !n.InFlightUnknown, nil
}

// copyOf is a delivery as a message to publish, with headers changed by set (a nil value
// deletes).
func copyOf(d amqp.Delivery, set amqp.Table) amqp.Publishing {
	h := amqp.Table{}
	for k, v := range d.Headers {
		if k != headerDeliveryCount {
			h[k] = v
		}
	}
	for k, v := range set {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	return amqp.Publishing{
		Headers: h, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: d.DeliveryMode, Priority: d.Priority, CorrelationId: d.CorrelationId,
		ReplyTo: d.ReplyTo, Expiration: d.Expiration, MessageId: d.MessageId, Timestamp: d.Timestamp,
		Type: d.Type, UserId: d.UserId, AppId: d.AppId, Body: d.Body,
	}
}

// declareFailed makes sure <queue>.failed exists, on a channel of its own (a failed
// declare closes its channel).
func (c *Consumer) declareFailed(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failedDeclared {
		return nil
	}
	ch, err := c.conn.Channel()
	if err != nil {
		return c.err(ctx, err)
	}
	defer func() { _ = ch.Close() }()
	if _, err := ch.QueueDeclare(FailedQueue(c.o.Queue), true, false, false, false, nil); err != nil {
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
			return c.err(ctx, err)
		}
		// It exists, with other arguments: use it as it is.
	}
	c.failedDeclared = true
	return nil
}

// storeFailed publishes msg to <queue>.failed, declared first unless this worker has
// declared it already. A return says it was deleted since: it is declared again, once,
// and msg published again.
func (c *Consumer) storeFailed(ctx context.Context, msg amqp.Publishing) error {
	err := c.publishFailed(ctx, msg)
	if errors.Is(err, ErrUnroutable) {
		c.mu.Lock()
		c.failedDeclared = false
		c.mu.Unlock()
		err = c.publishFailed(ctx, msg)
	}
	return err
}

func (c *Consumer) publishFailed(ctx context.Context, msg amqp.Publishing) error {
	if err := c.declareFailed(ctx); err != nil {
		return err
	}
	if err := c.publisher().PublishConfirmed(ctx, FailedQueue(c.o.Queue), msg); err != nil {
		return c.err(ctx, err)
	}
	return nil
}

// publisher is the consuming channel's publisher.
func (c *Consumer) publisher() *Publisher {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pub
}

func (c *Consumer) Failed(ctx context.Context) ([][]byte, error) {
	if c.co.DeadLetter != queue.DeadLetterQueue {
		return nil, queue.ErrNotSupported
	}
	ch, err := c.conn.Channel()
	if err != nil {
		return nil, c.err(ctx, err)
	}
	// Closing the channel returns every message got without an ack to its place.
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(FailedQueue(c.o.Queue), false, false, false, false, nil)
	if err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return nil, nil
		}
		return nil, c.err(ctx, err)
	}
	var out [][]byte
	for range q.Messages {
		d, ok, err := ch.Get(FailedQueue(c.o.Queue), false)
		if err != nil {
			return nil, c.err(ctx, err)
		}
		if !ok {
			break
		}
		out = append(out, d.Body)
	}
	return out, nil
}

func (c *Consumer) RequeueFailed(ctx context.Context, n int) (int, error) {
	if c.co.DeadLetter != queue.DeadLetterQueue {
		return 0, queue.ErrNotSupported
	}
	ch, err := c.conn.Channel()
	if err != nil {
		return 0, c.err(ctx, err)
	}
	defer func() { _ = ch.Close() }()
	pub, err := NewPublisher(ch, 0)
	if err != nil {
		return 0, c.err(ctx, err)
	}
	moved := 0
	for n <= 0 || moved < n {
		d, ok, err := ch.Get(FailedQueue(c.o.Queue), false)
		if err != nil {
			var ae *amqp.Error
			if errors.As(err, &ae) && ae.Code == amqp.NotFound {
				return moved, nil
			}
			return moved, c.err(ctx, err)
		}
		if !ok {
			break
		}
		if err := pub.PublishConfirmed(ctx, c.o.Queue, copyOf(d, amqp.Table{HeaderAttempts: nil, HeaderError: nil})); err != nil {
			// Not stored (the queue deleted, say): it stays in <queue>.failed.
			_ = d.Nack(false, true)
			return moved, c.err(ctx, err)
		}
		if err := d.Ack(false); err != nil {
			return moved, c.err(ctx, err)
		}
		moved++
	}
	return moved, nil
}

// Close gives the messages delivered ahead and never handed out back to the queue
// uncounted, then closes the channel, the connection and the probe's connection; the
// broker requeues what was leased and not finished (an attempt on a quorum queue).
func (c *Consumer) Close() error {
	c.mu.Lock()
	ch, pending := c.ch, c.pending
	c.pending = nil
	c.mu.Unlock()
	var errs []error
	// Delivered and never handed out: back to the queue, uncounted.
	ctx, cancel := context.WithTimeout(context.Background(), queue.FinishTimeout)
	defer cancel()
	for _, d := range pending {
		errs = append(errs, c.giveBack(ctx, d))
	}
	if ch != nil {
		errs = append(errs, ch.Close())
	}
	errs = append(errs, c.conn.Close(), c.probe.Close())
	for i, err := range errs {
		if errors.Is(err, amqp.ErrClosed) {
			errs[i] = nil
		}
	}
	return errors.Join(errs...)
}

// rabbitLease is a delivered message.
type rabbitLease struct {
	c    *Consumer
	d    amqp.Delivery
	n    int
	done atomic.Bool
}

func (m *rabbitLease) Data() []byte                        { return m.d.Body }
func (m *rabbitLease) Attempt() int                        { return m.n }
func (m *rabbitLease) RenewEvery() time.Duration           { return 0 }
func (m *rabbitLease) Renew(context.Context) (bool, error) { return true, nil }

// settled counts the message as no longer held.
func (m *rabbitLease) settled() {
	if m.done.CompareAndSwap(false, true) {
		m.c.held.Add(-1)
	}
}

// result maps an error of an ack or nack: on a closed channel the broker has requeued
// the message already.
func (m *rabbitLease) result(ctx context.Context, err error) error {
	m.settled()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, amqp.ErrClosed):
		return queue.ErrLeaseLost
	}
	return m.c.err(ctx, err)
}

func (m *rabbitLease) Complete(ctx context.Context) error {
	return m.result(ctx, m.d.Ack(false))
}

func (m *rabbitLease) Release(ctx context.Context) error {
	return m.result(ctx, m.c.giveBack(ctx, m.d))
}

// giveBack returns a message to its queue without counting an attempt. A requeueing nack
// would count one on a quorum queue (its x-delivery-count grows with every return), so a
// worker shut down five times would dead-letter a message that never failed: the message
// is published again, to the queue's tail, with the attempts it had, and then acked. If
// the copy cannot be stored (refused, or returned: the queue was deleted), the original
// is requeued by a nack, counted or not.
func (c *Consumer) giveBack(ctx context.Context, d amqp.Delivery) error {
	var prior any
	if n := priorAttempts(d.Headers); n > 0 {
		prior = int32(n)
	}
	if err := c.publisher().PublishConfirmed(ctx, c.o.Queue, copyOf(d, amqp.Table{HeaderAttempts: prior})); err != nil {
		return d.Nack(false, true)
	}
	return d.Ack(false)
}

func (m *rabbitLease) Fail(ctx context.Context, cause error) (bool, error) {
	if max := m.c.co.MaxAttempts; max > 0 && m.n >= max {
		err := m.deadLetter(ctx, m.n, cause)
		return err == nil, err
	}
	// Back to the end of the queue with the attempt counted in the copy: a rejected and
	// requeued message keeps no count on a classic queue, and the quorum queues' count
	// cannot be told from a first delivery, which has none.
	msg := copyOf(m.d, amqp.Table{HeaderAttempts: int32(m.n)})
	if err := m.c.publisher().PublishConfirmed(ctx, m.c.o.Queue, msg); err != nil {
		// Not stored (refused, or returned: the queue was deleted): requeue the
		// original, uncounted, rather than lose it.
		_ = m.d.Nack(false, true)
		m.settled()
		return false, m.c.err(ctx, err)
	}
	return false, m.result(ctx, m.d.Ack(false))
}

// deadLetter dead-letters the message after attempts attempts.
func (m *rabbitLease) deadLetter(ctx context.Context, attempts int, cause error) error {
	if m.c.co.DeadLetter == queue.DeadLetterReject {
		return m.result(ctx, m.d.Nack(false, false))
	}
	msg := copyOf(m.d, amqp.Table{HeaderAttempts: int32(attempts), HeaderError: queue.CauseText(cause)})
	if err := m.c.storeFailed(ctx, msg); err != nil {
		// Not stored: back to the queue, for the next worker to dead-letter.
		_ = m.d.Nack(false, true)
		m.settled()
		return err
	}
	return m.result(ctx, m.d.Ack(false))
}
