package redis

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestWQKeys(t *testing.T) {
	if got := FailedKey("job2"); got != "job2:failed" {
		t.Errorf("FailedKey = %q", got)
	}
	if got := AttemptsKey("job2"); got != "job2:attempts" {
		t.Errorf("AttemptsKey = %q", got)
	}
	// The lease key's digest, so that the CLI can match counts and leases.
	if got, want := "job2:leased_by_session:"+ItemDigest("apple"), LeaseKey("job2", "apple"); got != want {
		t.Errorf("ItemDigest does not match LeaseKey: %q vs %q", got, want)
	}
}

// CompleteAndTake works on a server that has not loaded its script yet (a restarted
// Redis), and completes before it takes.
func TestWQCompleteAndTake(t *testing.T) {
	k := key(t)
	c := rdb(t)
	q := WQ{Client: c, Key: k}
	c.LPush(ctx(t), k, "a", "b", "c", "d")
	for _, flush := range []bool{true, false} {
		if flush {
			c.ScriptFlush(ctx(t))
		}
		item, err := q.Take(ctx(t), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := q.Claim(ctx(t), item, "s", time.Minute, 3); err != nil {
			t.Fatal(err)
		}
		done, next, err := q.CompleteAndTake(ctx(t), item, "s")
		if err != nil || !done || next == "" {
			t.Fatalf("CompleteAndTake (script flushed: %v) = %v, %q, %v", flush, done, next, err)
		}
		if got := c.LRange(ctx(t), ProcessingKey(k), 0, -1).Val(); !slices.Equal(got, []string{next}) {
			t.Errorf("processing = %q, want only the next item %q", got, next)
		}
		if ok, err := q.Complete(ctx(t), next, "s"); err != nil || !ok {
			t.Fatalf("Complete = %v, %v", ok, err)
		}
	}
	if _, _, err := q.CompleteAndTake(ctx(t), "gone", "s"); !errors.Is(err, ErrNoItem) {
		t.Errorf("CompleteAndTake on an empty list = %v, want ErrNoItem", err)
	}
}

// RequeueFailed moves oldest first, in batches, and only as many as asked.
func TestWQRequeueFailed(t *testing.T) {
	k := key(t)
	c := rdb(t)
	q := WQ{Client: c, Key: k}
	var items []any
	for i := range requeueBatch + 5 {
		items = append(items, i)
	}
	c.LPush(ctx(t), FailedKey(k), items...) // 0 is the oldest, at the tail
	if n, err := q.RequeueFailed(ctx(t), 2); n != 2 || err != nil {
		t.Fatalf("RequeueFailed(2) = %d, %v", n, err)
	}
	if got := c.LRange(ctx(t), k, 0, -1).Val(); !slices.Equal(got, []string{"1", "0"}) {
		t.Errorf("queue = %q, want [1 0]: the oldest is taken first", got)
	}
	if n, err := q.RequeueFailed(ctx(t), 0); n != requeueBatch+3 || err != nil {
		t.Errorf("RequeueFailed(all) = %d, %v; want %d", n, err, requeueBatch+3)
	}
	if n := c.LLen(ctx(t), FailedKey(k)).Val(); n != 0 {
		t.Errorf("%d left on the failed list", n)
	}
}

// RequeueItem moves one dead-lettered copy, behind the waiting items; DropItem deletes the
// next waiting copy, else a dead-lettered one, never one in flight, and drops the count of
// attempts only with the last copy.
func TestWQRequeueAndDropItem(t *testing.T) {
	k := key(t)
	c := rdb(t)
	q := WQ{Client: c, Key: k}
	c.RPush(ctx(t), k, "a", "poison", "b")           // taken from the tail: b, poison, a
	c.LPush(ctx(t), FailedKey(k), "poison", "other") // dead-lettered
	c.RPush(ctx(t), ProcessingKey(k), "poison")      // in flight
	c.HSet(ctx(t), AttemptsKey(k), ItemDigest("poison"), 2)

	if ok, err := q.RequeueItem(ctx(t), "missing"); ok || err != nil {
		t.Errorf("RequeueItem(missing) = %v, %v", ok, err)
	}
	if ok, err := q.RequeueItem(ctx(t), "other"); !ok || err != nil {
		t.Fatalf("RequeueItem(other) = %v, %v", ok, err)
	}
	if got := c.LRange(ctx(t), k, 0, -1).Val(); !slices.Equal(got, []string{"other", "a", "poison", "b"}) {
		t.Errorf("queue = %q: the requeued item goes behind the waiting ones", got)
	}
	if got := c.LRange(ctx(t), FailedKey(k), 0, -1).Val(); !slices.Equal(got, []string{"poison"}) {
		t.Errorf("failed = %q", got)
	}

	for _, want := range []string{k, FailedKey(k), ""} {
		if from, err := q.DropItem(ctx(t), "poison"); from != want || err != nil {
			t.Errorf("DropItem(poison) = %q, %v; want %q", from, err, want)
		}
		// The copy in flight keeps its count of attempts.
		if n := c.HGet(ctx(t), AttemptsKey(k), ItemDigest("poison")).Val(); n != "2" {
			t.Errorf("after dropping from %q, attempts = %q; want 2 while a copy is in flight", want, n)
		}
	}
	if got := c.LRange(ctx(t), ProcessingKey(k), 0, -1).Val(); !slices.Equal(got, []string{"poison"}) {
		t.Errorf("processing = %q: an item in flight was dropped", got)
	}
	if got := c.LRange(ctx(t), k, 0, -1).Val(); !slices.Equal(got, []string{"other", "a", "b"}) {
		t.Errorf("queue = %q", got)
	}
	// The last copy gone, its count goes with it.
	c.Del(ctx(t), ProcessingKey(k))
	c.RPush(ctx(t), k, "poison")
	if from, err := q.DropItem(ctx(t), "poison"); from != k || err != nil {
		t.Fatalf("DropItem(poison) = %q, %v", from, err)
	}
	if c.HExists(ctx(t), AttemptsKey(k), ItemDigest("poison")).Val() {
		t.Error("the count of attempts outlived the item's last copy")
	}
}
