package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

type dropOptions struct {
	*options
	queue queueFlags
	item  string
	yes   bool
}

// dropResult is what -o json|yaml prints.
type dropResult struct {
	QueueJob string `json:"queueJob,omitempty"`
	Backend  string `json:"backend"`
	Queue    string `json:"queue"`
	Item     string `json:"item"`
	// From is the list or queue the item was deleted from.
	From string `json:"from"`
}

func newDropCmd(o *options) *cobra.Command {
	d := &dropOptions{options: o}
	cmd := &cobra.Command{
		Use:   "drop NAME --item VALUE",
		Short: "Delete one waiting or dead-lettered item from a QueueJob's queue",
		Long: `Delete one item whose value is VALUE from the queue of the QueueJob NAME: the copy
workers would take next if the queue holds one, else one from the dead-letter list. An item
in flight (taken by a worker) is never touched. It asks for confirmation on the terminal
unless --yes is given, and fails if no waiting or dead-lettered item has that value.
NATS and RabbitMQ: from the dead letters only (JetStream cannot delete a message on the
condition that no worker was handed it; RabbitMQ would hand back the messages it looked
at as redelivered).

The queue's coordinates come from the QueueJob and its Secrets, or from flags, as for
enqueue.`,
		Example: fmt.Sprintf(`  # Look at the dead letters, then drop the poison one
  %[1]s inspect job-wq-2
  %[1]s drop job-wq-2 --item order-17

  # From a script
  %[1]s drop job-wq-2 --item order-17 --yes`, commandName()),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := d.queue.check(cmd); err != nil {
				return err
			}
			if !cmd.Flags().Changed("item") {
				return fmt.Errorf("--item is required: the value of the item to drop")
			}
			return d.run(cmd.Context(), args)
		},
	}
	cmd.Flags().StringVar(&d.item, "item", "", "The value of the item to delete.")
	cmd.Flags().BoolVarP(&d.yes, "yes", "y", false, "Do not ask for confirmation.")
	d.queue.add(cmd.Flags())
	return cmd
}

func (d *dropOptions) run(ctx context.Context, args []string) error {
	t, admin, err := d.itemAdmin(ctx, &d.queue, args, "drop")
	if err != nil {
		return err
	}
	defer func() { _ = admin.Close() }()
	if !d.yes {
		if err := d.confirm(fmt.Sprintf("Delete item %q from %s?", d.item, t.where())); err != nil {
			return err
		}
	}
	ctx, cancel := d.withTimeout(ctx)
	defer cancel()
	from, err := admin.(queue.ItemAdmin).DropItem(ctx, d.item)
	if err != nil {
		return fmt.Errorf("%s: %w", t.where(), t.explain(err))
	}
	if from == "" {
		return fmt.Errorf("no waiting or dead-lettered item %q in %s (an item in flight is never dropped): qj inspect lists them", d.item, t.where())
	}
	res := dropResult{Backend: t.Backend, Queue: t.where(), Item: d.item, From: from}
	if t.Name != "" {
		res.QueueJob = t.Namespace + "/" + t.Name
	}
	return d.print(res, func(w io.Writer) { fmt.Fprintf(w, "Deleted item %q from %s\n", res.Item, res.From) })
}

// confirm asks the question on the error stream and reads the answer from the input: yes
// or y goes on; anything else, or no input, stops.
func (o *options) confirm(question string) error {
	fmt.Fprintf(o.streams.ErrOut, "%s [y/N] ", question)
	answer, err := bufio.NewReader(o.streams.In).ReadString('\n')
	if err != nil && answer == "" {
		return fmt.Errorf("not confirmed (no answer on standard input): give --yes to go on without asking")
	}
	if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
		return fmt.Errorf("not confirmed: nothing changed")
	}
	return nil
}

// itemAdmin resolves the target of a command that addresses one item (what) and returns
// its backend's Admin, which is a queue.ItemAdmin; an error names the backends that can.
func (o *options) itemAdmin(ctx context.Context, f *queueFlags, args []string, what string) (*target, queue.Admin, error) {
	t, rest, err := o.resolveTarget(ctx, f, args)
	if err != nil {
		return nil, nil, err
	}
	if len(rest) > 0 {
		return nil, nil, fmt.Errorf("unexpected arguments %q: %s takes one QueueJob name", rest, what)
	}
	admin := t.admin(o.timeout)
	if _, ok := admin.(queue.ItemAdmin); !ok {
		_ = admin.Close()
		return nil, nil, fmt.Errorf("%s is not supported for %s queues", what, t.Backend)
	}
	return t, admin, nil
}
