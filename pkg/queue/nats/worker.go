package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

var _ queue.Consumer = (*Consumer)(nil)

// Consumer is the worker side of a stream's durable pull consumer (created if missing):
// it pulls one message at a time; renews with AckProgress; completes with a confirmed ack;
// fails, gives back and dead-letters by confirmed republishes (then acks the original).
// pkg/worker drives it.
type Consumer struct {
	o  Options
	co queue.ConsumerOptions
	cl *client

	mu   sync.Mutex
	cons jetstream.Consumer
	// consNC is the connection cons was looked up on: a new connection looks it up again.
	consNC *natsgo.Conn
	// ackWait is the consumer's AckWait, the lease.
	ackWait time.Duration
	// failedReady: <stream>_failed is known to exist.
	failedReady bool
}

// NewConsumer connects at once and makes sure the durable consumer exists, so that a
// wrong URL, credential, certificate or stream fails here with a message that says what
// to fix. A consumer it creates has AckWait o.AckWait (co.LeaseTTL if zero).
func NewConsumer(ctx context.Context, o Options, co queue.ConsumerOptions) (*Consumer, error) {
	co = co.WithDefaults()
	if o.AckWait <= 0 {
		o.AckWait = co.LeaseTTL
	}
	c := &Consumer{o: o, co: co, cl: &client{o: o, name: "queuejob-worker " + co.Session}}
	if _, err := c.consumer(ctx); err != nil {
		_ = c.cl.close()
		return nil, err
	}
	return c, nil
}

func (c *Consumer) err(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("worker: %w", ClientError(c.o, err))
}

// consumer is the durable consumer, looked up (or created) on the live connection.
func (c *Consumer) consumer(ctx context.Context) (jetstream.Consumer, error) {
	nc, js, err := c.cl.get()
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cons != nil && c.consNC == nc {
		return c.cons, nil
	}
	cctx, cancel := c.o.callCtx(ctx)
	defer cancel()
	cons, err := EnsureConsumer(cctx, js, c.o)
	if err != nil {
		return nil, c.err(ctx, err)
	}
	ci := cons.CachedInfo()
	c.cons, c.consNC, c.ackWait = cons, nc, ci.Config.AckWait
	if ci.Config.AckWait != c.o.AckWait {
		c.co.Logger.Info("The consumer's AckWait differs from the lease asked for: the consumer's is used",
			"stream", c.o.Stream, "consumer", c.o.Consumer, "ackWait", ci.Config.AckWait, "asked", c.o.AckWait)
	}
	return cons, nil
}

// EnsureConsumer returns the durable pull consumer of o, created if it is missing (explicit
// acks, AckWait o.AckWait, unlimited deliveries: workers dead-letter after their own
// MaxAttempts). The stream must be a work queue, and an existing consumer one the counts
// can trust (checkStream, checkConsumer: ReasonWrongType otherwise); its AckWait is kept.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, o Options) (jetstream.Consumer, error) {
	s, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return nil, err
	}
	stream := s.CachedInfo().Config
	if err := checkStream(o, stream); err != nil {
		return nil, err
	}
	cons, err := lookupConsumer(ctx, js, o, stream)
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return cons, err
	}
	cons, err = js.CreateConsumer(ctx, o.Stream, jetstream.ConsumerConfig{
		Durable: o.Consumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: o.ackWait(),
		MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
		Description: "queuejob-operator workers",
	})
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return lookupConsumer(ctx, js, o, stream) // another worker was first
	}
	return cons, err
}

// forget drops the consumer and the connection after an error of the connection: the next
// call dials again.
func (c *Consumer) forget(err error) {
	if queue.ReasonOf(err) != queue.ReasonConnectionFailed {
		return
	}
	c.mu.Lock()
	c.cons = nil
	c.mu.Unlock()
	c.cl.drop()
}

func (c *Consumer) Take(ctx context.Context, wait time.Duration) (queue.Lease, error) {
	deadline := time.Now().Add(wait)
	for {
		sent := time.Now()
		m, err := c.pull(ctx, time.Until(deadline))
		if err != nil || m == nil {
			return nil, err
		}
		meta, err := m.Metadata()
		if err != nil {
			return nil, c.err(ctx, err)
		}
		l := &lease{c: c, m: m, n: priorAttempts(m) + int(meta.NumDelivered), renewed: queue.LeaseStart(sent, time.Now(), c.ackWait)}
		if max := c.co.MaxAttempts; max > 0 && l.n > max {
			// Delivered more often than its attempts allow (its workers crashed): dead-letter
			// it without handing it out.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queue.FinishTimeout)
			err := l.deadLetter(dctx, l.n-1, errors.New("delivered too often (its workers crashed?)"))
			cancel()
			if err != nil {
				return nil, err
			}
			c.co.Logger.Warn("Dead-lettered a message that was delivered more often than MaxAttempts allows",
				"attempts", l.n-1, "stream", c.o.Stream, "consumer", c.o.Consumer)
			continue
		}
		return l, nil
	}
}

// minPull is the shortest pull request's expiry.
const minPull = 10 * time.Millisecond

// pull asks the server for one message, waiting up to wait (not at all if wait <= 0).
func (c *Consumer) pull(ctx context.Context, wait time.Duration) (jetstream.Msg, error) {
	cons, err := c.consumer(ctx)
	if err != nil {
		return nil, err
	}
	var batch jetstream.MessageBatch
	if wait <= minPull {
		batch, err = cons.FetchNoWait(1)
	} else {
		fctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		batch, err = cons.Fetch(1, jetstream.FetchContext(fctx))
	}
	if err != nil {
		err = c.err(ctx, err)
		c.forget(err)
		return nil, err
	}
	var got jetstream.Msg
	for m := range batch.Messages() {
		got = m
	}
	if got != nil {
		return got, nil
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, natsgo.ErrTimeout) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		err = c.err(ctx, err)
		c.forget(err)
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if c.cl.broken() {
		// The pull ended without a message because the connection closed.
		err := c.err(ctx, natsgo.ErrConnectionClosed)
		c.forget(err)
		return nil, err
	}
	return nil, nil
}

func (c *Consumer) Empty(ctx context.Context) (bool, error) {
	_, js, err := c.cl.get()
	if err != nil {
		return false, fmt.Errorf("worker: %w", err)
	}
	cctx, cancel := c.o.callCtx(ctx)
	defer cancel()
	counts, _, err := probe(cctx, js, c.cl)
	if err != nil {
		err = c.err(ctx, err)
		c.forget(err)
		return false, err
	}
	return counts.Ready == 0 && counts.InFlight == 0, nil
}

// StopTaking does nothing: a pull consumer gets nothing it did not ask for.
func (c *Consumer) StopTaking() {}

// Close closes the connection. Messages still held come back once their AckWait passed
// (to the next pull, or to the queue by the operator's Reap), their attempt counted.
func (c *Consumer) Close() error { return c.cl.close() }

// lease is a message taken and not yet finished.
type lease struct {
	c *Consumer
	m jetstream.Msg
	n int

	mu sync.Mutex
	// renewed is when the lease last started or was renewed, at the earliest.
	renewed time.Time
}

func (l *lease) Data() []byte              { return l.m.Data() }
func (l *lease) Attempt() int              { return l.n }
func (l *lease) RenewEvery() time.Duration { return l.c.ackWait / 3 }

// expired says whether the AckWait, less the margin, passed since the lease started or
// was renewed (measured from before the request): the server may have delivered the
// message to another worker.
func (l *lease) expired() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return queue.LeaseExpired(l.renewed, l.c.ackWait)
}

// Renew sends AckProgress and waits for the server's answer: the AckWait starts again.
func (l *lease) Renew(ctx context.Context) (bool, error) {
	if l.expired() {
		return false, nil
	}
	sent := time.Now()
	nc, _, err := l.c.cl.get()
	if err != nil {
		return false, fmt.Errorf("worker: %w", err)
	}
	rctx, cancel := l.c.o.callCtx(ctx)
	defer cancel()
	if _, err := nc.RequestWithContext(rctx, l.m.Reply(), []byte("+WPI")); err != nil {
		return false, l.c.err(ctx, err)
	}
	l.mu.Lock()
	l.renewed = sent
	l.mu.Unlock()
	return true, nil
}

// finish runs f on the message unless its lease expired (queue.ErrLeaseLost).
func (l *lease) finish(ctx context.Context, f func(ctx context.Context, js jetstream.JetStream) error) error {
	if l.expired() {
		return queue.ErrLeaseLost
	}
	_, js, err := l.c.cl.get()
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	fctx, cancel := l.c.o.callCtx(ctx)
	defer cancel()
	if err := f(fctx, js); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotBound) || errors.Is(err, natsgo.ErrConnectionClosed) {
			return fmt.Errorf("worker: %w: %w", queue.ErrLeaseLost, ClientError(l.c.o, err))
		}
		err = l.c.err(ctx, err)
		l.c.forget(err)
		return err
	}
	return nil
}

// Complete acknowledges the message and waits for the server's answer.
func (l *lease) Complete(ctx context.Context) error {
	return l.finish(ctx, func(ctx context.Context, _ jetstream.JetStream) error { return l.m.DoubleAck(ctx) })
}

// Fail republishes the message at the stream's tail with its attempts counted, or
// dead-letters it after MaxAttempts (true only once the dead letter is stored).
func (l *lease) Fail(ctx context.Context, cause error) (bool, error) {
	if max := l.c.co.MaxAttempts; max > 0 && l.n >= max {
		err := l.deadLetter(ctx, l.n, cause)
		return err == nil, err
	}
	return false, l.finish(ctx, func(ctx context.Context, js jetstream.JetStream) error {
		return requeueCopy(ctx, js, l.c.o, l.m, l.n)
	})
}

// Release republishes the message at the stream's tail with this attempt given back
// (the server's delivery count cannot be lowered; the copy's HeaderAttempts is one less).
func (l *lease) Release(ctx context.Context) error {
	return l.finish(ctx, func(ctx context.Context, js jetstream.JetStream) error {
		return requeueCopy(ctx, js, l.c.o, l.m, l.n-1)
	})
}

// deadLetter publishes the message to <stream>_failed (created if missing) with its
// attempts and cause, then acknowledges it. A dead-letter stream deleted since it was
// last seen is created again (the publish found no stream: the cache is reset, once).
func (l *lease) deadLetter(ctx context.Context, attempts int, cause error) error {
	return l.finish(ctx, func(ctx context.Context, js jetstream.JetStream) error {
		msg := copyOf(l.m, FailedSubject(l.c.o.Stream), map[string]string{
			HeaderAttempts: strconv.Itoa(attempts), HeaderError: headerValue(queue.CauseText(cause)),
			HeaderSubject: l.m.Subject(),
		})
		err := l.c.publishFailed(ctx, js, msg)
		if noStream(err) {
			l.c.mu.Lock()
			l.c.failedReady = false
			l.c.mu.Unlock()
			err = l.c.publishFailed(ctx, js, msg)
		}
		if err != nil {
			return err
		}
		return l.m.DoubleAck(ctx)
	})
}

// publishFailed publishes msg to <stream>_failed, created if missing.
func (c *Consumer) publishFailed(ctx context.Context, js jetstream.JetStream, msg *natsgo.Msg) error {
	if err := c.ensureFailed(ctx, js); err != nil {
		return err
	}
	_, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(FailedStream(c.o.Stream)))
	return err
}

// noStream says whether a publish found no stream to store it.
func noStream(err error) bool {
	return errors.Is(err, natsgo.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}

// headerValue is s on one line, as a header value must be.
func headerValue(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

func (c *Consumer) ensureFailed(ctx context.Context, js jetstream.JetStream) error {
	c.mu.Lock()
	ready := c.failedReady
	c.mu.Unlock()
	if ready {
		return nil
	}
	if err := EnsureFailedStream(ctx, js, c.o.Stream); err != nil {
		return err
	}
	c.mu.Lock()
	c.failedReady = true
	c.mu.Unlock()
	return nil
}

// EnsureFailedStream creates <stream>_failed, bound to queuejob.failed.<stream>, if it is
// missing: file storage, messages kept until requeued or deleted.
func EnsureFailedStream(ctx context.Context, js jetstream.JetStream, stream string) error {
	_, err := js.Stream(ctx, FailedStream(stream))
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: FailedStream(stream), Subjects: []string{FailedSubject(stream)}, Storage: jetstream.FileStorage,
		Description: "queuejob-operator: the dead letters of stream " + stream,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil
	}
	return err
}
