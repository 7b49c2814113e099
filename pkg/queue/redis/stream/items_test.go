package stream

import (
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// itemsOf lists the item field of each entry of key, oldest first.
func itemsOf(t *testing.T, rc *goredis.Client, key string) []string {
	t.Helper()
	var out []string
	for _, m := range rc.XRange(testCtx(t), key, "-", "+").Val() {
		out = append(out, m.Values[FieldItem].(string))
	}
	return out
}

// RequeueItem moves the oldest dead letter with the item to the end of the stream without
// its attempts; DropItem deletes the next undelivered entry with the item, else a dead
// letter, never a pending one.
func TestRequeueAndDropItem(t *testing.T) {
	o := fresh(t, time.Minute)
	rc := redisServer.RedisClient(t)
	failed := FailedKey(o.Stream)
	enqueue(t, o, "busy", "a", "poison")
	c := consumer(t, o, "w")
	if l, err := c.Take(testCtx(t), 0); err != nil || l == nil || string(l.Data()) != "busy" {
		t.Fatalf("Take = %v, %v", l, err)
	}
	for _, item := range []string{"other", "poison"} {
		rc.XAdd(testCtx(t), &goredis.XAddArgs{Stream: failed, Values: []any{FieldItem, item, FieldAttempts, "3", FieldError, "boom"}})
	}
	a := NewAdmin(o, 10*time.Second)
	t.Cleanup(func() { _ = a.Close() })

	if ok, err := a.RequeueItem(testCtx(t), "missing"); ok || err != nil {
		t.Errorf("RequeueItem(missing) = %v, %v", ok, err)
	}
	if ok, err := a.RequeueItem(testCtx(t), "other"); !ok || err != nil {
		t.Fatalf("RequeueItem(other) = %v, %v", ok, err)
	}
	if got := itemsOf(t, rc, o.Stream); len(got) != 4 || got[3] != "other" {
		t.Errorf("stream = %q, want other at its end", got)
	}
	last := rc.XRevRangeN(testCtx(t), o.Stream, "+", "-", 1).Val()[0]
	if _, ok := last.Values[FieldAttempts]; ok || last.Values[FieldError] != nil {
		t.Errorf("the requeued entry kept its attempts or error: %v", last.Values)
	}

	for _, want := range []string{o.Stream, failed, ""} {
		if from, err := a.DropItem(testCtx(t), "poison"); from != want || err != nil {
			t.Errorf("DropItem(poison) = %q, %v; want %q", from, err, want)
		}
	}
	if from, err := a.DropItem(testCtx(t), "busy"); from != "" || err != nil {
		t.Errorf("DropItem(busy), an entry in flight = %q, %v; want none", from, err)
	}
	if got := itemsOf(t, rc, o.Stream); len(got) != 3 || got[0] != "busy" || got[1] != "a" || got[2] != "other" {
		t.Errorf("stream = %q, want busy (pending), a, other", got)
	}
	if n := rc.XLen(testCtx(t), failed).Val(); n != 0 {
		t.Errorf("%d dead letters left", n)
	}
	// The script's own check, for an entry delivered between the search and the delete.
	busy := rc.XRangeN(testCtx(t), o.Stream, "-", "+", 1).Val()[0].ID
	if n, err := dropEntryScript.Run(testCtx(t), rc, []string{o.Stream}, busy, "busy", o.Group).Int(); n != -1 || err != nil {
		t.Errorf("dropEntryScript on a pending entry = %d, %v; want -1", n, err)
	}
	if n, err := dropEntryScript.Run(testCtx(t), rc, []string{o.Stream}, busy, "not-busy", "").Int(); n != 0 || err != nil {
		t.Errorf("dropEntryScript on an entry holding another item = %d, %v; want 0", n, err)
	}
}

// DropItem on a stream no worker has read yet (a producer's XADD, no group): the entry is
// ready, and deleted. A search that meets a pending entry with the item (delivered between
// the search and the delete) goes on past it to the next copy.
func TestDropItemWithoutGroupAndPastPending(t *testing.T) {
	o := fresh(t, time.Minute)
	rc := redisServer.RedisClient(t)
	rc.XAdd(testCtx(t), &goredis.XAddArgs{Stream: o.Stream, Values: []any{FieldItem, "x"}})
	a := NewAdmin(o, 10*time.Second)
	t.Cleanup(func() { _ = a.Close() })
	if from, err := a.DropItem(testCtx(t), "x"); from != o.Stream || err != nil {
		t.Fatalf("DropItem without a group = %q, %v", from, err)
	}

	enqueue(t, o, "dup", "dup")
	c := consumer(t, o, "w")
	if l, err := c.Take(testCtx(t), 0); err != nil || l == nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	// As if the search had started before the delivery: from the stream's start.
	if ok, err := a.dropFrom(testCtx(t), o.Stream, "-", o.Group, "dup"); !ok || err != nil {
		t.Fatalf("dropFrom = %v, %v", ok, err)
	}
	ids := rc.XRange(testCtx(t), o.Stream, "-", "+").Val()
	pending := rc.XPending(testCtx(t), o.Stream, o.Group).Val()
	if len(ids) != 1 || pending.Count != 1 || ids[0].ID != pending.Lower {
		t.Errorf("stream %v, pending %+v: want only the pending copy left", ids, pending)
	}
}
