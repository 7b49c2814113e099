package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/queuejob/queuejob-operator/pkg/worker"
)

type requeueOptions struct {
	*options
	queue queueFlags
	count int
}

// requeueResult is what -o json|yaml prints.
type requeueResult struct {
	QueueJob string `json:"queueJob,omitempty"`
	Backend  string `json:"backend"`
	Queue    string `json:"queue"`
	Requeued int    `json:"requeued"`
}

func newRequeueCmd(o *options) *cobra.Command {
	rq := &requeueOptions{options: o}
	cmd := &cobra.Command{
		Use:   "requeue NAME",
		Short: "Put a QueueJob's dead-lettered items back into its queue",
		Long: `Move the items that failed too often (dead-lettered by pkg/worker and queuejob-worker)
back into the queue of the QueueJob NAME, with a fresh attempt count, for example once the
bug that made them fail is fixed.

Redis: from <key>:failed back onto <key>. RabbitMQ: from the queue <queue>.failed back
onto <queue> (items dead-lettered through a queue's own dead-letter exchange are the
broker's business and are not touched).

The queue's coordinates come from the QueueJob and its Secrets, or from flags, as for
enqueue.`,
		Example: fmt.Sprintf(`  # Everything dead-lettered
  %[1]s requeue job-wq-2

  # Only the 10 oldest
  %[1]s requeue job-wq-2 --count 10`, commandName()),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := rq.queue.check(cmd); err != nil {
				return err
			}
			if rq.count < 0 {
				return fmt.Errorf("--count must be 0 (all) or more")
			}
			return rq.run(cmd.Context(), args)
		},
	}
	cmd.Flags().IntVar(&rq.count, "count", 0, "How many items to requeue; 0 for all.")
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
	}
	w, err := worker.New(ctx, o)
	if err != nil {
		return fmt.Errorf("%s: %w", t.where(), t.explain(err))
	}
	defer func() { _ = w.Close() }()
	if res.Requeued, err = w.RequeueFailed(ctx, rq.count); err != nil {
		return fmt.Errorf("%s: requeued %d items, then: %w", t.where(), res.Requeued, t.explain(err))
	}
	return rq.print(res, func(w io.Writer) {
		fmt.Fprintf(w, "Requeued %d dead-lettered items into %s\n", res.Requeued, res.Queue)
	})
}
