package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/worker"
)

type requeueOptions struct {
	*options
	queue queueFlags
	count int
	// item, when set (itemSet), is the value of the one dead-lettered item to requeue.
	item    string
	itemSet bool
}

// requeueResult is what -o json|yaml prints.
type requeueResult struct {
	QueueJob string `json:"queueJob,omitempty"`
	Backend  string `json:"backend"`
	Queue    string `json:"queue"`
	Requeued int    `json:"requeued"`
	// Stayed counts the items left in the dead-letter list or queue when an error stopped
	// the requeue; absent when it ran to its end.
	Stayed *int64 `json:"stayed,omitempty"`
}

func newRequeueCmd(o *options) *cobra.Command {
	rq := &requeueOptions{options: o}
	cmd := &cobra.Command{
		Use:   "requeue NAME",
		Short: "Put a QueueJob's dead-lettered items back into its queue",
		Long: `Move the items that failed too often (dead-lettered by pkg/worker and queuejob-worker)
back into the queue of the QueueJob NAME, with a fresh attempt count, for example once the
bug that made them fail is fixed.

Redis: from <key>:failed back onto <key>. Redis stream: from the stream <stream>:failed
to the end of <stream>, each entry atomically. RabbitMQ: from the queue <queue>.failed back
onto <queue> (items dead-lettered through a queue's own dead-letter exchange are the
broker's business and are not touched). Each message is published mandatory with
publisher confirms and taken from <queue>.failed only once the broker stored it: if
<queue> no longer exists the broker returns the message, which stays in <queue>.failed,
and requeue stops, says how many moved and how many stayed, and exits non-zero.

With --item VALUE, only one dead-lettered item with that value moves back, behind the
waiting items; it fails if none has it.

The queue's coordinates come from the QueueJob and its Secrets, or from flags, as for
enqueue.`,
		Example: fmt.Sprintf(`  # Everything dead-lettered
  %[1]s requeue job-wq-2

  # Only the 10 oldest
  %[1]s requeue job-wq-2 --count 10

  # The one item "order-17"
  %[1]s requeue job-wq-2 --item order-17`, commandName()),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := rq.queue.check(cmd); err != nil {
				return err
			}
			if rq.count < 0 {
				return fmt.Errorf("--count must be 0 (all) or more")
			}
			if rq.itemSet = cmd.Flags().Changed("item"); rq.itemSet {
				if rq.count != 0 {
					return fmt.Errorf("--count and --item exclude each other: --item requeues one item")
				}
				return rq.runItem(cmd.Context(), args)
			}
			return rq.run(cmd.Context(), args)
		},
	}
	cmd.Flags().IntVar(&rq.count, "count", 0, "How many items to requeue; 0 for all.")
	cmd.Flags().StringVar(&rq.item, "item", "", "Requeue only one dead-lettered item with this value.")
	rq.queue.add(cmd.Flags())
	return cmd
}

func (rq *requeueOptions) run(ctx context.Context, args []string) error {
	t, rest, err := rq.resolveTarget(ctx, &rq.queue, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("unexpected arguments %q: requeue takes one QueueJob name", rest)
	}
	res := requeueResult{Backend: t.Backend, Queue: t.where()}
	if t.Name != "" {
		res.QueueJob = t.Namespace + "/" + t.Name
	}
	ctx, cancel := rq.withTimeout(ctx)
	defer cancel()
	o := worker.Options{Backend: t.Backend, Session: "qj-requeue"}
	switch {
	case t.Redis != nil:
		o.Backend, o.Redis = worker.BackendRedis, *t.Redis
	case t.RabbitMQ != nil:
		o.Backend, o.RabbitMQ = worker.BackendRabbitMQ, *t.RabbitMQ
	case t.NATS != nil:
		o.Backend, o.NATS = worker.BackendNATS, *t.NATS
	case t.RedisStream != nil:
		o.Backend, o.RedisStream = worker.BackendRedisStream, *t.RedisStream
	}
	w, err := worker.New(ctx, o)
	if err != nil {
		return fmt.Errorf("%s: %w", t.where(), t.explain(err))
	}
	defer func() { _ = w.Close() }()
	if res.Requeued, err = w.RequeueFailed(ctx, rq.count); err != nil {
		return rq.stopped(ctx, t, res, err)
	}
	return rq.print(res, res.human)
}

// runItem requeues the one dead-lettered item rq.item.
func (rq *requeueOptions) runItem(ctx context.Context, args []string) error {
	t, admin, err := rq.itemAdmin(ctx, &rq.queue, args, "requeue --item")
	if err != nil {
		return err
	}
	defer func() { _ = admin.Close() }()
	ctx, cancel := rq.withTimeout(ctx)
	defer cancel()
	ok, err := admin.(queue.ItemAdmin).RequeueItem(ctx, rq.item)
	if err != nil {
		return fmt.Errorf("%s: %w", t.where(), t.explain(err))
	}
	if !ok {
		return fmt.Errorf("no dead-lettered item %q in %s: qj inspect lists them", rq.item, t.where())
	}
	res := requeueResult{Backend: t.Backend, Queue: t.where(), Requeued: 1}
	if t.Name != "" {
		res.QueueJob = t.Namespace + "/" + t.Name
	}
	return rq.print(res, res.human)
}

func (res requeueResult) human(w io.Writer) {
	fmt.Fprintf(w, "Requeued %d dead-lettered items into %s", res.Requeued, res.Queue)
	if res.Stayed != nil {
		fmt.Fprintf(w, "; %d stayed", *res.Stayed)
	}
	fmt.Fprintln(w)
}

// stopped reports a requeue that cause stopped: it prints how many items moved and how
// many stayed dead-lettered, and returns the error.
func (rq *requeueOptions) stopped(ctx context.Context, t *target, res requeueResult, cause error) error {
	cctx, cancel := rq.withTimeout(context.WithoutCancel(ctx))
	defer cancel()
	stayed, where, err := countFailed(cctx, t, rq.timeout)
	if err != nil {
		return fmt.Errorf("%s: requeued %d items, then: %w (and counting those left in %s failed: %v)",
			t.where(), res.Requeued, t.explain(cause), where, err)
	}
	res.Stayed = &stayed
	if err := rq.print(res, res.human); err != nil {
		return err
	}
	hint := ""
	if errors.Is(cause, rabbitmq.ErrUnroutable) {
		hint = "; declare the queue again, then requeue again"
	}
	return fmt.Errorf("%s: requeued %d items, %s stayed in %s: %w%s",
		t.where(), res.Requeued, plural(stayed, "dead-lettered item"), where, t.explain(cause), hint)
}

// countFailed counts the target's dead-lettered items (a missing dead-letter queue
// holds none) and names where they are.
func countFailed(ctx context.Context, t *target, timeout time.Duration) (int64, string, error) {
	a := t.admin(timeout)
	defer func() { _ = a.Close() }()
	return a.CountFailed(ctx)
}
