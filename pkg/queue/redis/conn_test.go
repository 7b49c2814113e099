package redis

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// rdb is a plain client for the test to play producer and rediswq worker.
func rdb(t *testing.T) *goredis.Client {
	t.Helper()
	return redisServer.RedisClient(t)
}

// key is a fresh list name per test.
func key(t *testing.T) string { return "q-" + strings.ReplaceAll(t.Name(), "/", "-") }

func newRedis(t *testing.T, k string) *Conn {
	t.Helper()
	r := New(Options{Address: redisServer.Addr(), Key: k})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// rediswqLease does what rediswq.py's lease() does: RPOPLPUSH into the processing list,
// then SETEX the lease key named after the item's sha224.
func rediswqLease(t *testing.T, c *goredis.Client, k string, secs time.Duration) string {
	t.Helper()
	item, err := c.RPopLPush(ctx(t), k, k+":processing").Result()
	if err != nil {
		t.Fatalf("RPOPLPUSH: %v", err)
	}
	if err := c.SetEx(ctx(t), LeaseKey(k, item), "session-1", secs).Err(); err != nil {
		t.Fatal(err)
	}
	return item
}

func TestLeaseKeyIsRediswqs(t *testing.T) {
	// hashlib.sha224(b"apple").hexdigest(), computed by Python: the key rediswq.py writes.
	want := "job2:leased_by_session:b7bbfdf1a1012999b3c466fdeb906a629caa5e3e022428d1eb702281"
	if got := LeaseKey("job2", "apple"); got != want {
		t.Errorf("LeaseKey = %q, want %q", got, want)
	}
	if got, want := LeaseKey("k", "ü-item"), "k:leased_by_session:1c5f33a1fd04610467a3a6d2ada15aec5f20a9e4fca01d9309589ac2"; got != want {
		t.Errorf("LeaseKey of a UTF-8 item = %q, want %q", got, want)
	}
	if got := ProcessingKey("job2"); got != "job2:processing" {
		t.Errorf("ProcessingKey = %q", got)
	}
}

func TestRedisProbe(t *testing.T) {
	c := rdb(t)
	cases := []struct {
		name   string
		setup  func(k string)
		want   queue.Counts
		reason string
	}{
		{name: "missing list is empty", setup: func(string) {}, want: queue.Counts{}},
		{name: "waiting items", setup: func(k string) { c.RPush(ctx(t), k, "a", "b", "c") }, want: queue.Counts{Ready: 3}},
		{name: "waiting and in-flight items", setup: func(k string) {
			c.RPush(ctx(t), k, "apple", "banana", "cherry", "date", "fig")
			rediswqLease(t, c, k, time.Minute)
			rediswqLease(t, c, k, time.Minute)
		}, want: queue.Counts{Ready: 3, InFlight: 2}},
		{name: "dead-lettered items", setup: func(k string) {
			c.RPush(ctx(t), k, "a")
			c.RPush(ctx(t), FailedKey(k), "x", "y", "z")
		}, want: queue.Counts{Ready: 1, DeadLettered: 3}},
		{name: "only dead-lettered items", setup: func(k string) { c.RPush(ctx(t), FailedKey(k), "x", "y") },
			want: queue.Counts{DeadLettered: 2}},
		{name: "a string where the list should be", setup: func(k string) { c.Set(ctx(t), k, "x", 0) }, reason: queue.ReasonWrongType},
		{name: "a string where the dead-letter list should be", setup: func(k string) {
			c.RPush(ctx(t), k, "a")
			c.Set(ctx(t), FailedKey(k), "x", 0)
		}, reason: queue.ReasonWrongType},
		{name: "a hash where the processing list should be", setup: func(k string) {
			c.RPush(ctx(t), k, "a")
			c.HSet(ctx(t), k+":processing", "f", "v")
		}, reason: queue.ReasonWrongType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := key(t)
			tc.setup(k)
			got, err := newRedis(t, k).Probe(ctx(t))
			if tc.reason != "" {
				if queue.ReasonOf(err) != tc.reason || err == nil {
					t.Fatalf("Probe error = %v (reason %s), want reason %s", err, queue.ReasonOf(err), tc.reason)
				}
				if !strings.Contains(err.Error(), "spec.queue.redis.key") {
					t.Errorf("error %q does not say which field to fix", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Probe (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRedisProbeErrors(t *testing.T) {
	cases := []struct {
		name   string
		opts   Options
		reason string
	}{
		{name: "right password", opts: Options{Address: authRedis.Addr(), Password: redisPassword}},
		{name: "wrong password", opts: Options{Address: authRedis.Addr(), Password: "wrong-pass-xyz"}, reason: queue.ReasonAuthFailed},
		{name: "no password", opts: Options{Address: authRedis.Addr()}, reason: queue.ReasonAuthFailed},
		{name: "nothing listening", opts: Options{Address: closedPort(t)}, reason: queue.ReasonConnectionFailed},
		{name: "a server that never answers", opts: Options{Address: silentServer(t), Timeout: 500 * time.Millisecond}, reason: queue.ReasonConnectionFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Key = "k"
			r := New(tc.opts)
			defer r.Close()
			start := time.Now()
			_, err := r.Probe(ctx(t))
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("Probe took %s: it must not hang", took)
			}
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Probe: %v", err)
				}
				return
			}
			var qe *queue.Error
			if !errors.As(err, &qe) || qe.Reason != tc.reason {
				t.Fatalf("Probe error = %v, want reason %s", err, tc.reason)
			}
			for _, secret := range []string{redisPassword, "wrong-pass-xyz"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains the password", err)
				}
			}
		})
	}
}

func TestRedisReap(t *testing.T) {
	c := rdb(t)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Second
	lrange := func(k string) []string {
		v, err := c.LRange(ctx(t), k, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(v)
		return v
	}

	t.Run("a live lease is never stolen", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "apple")
		rediswqLease(t, c, k, time.Hour)
		r := newRedis(t, k)
		for i := range 5 {
			n, err := r.Reap(ctx(t), t0.Add(time.Duration(i)*time.Hour), grace, nil)
			if err != nil || n != 0 {
				t.Fatalf("Reap = %d, %v; want 0, nil", n, err)
			}
		}
		if got := lrange(k + ":processing"); !slices.Equal(got, []string{"apple"}) {
			t.Errorf("processing = %v", got)
		}
	})

	t.Run("an abandoned item comes back once, after the grace and not before", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "apple", "banana")
		item := rediswqLease(t, c, k, time.Hour)
		c.Del(ctx(t), LeaseKey(k, item)) // the lease expired: its worker is gone
		r := newRedis(t, k)
		for _, step := range []struct {
			at   time.Duration
			want int
		}{{0, 0}, {grace - time.Second, 0}, {grace, 1}, {2 * grace, 0}} {
			n, err := r.Reap(ctx(t), t0.Add(step.at), grace, nil)
			if err != nil || n != step.want {
				t.Fatalf("Reap at +%s = %d, %v; want %d", step.at, n, err, step.want)
			}
		}
		if got := lrange(k); !slices.Equal(got, []string{"apple", "banana"}) {
			t.Errorf("waiting = %v, want both items back", got)
		}
		if got := lrange(k + ":processing"); len(got) != 0 {
			t.Errorf("processing = %v, want empty", got)
		}
	})

	t.Run("an item leased between two reaps is left alone", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "apple")
		// The worker has moved the item and not yet written its lease.
		item := c.RPopLPush(ctx(t), k, k+":processing").Val()
		r := newRedis(t, k)
		if n, _ := r.Reap(ctx(t), t0, grace, nil); n != 0 {
			t.Fatalf("first Reap reclaimed %d", n)
		}
		c.SetEx(ctx(t), LeaseKey(k, item), "session-1", time.Hour)
		if n, err := r.Reap(ctx(t), t0.Add(time.Hour), grace, nil); n != 0 || err != nil {
			t.Fatalf("Reap after the lease was written = %d, %v; want 0", n, err)
		}
		if got := lrange(k + ":processing"); !slices.Equal(got, []string{"apple"}) {
			t.Errorf("processing = %v", got)
		}
	})

	t.Run("two reapers return an item exactly once", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "apple")
		c.RPopLPush(ctx(t), k, k+":processing")
		a, b := newRedis(t, k), newRedis(t, k)
		for _, r := range []*Conn{a, b} {
			if n, _ := r.Reap(ctx(t), t0, grace, nil); n != 0 {
				t.Fatal("reclaimed before the grace")
			}
		}
		na, errA := a.Reap(ctx(t), t0.Add(grace), grace, nil)
		nb, errB := b.Reap(ctx(t), t0.Add(grace), grace, nil)
		if errA != nil || errB != nil || na+nb != 1 {
			t.Fatalf("reclaimed %d+%d (%v, %v), want exactly 1", na, nb, errA, errB)
		}
		if got := lrange(k); !slices.Equal(got, []string{"apple"}) {
			t.Errorf("waiting = %v, want one apple", got)
		}
	})

	t.Run("duplicate values all come back", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "same", "same")
		c.RPopLPush(ctx(t), k, k+":processing")
		c.RPopLPush(ctx(t), k, k+":processing")
		r := newRedis(t, k)
		total := 0
		for i := range 6 {
			n := reapAt(t, r, t0.Add(time.Duration(i)*grace), grace)
			total += n
		}
		if total != 2 || !slices.Equal(lrange(k), []string{"same", "same"}) {
			t.Errorf("reclaimed %d, waiting %v; want both copies back", total, lrange(k))
		}
	})

	t.Run("a completed item is not returned", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "apple")
		item := c.RPopLPush(ctx(t), k, k+":processing").Val()
		r := newRedis(t, k)
		_, _ = r.Reap(ctx(t), t0, grace, nil)
		// rediswq's complete(): LREM, then DEL of the lease key.
		c.LRem(ctx(t), k+":processing", 0, item)
		if n, _ := r.Reap(ctx(t), t0.Add(grace), grace, nil); n != 0 {
			t.Fatalf("reclaimed a completed item")
		}
		if got := lrange(k); len(got) != 0 {
			t.Errorf("waiting = %v, want empty", got)
		}
	})
}

func newRedisScan(t *testing.T, k string, maxScan int64) *Conn {
	t.Helper()
	r := New(Options{Address: redisServer.Addr(), Key: k, MaxScan: maxScan})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// reapAt reaps once as at now, failing the test on an error, and returns how many items
// it reclaimed.
func reapAt(t *testing.T, r *Conn, at time.Time, grace time.Duration) int {
	t.Helper()
	n, err := r.Reap(ctx(t), at, grace, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// inFlight puts items into <k>:processing as rediswq's RPOPLPUSH does, oldest first: the
// first item ends at the tail (index -1), the last at the head (index 0). Items named in
// leased get a lease of an hour.
func inFlight(t *testing.T, c *goredis.Client, k string, items []string, leased ...string) {
	t.Helper()
	for _, it := range items {
		if err := c.LPush(ctx(t), ProcessingKey(k), it).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, it := range leased {
		if err := c.SetEx(ctx(t), LeaseKey(k, it), "session-1", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRedisReapReentry(t *testing.T) {
	c := rdb(t)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Second
	// x is seen without a lease, then completed; later the same value is taken again
	// and its new worker has not written the lease yet. The grace counts from the first
	// sighting of this stay, not of the earlier one.
	for _, tc := range []struct {
		name string
		// between runs while x is not in flight.
		between func(t *testing.T, r *Conn)
	}{
		{name: "a reap saw the processing list empty", between: func(t *testing.T, r *Conn) {
			if n := reapAt(t, r, t0.Add(time.Second), grace); n != 0 {
				t.Fatalf("Reap of an empty list reclaimed %d", n)
			}
		}},
		{name: "only a probe saw the processing list empty", between: func(t *testing.T, r *Conn) {
			got, err := r.Probe(ctx(t))
			if err != nil || got.InFlight != 0 {
				t.Fatalf("Probe = %+v, %v; want nothing in flight", got, err)
			}
		}},
		{name: "a reap saw x gone while other items were in flight", between: func(t *testing.T, r *Conn) {
			inFlight(t, c, key(t), []string{"other"}, "other")
			if n := reapAt(t, r, t0.Add(time.Second), grace); n != 0 {
				t.Fatalf("Reap reclaimed %d", n)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := key(t)
			r := newRedis(t, k)
			inFlight(t, c, k, []string{"x"})
			if n := reapAt(t, r, t0, grace); n != 0 {
				t.Fatalf("first Reap reclaimed %d", n)
			}
			c.LRem(ctx(t), ProcessingKey(k), 0, "x") // rediswq's complete()
			tc.between(t, r)
			inFlight(t, c, k, []string{"x"}) // taken again; the lease is not written yet
			if n := reapAt(t, r, t0.Add(grace+time.Second), grace); n != 0 {
				t.Fatalf("Reap at the first sighting of x's second stay reclaimed %d: the grace counted from its earlier stay", n)
			}
			if n := reapAt(t, r, t0.Add(2*grace+2*time.Second), grace); n != 1 {
				t.Fatalf("Reap a grace after the first sighting of the second stay reclaimed %d, want 1", n)
			}
			if got := c.LRange(ctx(t), k, 0, -1).Val(); !slices.Equal(got, []string{"x"}) {
				t.Errorf("waiting = %v, want [x]", got)
			}
		})
	}
}

func TestRedisReapOldestEnd(t *testing.T) {
	c := rdb(t)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Second
	k := key(t)
	items := []string{"i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9"}
	inFlight(t, c, k, items, items[1:]...) // only the oldest, i0, has no lease
	r := newRedisScan(t, k, 3)
	total := 0
	for i := range 20 {
		n := reapAt(t, r, t0.Add(time.Duration(i)*grace), grace)
		total += n
	}
	if total != 1 {
		t.Fatalf("20 Reaps with MaxScan 3 over 10 in-flight items reclaimed %d, want 1 (the oldest, i0)", total)
	}
	if got := c.LRange(ctx(t), k, 0, -1).Val(); !slices.Equal(got, []string{"i0"}) {
		t.Errorf("waiting = %v, want [i0]", got)
	}
}

func TestRedisReapPaging(t *testing.T) {
	c := rdb(t)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Second
	k := key(t)
	var items, leased []string
	abandoned := map[string]bool{"p00": true, "p04": true, "p05": true, "p10": true, "p13": true}
	for i := range 14 {
		it := fmt.Sprintf("p%02d", i)
		items = append(items, it)
		if !abandoned[it] {
			leased = append(leased, it)
		}
	}
	inFlight(t, c, k, items, leased...)
	r := newRedisScan(t, k, 3)
	total := 0
	// Probes a third of the grace apart: an item needs several visits.
	for i := range 60 {
		at := t0.Add(time.Duration(i) * grace / 3)
		n := reapAt(t, r, at, grace)
		if n > 0 && at.Sub(t0) < grace {
			t.Fatalf("Reap at +%s reclaimed %d, before any item could have been unleased for the grace", at.Sub(t0), n)
		}
		total += n
	}
	waiting := c.LRange(ctx(t), k, 0, -1).Val()
	slices.Sort(waiting)
	want := []string{"p00", "p04", "p05", "p10", "p13"}
	if total != len(want) || !slices.Equal(waiting, want) {
		t.Errorf("reclaimed %d, waiting %v; want every abandoned item %v back", total, waiting, want)
	}
	proc := c.LRange(ctx(t), ProcessingKey(k), 0, -1).Val()
	slices.Sort(proc)
	if !slices.Equal(proc, leased) {
		t.Errorf("processing = %v, want the leased items %v", proc, leased)
	}
}

func TestRedisReapPagedDuplicates(t *testing.T) {
	c := rdb(t)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Second
	k := key(t)
	inFlight(t, c, k, []string{"same", "a", "b", "same", "c", "d"}, "a", "b", "c", "d")
	r := newRedisScan(t, k, 2)
	total := 0
	for i := range 40 {
		n := reapAt(t, r, t0.Add(time.Duration(i)*grace), grace)
		total += n
	}
	if got := c.LRange(ctx(t), k, 0, -1).Val(); total != 2 || !slices.Equal(got, []string{"same", "same"}) {
		t.Errorf("reclaimed %d, waiting %v; want both copies back, and no more", total, got)
	}
	if got := c.LLen(ctx(t), ProcessingKey(k)).Val(); got != 4 {
		t.Errorf("%d items in flight, want the 4 leased ones", got)
	}
}

func TestRedisReapPagedLeasesKept(t *testing.T) {
	c := rdb(t)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Second
	k := key(t)
	items := []string{"a", "b", "c", "d", "e", "f", "g"}
	inFlight(t, c, k, items, items...)
	r := newRedisScan(t, k, 2)
	for i := range 50 {
		if n, err := r.Reap(ctx(t), t0.Add(time.Duration(i)*time.Hour/4), grace, nil); n != 0 || err != nil {
			t.Fatalf("Reap %d = %d, %v; want 0: every item holds a lease", i, n, err)
		}
	}
	if got := c.LLen(ctx(t), ProcessingKey(k)).Val(); got != int64(len(items)) {
		t.Errorf("%d items in flight, want %d", got, len(items))
	}
}

// An item seen without a lease, completed, and taken again (same value) between two
// visits of its part of a long list is a new stay: the scan that sees it again must not
// count the grace from the earlier one.
func TestRedisReapPagedReentry(t *testing.T) {
	c := rdb(t)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Second
	k := key(t)
	inFlight(t, c, k, []string{"x", "a", "b", "c"}, "a", "b", "c") // x is the oldest
	r := newRedisScan(t, k, 2)
	step := func(at time.Duration, want int) {
		t.Helper()
		n, err := r.Reap(ctx(t), t0.Add(at), grace, nil)
		if err != nil || n != want {
			t.Fatalf("Reap at +%s = %d, %v; want %d", at, n, err, want)
		}
	}
	step(0, 0) // sees x without a lease
	c.LRem(ctx(t), ProcessingKey(k), 0, "x")
	step(time.Second, 0)
	inFlight(t, c, k, []string{"x"}) // x again, now the newest; its lease is not written yet
	for i := range 4 {
		step(grace+time.Duration(i+1)*time.Second, 0)
	}
	total := 0
	for i := range 6 {
		n := reapAt(t, r, t0.Add(3*grace+time.Duration(i)*grace), grace)
		total += n
	}
	if got := c.LRange(ctx(t), k, 0, -1).Val(); total != 1 || !slices.Equal(got, []string{"x"}) {
		t.Errorf("reclaimed %d, waiting %v; want x back once", total, got)
	}
}

// A probe that sees nothing in flight ends what Reap knew, also in the middle of a pass
// over a long list.
func TestRedisReapProbeEmptyMidPass(t *testing.T) {
	c := rdb(t)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Second
	k := key(t)
	inFlight(t, c, k, []string{"x", "a", "b"}, "a", "b") // x is the oldest
	r := newRedisScan(t, k, 2)
	if n, err := r.Reap(ctx(t), t0, grace, nil); n != 0 || err != nil { // sees x without a lease
		t.Fatalf("Reap = %d, %v", n, err)
	}
	c.Del(ctx(t), ProcessingKey(k)) // every item finished
	if got, err := r.Probe(ctx(t)); err != nil || got.InFlight != 0 {
		t.Fatalf("Probe = %+v, %v; want nothing in flight", got, err)
	}
	inFlight(t, c, k, []string{"x"}) // x again; its lease is not written yet
	for i := range 3 {
		if n, err := r.Reap(ctx(t), t0.Add(grace+time.Duration(i+1)*time.Second), grace, nil); n != 0 || err != nil {
			t.Fatalf("Reap %d of x's second stay = %d, %v; want 0: the grace counted from its earlier stay", i, n, err)
		}
	}
	if n, err := r.Reap(ctx(t), t0.Add(3*grace), grace, nil); n != 1 || err != nil {
		t.Fatalf("Reap a grace after x's second stay began = %d, %v; want 1", n, err)
	}
}

// TestRedisIdleFootprint: the operator keeps one Redis backend per QueueJob, so 1 000 idle
// QueueJobs hold 1 000 of them. With go-redis's default buffers (32 KiB each way per
// connection, 128 KiB each way for the pipeline connection a probe uses) each cost about
// 270 KiB of heap, 270 MiB in all; the backend holds what a probe and a reap need.
func TestRedisIdleFootprint(t *testing.T) {
	const n = 50
	k := key(t)
	c := rdb(t)
	c.RPush(ctx(t), k, "a", "b")
	c.RPush(ctx(t), ProcessingKey(k), "c")
	backends := make([]*Conn, n)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	for i := range backends {
		backends[i] = New(Options{Address: redisServer.Addr(), Key: k})
		if _, err := backends[i].Probe(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := backends[i].Reap(ctx(t), time.Now(), time.Hour, nil); err != nil {
			t.Fatal(err)
		}
	}
	per := (int64(heap()) - int64(before)) / n
	for _, b := range backends {
		_ = b.Close()
	}
	if per > 32<<10 {
		t.Errorf("an idle Redis backend holds %d KiB of heap after a probe and a reap, want at most 32 KiB", per>>10)
	}
	t.Logf("an idle Redis backend holds %d KiB of heap", per>>10)
}

// An ACL user with access to the queue's keys but not to its dead-letter list: the probe
// counts the queue and says it could not count the dead letters, instead of failing.
func TestRedisProbeWithoutAccessToTheDeadLetterList(t *testing.T) {
	c := rdb(t)
	k := fmt.Sprintf("noperm-%d", time.Now().UnixNano())
	user := "prober-" + k
	if err := c.Do(ctx(t), "ACL", "SETUSER", user, "reset", "on", ">pw", "~"+k, "~"+k+":processing",
		"~"+k+":leased_by_session:*", "+@read", "+@list", "+exists", "+eval", "+evalsha", "+type", "+ping", "+select").Err(); err != nil {
		t.Fatal(err)
	}
	defer c.Do(ctx(t), "ACL", "DELUSER", user)
	c.RPush(ctx(t), k, "a", "b")
	c.RPush(ctx(t), FailedKey(k), "x")
	r := New(Options{Address: redisServer.Addr(), Key: k, Username: user, Password: "pw"})
	defer r.Close()
	got, err := r.Probe(ctx(t))
	if err != nil {
		t.Fatalf("Probe = %v, want the queue counted", err)
	}
	if want := (queue.Counts{Ready: 2, DeadLetteredUnknown: true}); got != want {
		t.Errorf("Probe = %+v, want %+v", got, want)
	}
}
