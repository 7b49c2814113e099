package queuetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/worker"
)

// testCtx is a context for one case, bounded generously for a loaded machine.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newQueue is a fresh queue of h, its probe connection closed after the case.
func newQueue(t *testing.T, h *Harness) Queue {
	t.Helper()
	q := h.NewQueue(t)
	t.Cleanup(func() { _ = q.Conn.Close() })
	return q
}

// enqueue adds items to q in the order given.
func enqueue(t *testing.T, h *Harness, q Queue, items ...string) {
	t.Helper()
	bs := make([][]byte, len(items))
	for i, it := range items {
		bs[i] = []byte(it)
	}
	if err := h.Enqueue(testCtx(t), q, bs...); err != nil {
		t.Fatalf("Enqueue(%s, %q) = %v", q.Name, items, err)
	}
}

// sessions numbers the workers' sessions.
var sessions atomic.Int64

// workerOptions are the suite's options of a worker of q: Options.MaxAttempts is
// maxAttempts.
func workerOptions(t *testing.T, q Queue, maxAttempts int) worker.Options {
	o := q.Options
	o.LeaseTTL = LeaseTTL
	o.MaxAttempts = maxAttempts
	o.Wait = 100 * time.Millisecond
	o.Session = fmt.Sprintf("conformance-%d", sessions.Add(1))
	o.Logger = testLogger(t)
	return o
}

// newWorker is a worker of q, closed after the case.
func newWorker(t *testing.T, q Queue, maxAttempts int) *worker.Worker {
	t.Helper()
	w, err := worker.New(testCtx(t), workerOptions(t, q, maxAttempts))
	if err != nil {
		t.Fatalf("worker.New for %s = %v", q.Name, err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// closeWorker closes w now (its items not finished go back by the backend's own means).
func closeWorker(t *testing.T, w *worker.Worker) {
	t.Helper()

	if err := w.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

// lease leases the next item of w under ctx, failing the case if there is none.
func lease(t *testing.T, ctx context.Context, w *worker.Worker) *worker.Item {
	t.Helper()
	it, err := w.Lease(ctx)
	if err != nil {
		t.Fatalf("Lease = %v, want an item", err)
	}
	return it
}

// wantItem fails the case unless it holds data at attempt attempt.
func wantItem(t *testing.T, it *worker.Item, data string, attempt int) {
	t.Helper()
	if string(it.Data()) != data || it.Attempt() != attempt {
		t.Fatalf("leased %q at attempt %d, want %q at attempt %d", it.Data(), it.Attempt(), data, attempt)
	}
}

// failOnce leases data from q and fails it once (it goes back for a second attempt).
func failOnce(t *testing.T, q Queue, data string) {
	t.Helper()
	w := newWorker(t, q, 5)
	it := lease(t, testCtx(t), w)
	wantItem(t, it, data, 1)
	if err := it.Fail(testCtx(t), errors.New("conformance: failed on purpose")); err != nil || it.DeadLettered() {
		t.Fatalf("Fail = %v (dead-lettered %v), want a retry", err, it.DeadLettered())
	}
	closeWorker(t, w)
}

// leaseAndComplete leases data at attempt attempt from q with a worker of its own, and
// completes it.
func leaseAndComplete(t *testing.T, q Queue, data string, attempt int) {
	t.Helper()
	w := newWorker(t, q, 5)
	it := lease(t, testCtx(t), w)
	wantItem(t, it, data, attempt)
	if err := it.Complete(testCtx(t)); err != nil {
		t.Fatalf("Complete = %v", err)
	}
	closeWorker(t, w)
}

// counts is what a case expects a probe to count.
type counts struct{ ready, inFlight, deadLettered int64 }

// check says how c differs from what the backend must count, nil if it does not: the
// counts the backend does not promise are not compared, but an in-flight or dead-letter
// count it does not have must be said to be unknown.
func (want counts) check(c queue.Counts, caps Capabilities) error {
	var diffs []string
	if c.Ready != want.ready {
		diffs = append(diffs, fmt.Sprintf("ready %d, want %d", c.Ready, want.ready))
	}
	switch {
	case caps.InFlight && c.InFlightUnknown:
		diffs = append(diffs, "in-flight unknown, want counted")
	case caps.InFlight && c.InFlight != want.inFlight:
		diffs = append(diffs, fmt.Sprintf("in flight %d, want %d", c.InFlight, want.inFlight))
	case !caps.InFlight && !c.InFlightUnknown:
		diffs = append(diffs, "in-flight counted as known, but the harness says the backend cannot count it")
	}
	switch {
	case caps.DeadLettered && c.DeadLetteredUnknown:
		diffs = append(diffs, "dead-lettered unknown, want counted")
	case caps.DeadLettered && c.DeadLettered != want.deadLettered:
		diffs = append(diffs, fmt.Sprintf("dead-lettered %d, want %d", c.DeadLettered, want.deadLettered))
	case !caps.DeadLettered && !c.DeadLetteredUnknown:
		diffs = append(diffs, "dead-lettered counted as known, but the harness says the backend cannot count it")
	}
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("Probe = %+v: %s", c, strings.Join(diffs, "; "))
}

// waitCounts waits until q's probe counts want (counts may lag behind, as the RabbitMQ
// management API's do); with reclaim, it calls h.Reclaim before each probe, as the
// operator reaps at each probe.
func waitCounts(t *testing.T, h *Harness, q Queue, want counts, reclaim bool) {
	t.Helper()
	ctx := testCtx(t)
	eventually(t, waitTimeout, func() error {
		if reclaim && h.Reclaim != nil {
			if err := h.Reclaim(ctx, q); err != nil {
				return fmt.Errorf("Reclaim = %w", err)
			}
		}
		c, err := q.Conn.Probe(ctx)
		if err != nil {
			return fmt.Errorf("Probe = %w", err)
		}
		return want.check(c, h.Capabilities)
	})
}

// eventually polls f every 50ms until it returns nil, failing the case with f's last
// error after timeout.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// returns runs call and fails the case if it does not return within callTimeout: a
// call that hangs on a server that is gone or frozen.
func returns[T any](t *testing.T, what string, call func() T) T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- call() }()
	select {
	case v := <-done:
		return v
	case <-time.After(callTimeout):
		t.Fatalf("%s did not return within %s", what, callTimeout)
	}
	panic("unreachable")
}

// wantReason fails the case unless err is a *queue.Error with reason, quoting none of
// secrets.
func wantReason(t *testing.T, what string, err error, reason string, secrets ...string) {
	t.Helper()
	var qe *queue.Error
	if !errors.As(err, &qe) || qe.Reason != reason {
		t.Errorf("%s = %v, want an error with reason %s", what, err, reason)
	}
	if err == nil {
		return
	}
	for _, s := range secrets {
		if part := leaks(err.Error(), s); part != "" {
			t.Errorf("%s = %q: quotes %q of a secret", what, err, part)
		}
	}
}

// leaks returns the first substring of secret, at least 4 bytes long, that msg contains.
func leaks(msg, secret string) string {
	for i := 0; i+4 <= len(secret); i++ {
		if strings.Contains(msg, secret[i:i+4]) {
			return secret[i : i+4]
		}
	}
	return ""
}

// testLogger writes a worker's log lines into the case's log while it runs, and to
// stderr after (a worker's goroutine may outlive its case).
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.over.Store(true) })
	return slog.New(slog.NewTextHandler(w, nil))
}

type testWriter struct {
	t    *testing.T
	over atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if w.over.Load() {
		return os.Stderr.Write(p)
	}
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// AdminEnqueue enqueues items through a backend's queue.Admin, as qj enqueue does: Open,
// then Enqueue; an error names how many items were and may have been enqueued.
func AdminEnqueue(ctx context.Context, a queue.Admin, o queue.EnqueueOptions, items ...[]byte) error {
	defer func() { _ = a.Close() }()
	if err := a.Open(ctx); err != nil {
		return err
	}
	i := 0
	next := func() (string, error) {
		if i == len(items) {
			return "", io.EOF
		}
		i++
		return string(items[i-1]), nil
	}
	n, unsure, err := a.Enqueue(ctx, next, func(int64) {}, o)
	if err != nil {
		return fmt.Errorf("enqueued %d of %d items (%d unsure): %w", n, len(items), unsure, err)
	}
	if n != int64(len(items)) {
		return fmt.Errorf("enqueued %d of %d items", n, len(items))
	}
	return nil
}
