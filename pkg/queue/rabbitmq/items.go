package rabbitmq

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

var _ queue.ItemAdmin = (*Admin)(nil)

// maxItemScan bounds how many dead letters one search for an item holds back (each is
// taken unacknowledged until the search ends).
const maxItemScan = 10000

// RequeueItem publishes the oldest dead letter whose body is item back to the queue, as
// RequeueFailed does (mandatory, confirmed, without its attempts and error), and only
// then acknowledges it in <queue>.failed; false if none has it.
func (a *Admin) RequeueItem(ctx context.Context, item string) (bool, error) {
	return a.takeFailed(ctx, item, func(ch *amqp.Channel, d amqp.Delivery) error {
		pub, err := NewPublisher(ch, 0)
		if err != nil {
			return err
		}
		return pub.PublishConfirmed(ctx, a.o.Queue, copyOf(d, amqp.Table{HeaderAttempts: nil, HeaderError: nil}))
	})
}

// DropItem deletes the oldest dead letter whose body is item from <queue>.failed. It does
// not look in the queue itself: taking its ready messages, even for a moment, would hand
// them back redelivered (a quorum queue counts that against its delivery limit). It names
// <queue>.failed, or "" if no dead letter has the item.
func (a *Admin) DropItem(ctx context.Context, item string) (string, error) {
	found, err := a.takeFailed(ctx, item, nil)
	if err != nil || !found {
		return "", err
	}
	return FailedQueue(a.o.Queue), nil
}

// takeFailed takes the dead letters of <queue>.failed one by one, unacknowledged, until
// one whose body is item; calls f with it (if f is not nil) and acknowledges it. Closing
// the channel then returns the others to <queue>.failed, in their order. False if none of
// the first maxItemScan has the item. (The workers declare <queue>.failed a classic queue;
// one declared as a quorum queue with a delivery limit would count each look at its
// messages against that limit.)
func (a *Admin) takeFailed(ctx context.Context, item string, f func(*amqp.Channel, amqp.Delivery) error) (bool, error) {
	if a.conn == nil {
		if err := a.Open(ctx); err != nil {
			return false, err
		}
	}
	ch, err := a.conn.Channel()
	if err != nil {
		return false, ClientError(a.o, err)
	}
	defer func() { _ = ch.Close() }()
	for range maxItemScan {
		d, ok, err := ch.Get(FailedQueue(a.o.Queue), false)
		var ae *amqp.Error
		switch {
		case errors.As(err, &ae) && ae.Code == amqp.NotFound:
			return false, nil
		case err != nil:
			return false, ClientError(a.o, err)
		case !ok:
			return false, nil
		case string(d.Body) != item:
			continue
		}
		if f != nil {
			if err := f(ch, d); err != nil {
				return false, ClientError(a.o, err)
			}
		}
		if err := d.Ack(false); err != nil {
			return false, ClientError(a.o, err)
		}
		// The broker has processed the ack once it answers the channel's close (an ack is
		// a frame it does not answer): only then is the item gone from <queue>.failed.
		if err := ch.Close(); err != nil {
			return false, ClientError(a.o, err)
		}
		return true, nil
	}
	return false, fmt.Errorf("%s holds more than %d dead letters before any with the item: requeue or drop it with qj requeue --count, or the management UI", FailedQueue(a.o.Queue), maxItemScan)
}
