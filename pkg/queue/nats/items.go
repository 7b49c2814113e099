package nats

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

var _ queue.ItemAdmin = (*Admin)(nil)

// RequeueItem publishes the oldest dead letter whose data is item back to its subject, as
// RequeueFailed does, and deletes it from <stream>_failed; false if none has it.
func (a *Admin) RequeueItem(ctx context.Context, item string) (bool, error) {
	js, err := a.js()
	if err != nil {
		return false, err
	}
	found := false
	err = deadLetters(ctx, js, a.o, func(s jetstream.Stream, m *jetstream.RawStreamMsg) (bool, error) {
		if string(m.Data) != item {
			return true, nil
		}
		found = true
		return false, requeueOne(ctx, js, a.o, s, m)
	})
	if err != nil {
		return false, ClientError(a.o, err)
	}
	return found, nil
}

// DropItem deletes the oldest dead letter whose data is item from <stream>_failed. It does
// not look among the stream's ready messages: JetStream cannot delete a message on the
// condition that no consumer has been handed it meanwhile, and an item in flight is never
// dropped. It names <stream>_failed, or "" if no dead letter has the item.
func (a *Admin) DropItem(ctx context.Context, item string) (string, error) {
	js, err := a.js()
	if err != nil {
		return "", err
	}
	from := ""
	err = deadLetters(ctx, js, a.o, func(s jetstream.Stream, m *jetstream.RawStreamMsg) (bool, error) {
		if string(m.Data) != item {
			return true, nil
		}
		deleted, err := deleteDeadLetter(ctx, s, m.Sequence)
		if deleted {
			from = FailedStream(a.o.Stream)
		}
		// Gone already (another qj deleted or requeued it first): look further on.
		return !deleted && err == nil, err
	})
	if err != nil {
		return "", ClientError(a.o, err)
	}
	return from, nil
}
