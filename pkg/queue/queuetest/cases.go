package queuetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/worker"
)

var errOnPurpose = errors.New("conformance: failed on purpose")

// testCounts: the probe counts the ready, in-flight and dead-lettered items.
func testCounts(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	waitCounts(t, h, q, counts{}, false)
	enqueue(t, h, q, "c1", "c2", "c3")
	waitCounts(t, h, q, counts{ready: 3}, false)
	w := newWorker(t, q, 1)
	ctx := testCtx(t)
	it := lease(t, ctx, w)
	waitCounts(t, h, q, counts{ready: 2, inFlight: 1}, false)
	if err := it.Fail(ctx, errOnPurpose); err != nil || !it.DeadLettered() {
		t.Fatalf("Fail of the only attempt = %v (dead-lettered %v), want dead-lettered", err, it.DeadLettered())
	}
	// The dead-letter count is checked once nothing is ready (see
	// Capabilities.DeadLettered).
	for range 2 {
		if err := lease(t, ctx, w).Complete(ctx); err != nil {
			t.Fatalf("Complete = %v", err)
		}
	}
	waitCounts(t, h, q, counts{deadLettered: 1}, false)
}

// testCompletion: a completed item is gone for good, a second Complete says so, and Run
// completes the rest and returns once the queue is empty.
func testCompletion(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	enqueue(t, h, q, "d1", "d2", "d3")
	w := newWorker(t, q, 5)
	ctx := testCtx(t)
	it := lease(t, ctx, w)
	if err := it.Complete(ctx); err != nil {
		t.Fatalf("Complete = %v", err)
	}
	if err := it.Complete(ctx); !errors.Is(err, worker.ErrFinished) {
		t.Errorf("Complete again = %v, want ErrFinished", err)
	}
	if it.Context().Err() == nil {
		t.Error("the item's context lives on after Complete")
	}
	var handled []string
	st, err := w.Run(ctx, func(_ context.Context, it *worker.Item) error {
		handled = append(handled, string(it.Data()))
		return nil
	}, worker.RunOptions{})
	if err != nil || st.Completed != 2 || st.Handled() != 2 {
		t.Fatalf("Run = %+v, %v; want 2 completed", st, err)
	}
	all := append(handled, string(it.Data()))
	slices.Sort(all)
	if want := []string{"d1", "d2", "d3"}; !slices.Equal(all, want) {
		t.Errorf("completed %q by hand and %q by Run, want %q in all", it.Data(), handled, want)
	}
	waitCounts(t, h, q, counts{}, false)
	if _, err := w.Lease(ctx); !errors.Is(err, worker.ErrEmpty) {
		t.Errorf("Lease of a drained queue = %v, want ErrEmpty", err)
	}
}

// testEnqueueOrder: one worker leases the items in the order they were enqueued, and an
// item that failed goes behind those waiting.
func testEnqueueOrder(t *testing.T, h *Harness) {
	if !h.Capabilities.FIFO {
		t.Skipf("%s promises no order", h.Backend)
	}
	q := newQueue(t, h)
	enqueue(t, h, q, "o1", "o2", "o3", "o4", "o5")
	w := newWorker(t, q, 5)
	ctx := testCtx(t)
	first := lease(t, ctx, w)
	wantItem(t, first, "o1", 1)
	if err := first.Fail(ctx, errOnPurpose); err != nil {
		t.Fatalf("Fail = %v", err)
	}
	var got []string
	for range 5 {
		it := lease(t, ctx, w)
		got = append(got, fmt.Sprintf("%s@%d", it.Data(), it.Attempt()))
		if err := it.Complete(ctx); err != nil {
			t.Fatalf("Complete = %v", err)
		}
	}
	if want := []string{"o2@1", "o3@1", "o4@1", "o5@1", "o1@2"}; !slices.Equal(got, want) {
		t.Errorf("leased (item@attempt) %q, want %q", got, want)
	}
}

// testArbitraryBytes: items are bytes, whatever they hold: empty, large, not UTF-8.
func testArbitraryBytes(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	items := []string{"", strings.Repeat("large ", 200_000), "\xff\xfe\x00not UTF-8\x80", "line\r\nbreaks\n"}
	enqueue(t, h, q, items...)
	waitCounts(t, h, q, counts{ready: int64(len(items))}, false)
	w := newWorker(t, q, 5)
	ctx := testCtx(t)
	var got []string
	for range items {
		it := lease(t, ctx, w)
		got = append(got, string(it.Data()))
		if err := it.Complete(ctx); err != nil {
			t.Fatalf("Complete = %v", err)
		}
	}
	want := slices.Clone(items)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("leased %d items of lengths %v, want lengths %v", len(got), lengths(got), lengths(want))
	}
	waitCounts(t, h, q, counts{}, false)
}

func lengths(items []string) []int {
	var ls []int
	for _, it := range items {
		ls = append(ls, len(it))
	}
	return ls
}

// testLeaseExpiryAndReclaim: an item a live worker holds stays its own for longer than
// its lease; once the worker is gone without finishing it, it comes back, by the
// backend's own means (Harness.Reclaim).
func testLeaseExpiryAndReclaim(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	enqueue(t, h, q, "r1")
	holder := newWorker(t, q, 5)
	ctx := testCtx(t)
	it := lease(t, ctx, holder)
	wantItem(t, it, "r1", 1)
	waitCounts(t, h, q, counts{inFlight: 1}, false)
	// The window spans the moment the lease would expire if it were not renewed, and the
	// reaper's grace after it.
	for deadline := time.Now().Add(2 * LeaseTTL); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if h.Reclaim != nil {
			if err := h.Reclaim(ctx, q); err != nil {
				t.Fatalf("Reclaim = %v", err)
			}
		}
		c, err := q.Conn.Probe(ctx)
		if err != nil {
			t.Fatalf("Probe = %v", err)
		}
		if err := (counts{inFlight: 1}).check(c, h.Capabilities); err != nil {
			t.Fatalf("while a live worker holds the item: %v", err)
		}
	}
	if err := context.Cause(it.Context()); err != nil {
		t.Fatalf("the live worker lost its item: %v", err)
	}
	closeWorker(t, holder) // gone without finishing the item
	waitCounts(t, h, q, counts{ready: 1}, true)
	attempt := 1
	if h.Capabilities.ReclaimCountsAttempt {
		attempt = 2
	}
	leaseAndComplete(t, q, "r1", attempt)
	waitCounts(t, h, q, counts{}, false)
}

// testGoneWorkerReclaim: the item of a worker whose pod is gone comes back in one pass of
// Harness.ReclaimGone, long before its lease would expire, while a live worker's item
// stays with it.
func testGoneWorkerReclaim(t *testing.T, h *Harness) {
	if h.ReclaimGone == nil {
		t.Skipf("%s has no ReclaimGone: a gone worker's items come back as in LeaseExpiryAndReclaim", h.Backend)
	}
	const deadPod, livePod = "3f1d2c4b-0000-4000-8000-00000000dead", "3f1d2c4b-0000-4000-8000-0000000011fe"
	q := newQueue(t, h)
	enqueue(t, h, q, "g1", "g2")
	ctx := testCtx(t)
	longLease := func(pod string) *worker.Worker {
		o := workerOptions(t, q, 5)
		o.LeaseTTL, o.Session = time.Hour, o.Session+"@"+pod
		w, err := worker.New(ctx, o)
		if err != nil {
			t.Fatalf("worker.New = %v", err)
		}
		t.Cleanup(func() { _ = w.Close() })
		return w
	}
	dead, live := longLease(deadPod), longLease(livePod)
	lost := string(lease(t, ctx, dead).Data())
	kept := lease(t, ctx, live)
	closeWorker(t, dead) // its pod ended: no renewals, its lease an hour from expiry
	gone := func(session string) bool { pod, ok := queue.SessionPod(session); return ok && pod == deadPod }
	if err := h.ReclaimGone(ctx, q, gone); err != nil {
		t.Fatalf("ReclaimGone = %v", err)
	}
	waitCounts(t, h, q, counts{ready: 1, inFlight: 1}, false)
	if err := context.Cause(kept.Context()); err != nil {
		t.Fatalf("the live worker lost its item: %v", err)
	}
	attempt := 1
	if h.Capabilities.ReclaimCountsAttempt {
		attempt = 2
	}
	leaseAndComplete(t, q, lost, attempt)
	if err := kept.Complete(ctx); err != nil {
		t.Fatalf("Complete of the live worker's item = %v", err)
	}
	waitCounts(t, h, q, counts{}, false)
}

// testGiveBackOnRelease: Release returns the item at once, with its attempt given back.
func testGiveBackOnRelease(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	enqueue(t, h, q, "g1")
	failOnce(t, q, "g1")
	w := newWorker(t, q, 5)
	ctx := testCtx(t)
	it := lease(t, ctx, w)
	wantItem(t, it, "g1", 2)
	if err := it.Release(ctx); err != nil {
		t.Fatalf("Release = %v", err)
	}
	if err := it.Complete(ctx); !errors.Is(err, worker.ErrFinished) {
		t.Errorf("Complete after Release = %v, want ErrFinished", err)
	}
	// Given back while the worker lives: the same worker takes it again, at the same
	// attempt (an item left unacked would block a RabbitMQ consumer of prefetch 1 here).
	again := lease(t, ctx, w)
	wantItem(t, again, "g1", 2)
	if err := again.Complete(ctx); err != nil {
		t.Fatalf("Complete = %v", err)
	}
	closeWorker(t, w)
	waitCounts(t, h, q, counts{}, false)
}

// testGiveBackOnContextCancel: cancelling the context given to Lease returns the item at
// once, while its worker lives, with its attempt given back.
func testGiveBackOnContextCancel(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	enqueue(t, h, q, "k1")
	failOnce(t, q, "k1")
	w := newWorker(t, q, 5)
	leaseCtx, cancel := context.WithCancel(testCtx(t))
	it := lease(t, leaseCtx, w)
	wantItem(t, it, "k1", 2)
	cancel()
	returns(t, "the item's context", func() error { <-it.Context().Done(); return nil })
	waitCounts(t, h, q, counts{ready: 1}, false)
	if err := it.Complete(testCtx(t)); !errors.Is(err, worker.ErrReleased) {
		t.Errorf("Complete after the lease's context was cancelled = %v, want ErrReleased", err)
	}
	closeWorker(t, w)
	leaseAndComplete(t, q, "k1", 2)
}

// testGiveBackOnSIGTERM: a worker's main on SIGTERM: Run's context is cancelled while the
// handler holds an item, Run returns, the worker is closed; the item is back, its attempt
// given back and nothing counted as handled.
func testGiveBackOnSIGTERM(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	enqueue(t, h, q, "s1")
	failOnce(t, q, "s1")
	w := newWorker(t, q, 5)
	runCtx, sigterm := context.WithCancel(testCtx(t))
	leased := make(chan string, 1)
	type result struct {
		st  worker.Stats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := w.Run(runCtx, func(ctx context.Context, it *worker.Item) error {
			leased <- fmt.Sprintf("%s@%d", it.Data(), it.Attempt())
			<-ctx.Done()
			return ctx.Err()
		}, worker.RunOptions{})
		done <- result{st, err}
	}()
	if got := returns(t, "Run's first item", func() string { return <-leased }); got != "s1@2" {
		t.Fatalf("Run handled %s, want s1@2", got)
	}
	sigterm()
	r := returns(t, "Run after SIGTERM", func() result { return <-done })
	if !errors.Is(r.err, context.Canceled) || r.st.Handled() != 0 {
		t.Errorf("Run after SIGTERM = %+v, %v; want nothing handled, context.Canceled", r.st, r.err)
	}
	// The worker's main closes the worker before it exits: the item is back by then. (Not
	// before: a RabbitMQ consumer may hold the given-back copy until Close returns it.)
	closeWorker(t, w)
	waitCounts(t, h, q, counts{ready: 1}, false)
	leaseAndComplete(t, q, "s1", 2)
}

// testDeadLetterAndRequeue: an item that fails MaxAttempts times is dead-lettered and
// listed; Requeue puts the oldest back first, each with a fresh count of attempts.
func testDeadLetterAndRequeue(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	enqueue(t, h, q, "p1", "p2")
	w := newWorker(t, q, 2)
	ctx := testCtx(t)
	st, err := w.Run(ctx, func(context.Context, *worker.Item) error { return errOnPurpose }, worker.RunOptions{})
	if err != nil || st.Retried != 2 || st.DeadLettered != 2 {
		t.Fatalf("Run with a failing handler = %+v, %v; want 2 retried, 2 dead-lettered", st, err)
	}
	waitCounts(t, h, q, counts{deadLettered: 2}, false)
	failed, err := w.Failed(ctx)
	if got := sortedStrings(failed); err != nil || !slices.Equal(got, []string{"p1", "p2"}) {
		t.Errorf("Failed = %q, %v; want p1 and p2", got, err)
	}
	closeWorker(t, w)
	for _, tc := range []struct {
		n          int
		item       string
		deadBefore int64
	}{{n: 1, item: "p1", deadBefore: 2}, {n: 0, item: "p2", deadBefore: 1}} {
		if moved, err := h.Requeue(ctx, q, tc.n); err != nil || moved != 1 {
			t.Fatalf("Requeue(%d) with %d dead-lettered = %d, %v; want 1", tc.n, tc.deadBefore, moved, err)
		}
		waitCounts(t, h, q, counts{ready: 1, deadLettered: tc.deadBefore - 1}, false)
		leaseAndComplete(t, q, tc.item, 1)
	}
	waitCounts(t, h, q, counts{}, false)
}

func sortedStrings(bs [][]byte) []string {
	var s []string
	for _, b := range bs {
		s = append(s, string(b))
	}
	slices.Sort(s)
	return s
}

// testBadCredentials: refused credentials fail the probe and worker.New at once, with
// reason AuthFailed and a message that quotes no secret.
func testBadCredentials(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	bad, secrets := h.BadCredentials(t, q)
	t.Cleanup(func() { _ = bad.Conn.Close() })
	ctx := testCtx(t)
	err := returns(t, "Probe with bad credentials", func() error { _, err := bad.Conn.Probe(ctx); return err })
	wantReason(t, "Probe with bad credentials", err, queue.ReasonAuthFailed, secrets...)
	type result struct {
		w   *worker.Worker
		err error
	}
	r := returns(t, "worker.New with bad credentials", func() result {
		w, err := worker.New(ctx, workerOptions(t, bad, 5))
		return result{w, err}
	})
	if r.err == nil {
		_ = r.w.Close()
	}
	wantReason(t, "worker.New with bad credentials", r.err, queue.ReasonAuthFailed, secrets...)
}

// testServerFrozen: a server that takes connections and answers nothing fails the probe
// in bounded time with reason ConnectionFailed (no answer); once it answers again, the
// probe recovers and nothing is lost.
func testServerFrozen(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	enqueue(t, h, q, "f1", "f2")
	waitCounts(t, h, q, counts{ready: 2}, false)
	h.PauseServer(t)
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			h.ResumeServer(t)
		}
	})
	ctx := testCtx(t)
	err := returns(t, "Probe of a frozen server", func() error { _, err := q.Conn.Probe(ctx); return err })
	wantReason(t, "Probe of a frozen server", err, queue.ReasonConnectionFailed)
	if !queue.NoAnswer(err) {
		t.Errorf("Probe of a frozen server = %v, want it marked NoAnswer", err)
	}
	h.ResumeServer(t)
	resumed = true
	waitCounts(t, h, q, counts{ready: 2}, false)
}

// testServerGone: a server killed while a worker waits for an item and another holds one:
// the waiting Lease, the probe and the holder's Complete all return, with errors (the
// probe's of reason ConnectionFailed); once the server is back the probe recovers, and a
// backend whose items survive a restart has lost none.
func testServerGone(t *testing.T, h *Harness) {
	q := newQueue(t, h)
	enqueue(t, h, q, "x1")
	ctx := testCtx(t)
	holder, waiter := newWorker(t, q, 5), newWorker(t, q, 5)
	it := lease(t, ctx, holder)
	waitCounts(t, h, q, counts{inFlight: 1}, false)
	leaseErr := make(chan error, 1)
	go func() {
		// Nothing ready, one item in flight: Lease waits for it, until the server goes.
		it, err := waiter.Lease(ctx)
		if err == nil {
			err = fmt.Errorf("leased %q while another worker held the only item", it.Data())
		}
		leaseErr <- err
	}()
	h.StopServer(t)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			h.StartServer(t)
		}
	})
	err := returns(t, "a waiting Lease when the server went", func() error { return <-leaseErr })
	if err == nil || errors.Is(err, worker.ErrEmpty) || queue.ReasonOf(err) != queue.ReasonConnectionFailed {
		t.Errorf("Lease when the server went = %v, want an error of reason ConnectionFailed", err)
	}
	err = returns(t, "Probe of a stopped server", func() error { _, err := q.Conn.Probe(ctx); return err })
	wantReason(t, "Probe of a stopped server", err, queue.ReasonConnectionFailed)
	if err := returns(t, "Complete on a stopped server", func() error { return it.Complete(ctx) }); err == nil {
		t.Error("Complete on a stopped server = nil, want an error: the item was not completed")
	}
	_, _ = holder.Close(), waiter.Close()
	h.StartServer(t)
	restarted = true
	if !h.Capabilities.SurvivesRestart {
		eventually(t, waitTimeout, func() error { _, err := q.Conn.Probe(ctx); return err })
		return
	}
	waitCounts(t, h, q, counts{ready: 1}, true)
	attempt := 1
	if h.Capabilities.ReclaimCountsAttempt {
		attempt = 2
	}
	leaseAndComplete(t, q, "x1", attempt)
}
