package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
)

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

// FailedQueue is the queue RabbitMQ workers dead-letter to with DeadLetterQueue.
func FailedQueue(queueName string) string { return rabbitmq.FailedQueue(queueName) }

// rabbitBackend consumes one RabbitMQ queue.
type rabbitBackend struct {
	w     *Worker
	o     rabbitmq.Options
	conn  *amqp.Connection
	probe *rabbitmq.Conn

	mu sync.Mutex
	// ch is the consuming channel, nil until the first take; pub republishes failed
	// and returned messages on it.
	ch         *amqp.Channel
	pub        *rabbitmq.Publisher
	deliveries <-chan amqp.Delivery
	// consuming: the consumer is on (stopConsuming cancels it; the next take starts
	// it again).
	consuming bool
	// failedDeclared: <queue>.failed is known to exist.
	failedDeclared bool
	// pending are messages delivered to the consumer and read from it by empty, for take.
	pending []amqp.Delivery
	// held counts the messages delivered and not yet finished.
	held atomic.Int64
}

func newRabbitBackend(ctx context.Context, w *Worker) (*rabbitBackend, error) {
	o := w.opts.RabbitMQ
	conn, err := rabbitmq.Dial(ctx, o, "queuejob-worker "+w.opts.Session)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	return &rabbitBackend{w: w, o: o, conn: conn, probe: rabbitmq.New(o)}, nil
}

func (b *rabbitBackend) err(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("worker: %w", rabbitmq.ClientError(b.o, err))
}

// consume opens the channel and starts the consumer on first use, and again after
// stopConsuming.
func (b *rabbitBackend) consume(ctx context.Context) (<-chan amqp.Delivery, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.consuming {
		return b.deliveries, nil
	}
	if b.ch == nil {
		ch, err := b.conn.Channel()
		if err != nil {
			return nil, b.err(ctx, err)
		}
		if err := ch.Qos(b.w.opts.Prefetch, 0, false); err != nil {
			return nil, b.err(ctx, err)
		}
		pub, err := rabbitmq.NewPublisher(ch, 0)
		if err != nil {
			return nil, b.err(ctx, err)
		}
		b.ch, b.pub = ch, pub
	}
	d, err := b.ch.Consume(b.o.Queue, b.w.opts.Session, false, false, false, false, nil)
	if err != nil {
		return nil, b.err(ctx, err)
	}
	b.deliveries, b.consuming = d, true
	return d, nil
}

// stopTaking cancels the consumer, so that the broker delivers nothing more: a message
// returned on shutdown would otherwise come straight back to this worker, and a message
// delivered and returned counts a delivery on a quorum queue.
//
// Messages the broker delivered before the cancel (prefetched, up to Prefetch) are still
// on their way through amqp091's buffer, which it flushes and then closes once the
// consumer is cancelled: they are kept in pending, handed out by the next take, and
// returned by close, so that none is stranded, unacknowledged, on the channel.
func (b *rabbitBackend) stopTaking() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.consuming {
		return
	}
	b.consuming = false
	if err := b.ch.Cancel(b.w.opts.Session, false); err != nil {
		return // the channel is gone, and its messages are back in the queue
	}
	t := time.NewTimer(drainCancelled)
	defer t.Stop()
	for {
		select {
		case d, ok := <-b.deliveries:
			if !ok {
				return
			}
			b.pending = append(b.pending, d)
		case <-t.C:
			return
		}
	}
}

// drainCancelled bounds how long stopTaking waits for amqp091 to flush the deliveries of a
// cancelled consumer.
const drainCancelled = 5 * time.Second

var errChannelClosed = errors.New("worker: the RabbitMQ channel was closed (connection lost?)")

func (b *rabbitBackend) take(ctx context.Context, wait time.Duration) (held, error) {
	deliveries, err := b.consume(ctx)
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
		b.mu.Lock()
		if len(b.pending) > 0 {
			d, ok = b.pending[0], true
			b.pending = b.pending[1:]
		}
		b.mu.Unlock()
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
		b.held.Add(1)
		m := &rabbitItem{b: b, d: d, n: priorAttempts(d.Headers) + 1}
		if max := b.w.opts.MaxAttempts; max > 0 && m.n > max {
			// Returned more than its attempts allow (its consumers went away with it, on a
			// quorum queue): dead-letter it without handing it out.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
			err := m.deadLetter(dctx, m.n-1, errors.New("returned to the queue too often (its workers crashed?)"))
			cancel()
			if err != nil {
				return nil, err
			}
			b.w.log.Warn("Dead-lettered a message that was returned to the queue more often than MaxAttempts allows",
				"attempts", m.n-1, "queue", b.o.Queue)
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

// drainWait bounds how long empty waits for a message that the broker delivered before it
// counted the queue, on its way through amqp091's buffer.
const drainWait = 250 * time.Millisecond

func (b *rabbitBackend) empty(ctx context.Context) (bool, error) {
	b.mu.Lock()
	kept := len(b.pending)
	b.mu.Unlock()
	if kept > 0 {
		return false, nil // delivered to this worker, not yet handed out
	}
	deliveries, err := b.consume(ctx)
	if err != nil {
		return false, err
	}
	// Count the ready messages on the consuming channel: the broker sends every message
	// it delivered to this consumer before its answer, so once the answer is here, a
	// message the count misses because it is on its way to this worker is in amqp091's
	// buffer, and a short wait gets it (kept for the next take).
	b.mu.Lock()
	ch := b.ch
	b.mu.Unlock()
	q, err := ch.QueueDeclarePassive(b.o.Queue, false, false, false, false, nil)
	if err != nil {
		return false, b.err(ctx, err)
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
		b.mu.Lock()
		b.pending = append(b.pending, d)
		b.mu.Unlock()
		return false, nil
	case <-t.C:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	if b.held.Load() > 0 {
		return false, nil
	}
	if b.o.ManagementURL == "" {
		return true, nil
	}
	// Other workers' messages in flight, by the management API.
	c, err := b.probe.Probe(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("worker: %w", err)
	}
	return c.Ready == 0 && c.InFlight == 0 && !c.InFlightUnknown, nil
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
func (b *rabbitBackend) declareFailed(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failedDeclared {
		return nil
	}
	ch, err := b.conn.Channel()
	if err != nil {
		return b.err(ctx, err)
	}
	defer func() { _ = ch.Close() }()
	if _, err := ch.QueueDeclare(FailedQueue(b.o.Queue), true, false, false, false, nil); err != nil {
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
			return b.err(ctx, err)
		}
		// It exists, with other arguments: use it as it is.
	}
	b.failedDeclared = true
	return nil
}

// storeFailed publishes msg to <queue>.failed, declared first unless this worker has
// declared it already. A return says it was deleted since: it is declared again, once,
// and msg published again.
func (b *rabbitBackend) storeFailed(ctx context.Context, msg amqp.Publishing) error {
	err := b.publishFailed(ctx, msg)
	if errors.Is(err, rabbitmq.ErrUnroutable) {
		b.mu.Lock()
		b.failedDeclared = false
		b.mu.Unlock()
		err = b.publishFailed(ctx, msg)
	}
	return err
}

func (b *rabbitBackend) publishFailed(ctx context.Context, msg amqp.Publishing) error {
	if err := b.declareFailed(ctx); err != nil {
		return err
	}
	if err := b.publisher().PublishConfirmed(ctx, FailedQueue(b.o.Queue), msg); err != nil {
		return b.err(ctx, err)
	}
	return nil
}

// publisher is the consuming channel's publisher.
func (b *rabbitBackend) publisher() *rabbitmq.Publisher {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pub
}

func (b *rabbitBackend) failed(ctx context.Context) ([][]byte, error) {
	if b.w.opts.DeadLetter != DeadLetterQueue {
		return nil, ErrNotSupported
	}
	ch, err := b.conn.Channel()
	if err != nil {
		return nil, b.err(ctx, err)
	}
	// Closing the channel returns every message got without an ack to its place.
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(FailedQueue(b.o.Queue), false, false, false, false, nil)
	if err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return nil, nil
		}
		return nil, b.err(ctx, err)
	}
	var out [][]byte
	for range q.Messages {
		d, ok, err := ch.Get(FailedQueue(b.o.Queue), false)
		if err != nil {
			return nil, b.err(ctx, err)
		}
		if !ok {
			break
		}
		out = append(out, d.Body)
	}
	return out, nil
}

func (b *rabbitBackend) requeueFailed(ctx context.Context, n int) (int, error) {
	if b.w.opts.DeadLetter != DeadLetterQueue {
		return 0, ErrNotSupported
	}
	ch, err := b.conn.Channel()
	if err != nil {
		return 0, b.err(ctx, err)
	}
	defer func() { _ = ch.Close() }()
	pub, err := rabbitmq.NewPublisher(ch, 0)
	if err != nil {
		return 0, b.err(ctx, err)
	}
	moved := 0
	for n <= 0 || moved < n {
		d, ok, err := ch.Get(FailedQueue(b.o.Queue), false)
		if err != nil {
			var ae *amqp.Error
			if errors.As(err, &ae) && ae.Code == amqp.NotFound {
				return moved, nil
			}
			return moved, b.err(ctx, err)
		}
		if !ok {
			break
		}
		if err := pub.PublishConfirmed(ctx, b.o.Queue, copyOf(d, amqp.Table{HeaderAttempts: nil, HeaderError: nil})); err != nil {
			// Not stored (the queue deleted, say): it stays in <queue>.failed.
			_ = d.Nack(false, true)
			return moved, b.err(ctx, err)
		}
		if err := d.Ack(false); err != nil {
			return moved, b.err(ctx, err)
		}
		moved++
	}
	return moved, nil
}

func (b *rabbitBackend) close() error {
	b.mu.Lock()
	ch, pending := b.ch, b.pending
	b.pending = nil
	b.mu.Unlock()
	var errs []error
	// Delivered and never handed out: back to the queue, uncounted.
	ctx, cancel := context.WithTimeout(context.Background(), finishTimeout)
	defer cancel()
	for _, d := range pending {
		errs = append(errs, b.giveBack(ctx, d))
	}
	if ch != nil {
		errs = append(errs, ch.Close())
	}
	errs = append(errs, b.conn.Close(), b.probe.Close())
	for i, err := range errs {
		if errors.Is(err, amqp.ErrClosed) {
			errs[i] = nil
		}
	}
	return errors.Join(errs...)
}

// rabbitItem is a delivered message.
type rabbitItem struct {
	b    *rabbitBackend
	d    amqp.Delivery
	n    int
	done atomic.Bool
}

func (m *rabbitItem) data() []byte                        { return m.d.Body }
func (m *rabbitItem) attempt() int                        { return m.n }
func (m *rabbitItem) renewEvery() time.Duration           { return 0 }
func (m *rabbitItem) renew(context.Context) (bool, error) { return true, nil }

// settled counts the message as no longer held.
func (m *rabbitItem) settled() {
	if m.done.CompareAndSwap(false, true) {
		m.b.held.Add(-1)
	}
}

// result maps an error of an ack or nack: on a closed channel the broker has requeued
// the message already.
func (m *rabbitItem) result(ctx context.Context, err error) error {
	m.settled()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, amqp.ErrClosed):
		return ErrLeaseLost
	}
	return m.b.err(ctx, err)
}

func (m *rabbitItem) complete(ctx context.Context) error {
	return m.result(ctx, m.d.Ack(false))
}

func (m *rabbitItem) release(ctx context.Context) error {
	return m.result(ctx, m.b.giveBack(ctx, m.d))
}

// giveBack returns a message to its queue without counting an attempt. A requeueing nack
// would count one on a quorum queue (its x-delivery-count grows with every return), so a
// worker shut down five times would dead-letter a message that never failed: the message
// is published again, to the queue's tail, with the attempts it had, and then acked. If
// the copy cannot be stored (refused, or returned: the queue was deleted), the original
// is requeued by a nack, counted or not.
func (b *rabbitBackend) giveBack(ctx context.Context, d amqp.Delivery) error {
	var prior any
	if n := priorAttempts(d.Headers); n > 0 {
		prior = int32(n)
	}
	if err := b.publisher().PublishConfirmed(ctx, b.o.Queue, copyOf(d, amqp.Table{HeaderAttempts: prior})); err != nil {
		return d.Nack(false, true)
	}
	return d.Ack(false)
}

func (m *rabbitItem) fail(ctx context.Context, cause error) (bool, error) {
	if max := m.b.w.opts.MaxAttempts; max > 0 && m.n >= max {
		err := m.deadLetter(ctx, m.n, cause)
		return err == nil, err
	}
	// Back to the end of the queue with the attempt counted in the copy: a rejected and
	// requeued message keeps no count on a classic queue, and the quorum queues' count
	// cannot be told from a first delivery, which has none.
	msg := copyOf(m.d, amqp.Table{HeaderAttempts: int32(m.n)})
	if err := m.b.publisher().PublishConfirmed(ctx, m.b.o.Queue, msg); err != nil {
		// Not stored (refused, or returned: the queue was deleted): requeue the
		// original, uncounted, rather than lose it.
		_ = m.d.Nack(false, true)
		m.settled()
		return false, m.b.err(ctx, err)
	}
	return false, m.result(ctx, m.d.Ack(false))
}

// deadLetter dead-letters the message after attempts attempts.
func (m *rabbitItem) deadLetter(ctx context.Context, attempts int, cause error) error {
	if m.b.w.opts.DeadLetter == DeadLetterReject {
		return m.result(ctx, m.d.Nack(false, false))
	}
	msg := copyOf(m.d, amqp.Table{HeaderAttempts: int32(attempts), HeaderError: errText(cause)})
	if err := m.b.storeFailed(ctx, msg); err != nil {
		// Not stored: back to the queue, for the next worker to dead-letter.
		_ = m.d.Nack(false, true)
		m.settled()
		return err
	}
	return m.result(ctx, m.d.Ack(false))
}
