package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// Handler works on one item; its context is the item's (Item.Context). Returning nil
// completes the item, an error fails it.
type Handler func(ctx context.Context, it *Item) error

// RunOptions say how long Run goes on.
type RunOptions struct {
	// Items is how many items Run handles (completes or fails) before it returns: a
	// PerItem pod's itemsPerPod. Zero runs until the queue is empty: a WorkerPool
	// worker. Either way Run returns early when the queue is empty.
	Items int
}

// RunOptionsFromEnv reads RunOptions from QUEUEJOB_MODE and QUEUEJOB_ITEMS_PER_POD:
// PerItem handles itemsPerPod items (1 if unset), WorkerPool runs until the queue is
// empty. Without QUEUEJOB_MODE it returns def.
func RunOptionsFromEnv(def RunOptions) (RunOptions, error) {
	return runOptionsFromEnv(os.Getenv, def)
}

func runOptionsFromEnv(getenv func(string) string, def RunOptions) (RunOptions, error) {
	switch mode := getenv(queue.EnvMode); mode {
	case "":
		return def, nil
	case "WorkerPool":
		return RunOptions{}, nil
	case "PerItem":
		n := 1
		if v := getenv(queue.EnvItemsPerPod); v != "" {
			var err error
			if n, err = strconv.Atoi(v); err != nil || n <= 0 {
				return def, fmt.Errorf("%s=%q: want a positive number", queue.EnvItemsPerPod, v)
			}
		}
		return RunOptions{Items: n}, nil
	default:
		return def, fmt.Errorf("%s=%q: want PerItem or WorkerPool", queue.EnvMode, mode)
	}
}

// Stats count what Run did.
type Stats struct {
	// Completed items were handled without error.
	Completed int
	// Retried items failed and went back to the queue for another attempt.
	Retried int
	// DeadLettered items failed their last attempt.
	DeadLettered int
	// Lost items were lost while being handled (their lease ran out, and the reaper
	// returned them); they may run again.
	Lost int
}

// Handled is the number of items handled.
func (s Stats) Handled() int { return s.Completed + s.Retried + s.DeadLettered + s.Lost }

// Run leases items one at a time and calls h with each, completing the item when h
// returns nil and failing it otherwise, until it has handled o.Items items (if non-zero)
// or the queue is empty, then returns nil. When ctx is cancelled (SIGTERM), the item in
// hand goes back to the queue at once and Run returns ctx's error once h has returned.
// Any other error of the queue ends Run with that error.
func (w *Worker) Run(ctx context.Context, h Handler, o RunOptions) (Stats, error) {
	var st Stats
	// next is the item leased with the completion of the previous one, if any; Run
	// returns it to the queue if it returns first.
	var next *Item
	defer func() {
		if next != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
			defer cancel()
			_ = next.Release(rctx)
		}
	}()
	for o.Items == 0 || st.Handled() < o.Items {
		it := next
		next = nil
		if it == nil {
			var err error
			it, err = w.Lease(ctx)
			if errors.Is(err, ErrEmpty) {
				return st, nil
			}
			if err != nil {
				return st, err
			}
		}
		var err error
		last := o.Items > 0 && st.Handled() == o.Items-1
		if last {
			// Nothing more to take: on RabbitMQ, stop the broker from delivering another
			// message that Close would only return.
			w.b.StopTaking()
		}
		herr := h(it.Context(), it)
		// Finish even if ctx was cancelled meanwhile: a done item is better completed than
		// returned. A handler that failed once ctx was cancelled was stopped, not failed:
		// its item goes back uncounted. If the keeper returned the item already, these
		// say ErrReleased.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
		switch {
		case herr == nil && !last && ctx.Err() == nil:
			// Complete and take the next item at once.
			next, err = it.completeAndNext(fctx, ctx)
		case herr == nil:
			err = it.Complete(fctx)
		case ctx.Err() != nil:
			if err = it.Release(fctx); err == nil {
				err = ErrReleased
			}
		default:
			err = it.Fail(fctx, herr)
		}
		cancel()
		switch {
		case errors.Is(err, ErrReleased):
			return st, ctx.Err()
		case errors.Is(err, ErrLeaseLost):
			st.Lost++
		case err != nil:
			return st, err
		case herr == nil:
			st.Completed++
		case it.DeadLettered():
			st.DeadLettered++
		default:
			st.Retried++
		}
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
	}
	return st, nil
}
