package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// The dead letters of a stream are the messages of <stream>_failed, oldest first.

// deadLetters calls f with each dead letter of o's stream, oldest first, until f returns
// false; none if <stream>_failed does not exist.
func deadLetters(ctx context.Context, js jetstream.JetStream, o Options, f func(s jetstream.Stream, m *jetstream.RawStreamMsg) (bool, error)) error {
	s, err := js.Stream(ctx, FailedStream(o.Stream))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	state := s.CachedInfo().State
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(FailedSubject(o.Stream)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		more, err := f(s, m)
		if err != nil || !more {
			return err
		}
		seq = m.Sequence + 1
	}
	return nil
}

func (c *Consumer) Failed(ctx context.Context) ([][]byte, error) {
	_, js, err := c.cl.get()
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	var out [][]byte
	err = deadLetters(ctx, js, c.o, func(_ jetstream.Stream, m *jetstream.RawStreamMsg) (bool, error) {
		out = append(out, m.Data)
		return true, nil
	})
	if err != nil {
		return nil, c.err(ctx, err)
	}
	return out, nil
}

// RequeueFailed publishes up to n dead letters (all if n <= 0), oldest first, to the
// subject they came from (the default subject if they do not say), without their attempts,
// waiting for the server's acknowledgement; only then is each deleted from
// <stream>_failed.
func (c *Consumer) RequeueFailed(ctx context.Context, n int) (int, error) {
	_, js, err := c.cl.get()
	if err != nil {
		return 0, fmt.Errorf("worker: %w", err)
	}
	moved, err := requeueFailed(ctx, js, c.o, n)
	if err != nil {
		return moved, c.err(ctx, err)
	}
	return moved, nil
}

func requeueFailed(ctx context.Context, js jetstream.JetStream, o Options, n int) (int, error) {
	moved := 0
	err := deadLetters(ctx, js, o, func(s jetstream.Stream, m *jetstream.RawStreamMsg) (bool, error) {
		if err := requeueOne(ctx, js, o, s, m); err != nil {
			return false, err
		}
		moved++
		return n <= 0 || moved < n, nil
	})
	return moved, err
}

// requeueOne publishes the dead letter m to the subject it came from (the default subject
// if it does not say), without its attempts, waiting for the server's acknowledgement;
// only then is it deleted from <stream>_failed (s). The copy's message ID names the dead
// letter, so that the stream's duplicate window (two minutes by default) keeps a second
// requeue of it (another qj, or this one tried again after a failed delete) from storing
// it twice; a dead letter another requeue deleted first is not an error.
func requeueOne(ctx context.Context, js jetstream.JetStream, o Options, s jetstream.Stream, m *jetstream.RawStreamMsg) error {
	subject := m.Header.Get(HeaderSubject)
	if subject == "" {
		var err error
		if subject, err = publishSubject(ctx, js, o); err != nil {
			return err
		}
	}
	id := fmt.Sprintf("qj-requeue:%s:%d", FailedStream(o.Stream), m.Sequence)
	if _, err := js.PublishMsg(ctx, rawCopy(m, subject), jetstream.WithExpectStream(o.Stream), jetstream.WithMsgID(id)); err != nil {
		return err
	}
	if _, err := deleteDeadLetter(ctx, s, m.Sequence); err != nil {
		return fmt.Errorf("the dead letter was published back to %s but not deleted from %s (requeue it again within two minutes: the stream drops the second copy): %w",
			o.Stream, FailedStream(o.Stream), err)
	}
	return nil
}

// publishSubject is where items are published: o.Subject, or the stream's first subject.
func publishSubject(ctx context.Context, js jetstream.JetStream, o Options) (string, error) {
	if o.Subject != "" {
		return o.Subject, nil
	}
	s, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return "", err
	}
	subjects := s.CachedInfo().Config.Subjects
	if len(subjects) == 0 || strings.ContainsAny(subjects[0], "*>") {
		return "", queue.Errorf(queue.ReasonWrongType, "stream %q's first subject is a wildcard (or it has none): name "+
			"the subject to publish to (qj --nats-subject)", o.Stream)
	}
	return subjects[0], nil
}

// deleteDeadLetter deletes the message seq of <stream>_failed (s); false, and no error,
// if it was gone already (another qj requeued or dropped it first).
func deleteDeadLetter(ctx context.Context, s jetstream.Stream, seq uint64) (bool, error) {
	err := s.DeleteMsg(ctx, seq)
	if err == nil {
		return true, nil
	}
	// The server says "no message found" as a failed delete, not as ErrMsgNotFound.
	if _, gerr := s.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	return false, err
}
