package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	goredis "github.com/redis/go-redis/v9"
)

var (
	_ queue.Consumer      = (*Consumer)(nil)
	_ queue.CompleteTaker = (*Consumer)(nil)
)

// Consumer is the worker side of a Redis list, with the protocol of WQ:
// take, renew, complete, fail, dead-letter and give back. pkg/worker drives it.
type Consumer struct {
	o      Options
	co     queue.ConsumerOptions
	client *goredis.Client
	wq     WQ
	// probe counts the list as the operator does.
	probe *Conn
}

// NewConsumer connects to the list of o at once, so that a wrong address, password or
// certificate fails here with a message that says what to fix.
func NewConsumer(ctx context.Context, o Options, co queue.ConsumerOptions) (*Consumer, error) {
	co = co.WithDefaults()
	c := &Consumer{o: o, co: co, client: NewClient(o, 0), probe: New(o)}
	c.wq = WQ{Client: c.client, Key: o.Key}
	if err := c.client.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, c.err(ctx, err)
	}
	return c, nil
}

// err explains an error of go-redis; the context's own error stays as it is.
func (c *Consumer) err(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("worker: %w", ClientError(c.o, err))
}

// Take waits up to wait for an item and leases it; nil if none came.
func (c *Consumer) Take(ctx context.Context, wait time.Duration) (queue.Lease, error) {
	for {
		item, err := c.wq.Take(ctx, wait)
		if errors.Is(err, ErrNoItem) {
			return nil, nil
		}
		if err != nil {
			return nil, c.err(ctx, err)
		}
		l, err := c.claim(ctx, item)
		if l != nil || err != nil {
			return l, err
		}
		// Dead-lettered, or lost to the reaper: take another.
	}
}

// claim writes the lease of an item just taken; nil if the item was dead-lettered or lost
// instead.
func (c *Consumer) claim(ctx context.Context, item string) (queue.Lease, error) {
	// The item is in <key>:processing without a lease: write it even if ctx is being
	// cancelled (pkg/worker then releases the item at once).
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queue.FinishTimeout)
	outcome, attempt, err := c.wq.Claim(cctx, item, c.co.Session, c.co.LeaseTTL, c.co.MaxAttempts)
	cancel()
	if err != nil {
		// The operator's reaper returns the unleased item after its grace.
		return nil, c.err(ctx, err)
	}
	switch outcome {
	case ClaimLeased:
		return &redisLease{c: c, item: item, n: attempt}, nil
	case ClaimDeadLettered:
		c.co.Logger.Warn("Dead-lettered an item whose workers never finished it (they crashed, or their leases ran out)",
			"attempts", attempt, "list", FailedKey(c.o.Key))
	}
	return nil, nil
}

// CompleteAndTake completes l and takes and leases the next item in one round trip
// less; next is nil if none was waiting (or it was dead-lettered or lost on the way).
func (c *Consumer) CompleteAndTake(ctx context.Context, l queue.Lease) (next queue.Lease, completeErr, err error) {
	r := l.(*redisLease)
	ok, item, err := c.wq.CompleteAndTake(ctx, r.item, c.co.Session)
	if errors.Is(err, ErrNoItem) {
		return nil, r.result(ctx, ok, nil), nil
	}
	if err != nil {
		return nil, nil, c.err(ctx, err)
	}
	next, err = c.claim(ctx, item)
	return next, r.result(ctx, ok, nil), err
}

// Empty counts the list with the operator's probe: nothing ready, nothing in flight.
func (c *Consumer) Empty(ctx context.Context) (bool, error) {
	n, err := c.probe.Probe(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("worker: %w", err)
	}
	return n.Ready == 0 && n.InFlight == 0, nil
}

// Failed lists <key>:failed, newest first.
func (c *Consumer) Failed(ctx context.Context) ([][]byte, error) {
	items, err := c.wq.Failed(ctx, 0)
	if err != nil {
		return nil, c.err(ctx, err)
	}
	out := make([][]byte, len(items))
	for i, it := range items {
		out[i] = []byte(it)
	}
	return out, nil
}

// RequeueFailed moves up to n items of <key>:failed back onto <key>.
func (c *Consumer) RequeueFailed(ctx context.Context, n int) (int, error) {
	moved, err := c.wq.RequeueFailed(ctx, n)
	if err != nil {
		return moved, c.err(ctx, err)
	}
	return moved, nil
}

// StopTaking does nothing: a Redis worker takes nothing it did not ask for.
func (c *Consumer) StopTaking() {}

// Close closes the connections; leases still held expire.
func (c *Consumer) Close() error {
	return errors.Join(c.client.Close(), c.probe.Close())
}

// redisLease is an item leased from a Redis list.
type redisLease struct {
	c    *Consumer
	item string
	n    int
}

func (r *redisLease) Data() []byte              { return []byte(r.item) }
func (r *redisLease) Attempt() int              { return r.n }
func (r *redisLease) RenewEvery() time.Duration { return r.c.co.LeaseTTL / 3 }

func (r *redisLease) Renew(ctx context.Context) (bool, error) {
	ok, err := r.c.wq.Renew(ctx, r.item, r.c.co.Session, r.c.co.LeaseTTL)
	if err != nil {
		return false, r.c.err(ctx, err)
	}
	return ok, nil
}

func (r *redisLease) Complete(ctx context.Context) error {
	ok, err := r.c.wq.Complete(ctx, r.item, r.c.co.Session)
	return r.result(ctx, ok, err)
}

func (r *redisLease) Fail(ctx context.Context, _ error) (bool, error) {
	outcome, _, err := r.c.wq.Fail(ctx, r.item, r.c.co.Session, r.c.co.MaxAttempts)
	return outcome == FailDeadLettered, r.result(ctx, outcome != FailLost, err)
}

func (r *redisLease) Release(ctx context.Context) error {
	ok, err := r.c.wq.Release(ctx, r.item, r.c.co.Session)
	return r.result(ctx, ok, err)
}

func (r *redisLease) result(ctx context.Context, ok bool, err error) error {
	switch {
	case err != nil:
		return r.c.err(ctx, err)
	case !ok:
		return queue.ErrLeaseLost
	}
	return nil
}
