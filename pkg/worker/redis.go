package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// redisBackend works a Redis list with the protocol of redis.WQ.
type redisBackend struct {
	w      *Worker
	o      redis.Options
	client *goredis.Client
	wq     redis.WQ
	// probe counts the list as the operator does.
	probe *redis.Conn
}

func newRedisBackend(ctx context.Context, w *Worker) (*redisBackend, error) {
	o := w.opts.Redis
	b := &redisBackend{w: w, o: o, client: redis.NewClient(o, 0), probe: redis.New(o)}
	b.wq = redis.WQ{Client: b.client, Key: o.Key}
	if err := b.client.Ping(ctx).Err(); err != nil {
		_ = b.close()
		return nil, b.err(ctx, err)
	}
	return b, nil
}

// err explains an error of go-redis; the context's own error stays as it is.
func (b *redisBackend) err(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("worker: %w", redis.ClientError(b.o, err))
}

func (b *redisBackend) take(ctx context.Context, wait time.Duration) (held, error) {
	for {
		item, err := b.wq.Take(ctx, wait)
		if errors.Is(err, redis.ErrNoItem) {
			return nil, nil
		}
		if err != nil {
			return nil, b.err(ctx, err)
		}
		h, err := b.claim(ctx, item)
		if h != nil || err != nil {
			return h, err
		}
		// Dead-lettered, or lost to the reaper: take another.
	}
}

// claim writes the lease of an item just taken; nil if the item was dead-lettered or lost
// instead.
func (b *redisBackend) claim(ctx context.Context, item string) (held, error) {
	opts := b.w.opts
	// The item is in <key>:processing without a lease: write it even if ctx is being
	// cancelled (Lease then releases the item at once).
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	outcome, attempt, err := b.wq.Claim(cctx, item, opts.Session, opts.LeaseTTL, opts.MaxAttempts)
	cancel()
	if err != nil {
		// The operator's reaper returns the unleased item after its grace.
		return nil, b.err(ctx, err)
	}
	switch outcome {
	case redis.ClaimLeased:
		return &redisItem{b: b, item: item, n: attempt}, nil
	case redis.ClaimDeadLettered:
		b.w.log.Warn("Dead-lettered an item whose workers never finished it (they crashed, or their leases ran out)",
			"attempts", attempt, "list", redis.FailedKey(b.o.Key))
	}
	return nil, nil
}

// completeAndTake completes h and takes and leases the next item in one round trip
// less; next is nil if none was waiting (or it was dead-lettered or lost on the way).
func (b *redisBackend) completeAndTake(ctx context.Context, h held) (next held, completeErr, err error) {
	r := h.(*redisItem)
	ok, item, err := b.wq.CompleteAndTake(ctx, r.item, b.w.opts.Session)
	if errors.Is(err, redis.ErrNoItem) {
		return nil, r.result(ctx, ok, nil), nil
	}
	if err != nil {
		return nil, nil, b.err(ctx, err)
	}
	next, err = b.claim(ctx, item)
	return next, r.result(ctx, ok, nil), err
}

func (b *redisBackend) empty(ctx context.Context) (bool, error) {
	c, err := b.probe.Probe(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("worker: %w", err)
	}
	return c.Ready == 0 && c.InFlight == 0, nil
}

func (b *redisBackend) failed(ctx context.Context) ([][]byte, error) {
	items, err := b.wq.Failed(ctx, 0)
	if err != nil {
		return nil, b.err(ctx, err)
	}
	out := make([][]byte, len(items))
	for i, it := range items {
		out[i] = []byte(it)
	}
	return out, nil
}

func (b *redisBackend) requeueFailed(ctx context.Context, n int) (int, error) {
	moved, err := b.wq.RequeueFailed(ctx, n)
	if err != nil {
		return moved, b.err(ctx, err)
	}
	return moved, nil
}

func (b *redisBackend) stopTaking() {}

func (b *redisBackend) close() error {
	return errors.Join(b.client.Close(), b.probe.Close())
}

// redisItem is an item leased from a Redis list.
type redisItem struct {
	b    *redisBackend
	item string
	n    int
}

func (r *redisItem) data() []byte              { return []byte(r.item) }
func (r *redisItem) attempt() int              { return r.n }
func (r *redisItem) renewEvery() time.Duration { return r.b.w.opts.LeaseTTL / 3 }

func (r *redisItem) renew(ctx context.Context) (bool, error) {
	ok, err := r.b.wq.Renew(ctx, r.item, r.b.w.opts.Session, r.b.w.opts.LeaseTTL)
	if err != nil {
		return false, r.b.err(ctx, err)
	}
	return ok, nil
}

func (r *redisItem) complete(ctx context.Context) error {
	ok, err := r.b.wq.Complete(ctx, r.item, r.b.w.opts.Session)
	return r.result(ctx, ok, err)
}

func (r *redisItem) fail(ctx context.Context, _ error) (bool, error) {
	outcome, _, err := r.b.wq.Fail(ctx, r.item, r.b.w.opts.Session, r.b.w.opts.MaxAttempts)
	return outcome == redis.FailDeadLettered, r.result(ctx, outcome != redis.FailLost, err)
}

func (r *redisItem) release(ctx context.Context) error {
	ok, err := r.b.wq.Release(ctx, r.item, r.b.w.opts.Session)
	return r.result(ctx, ok, err)
}

func (r *redisItem) result(ctx context.Context, ok bool, err error) error {
	switch {
	case err != nil:
		return r.b.err(ctx, err)
	case !ok:
		return ErrLeaseLost
	}
	return nil
}
