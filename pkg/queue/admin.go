package queue

import "context"

// Admin is a backend's side of qj, the CLI: what enqueue and inspect do to one queue, and
// what requeue counts when it stops (requeue itself runs through pkg/worker). Each backend
// implements it (pkg/queue/redis/admin.go, pkg/queue/rabbitmq/admin.go); cmd/qj picks one
// by the queue's backend. Its errors never quote credentials.
type Admin interface {
	// Probe counts the queue with the operator's probe, its checks and its messages
	// (connection, TLS, credentials, the queue and its type). inFlight asks for the
	// in-flight count too where it costs another service (RabbitMQ's management API);
	// enqueue does without.
	Probe(ctx context.Context, inFlight bool) (Counts, error)
	// Open connects for Declare and Enqueue, where the client does not connect on first
	// use.
	Open(ctx context.Context) error
	// Enqueue puts the items that next yields (until io.EOF) into the queue, calling added
	// with the number of items the server took each time it took some. It returns how
	// many items were enqueued for sure, and, after an error, how many more may have been
	// (their replies were lost).
	Enqueue(ctx context.Context, next func() (string, error), added func(n int64), o EnqueueOptions) (enqueued, unsure int64, err error)
	// Inspect reads what qj inspect shows of the queue (at most limit items of each list,
	// where items can be read without taking them), given the counts of Probe. The value
	// is the backend's section of inspect's output.
	Inspect(ctx context.Context, limit int64, counts Counts) (any, error)
	// CountFailed counts the dead-lettered items (none if there is no dead-letter list or
	// queue) and names where they are.
	CountFailed(ctx context.Context) (n int64, where string, err error)
	Close() error
}

// EnqueueOptions say how Admin.Enqueue enqueues.
type EnqueueOptions struct {
	// FIFO pushes the items so that workers take them in the order given, where the
	// queue's default order is not that (Redis: LPUSH at the list's head instead of
	// RPUSH at its tail). A first-in, first-out queue returns ErrNotSupported.
	FIFO bool
}

// Declarer is an Admin whose queue must exist before items are enqueued, and that can
// create it (RabbitMQ: a durable classic queue). Call Open first.
type Declarer interface {
	Declare(ctx context.Context) error
}

// ItemAdmin is an Admin that can find one waiting item by its value: qj requeue --item
// and qj drop --item, for the one poison item a user wants back in the queue or gone.
// Neither ever touches an item in flight.
type ItemAdmin interface {
	// RequeueItem moves one dead-lettered item whose value is item back into the queue,
	// where RequeueFailed would put it, without the attempts it had; false if no
	// dead-lettered item has that value.
	RequeueItem(ctx context.Context, item string) (bool, error)
	// DropItem deletes one item whose value is item: a ready one first where the backend
	// can delete a ready item on the condition that no worker has it (Redis lists and
	// streams), else a dead-lettered one. It names where the item was; "" if none was
	// found.
	DropItem(ctx context.Context, item string) (where string, err error)
}
