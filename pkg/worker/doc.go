// Package worker is the library a QueueJob's worker is written with: it leases items from
// the QueueJob's queue (Redis or RabbitMQ), keeps the lease while the item is worked on,
// and completes, retries, dead-letters or returns it.
//
// # Configuration
//
// FromEnv configures a Worker in one call from the QUEUEJOB_* variables the operator puts
// into every worker pod (see docs/queues-and-workers.md, "What worker pods get"), plus a few that the pod
// template may set (QUEUEJOB_LEASE_SECONDS, QUEUEJOB_MAX_ATTEMPTS, ...: see OptionsFromEnv).
// New takes the same settings explicitly.
//
// # Use
//
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	w, err := worker.FromEnv()
//	if err != nil { log.Fatal(err) }
//	defer w.Close()
//	for {
//		it, err := w.Lease(ctx)
//		if errors.Is(err, worker.ErrEmpty) { break } // nothing ready, nothing in flight
//		if err != nil { log.Fatal(err) }             // ctx cancelled, or the queue failed
//		if err := process(it.Context(), it.Data()); err != nil {
//			err = it.Fail(ctx, err) // retried, or dead-lettered after MaxAttempts
//		} else {
//			err = it.Complete(ctx)
//		}
//		...
//	}
//
// or, the same loop: w.Run(ctx, handler, worker.RunOptions{Items: n}) handles n items
// (a PerItem pod's itemsPerPod) or, with Items 0, runs until the queue is empty (a
// WorkerPool worker).
//
// # Redis
//
// Items are taken with the protocol of the Kubernetes docs' rediswq.py, so that Go and
// Python workers can share a queue, and the operator's lease reaper returns the items of
// crashed workers: LMOVE (RPOPLPUSH) from <key> into <key>:processing, then a lease key
// <key>:leased_by_session:<sha224 hex> with an expiry of LeaseTTL. While the item is held
// a goroutine extends the lease every LeaseTTL/3, so an item may take much longer than its
// lease; if the worker dies, the lease expires and the reaper returns the item to <key>.
// The scripts and key names live in pkg/queue/redis (redis.WQ), shared with the
// operator and the qj CLI; the worker side is pkg/queue/redis's Consumer.
//
// Attempts are counted in Redis, in the hash <key>:attempts, when an item is leased: a
// lease that ends in a crash (the reaper reclaims it) has counted, so a poison item that
// kills its worker cannot loop forever. A Fail of the MaxAttempts-th attempt, or a lease
// of an item that has had MaxAttempts attempts already, moves the item to the dead-letter
// list <key>:failed; Failed lists it and RequeueFailed puts it back with a fresh count.
// Release and shutdown give the attempt back. rediswq.py workers do not count attempts.
//
// # RabbitMQ
//
// The worker (pkg/queue/rabbitmq's Consumer) consumes with manual acknowledgements and a
// prefetch of Prefetch (1 by default). Complete acks. Fail republishes the message to the back of the queue with the
// attempt count in the header x-queuejob-attempts and then acks it (publisher confirms make
// sure the copy is stored first); on a quorum queue the broker's x-delivery-count (returns
// of a message, crashes included) is added to the count. After MaxAttempts attempts the
// message is dead-lettered: by default published to the queue <queue>.failed (declared if
// missing) and acked; with DeadLetter DeadLetterReject it is rejected without requeue, so
// the broker routes it to the queue's dead-letter exchange (x-dead-letter-exchange) —
// use that only on a queue that has one, as the broker drops rejected messages otherwise.
// Release and shutdown publish the message again, to the back of the queue, with the
// attempts it had, and then ack it: a requeueing nack would count an attempt on a quorum
// queue, whose x-delivery-count grows with every return. Messages delivered ahead
// (Prefetch > 1) and never handed out go back the same way when the worker stops taking
// or closes.
//
// Every republish (Fail, dead-letter, Release and shutdown, RequeueFailed) is mandatory
// and confirmed: the original is acked only once the broker stored the copy, never when
// it returned it as unroutable (its queue was deleted). Fail then nacks the original with
// requeue and returns an error wrapping rabbitmq.ErrUnroutable; Release nacks it with
// requeue; RequeueFailed leaves it in <queue>.failed and stops. A dead-letter that comes
// back because <queue>.failed was deleted since this worker declared it declares the queue
// again and publishes once more; if that fails too, the message is nacked back to its queue.
//
// # Shutdown and terminationGracePeriodSeconds
//
// The context given to Lease governs the item: when it is cancelled before the item is
// finished, the item goes back to the queue at once (Redis: to the front of <key>, lease
// deleted, attempt given back; RabbitMQ: published again, uncounted), and the item's Context is
// cancelled so the handler can stop. Cancel it on SIGTERM (signal.NotifyContext), which
// the kubelet sends when a pod is deleted, preempted or its wave is ended; the kubelet
// sends SIGKILL terminationGracePeriodSeconds (30 s by default) later. Returning the item
// takes one round trip, so the default grace is plenty for the library; make the grace
// longer than what your handler needs to stop once its context is cancelled. A worker
// killed before it returns the item (SIGKILL, OOM, a process that ignores SIGTERM) loses
// nothing: on Redis the item comes back once its lease has expired and the reaper has seen
// it unleased for its grace (LeaseTTL plus about max(10 s, 2 × probeIntervalSeconds)); on
// RabbitMQ the broker requeues it when the connection closes. An item returned while its
// handler still runs may run twice: handlers should be idempotent.
package worker
