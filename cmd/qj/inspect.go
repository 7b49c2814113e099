package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
)

type inspectOptions struct {
	*options
	queue queueFlags
	limit int64
}

// inspectResult is what -o json|yaml prints.
type inspectResult struct {
	QueueJob string               `json:"queueJob,omitempty"`
	Backend  string               `json:"backend"`
	Queue    string               `json:"queue"`
	Redis    *redis.Inspection    `json:"redis,omitempty"`
	RabbitMQ *rabbitmq.Inspection `json:"rabbitmq,omitempty"`
	NATS     *nats.Inspection     `json:"nats,omitempty"`
	// RedisStream is a Redis stream's section.
	RedisStream *stream.Inspection `json:"redisStream,omitempty"`
}

func newInspectCmd(o *options) *cobra.Command {
	in := &inspectOptions{options: o}
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a QueueJob's queue: ready, in-flight with leases, dead-lettered",
		Long: `Show the queue of the QueueJob NAME, read live from the queue server.

Redis: the ready items (the next ones first, in the order workers take them), the
in-flight items of <key>:processing (oldest first) with their lease holder (the worker's
session id) and the lease's time left, and the dead-lettered items of <key>:failed. An
in-flight item with "no lease" has lost its worker: the operator's reaper returns it to
the queue.

Redis stream: the ready entries (the next ones first), the pending entries of the
consumer group (oldest first) with their consumer (a worker's session, its pod's name and
a suffix), idle time and delivery count, the group's consumers, and the dead letters of
the stream <stream>:failed with their error. An entry idle for longer than the lease
(spec.queue.redisStream.leaseSeconds) has lost its worker: the operator's reaper returns
it to the stream.

RabbitMQ: the ready count, the in-flight (unacknowledged) count when the QueueJob has a
management URL (or --rabbitmq-management-url), and the count of the dead-letter queue
<queue>.failed when it exists. Messages are not shown: AMQP cannot look at a message
without taking it.

NATS: the durable consumer's counts (ready: not yet delivered; in flight: delivered and
not acknowledged; redelivered; the workers' waiting pull requests; its AckWait), the next
ready items, and the count of the dead-letter stream <stream>_failed.

The queue's coordinates come from the QueueJob and its Secrets, or from flags, as for
enqueue.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := in.queue.check(cmd); err != nil {
				return err
			}
			if in.limit < 1 {
				return fmt.Errorf("--limit must be 1 or more")
			}
			return in.run(cmd.Context(), args)
		},
	}
	cmd.Flags().Int64Var(&in.limit, "limit", 10, "How many items of each list to show.")
	in.queue.add(cmd.Flags())
	return cmd
}

func (in *inspectOptions) run(ctx context.Context, args []string) error {
	t, rest, err := in.resolveTarget(ctx, &in.queue, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("unexpected arguments %q: inspect takes one QueueJob name", rest)
	}
	res := inspectResult{Backend: t.Backend, Queue: t.where()}
	if t.Name != "" {
		res.QueueJob = t.Namespace + "/" + t.Name
	}
	ctx, cancel := in.withTimeout(ctx)
	defer cancel()
	a := t.admin(in.timeout)
	defer func() { _ = a.Close() }()
	counts, err := a.Probe(ctx, true)
	if err != nil {
		return fmt.Errorf("%s: %w", t.where(), t.explain(err))
	}
	section, err := a.Inspect(ctx, in.limit, counts)
	if err != nil {
		return fmt.Errorf("%s: %w", t.where(), err)
	}
	if err := res.setSection(section); err != nil {
		return err
	}
	return in.print(res, func(w io.Writer) { in.human(w, &res) })
}

// setSection puts a backend's Inspect answer in its field of res: a backend's answer
// without a field here is an error, not a section silently dropped from -o json.
func (res *inspectResult) setSection(section any) error {
	switch section := section.(type) {
	case *redis.Inspection:
		res.Redis = section
	case *rabbitmq.Inspection:
		res.RabbitMQ = section
	case *nats.Inspection:
		res.NATS = section
	case *stream.Inspection:
		res.RedisStream = section
	default:
		return fmt.Errorf("qj cannot show the inspection of backend %q (%T): give it a field in cmd/qj's inspectResult",
			res.Backend, section)
	}
	return nil
}

func (in *inspectOptions) human(w io.Writer, res *inspectResult) {
	fmt.Fprintf(w, "Queue:      %s\n", res.Queue)
	if res.QueueJob != "" {
		fmt.Fprintf(w, "QueueJob:   %s\n", res.QueueJob)
	}
	const width = 60
	if r := res.Redis; r != nil {
		fmt.Fprintf(w, "Ready:      %d\n", r.Ready)
		if len(r.Next) > 0 {
			rows := make([][]any, len(r.Next))
			for i, it := range r.Next {
				rows[i] = []any{i + 1, printable(it, width)}
			}
			table(indent(w), "NEXT\tITEM", rows)
		}
		fmt.Fprintf(w, "In flight:  %d  (%s)\n", r.InFlight, redis.ProcessingKey(r.Key))
		if len(r.Leases) > 0 {
			rows := make([][]any, len(r.Leases))
			for i, l := range r.Leases {
				left := l.State
				if l.TTLSeconds != nil {
					left = fmt.Sprintf("%.1fs", *l.TTLSeconds)
				}
				holder := l.Holder
				if holder == "" {
					holder = "-"
				}
				rows[i] = []any{printable(l.Item, width), holder, left}
			}
			table(indent(w), "ITEM\tHOLDER\tLEASE LEFT", rows)
		}
		fmt.Fprintf(w, "Failed:     %d  (%s)\n", r.Failed, redis.FailedKey(r.Key))
		for _, it := range r.FailedItems {
			fmt.Fprintf(w, "  %s\n", printable(it, width))
		}
		if shown := int64(max(len(r.Next), len(r.Leases), len(r.FailedItems))); shown > 0 &&
			(r.Ready > int64(len(r.Next)) || r.InFlight > int64(len(r.Leases)) || r.Failed > int64(len(r.FailedItems))) {
			fmt.Fprintf(w, "(at most %d items of each list shown: --limit)\n", in.limit)
		}
	}
	if r := res.RedisStream; r != nil {
		in.humanStream(w, r, width)
	}
	if r := res.RabbitMQ; r != nil {
		fmt.Fprintf(w, "Ready:      %d\n", r.Ready)
		if r.InFlight != nil {
			fmt.Fprintf(w, "In flight:  %d  (unacknowledged, from the management API: up to a few seconds old)\n", *r.InFlight)
		} else {
			fmt.Fprintf(w, "In flight:  unknown  (AMQP cannot count them: give the QueueJob a managementURL, or pass --rabbitmq-management-url)\n")
		}
		if r.Failed != nil {
			fmt.Fprintf(w, "Failed:     %d  (queue %s)\n", *r.Failed, r.FailedQueue)
		} else {
			fmt.Fprintf(w, "Failed:     -  (no dead-letter queue %s)\n", r.FailedQueue)
		}
	}
	if r := res.NATS; r != nil {
		natsHuman(w, r)
	}
}

// natsHuman writes inspect's lines of a NATS stream.
func natsHuman(w io.Writer, r *nats.Inspection) {
	if r.ConsumerMissing {
		fmt.Fprintf(w, "Ready:      %d  (the stream's messages: consumer %q does not exist yet; workers create it)\n", r.Ready, r.Consumer)
	} else {
		fmt.Fprintf(w, "Ready:      %d\n", r.Ready)
	}
	for i, it := range r.Next {
		fmt.Fprintf(w, "  %d  %s\n", i+1, printable(it, 60))
	}
	fmt.Fprintf(w, "In flight:  %d  (delivered, not acknowledged; %d redelivered; AckWait %s)\n", r.InFlight, r.Redelivered, r.AckWait)
	fmt.Fprintf(w, "Waiting:    %d  (workers' pull requests)\n", r.Waiting)
	fmt.Fprintf(w, "Failed:     %d  (stream %s)\n", r.Failed, r.FailedStream)
}

// indent writes every line two spaces in.
func indent(w io.Writer) io.Writer { return &indenter{w: w, bol: true} }

type indenter struct {
	w   io.Writer
	bol bool
}

func (i *indenter) Write(p []byte) (int, error) {
	var b strings.Builder
	for _, c := range string(p) {
		if i.bol {
			b.WriteString("  ")
		}
		b.WriteRune(c)
		i.bol = c == '\n'
	}
	_, err := io.WriteString(i.w, b.String())
	return len(p), err
}

// humanStream shows a Redis stream's section.
func (in *inspectOptions) humanStream(w io.Writer, r *stream.Inspection, width int) {
	fmt.Fprintf(w, "Ready:      %d\n", r.Ready)
	if len(r.Next) > 0 {
		rows := make([][]any, len(r.Next))
		for i, e := range r.Next {
			rows[i] = []any{i + 1, e.ID, printable(e.Item, width), e.Attempts}
		}
		table(indent(w), "NEXT\tID\tITEM\tATTEMPTS", rows)
	}
	fmt.Fprintf(w, "In flight:  %d  (pending in group %q)\n", r.InFlight, r.Group)
	if len(r.Pending) > 0 {
		rows := make([][]any, len(r.Pending))
		for i, p := range r.Pending {
			rows[i] = []any{p.ID, printable(p.Item, width), p.Consumer, fmt.Sprintf("%.1fs", p.IdleSeconds), p.Deliveries}
		}
		table(indent(w), "ID\tITEM\tCONSUMER\tIDLE\tDELIVERIES", rows)
	}
	fmt.Fprintf(w, "Consumers:  %d\n", len(r.Consumers))
	if len(r.Consumers) > 0 {
		rows := make([][]any, len(r.Consumers))
		for i, c := range r.Consumers {
			rows[i] = []any{c.Name, c.Pending, fmt.Sprintf("%.1fs", c.IdleSeconds)}
		}
		table(indent(w), "CONSUMER\tPENDING\tIDLE", rows)
	}
	fmt.Fprintf(w, "Failed:     %d  (stream %s)\n", r.Failed, stream.FailedKey(r.Stream))
	for _, e := range r.FailedItems {
		fmt.Fprintf(w, "  %s  %s  (attempts %d: %s)\n", e.ID, printable(e.Item, width), e.Attempts, printable(e.Error, width))
	}
	if r.Ready > int64(len(r.Next)) || r.InFlight > int64(len(r.Pending)) || r.Failed > int64(len(r.FailedItems)) {
		fmt.Fprintf(w, "(at most %d entries of each list shown: --limit)\n", in.limit)
	}
}
