package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

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
unless --yes is given (without a terminal, --yes is needed), and fails if no waiting or dead-lettered item has that value.
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

// stdinIsTerminal reports whether r is a terminal; tests replace it.
var stdinIsTerminal = func(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// confirm asks the question on the error stream and reads one line of answer from the
// terminal: yes or y goes on; anything else stops. Input that is not a terminal (a pipe,
// a script's loop) is never read as an answer: --yes is needed there.
func (o *options) confirm(question string) error {
	if !stdinIsTerminal(o.streams.In) {
		return fmt.Errorf("not confirmed: standard input is not a terminal; give --yes to go on without asking")
	}
	fmt.Fprintf(o.streams.ErrOut, "%s [y/N] ", question)
	var answer []byte
	b := make([]byte, 1)
	for len(answer) < 64 {
		// One byte at a time: nothing after the answer's line is taken from the input.
		n, err := o.streams.In.Read(b)
		if n == 1 && b[0] == '\n' || err != nil {
			break
		}
		answer = append(answer, b[:n]...)
	}
	if a := strings.ToLower(strings.TrimSpace(string(answer))); a != "y" && a != "yes" {
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
