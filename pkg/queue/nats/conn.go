package nats

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

var (
	_ queue.Conn   = (*Conn)(nil)
	_ queue.Reaper = (*Conn)(nil)
)

// Headers of the messages workers republish (failed, given back, reclaimed) and
// dead-letter.
const (
	// HeaderAttempts counts the attempts of a message's earlier copies: its attempt is
	// this plus the server's count of its deliveries (NumDelivered).
	HeaderAttempts = "Queuejob-Attempts"
	// HeaderError is the last failure's cause, on dead letters (queue.CauseText).
	HeaderError = "Queuejob-Error"
	// HeaderSubject is the subject a dead letter was published to first, where qj requeue
	// puts it back.
	HeaderSubject = "Queuejob-Subject"
)

// FailedStream is the dead-letter stream of stream: <stream>_failed, bound to
// FailedSubject(stream). Workers (and qj) create it when they first dead-letter.
func FailedStream(stream string) string { return stream + "_failed" }

// FailedSubject is the subject of stream's dead letters: queuejob.failed.<stream>.
func FailedSubject(stream string) string { return "queuejob.failed." + stream }

// Conn is the operator's probe connection to one stream's durable consumer. It connects
// on first use, and again after the connection broke.
type Conn struct {
	cl *client
}

// New returns a probe connection for o; it connects on first use.
func New(o Options) *Conn {
	return &Conn{cl: &client{o: o, name: "queuejob-operator probe"}}
}

// Probe counts the consumer's messages: ready are those not yet delivered (num_pending),
// in flight those delivered and not acknowledged (num_ack_pending: held by a worker, or
// whose lease expired and that wait to be delivered again), dead-lettered the messages of
// <stream>_failed. Without the consumer (no worker has run yet), the stream's messages are
// ready.
func (c *Conn) Probe(ctx context.Context) (queue.Counts, error) {
	ctx, cancel := c.cl.o.callCtx(ctx)
	defer cancel()
	_, js, err := c.cl.get()
	if err != nil {
		return queue.Counts{}, err
	}
	counts, _, err := probe(ctx, js, c.cl)
	if err != nil {
		err = natsFailure(c.cl.o, err)
		if queue.NoAnswer(err) {
			c.cl.drop()
		}
		return queue.Counts{}, err
	}
	return counts, nil
}

// probe counts, and returns the consumer's info (nil if it does not exist): the
// consumer's info and the dead-letter stream's, two requests; the stream's info when the
// consumer is missing (checked: the stream may have been created again), and on cl's
// first call and every streamCheckEvery (checkStream, checkConsumer).
func probe(ctx context.Context, js jetstream.JetStream, cl *client) (queue.Counts, *jetstream.ConsumerInfo, error) {
	o := cl.o
	stream, err := cl.stream.config(ctx, js, o)
	if err != nil {
		return queue.Counts{}, nil, err
	}
	var counts queue.Counts
	var ci *jetstream.ConsumerInfo
	cons, err := lookupConsumer(ctx, js, o, stream)
	cl.stream.forgetIfMissing(err)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		s, err := js.Stream(ctx, o.Stream)
		if err != nil {
			return queue.Counts{}, nil, err
		}
		if err := checkStream(o, s.CachedInfo().Config); err != nil {
			return queue.Counts{}, nil, err
		}
		counts.Ready = int64(s.CachedInfo().State.Msgs)
	case err != nil:
		return queue.Counts{}, nil, err
	default:
		ci = cons.CachedInfo()
		counts.Ready, counts.InFlight = int64(ci.NumPending), int64(ci.NumAckPending)
		counts.Redelivered = int64(ci.NumRedelivered)
	}
	failed, err := js.Stream(ctx, FailedStream(o.Stream))
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return queue.Counts{}, nil, err
	default:
		counts.DeadLettered = int64(failed.CachedInfo().State.Msgs)
	}
	return counts, ci, nil
}

// reapBatch bounds the messages one Reap returns to the queue.
const reapBatch = 256

// Reap returns to the queue the messages whose lease expired while no worker asked for
// more: the server redelivers such a message only to the next pull, and counts it in
// flight (num_ack_pending) until then, so that a queue whose workers all crashed would
// look busy for ever. Reap pulls only when nothing is ready: the server then delivers
// only messages whose AckWait passed (never one a live worker holds: its renewals keep
// the AckWait from passing), and each is republished at the tail with the attempts it had
// (the crashed deliveries count, the reaper's does not), then acknowledged. It pulls one
// message at a time, and only while half its call's time is left, and not at all while
// the stream is full (MaxMsgs or MaxBytes with discard new): a message pulled and then not
// republished keeps the reaper's delivery, which the next worker counts as an attempt.
// grace is not needed: the server starts the lease as it delivers. Nor is gone used:
// JetStream does not say which client holds a pending message, so a gone worker's
// messages come back when their AckWait passes.
func (c *Conn) Reap(ctx context.Context, _ time.Time, _ time.Duration, _ queue.GoneHolders) (int, error) {
	ctx, cancel := c.cl.o.callCtx(ctx)
	defer cancel()
	_, js, err := c.cl.get()
	if err != nil {
		return 0, err
	}
	n, err := reap(ctx, js, c.cl)
	if err != nil {
		err = natsFailure(c.cl.o, err)
		if queue.NoAnswer(err) {
			c.cl.drop()
		}
	}
	return n, err
}

func reap(ctx context.Context, js jetstream.JetStream, cl *client) (int, error) {
	o := cl.o
	stream, err := cl.stream.config(ctx, js, o)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	cons, err := lookupConsumer(ctx, js, o, stream)
	cl.stream.forgetIfMissing(err)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	ci := cons.CachedInfo()
	if ci.NumPending > 0 || ci.NumAckPending == 0 {
		return 0, nil
	}
	if full, err := streamFull(ctx, js, o); err != nil || full {
		return 0, err
	}
	return reapMessages(ctx, js, o, cons, int(min(ci.NumAckPending, reapBatch)))
}

// streamFull says whether o's stream would refuse a copy: it discards new messages and
// holds MaxMsgs messages, or MaxBytes bytes.
func streamFull(ctx context.Context, js jetstream.JetStream, o Options) (bool, error) {
	s, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return false, err
	}
	info := s.CachedInfo()
	cfg, state := info.Config, info.State
	return cfg.Discard == jetstream.DiscardNew && (cfg.MaxMsgs > 0 && state.Msgs >= uint64(cfg.MaxMsgs) ||
		cfg.MaxBytes > 0 && state.Bytes >= uint64(cfg.MaxBytes)), nil
}

// reapMessages pulls and republishes up to most expired messages, one at a time while
// half of o's timeout is left before ctx's deadline, and counts them. A message delivered
// for the first time (published after Reap saw nothing ready) is republished too, not
// counted, and ends the reap: the queue has ready items again.
func reapMessages(ctx context.Context, js jetstream.JetStream, o Options, cons jetstream.Consumer, most int) (int, error) {
	n := 0
	for ; n < most && timeLeft(ctx, o.timeout()/2); n++ {
		batch, err := cons.FetchNoWait(1)
		if err != nil {
			return n, err
		}
		m := <-batch.Messages()
		if m == nil {
			return n, batch.Error()
		}
		meta, err := m.Metadata()
		if err != nil {
			return n, err
		}
		if err := requeueCopy(ctx, js, o, m, priorAttempts(m)+int(meta.NumDelivered)-1); err != nil {
			return n, err
		}
		if meta.NumDelivered <= 1 {
			return n, nil
		}
	}
	return n, nil
}

// timeLeft says whether at least d is left before ctx's deadline.
func timeLeft(ctx context.Context, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return ctx.Err() == nil && (!ok || time.Until(deadline) >= d)
}

// priorAttempts is HeaderAttempts of m, 0 if it has none.
func priorAttempts(m jetstream.Msg) int {
	n, err := strconv.Atoi(m.Headers().Get(HeaderAttempts))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// copyOf is m to publish again to subject, its headers changed by set (an empty value
// deletes) and without the headers of the server's (Nats-*: a Nats-Msg-Id would make
// the copy a duplicate the server drops).
func copyOf(m jetstream.Msg, subject string, set map[string]string) *natsgo.Msg {
	return &natsgo.Msg{Subject: subject, Header: headersOf(m.Headers(), set), Data: m.Data()}
}

// rawCopy is a dead letter to publish again to subject, without its attempts, cause and
// first subject.
func rawCopy(m *jetstream.RawStreamMsg, subject string) *natsgo.Msg {
	set := map[string]string{HeaderAttempts: "", HeaderError: "", HeaderSubject: ""}
	return &natsgo.Msg{Subject: subject, Header: headersOf(m.Header, set), Data: m.Data}
}

// headersOf is h changed by set, without the server's headers.
func headersOf(in natsgo.Header, set map[string]string) natsgo.Header {
	h := natsgo.Header{}
	for k, vs := range in {
		if !strings.HasPrefix(strings.ToLower(k), "nats-") {
			h[k] = vs
		}
	}
	for k, v := range set {
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
	}
	return h
}

// requeueCopy republishes m at the tail of its stream with attempts attempts, waiting for
// the server's acknowledgement, and only then acknowledges m: a crash between the two
// leaves a duplicate, never a loss.
func requeueCopy(ctx context.Context, js jetstream.JetStream, o Options, m jetstream.Msg, attempts int) error {
	set := map[string]string{HeaderAttempts: strconv.Itoa(attempts)}
	if attempts <= 0 {
		set[HeaderAttempts] = ""
	}
	if _, err := js.PublishMsg(ctx, copyOf(m, m.Subject(), set), jetstream.WithExpectStream(o.Stream)); err != nil {
		return err
	}
	return m.DoubleAck(ctx)
}

func (c *Conn) Close() error { return c.cl.close() }
