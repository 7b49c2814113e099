package nats

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

var (
	_ queue.Admin    = (*Admin)(nil)
	_ queue.Declarer = (*Admin)(nil)
)

// enqueueBatch is how many publishes Admin.Enqueue has in flight before it waits for the
// server's acknowledgements.
const enqueueBatch = 256

// Admin is qj's side of a stream's durable consumer: enqueue (creating the stream with
// --declare, and the consumer if missing), inspect, count the dead letters.
type Admin struct {
	o  Options
	cl *client
}

// NewAdmin returns qj's side of the stream of o, each call bounded by timeout.
func NewAdmin(o Options, timeout time.Duration) *Admin {
	o.Timeout = timeout
	return &Admin{o: o, cl: &client{o: o, name: "qj"}}
}

// Probe counts with the operator's probe; inFlight changes nothing (the consumer's info
// has every count).
func (a *Admin) Probe(ctx context.Context, _ bool) (queue.Counts, error) {
	p := New(a.o)
	defer func() { _ = p.Close() }()
	return p.Probe(ctx)
}

// Open connects.
func (a *Admin) Open(context.Context) error {
	_, _, err := a.cl.get()
	return err
}

func (a *Admin) js() (jetstream.JetStream, error) {
	_, js, err := a.cl.get()
	return js, err
}

// Declare creates the stream if it is missing: file storage, work-queue retention (a
// message is deleted once acknowledged), bound to the subject of --nats-subject, or to
// the stream's name.
func (a *Admin) Declare(ctx context.Context) error {
	js, err := a.js()
	if err != nil {
		return err
	}
	subject := a.o.Subject
	if subject == "" {
		subject = a.o.Stream
	}
	ctx, cancel := a.o.callCtx(ctx)
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: a.o.Stream, Subjects: []string{subject}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy, Description: "queuejob-operator work queue",
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("creating stream %q: %w", a.o.Stream, ClientError(a.o, err))
	}
	return nil
}

// Enqueue publishes the items to the stream's subject, in order, each acknowledged by the
// server (a stream is first in, first out: o.FIFO is not supported), after making sure
// the durable consumer exists.
func (a *Admin) Enqueue(ctx context.Context, next func() (string, error), added func(int64), o queue.EnqueueOptions) (pushed, unsure int64, err error) {
	if o.FIFO {
		return 0, 0, queue.ErrNotSupported
	}
	js, err := a.js()
	if err != nil {
		return 0, 0, err
	}
	cctx, cancel := a.o.callCtx(ctx)
	subject, err := publishSubject(cctx, js, a.o)
	if err == nil {
		_, err = EnsureConsumer(cctx, js, a.o)
	}
	cancel()
	if err != nil {
		return 0, 0, ClientError(a.o, err)
	}
	e := &ackedEnqueue{a: a, added: added}
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
		f, err := js.PublishMsgAsync(&natsgo.Msg{Subject: subject, Data: []byte(item)}, jetstream.WithExpectStream(a.o.Stream))
		if err != nil {
			werr := e.wait(ctx)
			e.unsure++
			if werr != nil {
				return e.pushed, e.unsure, werr
			}
			return e.pushed, e.unsure, ClientError(a.o, err)
		}
		e.pending = append(e.pending, f)
		if len(e.pending) == enqueueBatch {
			if err := e.wait(ctx); err != nil {
				return e.pushed, e.unsure, err
			}
		}
	}
	return e.pushed, e.unsure, e.wait(ctx)
}

// ackedEnqueue counts the publishes of Enqueue the server acknowledged.
type ackedEnqueue struct {
	a              *Admin
	added          func(int64)
	pending        []jetstream.PubAckFuture
	pushed, unsure int64
}

// wait waits for the acknowledgements of the pending publishes, in order.
func (e *ackedEnqueue) wait(ctx context.Context) error {
	defer func() { e.pending = e.pending[:0] }()
	for i, f := range e.pending {
		var err error
		select {
		case <-f.Ok():
		case err = <-f.Err():
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(e.a.o.timeout()):
			err = natsgo.ErrTimeout
		}
		if err != nil {
			e.unsure += int64(len(e.pending) - i)
			return fmt.Errorf("waiting for the server's acknowledgements: %w", ClientError(e.a.o, err))
		}
		e.pushed++
		e.added(1)
	}
	return nil
}

// Inspection is what qj inspect shows of a stream's durable consumer.
type Inspection struct {
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	// ConsumerMissing: no worker (nor qj enqueue) has created the consumer yet; Ready is
	// the stream's messages.
	ConsumerMissing bool  `json:"consumerMissing,omitempty"`
	Ready           int64 `json:"ready"`
	// InFlight are the messages delivered and not acknowledged (num_ack_pending);
	// Redelivered those of them delivered more than once (num_redelivered); Waiting the
	// workers' pull requests waiting for a message.
	InFlight    int64  `json:"inFlight"`
	Redelivered int64  `json:"redelivered"`
	Waiting     int64  `json:"waiting"`
	AckWait     string `json:"ackWait,omitempty"`
	// Next are the next ready items (at most the limit), oldest first.
	Next         []string `json:"next,omitempty"`
	FailedStream string   `json:"failedStream"`
	Failed       int64    `json:"failed"`
}

// Inspect reads the consumer's info and the next ready items.
func (a *Admin) Inspect(ctx context.Context, limit int64, counts queue.Counts) (any, error) {
	js, err := a.js()
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.o.callCtx(ctx)
	defer cancel()
	_, ci, err := probe(ctx, js, a.cl)
	if err != nil {
		return nil, ClientError(a.o, err)
	}
	in := &Inspection{Stream: a.o.Stream, Consumer: a.o.Consumer, Ready: counts.Ready, InFlight: counts.InFlight,
		FailedStream: FailedStream(a.o.Stream), Failed: counts.DeadLettered, ConsumerMissing: ci == nil}
	from := uint64(1)
	if ci != nil {
		in.Redelivered, in.Waiting = int64(ci.NumRedelivered), int64(ci.NumWaiting)
		in.AckWait = ci.Config.AckWait.String()
		from = ci.Delivered.Stream + 1
	}
	if in.Next, err = nextItems(ctx, js, a.o, from, limit); err != nil {
		return nil, ClientError(a.o, err)
	}
	return in, nil
}

// nextItems reads up to limit messages of the stream from sequence from on.
func nextItems(ctx context.Context, js jetstream.JetStream, o Options, from uint64, limit int64) ([]string, error) {
	s, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return nil, err
	}
	var out []string
	for seq := max(from, s.CachedInfo().State.FirstSeq); int64(len(out)) < limit; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		out = append(out, string(m.Data))
		seq = m.Sequence + 1
	}
	return out, nil
}

// CountFailed counts the messages of <stream>_failed.
func (a *Admin) CountFailed(ctx context.Context) (int64, string, error) {
	c, err := a.Probe(ctx, false)
	return c.DeadLettered, FailedStream(a.o.Stream), err
}

func (a *Admin) Close() error { return a.cl.close() }
