package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

type enqueueOptions struct {
	*options
	queue         queueFlags
	file          string
	jsonLines     bool
	fifo          bool
	declare       bool
	quiet         bool
	progressEvery int64
}

// enqueueResult is what -o json|yaml prints.
type enqueueResult struct {
	// QueueJob is namespace/name; empty when the flags gave the queue.
	QueueJob string `json:"queueJob,omitempty"`
	Backend  string `json:"backend"`
	Queue    string `json:"queue"`
	Enqueued int64  `json:"enqueued"`
	// Push is the Redis command: RPUSH (the tail, taken first) or LPUSH (the head).
	Push string `json:"push,omitempty"`
}

func newEnqueueCmd(o *options) *cobra.Command {
	e := &enqueueOptions{options: o}
	name := commandName()
	cmd := &cobra.Command{
		Use:   "enqueue NAME [ITEMS...] [-f FILE|-]",
		Short: "Put items into a QueueJob's queue",
		Long: `Put items into the queue of the QueueJob NAME: the arguments after NAME, then the lines of
FILE (-f -: standard input), one item a line. Empty lines are skipped and a "\r" before a
line's end is dropped. With --json-lines each line (and argument) is a JSON value: a
string is decoded (so an item may hold newlines), any other value is kept as compact JSON.

The QueueJob and the Secrets its queue references are read with your kubeconfig; flags
replace its fields (--redis-address 127.0.0.1:6379 behind kubectl port-forward, a
password from an environment variable with --redis-password-env). Flags that give the
whole queue (--redis-address and --redis-key, or --rabbitmq-url-env and --rabbitmq-queue)
need no cluster: then every argument is an item.

Redis: items are pushed at the list's tail (RPUSH), as the Kubernetes docs' producer does.
rediswq workers take items from the tail too (RPOPLPUSH), so the item pushed last is taken
first. --fifo pushes at the head (LPUSH) instead: workers then take the items in the order
given, after those already waiting. Pushes are pipelined, 1000 items a command.

RabbitMQ: each item is a persistent message published to the default exchange, routed to
the queue, with publisher confirms: an item counts once the broker confirmed it. The queue
must exist (--declare declares a durable one).

Progress goes to stderr: a line rewritten on a terminal, else one every --progress-every
items.`,
		Example: fmt.Sprintf(`  # The Kubernetes docs' job-wq-2, filled from the command line
  %[1]s enqueue job-wq-2 $(seq 1 9)

  # 100000 items from a file, through a port-forward to the cluster's Redis
  kubectl port-forward svc/redis 6379:6379 &
  %[1]s enqueue job-wq-2 --redis-address 127.0.0.1:6379 -f items.txt

  # JSON lines from a program
  ./make-items | %[1]s enqueue job-wq-2 --json-lines -f -

  # No cluster: the queue's coordinates as flags
  REDIS_PASSWORD=... %[1]s enqueue --redis-address 127.0.0.1:6379 --redis-key job2 --redis-password-env REDIS_PASSWORD a b c`, name),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.queue.check(cmd); err != nil {
				return err
			}
			return e.run(cmd.Context(), args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&e.file, "filename", "f", "", "Read items from this file, one a line; - for standard input.")
	f.BoolVar(&e.jsonLines, "json-lines", false, "Each line (and argument) is a JSON value: strings are decoded, other values kept as compact JSON.")
	f.BoolVar(&e.fifo, "fifo", false, "Redis: push at the list's head (LPUSH), so that workers take the items in the order given (a Redis stream always is in that order).")
	f.BoolVar(&e.declare, "declare", false, "RabbitMQ: declare the queue (durable) if it does not exist.")
	f.BoolVarP(&e.quiet, "quiet", "q", false, "No progress on stderr.")
	f.Int64Var(&e.progressEvery, "progress-every", 10000, "When stderr is not a terminal, report progress every this many items.")
	e.queue.add(f)
	return cmd
}

func (e *enqueueOptions) run(ctx context.Context, args []string) error {
	if standalone := e.queue.standalone(); e.file == "" && ((standalone && len(args) == 0) || (!standalone && len(args) == 1)) {
		if err := e.queue.shortOfAQueue(); err != nil {
			return err
		}
		return fmt.Errorf("no items: give them as arguments after the QueueJob's name, or with -f FILE (-f - for standard input)")
	}
	t, rest, err := e.resolveTarget(ctx, &e.queue, args)
	if err != nil {
		return err
	}
	sources := chainItems{&argItems{args: rest, jsonLines: e.jsonLines}}
	switch e.file {
	case "":
	case "-":
		sources = append(sources, newLineItems(e.streams.In, "standard input", e.jsonLines))
	default:
		fh, err := os.Open(e.file)
		if err != nil {
			return fmt.Errorf("reading items: %w", err)
		}
		defer func() { _ = fh.Close() }()
		sources = append(sources, newLineItems(fh, e.file, e.jsonLines))
	}
	var prog *progress
	if !e.quiet {
		prog = newProgress(e.streams.ErrOut, e.progressEvery, e.now)
	}
	res := enqueueResult{Backend: t.Backend, Queue: t.where()}
	if t.Name != "" {
		res.QueueJob = t.Namespace + "/" + t.Name
	}
	switch {
	case t.Redis != nil && e.fifo:
		res.Push = "LPUSH"
	case t.Redis != nil:
		res.Push = "RPUSH"
	case t.RedisStream != nil:
		// A stream is first in, first out: --fifo changes nothing.
		res.Push = "XADD"
	case t.NATS != nil && e.fifo:
		return fmt.Errorf("--fifo applies to Redis lists only: a NATS stream is first in, first out")
	case e.fifo:
		return fmt.Errorf("--fifo applies to Redis only: a RabbitMQ queue is first in, first out")
	}
	a := t.admin(e.timeout)
	defer func() { _ = a.Close() }()
	if err := e.open(ctx, t, a); err != nil {
		return fmt.Errorf("%s: %w", t.where(), err)
	}
	pushed, unsure, err := a.Enqueue(ctx, sources.Next, prog.add, queue.EnqueueOptions{FIFO: e.fifo})
	prog.done()
	res.Enqueued = pushed
	if err != nil {
		if pushed > 0 || unsure > 0 {
			return fmt.Errorf("%s: %s enqueued before the error, %d more may or may not have been: %w", t.where(), plural(pushed, "item"), unsure, err)
		}
		return fmt.Errorf("%s: %w", t.where(), err)
	}
	return e.print(res, func(w io.Writer) {
		of := ""
		if res.QueueJob != "" {
			of = " of QueueJob " + res.QueueJob
		}
		order := ""
		switch res.Push {
		case "RPUSH":
			order = " (RPUSH at the tail: workers take the last item first)"
		case "LPUSH":
			order = " (LPUSH at the head: workers take them in the order given)"
		case "XADD":
			order = " (XADD at the stream's end: workers take them in the order given)"
		}
		fmt.Fprintf(w, "Enqueued %s into %s%s%s\n", plural(pushed, "item"), t.where(), of, order)
	})
}

// open checks that the queue can be reached and written, with the operator's probe,
// declares it if it is missing and --declare says so, and connects.
func (e *enqueueOptions) open(ctx context.Context, t *target, a queue.Admin) error {
	pctx, cancel := e.withTimeout(ctx)
	_, err := a.Probe(pctx, false)
	cancel()
	declarer, canDeclare := a.(queue.Declarer)
	missing := err != nil && queue.ReasonOf(err) == queue.ReasonQueueNotFound && canDeclare
	switch {
	case missing && !e.declare:
		return fmt.Errorf("%w; or pass --declare to declare a durable queue", err)
	case err != nil && !missing:
		return t.explain(err)
	}
	if err := a.Open(ctx); err != nil {
		return fmt.Errorf("%w%s", err, t.hint())
	}
	if missing {
		return declarer.Declare(ctx)
	}
	return nil
}

// plural is "1 item", "2 items".
func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
