package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// ErrUnroutable is wrapped by the error of a mandatory publish that the broker returned:
// no queue took the message (the queue it was routed to does not exist).
var ErrUnroutable = &queue.Error{Reason: queue.ReasonQueueNotFound, Message: "the broker returned the message as unroutable"}

// ErrNacked is wrapped by the error of a publish that the broker refused (basic.nack).
var ErrNacked = errors.New("the broker refused (nack) the message")

// Publisher publishes to queues through the default exchange, mandatory and with
// publisher confirms: a message counts as stored only once the broker confirmed it and
// did not return it. Without mandatory, the broker confirms a message no queue took (its
// queue was deleted) and drops it.
//
// The broker sends the basic.return of an unroutable mandatory message before its
// basic.ack, and amqp091 hands the return to the NotifyReturn listener before it records
// the ack ("Unroutable mandatory or immediate messages are acknowledged immediately after
// any Channel.NotifyReturn listeners have been notified", Channel.Confirm): once a
// confirmation is in, the return of its message, if any, is waiting in returns.
type Publisher struct {
	ch *amqp.Channel
	// returns gets the broker's returns; it holds as many as messages may be unconfirmed,
	// and returnsLeftOver more: returns of earlier calls whose wait was cut short must not
	// fill it (amqp091 drops a return it cannot hand over within 5 s).
	returns chan amqp.Return
	// one makes PublishConfirmed calls one at a time, so that a return is that call's.
	one sync.Mutex
}

// returnsLeftOver is how many returns of calls that gave up waiting a publisher's buffer
// has room for, beside those of its unconfirmed messages.
const returnsLeftOver = 64

// NewPublisher puts ch in confirm mode and listens to its returns. unconfirmed is
// the most messages its user publishes before waiting for their confirmations.
func NewPublisher(ch *amqp.Channel, unconfirmed int) (*Publisher, error) {
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, unconfirmed+returnsLeftOver))
	return &Publisher{ch: ch, returns: returns}, nil
}

// Publish publishes msg, mandatory, routed to queue; Confirmed waits for the outcome.
func (p *Publisher) Publish(ctx context.Context, queue string, msg amqp.Publishing) (*amqp.DeferredConfirmation, error) {
	return p.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, msg)
}

// Confirmed waits for the confirmation of dc, a publish to queue, and fails with ErrNacked
// or ErrUnroutable if the broker did not store the message. With several messages
// unconfirmed, a return found here may be that of a later message that the broker
// confirmed first: the caller can only tell that dc or a later one was returned. Returns
// of messages routed elsewhere are not dc's, and are dropped.
func (p *Publisher) Confirmed(ctx context.Context, queue string, dc *amqp.DeferredConfirmation) error {
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !acked {
		return fmt.Errorf("%w for queue %q: the queue may be full (x-max-length with reject-publish) or the broker short of memory or disk", ErrNacked, queue)
	}
	for {
		select {
		case r, ok := <-p.returns:
			if !ok {
				return nil // the channel closed after the ack
			}
			if r.Exchange == "" && r.RoutingKey == queue {
				return fmt.Errorf("%w (%s): queue %q does not exist (deleted?)", ErrUnroutable, r.ReplyText, queue)
			}
		default:
			return nil
		}
	}
}

// PublishConfirmed publishes msg to queue and waits for its confirmation, one call at a
// time: a return is then this message's. A return left over from a call whose wait was
// cut short is dropped first (one that comes later is taken for this message's if it was
// routed to the same queue: an error for a message that was stored, never the reverse).
func (p *Publisher) PublishConfirmed(ctx context.Context, queue string, msg amqp.Publishing) error {
	p.one.Lock()
	defer p.one.Unlock()
	p.dropReturns()
	dc, err := p.Publish(ctx, queue, msg)
	if err != nil {
		return err
	}
	return p.Confirmed(ctx, queue, dc)
}

// dropReturns empties returns.
func (p *Publisher) dropReturns() {
	for {
		select {
		case _, ok := <-p.returns:
			if !ok {
				return
			}
		default:
			return
		}
	}
}
