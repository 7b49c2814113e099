package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// finishTimeout bounds a finishing call the library makes on its own (returning an item on
// shutdown, renewing a lease), whose caller's context may be gone.
const finishTimeout = queue.FinishTimeout

// Item is a leased item. Finish it with exactly one of Complete, Fail or Release; until
// then its lease is kept alive. Its methods are safe for concurrent use.
type Item struct {
	w *Worker
	h queue.Lease
	// ctx is the item's context, cancelled with a cause when it is finished or lost.
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu sync.Mutex
	// finished is set by the first of Complete, Fail, Release, a lost lease or a
	// shutdown; finishErr is what later calls return.
	finished     bool
	finishErr    error
	deadLettered bool
	// stop ends the keeper; kept is closed when it has returned.
	stop chan struct{}
	kept chan struct{}
}

// errDone is the cause of an item's context once the worker finished it.
var errDone = errors.New("the item is finished")

func newItem(leaseCtx context.Context, w *Worker, h queue.Lease) *Item {
	it := &Item{w: w, h: h, stop: make(chan struct{}), kept: make(chan struct{})}
	it.ctx, it.cancel = context.WithCancelCause(leaseCtx)
	go it.keep(leaseCtx)
	return it
}

// Data is the item's value.
func (it *Item) Data() []byte { return it.h.Data() }

// Attempt is the item's attempt number: 1 the first time it is leased, 2 after a failure
// or a crash, and so on up to MaxAttempts.
func (it *Item) Attempt() int { return it.h.Attempt() }

// Context is cancelled when the item is finished, when its lease is lost
// (context.Cause is ErrLeaseLost) and when the context given to Lease is cancelled (the
// item then goes back to the queue; the cause is that context's). Work on the item with
// it.
func (it *Item) Context() context.Context { return it.ctx }

// DeadLettered reports whether Fail dead-lettered the item.
func (it *Item) DeadLettered() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.deadLettered
}

// Complete finishes the item: Redis removes it from <key>:processing and deletes its
// lease; RabbitMQ acks it. ErrLeaseLost says the item had been lost and may run again.
func (it *Item) Complete(ctx context.Context) error {
	if err := it.finish(nil); err != nil {
		return err
	}
	err := it.h.Complete(ctx)
	it.cancel(errDone)
	return err
}

// completeAndNext completes the item and, where the backend can do both at once, leases
// the next under leaseCtx (as Lease would); next is nil if it did not, and the caller
// leases the next itself.
func (it *Item) completeAndNext(ctx, leaseCtx context.Context) (next *Item, err error) {
	ct, ok := it.w.b.(queue.CompleteTaker)
	if !ok {
		return nil, it.Complete(ctx)
	}
	if err := it.finish(nil); err != nil {
		return nil, err
	}
	h, cerr, err := ct.CompleteAndTake(ctx, it.h)
	it.cancel(errDone)
	if h == nil {
		return nil, errors.Join(cerr, err)
	}
	if leaseCtx.Err() != nil {
		// Taken as leaseCtx was cancelled: give it back now.
		if rerr := h.Release(ctx); rerr != nil && !errors.Is(rerr, ErrLeaseLost) {
			it.w.log.Warn("Failed to return an item on shutdown", "error", rerr)
		}
		return nil, cerr
	}
	return newItem(leaseCtx, it.w, h), cerr
}

// Fail finishes an attempt that failed with cause: the item goes back to the end of the
// queue for another attempt, or, if this was its MaxAttempts-th, to the dead-letter list
// (DeadLettered then reports true). ErrLeaseLost says the item had been lost.
func (it *Item) Fail(ctx context.Context, cause error) error {
	if err := it.finish(nil); err != nil {
		return err
	}
	dl, err := it.h.Fail(ctx, cause)
	it.mu.Lock()
	it.deadLettered = dl
	it.mu.Unlock()
	if dl {
		it.w.log.Warn("Dead-lettered an item", "attempts", it.Attempt(), "session", it.w.opts.Session, "cause", queue.CauseText(cause))
	}
	it.cancel(errDone)
	return err
}

// Release returns the item to the queue at once without counting an attempt (the worker
// will not finish it, say because it is stopping): Redis puts it back at the front of
// <key>; RabbitMQ nacks it with requeue.
func (it *Item) Release(ctx context.Context) error {
	if err := it.finish(nil); err != nil {
		return err
	}
	err := it.h.Release(ctx)
	it.cancel(errDone)
	return err
}

// finish marks the item finished, with err for later calls (ErrFinished if nil), and
// stops its keeper; it returns the error of a call on an item already finished.
func (it *Item) finish(err error) error {
	it.mu.Lock()
	if it.finished {
		ferr := it.finishErr
		it.mu.Unlock()
		if err == nil {
			// Finished by the keeper (a shutdown, a lost lease): wait until it is done,
			// so that a worker that exits next does not cut the item's return short.
			<-it.kept
		}
		return ferr
	}
	it.finished = true
	it.finishErr = ErrFinished
	if err != nil {
		it.finishErr = err
	}
	it.mu.Unlock()
	if err == nil {
		// Called by the user: wait for the keeper, so that no renewal runs with the
		// finishing call.
		close(it.stop)
		<-it.kept
	}
	return nil
}

// keep renews the lease until the item is finished, and returns the item on shutdown.
func (it *Item) keep(leaseCtx context.Context) {
	defer close(it.kept)
	var tick <-chan time.Time
	if d := it.h.RenewEvery(); d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-it.stop:
			return
		case <-it.w.closed:
			return
		case <-leaseCtx.Done():
			if it.finish(ErrReleased) != nil {
				return // finished by the user meanwhile
			}
			it.w.b.StopTaking()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(leaseCtx), finishTimeout)
			err := it.h.Release(rctx)
			cancel()
			switch {
			case err == nil:
				it.w.log.Info("Returned an item to the queue on shutdown", "session", it.w.opts.Session)
			case errors.Is(err, ErrLeaseLost):
			default:
				it.w.log.Warn("Failed to return an item to the queue on shutdown: it comes back when its lease expires",
					"session", it.w.opts.Session, "error", err)
			}
			it.cancel(context.Cause(leaseCtx))
			return
		case <-tick:
			rctx, cancel := context.WithTimeout(leaseCtx, finishTimeout)
			ok, err := it.h.Renew(rctx)
			cancel()
			if err != nil {
				if leaseCtx.Err() == nil {
					it.w.log.Warn("Failed to renew a lease; retrying", "session", it.w.opts.Session, "error", err)
				}
				continue
			}
			if !ok {
				if it.finish(ErrLeaseLost) != nil {
					return
				}
				it.w.log.Warn("Lost the lease of an item: it may run again elsewhere", "session", it.w.opts.Session)
				it.cancel(ErrLeaseLost)
				return
			}
		}
	}
}
