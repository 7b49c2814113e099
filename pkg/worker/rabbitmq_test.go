package worker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// rabbitCh is a channel for the test to declare, publish and inspect queues.
func rabbitCh(t testing.TB) *amqp.Channel {
	t.Helper()
	return servers.AMQPChannel(t, rabbitServer.URL())
}

// declare declares queue q afresh (deleting what a previous run left) with args.
func declare(t testing.TB, q string, args amqp.Table) {
	t.Helper()
	ch := rabbitCh(t)
	for _, name := range []string{q, FailedQueue(q)} {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
		t.Fatal(err)
	}
}

func publishTo(t testing.TB, q string, bodies ...string) {
	t.Helper()
	ch := rabbitCh(t)
	for _, b := range bodies {
		if err := ch.PublishWithContext(testCtx(t), "", q, false, false, amqp.Publishing{Body: []byte(b), DeliveryMode: amqp.Persistent}); err != nil {
			t.Fatal(err)
		}
	}
}

// ready is the number of ready messages of q.
func ready(t testing.TB, q string) int {
	t.Helper()
	info, err := rabbitCh(t).QueueDeclarePassive(q, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return info.Messages
}

// readyAgain waits until q has want ready messages: after a worker's crash (its
// connection closed) the broker returns its unacked message only some time later, and a
// new worker's Lease must not run before, or it may find the queue empty.
func readyAgain(t testing.TB, q string, want int) {
	t.Helper()
	servers.Eventually(t, 30*time.Second, func() error {
		if n := ready(t, q); n != want {
			return fmt.Errorf("%d messages ready in %s, want %d: the crashed worker's message is not back", n, q, want)
		}
		return nil
	})
}

// crash makes w die with what it holds, as a worker whose process is killed: the broker
// closes its connection (DELETE /api/connections/{name} of the management API, the
// connection named "queuejob-worker <session>") and requeues its unacked messages.
func crash(t testing.TB, w *Worker) {
	t.Helper()
	u, err := url.Parse(rabbitServer.ManagementURL())
	if err != nil {
		t.Fatal(err)
	}
	password, _ := u.User.Password()
	mgmt, err := rabbithole.NewClient("http://"+u.Host, u.User.Username(), password)
	if err != nil {
		t.Fatal(err)
	}
	mgmt.SetTimeout(10 * time.Second) // a hung management API fails the test, not hangs it
	want := "queuejob-worker " + w.Options().Session
	servers.Eventually(t, 30*time.Second, func() error {
		conns, err := mgmt.ListConnections()
		if err != nil {
			return err
		}
		for _, c := range conns {
			if c.ClientProperties["connection_name"] == want {
				_, err := mgmt.CloseConnection(c.Name)
				return err
			}
		}
		return fmt.Errorf("the broker lists no connection named %q", want)
	})
}

func newRabbitWorker(t testing.TB, q string, o Options) *Worker {
	t.Helper()
	o.Backend = BackendRabbitMQ
	o.RabbitMQ = rabbitmq.Options{URL: rabbitServer.URL(), Queue: q}
	return newWorker(t, o)
}

func lease(t testing.TB, w *Worker, want string, attempt int) *Item {
	t.Helper()
	it, err := w.Lease(testCtx(t))
	if err != nil {
		t.Fatalf("Lease: %v; want %q", err, want)
	}
	if string(it.Data()) != want || it.Attempt() != attempt {
		t.Fatalf("leased %s, want %q attempt %d", itemData(it), want, attempt)
	}
	return it
}

func TestRabbitMQLeaseComplete(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, nil)
	publishTo(t, q, "a", "b")
	w := newRabbitWorker(t, q, Options{Wait: 100 * time.Millisecond})
	if empty, err := w.Empty(ctx); err != nil || empty {
		t.Errorf("Empty = %v, %v with two messages", empty, err)
	}
	for _, want := range []string{"a", "b"} {
		if err := lease(t, w, want, 1).Complete(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if it, err := w.Lease(ctx); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Lease on a drained queue = %s, %v; want ErrEmpty", itemData(it), err)
	}
	_ = w.Close()
	// Acked: nothing comes back when the worker's connection is gone.
	if n := ready(t, q); n != 0 {
		t.Errorf("%d messages ready after both were completed", n)
	}
}

// Failed messages come back with their attempt counted, in a header, also for a new
// Worker; after MaxAttempts they go to <queue>.failed, from where they can be requeued.
func TestRabbitMQDeadLetterClassic(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, nil)
	publishTo(t, q, "poison")
	for attempt := 1; attempt <= 3; attempt++ {
		// A new worker for each attempt: the count travels with the message.
		w := newRabbitWorker(t, q, Options{MaxAttempts: 3, Wait: 100 * time.Millisecond})
		it := lease(t, w, "poison", attempt)
		if err := it.Fail(ctx, errors.New("bad input")); err != nil {
			t.Fatal(err)
		}
		if want := attempt == 3; it.DeadLettered() != want {
			t.Errorf("attempt %d: DeadLettered = %v, want %v", attempt, it.DeadLettered(), want)
		}
		_ = w.Close()
	}
	if n := ready(t, q); n != 0 {
		t.Errorf("%d messages ready in %s, want 0", n, q)
	}
	ch := rabbitCh(t)
	d, ok, err := ch.Get(FailedQueue(q), false)
	if err != nil || !ok {
		t.Fatalf("nothing in %s: %v", FailedQueue(q), err)
	}
	if string(d.Body) != "poison" || headerInt(d.Headers, HeaderAttempts) != 3 || d.Headers[HeaderError] != "bad input" {
		t.Errorf("dead-lettered %q with headers %v; want poison, %s=3, %s=bad input", d.Body, d.Headers, HeaderAttempts, HeaderError)
	}
	_ = d.Nack(false, true)
	_ = ch.Close()

	w := newRabbitWorker(t, q, Options{MaxAttempts: 3, Wait: 100 * time.Millisecond})
	failed, err := w.Failed(ctx)
	if err != nil || len(failed) != 1 || string(failed[0]) != "poison" {
		t.Fatalf("Failed = %q, %v", failed, err)
	}
	if n, err := w.RequeueFailed(ctx, 0); n != 1 || err != nil {
		t.Fatalf("RequeueFailed = %d, %v", n, err)
	}
	if err := lease(t, w, "poison", 1).Complete(ctx); err != nil {
		t.Fatal(err)
	}
	if failed, err := w.Failed(ctx); err != nil || len(failed) != 0 {
		t.Errorf("Failed after requeue = %q, %v", failed, err)
	}
}

// On a quorum queue the broker counts the returns of a message (x-delivery-count),
// crashes included: a message whose workers die with it MaxAttempts times is
// dead-lettered on its next delivery.
func TestRabbitMQQuorumCrashLoop(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	publishTo(t, q, "oom")
	for attempt := 1; attempt <= 2; attempt++ {
		w := newRabbitWorker(t, q, Options{MaxAttempts: 2})
		lease(t, w, "oom", attempt)
		// The worker dies with the message: its connection goes, the broker requeues.
		crash(t, w)
		readyAgain(t, q, 1)
	}
	w := newRabbitWorker(t, q, Options{MaxAttempts: 2, Wait: 100 * time.Millisecond})
	if it, err := w.Lease(ctx); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Lease = %s, %v; want ErrEmpty, the message dead-lettered", itemData(it), err)
	}
	if failed, err := w.Failed(ctx); err != nil || len(failed) != 1 {
		t.Errorf("Failed = %q, %v; want [oom]", failed, err)
	}
}

// A quorum queue's failures count too, and add up with the broker's count of returns.
func TestRabbitMQQuorumFail(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	publishTo(t, q, "x")
	w := newRabbitWorker(t, q, Options{MaxAttempts: 3, Wait: 100 * time.Millisecond})
	if err := lease(t, w, "x", 1).Fail(ctx, errors.New("e1")); err != nil {
		t.Fatal(err)
	}
	lease(t, w, "x", 2)
	crash(t, w)
	readyAgain(t, q, 1)
	w = newRabbitWorker(t, q, Options{MaxAttempts: 3, Wait: 100 * time.Millisecond})
	it := lease(t, w, "x", 3)
	if err := it.Fail(ctx, errors.New("e3")); err != nil || !it.DeadLettered() {
		t.Fatalf("Fail of the last attempt = %v, DeadLettered %v", err, it.DeadLettered())
	}
	if _, err := w.Lease(ctx); !errors.Is(err, ErrEmpty) {
		t.Errorf("Lease = %v, want ErrEmpty", err)
	}
}

// With DeadLetterReject the broker's dead-letter exchange takes the message.
func TestRabbitMQDeadLetterReject(t *testing.T) {
	q := key(t)
	dlq := q + "-dlq"
	ctx := testCtx(t)
	declare(t, dlq, nil)
	declare(t, q, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
	publishTo(t, q, "x")
	w := newRabbitWorker(t, q, Options{MaxAttempts: 1, DeadLetter: DeadLetterReject, Wait: 100 * time.Millisecond})
	it := lease(t, w, "x", 1)
	if err := it.Fail(ctx, errors.New("e")); err != nil || !it.DeadLettered() {
		t.Fatalf("Fail = %v, DeadLettered %v", err, it.DeadLettered())
	}
	servers.Eventually(t, 30*time.Second, func() error {
		if n := ready(t, dlq); n != 1 {
			return fmt.Errorf("%d messages in the dead-letter queue %s, want 1", n, dlq)
		}
		return nil
	})
	if _, err := w.Failed(ctx); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Failed with DeadLetterReject = %v, want ErrNotSupported", err)
	}
}

// Cancelling the context given to Lease (SIGTERM) nacks the message with requeue at once,
// while the worker's connection is still open, and counts no attempt.
func TestRabbitMQCancelReturnsMessage(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, nil)
	publishTo(t, q, "x")
	w := newRabbitWorker(t, q, Options{})
	if err := lease(t, w, "x", 1).Release(ctx); err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	it, err := w.Lease(lctx)
	if err != nil || string(it.Data()) != "x" || it.Attempt() != 1 {
		t.Fatalf("Lease after Release = %s, %v; want x attempt 1 (a release counts none)", itemData(it), err)
	}
	if n := ready(t, q); n != 0 {
		t.Fatalf("%d ready while the message is held", n)
	}
	cancel()
	servers.Eventually(t, 30*time.Second, func() error {
		if n := ready(t, q); n != 1 {
			return fmt.Errorf("%d messages ready, want 1: not returned", n)
		}
		return nil
	})
	if err := it.Complete(ctx); !errors.Is(err, ErrReleased) {
		t.Errorf("Complete after cancel = %v, want ErrReleased", err)
	}
}

// A PerItem Run takes its items and leaves the next message ready, not prefetched.
func TestRabbitMQRun(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, nil)
	publishTo(t, q, "1", "2", "3")
	w := newRabbitWorker(t, q, Options{Wait: 100 * time.Millisecond})
	var seen []string
	h := func(ctx context.Context, it *Item) error {
		seen = append(seen, string(it.Data()))
		return nil
	}
	st, err := w.Run(ctx, h, RunOptions{Items: 2})
	if err != nil || st.Completed != 2 {
		t.Fatalf("Run = %+v, %v; want 2 completed", st, err)
	}
	if n := ready(t, q); n != 1 {
		t.Errorf("%d messages ready after a PerItem run of 2 of 3, want 1 (none prefetched)", n)
	}
	st, err = w.Run(ctx, h, RunOptions{})
	if err != nil || st.Completed != 1 {
		t.Fatalf("Run until empty = %+v, %v; want 1 completed", st, err)
	}
	if fmt.Sprint(seen) != "[1 2 3]" {
		t.Errorf("handled %v, want [1 2 3]", seen)
	}
}

func TestRabbitMQFromEnv(t *testing.T) {
	q := key(t)
	declare(t, q, nil)
	publishTo(t, q, "x")
	// The names the docs' job-wq-1 worker reads are enough.
	t.Setenv(queue.EnvBackend, "rabbitmq")
	t.Setenv(rabbitmq.EnvBrokerURL, rabbitServer.URL())
	t.Setenv(rabbitmq.EnvBrokerQueue, q)
	t.Setenv(EnvRabbitMQPrefetch, "2")
	w, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Options().Prefetch != 2 {
		t.Errorf("Prefetch = %d, want 2", w.Options().Prefetch)
	}
	if err := lease(t, w, "x", 1).Complete(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Setenv(rabbitmq.EnvBrokerURL, "amqp://guest:wrong@"+rabbitServer.Addr()+"/")
	if _, err := FromEnv(); queue.ReasonOf(err) != queue.ReasonAuthFailed {
		t.Errorf("FromEnv with a wrong password = %v, want AuthFailed", err)
	}
}

// Messages the broker delivered to this worker and that it has not taken yet are neither
// ready nor held: Empty must still see them.
func TestRabbitMQEmptySeesPrefetched(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, nil)
	publishTo(t, q, "1", "2", "3")
	w := newRabbitWorker(t, q, Options{Prefetch: 3})
	for _, want := range []string{"1", "2", "3"} {
		// The first Empty starts the consumer: the broker delivers all three at once.
		if empty, err := w.Empty(ctx); err != nil || empty {
			t.Fatalf("Empty = %v, %v with messages delivered to the worker", empty, err)
		}
		if err := lease(t, w, want, 1).Complete(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if empty, err := w.Empty(ctx); err != nil || !empty {
		t.Errorf("Empty = %v, %v on a drained queue", empty, err)
	}
}

// TestRabbitMQQuorumReturnIsNoAttempt: on a quorum queue, whose x-delivery-count grows with
// every return, a message returned on shutdown is still not counted: two shutdowns do not
// dead-letter a message that never failed.
func TestRabbitMQQuorumReturnIsNoAttempt(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	publishTo(t, q, "x")
	w := newRabbitWorker(t, q, Options{MaxAttempts: 2, Wait: 100 * time.Millisecond})
	for i := range 2 {
		lctx, cancel := context.WithCancel(ctx)
		it, err := w.Lease(lctx)
		if err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
		if it.Attempt() != 1 {
			t.Errorf("lease %d: attempt %d, want 1 (a shutdown is no attempt)", i, it.Attempt())
		}
		cancel() // SIGTERM: the item goes back at once
		servers.Eventually(t, 30*time.Second, func() error {
			if n := ready(t, q); n != 1 {
				return fmt.Errorf("%d messages ready, want the returned one", n)
			}
			return nil
		})
		if err := it.Complete(ctx); !errors.Is(err, ErrReleased) {
			t.Fatalf("Complete after the shutdown = %v, want ErrReleased", err)
		}
	}
	it, err := w.Lease(ctx)
	if err != nil || string(it.Data()) != "x" || it.Attempt() != 1 {
		t.Fatalf("after two shutdowns: Lease = %v, %v; want \"x\", attempt 1, not dead-lettered", it, err)
	}
}

// TestRabbitMQPrefetchedMessagesAreNotStranded: queuejob-worker runs one item at a time
// (Run with Items 1, again and again); with Prefetch 3 the broker delivers messages ahead,
// and those must be handed out too, not left unacknowledged on the channel while the
// worker reports an empty queue.
func TestRabbitMQPrefetchedMessagesAreNotStranded(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, nil)
	publishTo(t, q, "1", "2", "3", "4", "5", "6")
	w := newRabbitWorker(t, q, Options{Prefetch: 3, Wait: 100 * time.Millisecond})
	var got []string
	for {
		st, err := w.Run(ctx, func(ctx context.Context, it *Item) error {
			got = append(got, string(it.Data()))
			return nil
		}, RunOptions{Items: 1})
		if err != nil {
			t.Fatal(err)
		}
		if st.Handled() == 0 {
			break
		}
	}
	slices.Sort(got)
	if want := []string{"1", "2", "3", "4", "5", "6"}; !slices.Equal(got, want) {
		t.Errorf("handled %q before the worker saw an empty queue, want %q", got, want)
	}
}

// TestRabbitMQCloseReturnsPrefetched: messages delivered ahead and never handed out go back
// to the queue when the worker closes, uncounted.
func TestRabbitMQCloseReturnsPrefetched(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	publishTo(t, q, "1", "2", "3")
	w := newRabbitWorker(t, q, Options{Prefetch: 3, Wait: 100 * time.Millisecond})
	if _, err := w.Run(ctx, func(context.Context, *Item) error { return nil }, RunOptions{Items: 1}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := ready(t, q); n != 2 {
		t.Errorf("%d messages ready after Close, want the 2 delivered ahead", n)
	}
	w2 := newRabbitWorker(t, q, Options{Wait: 100 * time.Millisecond})
	it, err := w2.Lease(ctx)
	if err != nil || it.Attempt() != 1 {
		t.Fatalf("Lease after Close = %v, %v; want attempt 1 (returned uncounted)", it, err)
	}
}

// readyIn counts the ready messages of each queue that exists (a queue missing is
// absent from the map).
func readyIn(t testing.TB, queues ...string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, q := range queues {
		// A passive declare of a missing queue closes its channel: one channel each.
		info, err := rabbitCh(t).QueueDeclarePassive(q, false, false, false, false, nil)
		var ae *amqp.Error
		switch {
		case errors.As(err, &ae) && ae.Code == amqp.NotFound:
		case err != nil:
			t.Fatal(err)
		default:
			out[q] = info.Messages
		}
	}
	return out
}

// <queue>.failed deleted while a worker runs, after the worker declared it: the next
// dead-letter is returned by the broker as unroutable, and the worker declares the queue
// again and dead-letters into it; it never acks a message it did not store.
func TestRabbitMQDeadLetterQueueDeletedMidRun(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, nil)
	publishTo(t, q, "first", "second")
	w := newRabbitWorker(t, q, Options{MaxAttempts: 1, Wait: 100 * time.Millisecond})
	if err := lease(t, w, "first", 1).Fail(ctx, errors.New("bad input")); err != nil {
		t.Fatal(err)
	}
	if _, err := rabbitCh(t).QueueDelete(FailedQueue(q), false, false, false); err != nil {
		t.Fatal(err)
	}
	it := lease(t, w, "second", 1)
	err := it.Fail(ctx, errors.New("bad input"))
	_ = w.Close() // returns the message if the worker still held it
	got := readyIn(t, q, FailedQueue(q))
	if got[q]+got[FailedQueue(q)] != 1 {
		t.Fatalf("the dead-lettered message is gone: ready %v (Fail = %v, DeadLettered = %v)", got, err, it.DeadLettered())
	}
	if err != nil || !it.DeadLettered() || got[FailedQueue(q)] != 1 {
		t.Errorf("Fail = %v, DeadLettered = %v, ready %v; want the message dead-lettered into %s declared again",
			err, it.DeadLettered(), got, FailedQueue(q))
	}
}

// The queue deleted while a worker holds a message that then fails: the republish for
// another attempt is returned as unroutable, and Fail says so instead of acking the
// original as if its copy were stored.
func TestRabbitMQRetryIntoDeletedQueue(t *testing.T) {
	q := key(t)
	ctx := testCtx(t)
	declare(t, q, nil)
	publishTo(t, q, "body-7f3a")
	w := newRabbitWorker(t, q, Options{MaxAttempts: 5, Wait: 100 * time.Millisecond})
	it := lease(t, w, "body-7f3a", 1)
	if _, err := rabbitCh(t).QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	err := it.Fail(ctx, errors.New("bad input"))
	if !errors.Is(err, rabbitmq.ErrUnroutable) || !strings.Contains(err.Error(), fmt.Sprintf("%q", q)) {
		t.Errorf("Fail after the queue was deleted = %v; want ErrUnroutable naming queue %q", err, q)
	}
	if err != nil && strings.Contains(err.Error(), "body-7f3a") {
		t.Errorf("the error quotes the message's body: %v", err)
	}
}

// headerInt is an integer header of a message, 0 if it has none.
func headerInt(h amqp.Table, name string) int {
	switch v := h[name].(type) {
	case int32:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	}
	return 0
}
