package redis

import (
	"slices"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

const (
	deadUID = "0a1b2c3d-0000-4000-8000-00000000dead"
	liveUID = "0a1b2c3d-0000-4000-8000-0000000011fe"
)

// goneUID says the sessions of the pod deadUID are gone.
func goneUID(session string) bool { uid, ok := queue.SessionPod(session); return ok && uid == deadUID }

func TestReapReturnsTheItemsOfGonePodsAtOnce(t *testing.T) {
	c := rdb(t)
	lrange := func(k string) []string { return c.LRange(ctx(t), k, 0, -1).Val() }
	lease := func(k, item, holder string) { setLease(t, k, item, holder) }
	// heldByGonePod is a list whose one item, "item", is leased for an hour by a session
	// of the pod deadUID, and a probe connection to it.
	heldByGonePod := func(t *testing.T) (string, *Conn) {
		k := key(t)
		c.RPush(ctx(t), k, "item")
		c.RPopLPush(ctx(t), k, ProcessingKey(k))
		setLease(t, k, "item", "wave-1-abc-0f0f0f@"+deadUID)
		return k, newRedis(t, k)
	}
	t.Run("a gone pod's leases, a live pod's and a bare session's", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "dead-1", "live", "uuid", "dead-2")
		for range 4 {
			c.RPopLPush(ctx(t), k, ProcessingKey(k))
		}
		lease(k, "dead-1", "wave-1-abc-0f0f0f@"+deadUID)
		lease(k, "dead-2", "wave-1-abc-1e1e1e@"+deadUID)
		lease(k, "live", "wave-1-def-2d2d2d@"+liveUID)
		lease(k, "uuid", "9b2e6f4c-8a0b-4c1d-9e2f-3a4b5c6d7e8f") // rediswq.py's session
		r := newRedis(t, k)
		// One call, long before any lease expires and with no earlier sighting.
		n, err := r.Reap(ctx(t), time.Now(), time.Hour, goneUID)
		if err != nil || n != 2 {
			t.Fatalf("Reap = %d, %v; want the gone pod's 2 items", n, err)
		}
		if got := lrange(k); !slices.Equal(got, []string{"dead-2", "dead-1"}) {
			t.Errorf("waiting = %v, want dead-2 and dead-1, pushed at the tail in the order they were taken", got)
		}
		if got := lrange(ProcessingKey(k)); !slices.Equal(got, []string{"live", "uuid"}) {
			t.Errorf("processing = %v, want the live and the bare session's items kept", got)
		}
		if c.Exists(ctx(t), LeaseKey(k, "dead-1"), LeaseKey(k, "dead-2")).Val() != 0 {
			t.Error("the gone pod's leases are still there")
		}
		if c.Exists(ctx(t), LeaseKey(k, "live"), LeaseKey(k, "uuid")).Val() != 2 {
			t.Error("a lease of a live holder was deleted")
		}
	})

	t.Run("a lease that changed hands after it was read stays", func(t *testing.T) {
		k, r := heldByGonePod(t)
		// Between the reaper's read and its script, a live worker holds the item now.
		gone := func(s string) bool {
			lease(k, "item", "wave-2-xyz-3c3c3c@"+liveUID)
			return goneUID(s)
		}
		if n, err := r.Reap(ctx(t), time.Now(), time.Hour, gone); err != nil || n != 0 {
			t.Fatalf("Reap = %d, %v; want 0", n, err)
		}
		if got := lrange(ProcessingKey(k)); !slices.Equal(got, []string{"item"}) {
			t.Errorf("processing = %v, want the item still in flight", got)
		}
		if got := c.Get(ctx(t), LeaseKey(k, "item")).Val(); got != "wave-2-xyz-3c3c3c@"+liveUID {
			t.Errorf("lease = %q, want the live worker's", got)
		}
	})

	t.Run("a lease key of another type leaves its item alone, and the others are reaped", func(t *testing.T) {
		k, r := heldByGonePod(t) // "item", a gone pod's
		c.RPush(ctx(t), k, "odd")
		c.RPopLPush(ctx(t), k, ProcessingKey(k))
		c.HSet(ctx(t), LeaseKey(k, "odd"), "f", "v")
		n, err := r.Reap(ctx(t), time.Now(), time.Second, goneUID)
		if err != nil || n != 1 {
			t.Fatalf("Reap = %d, %v; want the gone pod's item back, no error", n, err)
		}
		if got := lrange(ProcessingKey(k)); !slices.Equal(got, []string{"odd"}) {
			t.Errorf("processing = %v, want the odd-leased item kept", got)
		}
	})

	t.Run("without gone, a held item waits for its lease", func(t *testing.T) {
		_, r := heldByGonePod(t)
		for i := range 3 {
			if n := reapAt(t, r, time.Now().Add(time.Duration(i)*time.Hour), time.Second); n != 0 {
				t.Fatalf("reaped a leased item without gone")
			}
		}
	})
}

// setLease writes the lease of item, held by holder, for an hour.
func setLease(t *testing.T, k, item, holder string) {
	t.Helper()
	if err := rdb(t).Set(ctx(t), LeaseKey(k, item), holder, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
}
