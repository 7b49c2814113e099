package nats_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// enqueue creates o's stream (qj enqueue --declare) and enqueues items.
func enqueue(t testing.TB, o nats.Options, items ...string) {
	t.Helper()
	a := nats.NewAdmin(o, 10*time.Second)
	defer func() { _ = a.Close() }()
	if err := a.Open(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := a.Declare(ctx(t)); err != nil {
		t.Fatal(err)
	}
	i := 0
	next := func() (string, error) {
		if i == len(items) {
			return "", io.EOF
		}
		i++
		return items[i-1], nil
	}
	if _, _, err := a.Enqueue(ctx(t), next, func(int64) {}, queue.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A worker whose AckWait passed without a renewal does not ack: Complete says the lease
// was lost, and the message is delivered again (to whoever pulls next), its attempt
// counted; renewals keep a lease past its AckWait.
func TestLeaseLostAfterAckWait(t *testing.T) {
	o := options("lease-lost")
	o.AckWait = time.Second
	enqueue(t, o, "slow", "renewed")
	c, err := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	slow, err := c.Take(ctx(t), 5*time.Second)
	if err != nil || slow == nil {
		t.Fatalf("Take = %v, %v", slow, err)
	}
	renewed, err := c.Take(ctx(t), 5*time.Second)
	if err != nil || renewed == nil {
		t.Fatalf("Take = %v, %v", renewed, err)
	}
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(renewed.RenewEvery()) {
		if ok, err := renewed.Renew(ctx(t)); !ok || err != nil {
			t.Fatalf("Renew = %v, %v", ok, err)
		}
	}
	if err := slow.Complete(ctx(t)); !errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Complete after the AckWait passed = %v, want ErrLeaseLost", err)
	}
	if err := renewed.Complete(ctx(t)); err != nil {
		t.Errorf("Complete of the renewed lease = %v", err)
	}
	again, err := c.Take(ctx(t), 5*time.Second)
	if err != nil || again == nil || string(again.Data()) != "slow" || again.Attempt() != 2 {
		t.Fatalf("Take after the lease was lost = %v, %v; want slow at attempt 2", again, err)
	}
	if err := again.Complete(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if empty, err := c.Empty(ctx(t)); !empty || err != nil {
		t.Errorf("Empty = %v, %v; want the queue drained", empty, err)
	}
}

// A worker whose server was restarted fails the calls made while it was gone, and then
// takes items again on a new connection, without being made anew.
func TestConsumerReconnects(t *testing.T) {
	srv, err := servers.StartNATSWith(servers.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	o := nats.Options{Servers: []string{srv.URL()}, Stream: "reconnect", Consumer: "workers", Timeout: 2 * time.Second}
	enqueue(t, o, "a", "b")
	c, err := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if l, err := c.Take(ctx(t), 5*time.Second); err != nil || l == nil || l.Complete(ctx(t)) != nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	srv.Stop()
	if _, err := c.Take(ctx(t), time.Second); queue.ReasonOf(err) != queue.ReasonConnectionFailed {
		t.Errorf("Take while the server is gone = %v, want ConnectionFailed", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// Empty connects again first: Take must then pull on the new connection, not on the
	// consumer of the closed one.
	servers.Eventually(t, 30*time.Second, func() error { _, err := c.Empty(ctx(t)); return err })
	l, err := c.Take(ctx(t), 5*time.Second)
	if err != nil || l == nil {
		t.Fatalf("Take after the restart = %v, %v", l, err)
	}
	if string(l.Data()) != "b" {
		t.Errorf("took %q after the restart, want b", l.Data())
	}
	if err := l.Complete(ctx(t)); err != nil {
		t.Errorf("Complete after the restart = %v", err)
	}
}

// Fail that must dead-letter and cannot (here: the lease expired first) says it did not
// dead-letter: pkg/worker would otherwise log "Dead-lettered" for an item still queued.
func TestFailDoesNotClaimAFailedDeadLetter(t *testing.T) {
	o := options("fail-dead-letter-lost")
	o.AckWait = time.Second
	enqueue(t, o, "a")
	c, err := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	l, err := c.Take(ctx(t), 5*time.Second)
	if err != nil || l == nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	time.Sleep(o.AckWait + 100*time.Millisecond) // the lease expires
	if dead, err := l.Fail(ctx(t), errors.New("boom")); dead || !errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Fail after the lease expired = %v, %v; want false, ErrLeaseLost", dead, err)
	}
}

// A dead-letter stream deleted while the workers run is created again at the next dead
// letter, not failed on until the worker restarts.
func TestDeadLetterStreamDeletedWhileRunning(t *testing.T) {
	o := options("failed-deleted")
	enqueue(t, o, "a", "b")
	c, err := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	js := rawJetStream(t)
	for i, item := range []string{"a", "b"} {
		l, err := c.Take(ctx(t), 5*time.Second)
		if err != nil || l == nil || string(l.Data()) != item {
			t.Fatalf("Take = %v, %v; want %s", l, err, item)
		}
		if dead, err := l.Fail(ctx(t), errors.New("boom")); !dead || err != nil {
			t.Fatalf("Fail of %s = %v, %v; want dead-lettered", item, dead, err)
		}
		if i == 0 {
			if err := js.DeleteStream(ctx(t), nats.FailedStream(o.Stream)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if failed, err := c.Failed(ctx(t)); err != nil || len(failed) != 1 || string(failed[0]) != "b" {
		t.Errorf("Failed = %q, %v; want [b]", failed, err)
	}
}

// A worker treats its lease as lost a margin (a tenth of the AckWait) before the server's
// AckWait passes: its ack or renewal would otherwise reach a message the server may have
// delivered to another worker meanwhile (the server keys acks on the sequence only).
func TestLeaseExpiresAMarginBeforeTheAckWait(t *testing.T) {
	o := options("lease-margin")
	o.AckWait = 3 * time.Second
	enqueue(t, o, "a")
	c, err := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	l, err := c.Take(ctx(t), 5*time.Second)
	if err != nil || l == nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	time.Sleep(o.AckWait - o.AckWait/20) // within the margin, before the server's AckWait
	if ok, err := l.Renew(ctx(t)); ok || err != nil {
		t.Errorf("Renew within the margin = %v, %v; want false (lost)", ok, err)
	}
	if err := l.Complete(ctx(t)); !errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Complete within the margin = %v, want ErrLeaseLost", err)
	}
}
