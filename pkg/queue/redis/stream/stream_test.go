package stream

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// fresh is the options of a fresh stream on the test server, with a lease of lease.
func fresh(t *testing.T, lease time.Duration) Options {
	name := fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
	return Options{Address: redisServer.Addr(), Stream: name, Group: "g", LeaseTTL: lease}
}

// consumer is a worker side of o with session, closed after the test.
func consumer(t *testing.T, o Options, session string) *Consumer {
	t.Helper()
	c, err := NewConsumer(testCtx(t), o, queue.ConsumerOptions{Session: session, LeaseTTL: time.Minute, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func probe(t *testing.T, o Options) queue.Counts {
	t.Helper()
	p := New(o)
	defer func() { _ = p.Close() }()
	c, err := p.Probe(testCtx(t))
	if err != nil {
		t.Fatalf("Probe = %v", err)
	}
	return c
}

// TestWatchHearsXADD: the list backend's write watch (CLIENT TRACKING in broadcast mode
// on the key) hears an XADD to the stream, as it hears an LPUSH to a list.
func TestWatchHearsXADD(t *testing.T) {
	o := fresh(t, time.Minute)
	var heard atomic.Int32
	w := redis.NewKeyWatch(o.Server(), func(k string, reported bool) {
		if k == o.Stream && !reported {
			heard.Add(1)
		}
	}, nil)
	defer w.Close()
	w.Add(o.Stream)
	eventually(t, "the watch is active", func() bool { ok, _ := w.Active(); return ok })
	c := redisServer.RedisClient(t)
	eventually(t, "an XADD to the stream is heard", func() bool {
		if err := c.XAdd(testCtx(t), &goredis.XAddArgs{Stream: o.Stream, Values: []any{FieldItem, "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
		return heard.Load() > 0
	})
}

// TestProbeWithoutStreamOrGroup: a missing stream is an empty queue; a stream without
// the group counts XLEN as ready; neither is created by the probe.
func TestProbeWithoutStreamOrGroup(t *testing.T) {
	o := fresh(t, time.Minute)
	if diff := cmp.Diff(queue.Counts{}, probe(t, o)); diff != "" {
		t.Errorf("Probe of a missing stream (-want +got):\n%s", diff)
	}
	c := redisServer.RedisClient(t)
	if n := c.Exists(testCtx(t), o.Stream).Val(); n != 0 {
		t.Fatalf("the probe created the stream")
	}
	for range 2 {
		c.XAdd(testCtx(t), &goredis.XAddArgs{Stream: o.Stream, Values: []any{FieldItem, "x"}})
	}
	if diff := cmp.Diff(queue.Counts{Ready: 2}, probe(t, o)); diff != "" {
		t.Errorf("Probe of a stream without the group (-want +got):\n%s", diff)
	}
	if g := c.XInfoGroups(testCtx(t), o.Stream).Val(); len(g) != 0 {
		t.Errorf("the probe created a group: %+v", g)
	}
}

// TestProbeWrongType: a key of another type is WrongType, named, its value not quoted.
func TestProbeWrongType(t *testing.T) {
	o := fresh(t, time.Minute)
	c := redisServer.RedisClient(t)
	c.RPush(testCtx(t), o.Stream, "secret-item")
	p := New(o)
	defer func() { _ = p.Close() }()
	_, err := p.Probe(testCtx(t))
	if queue.ReasonOf(err) != queue.ReasonWrongType || !strings.Contains(err.Error(), "holds a list, not a stream") || strings.Contains(err.Error(), "secret-item") {
		t.Errorf("Probe of a list = %v, want WrongType naming a list", err)
	}
	o2 := fresh(t, time.Minute)
	c.Set(testCtx(t), FailedKey(o2.Stream), "v", 0)
	p2 := New(o2)
	defer func() { _ = p2.Close() }()
	if _, err := p2.Probe(testCtx(t)); queue.ReasonOf(err) != queue.ReasonWrongType || !strings.Contains(err.Error(), ":failed") {
		t.Errorf("Probe with a string at :failed = %v, want WrongType naming it", err)
	}
}

// TestProbeWithoutLag: after deletions Redis cannot tell the group's lag (XINFO GROUPS
// says nil); ready is then XLEN minus the pending entries. This test fails if the probe
// reads a nil lag as 0 (go-redis's -1 as a count).
func TestProbeWithoutLag(t *testing.T) {
	o := fresh(t, time.Minute)
	a, b := consumer(t, o, "a"), consumer(t, o, "b")
	enqueue(t, o, "1", "2", "3")
	la, err := a.Take(testCtx(t), 0)
	if err != nil || la == nil {
		t.Fatalf("Take = %v, %v", la, err)
	}
	lb, err := b.Take(testCtx(t), 0)
	if err != nil || lb == nil {
		t.Fatalf("Take = %v, %v", lb, err)
	}
	// The newest delivered entry is deleted while an older one is pending.
	if err := lb.Complete(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	g := redisServer.RedisClient(t).XInfoGroups(testCtx(t), o.Stream).Val()
	if len(g) != 1 || g[0].Lag != -1 {
		t.Fatalf("XINFO GROUPS = %+v, want a nil lag (the case this test is about)", g)
	}
	if diff := cmp.Diff(queue.Counts{Ready: 1, InFlight: 1}, probe(t, o)); diff != "" {
		t.Errorf("Probe without a lag (-want +got):\n%s", diff)
	}
}

func enqueue(t *testing.T, o Options, items ...string) {
	t.Helper()
	a := NewAdmin(o, 10*time.Second)
	defer func() { _ = a.Close() }()
	i := 0
	next := func() (string, error) {
		if i == len(items) {
			return "", io.EOF
		}
		i++
		return items[i-1], nil
	}
	if n, _, err := a.Enqueue(testCtx(t), next, func(int64) {}, queue.EnqueueOptions{}); err != nil || n != int64(len(items)) {
		t.Fatalf("Enqueue = %d, %v", n, err)
	}
}

// TestEntryWithoutItemIsDeadLettered: an entry a producer added without the item field
// is dead-lettered when taken, never dropped.
func TestEntryWithoutItemIsDeadLettered(t *testing.T) {
	o := fresh(t, time.Minute)
	c := consumer(t, o, "a")
	rc := redisServer.RedisClient(t)
	rc.XAdd(testCtx(t), &goredis.XAddArgs{Stream: o.Stream, Values: []any{"payload", "x"}})
	enqueue(t, o, "good")
	l, err := c.Take(testCtx(t), 0)
	if err != nil || l == nil || string(l.Data()) != "good" {
		t.Fatalf("Take = %v, %v; want the good entry", l, err)
	}
	dead := rc.XRange(testCtx(t), FailedKey(o.Stream), "-", "+").Val()
	if len(dead) != 1 || dead[0].Values["payload"] != "x" || !strings.Contains(fmt.Sprint(dead[0].Values[FieldError]), "no item field") {
		t.Errorf("%s = %+v, want the entry with its fields and an error", FailedKey(o.Stream), dead)
	}
	if diff := cmp.Diff(queue.Counts{InFlight: 1, DeadLettered: 1}, probe(t, o)); diff != "" {
		t.Errorf("Probe (-want +got):\n%s", diff)
	}
}

// TestRenewKeepsToItsOwnEntries: Renew resets the idle time of the session's own entry,
// and says the lease is lost (and claims nothing) for an entry another consumer holds.
// Once the reaper has returned the entry, its former holder can neither renew nor
// complete it: the entry came back under a new id.
func TestRenewKeepsToItsOwnEntries(t *testing.T) {
	o := fresh(t, time.Minute)
	a := consumer(t, o, "a")
	enqueue(t, o, "1")
	l, err := a.Take(testCtx(t), 0)
	if err != nil || l == nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	if ok, err := l.Renew(testCtx(t)); !ok || err != nil {
		t.Errorf("Renew of its own entry = %v, %v; want true", ok, err)
	}
	b := consumer(t, o, "b")
	stolen := &lease{c: b, id: l.(*lease).id, renewed: time.Now()}
	if ok, err := stolen.Renew(testCtx(t)); ok || err != nil {
		t.Errorf("Renew of another's entry = %v, %v; want false", ok, err)
	}
	p := redisServer.RedisClient(t).XPendingExt(testCtx(t), &goredis.XPendingExtArgs{Stream: o.Stream, Group: o.Group, Start: "-", End: "+", Count: 10}).Val()
	if len(p) != 1 || p[0].Consumer != "a" {
		t.Errorf("pending = %+v, want the entry still a's", p)
	}
	// Complete is XACK, which does not check the consumer: what keeps others from
	// completing a's entry is that no other consumer is ever given its id. A reclaimed
	// entry comes back as a new entry, with a new id, so the former holder's Complete
	// acknowledges nothing and says the lease was lost.
	short := o
	short.LeaseTTL = time.Millisecond
	reaper := New(short)
	defer func() { _ = reaper.Close() }()
	eventually(t, "the reaper returns the entry", func() bool {
		n, err := reaper.Reap(testCtx(t), time.Now(), 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	if ok, err := l.Renew(testCtx(t)); ok || err != nil {
		t.Errorf("Renew by the former holder = %v, %v; want false", ok, err)
	}
	if err := l.Complete(testCtx(t)); !errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Complete by the former holder = %v, want ErrLeaseLost", err)
	}
	if again, err := b.Take(testCtx(t), 0); err != nil || again == nil || string(again.Data()) != "1" || again.Attempt() != 2 {
		t.Errorf("Take after the reclaim = %v, %v; want the item again, attempt 2", again, err)
	}
}

// TestReapDeletesStrandedConsumers: the reaper deletes consumers idle past the lease
// that hold nothing; a consumer that holds an entry is never deleted (DELCONSUMER would
// drop its entries), and a live consumer is recreated by its next read.
func TestReapDeletesStrandedConsumers(t *testing.T) {
	o := fresh(t, 100*time.Millisecond)
	gone, err := NewConsumer(testCtx(t), o, queue.ConsumerOptions{Session: "gone", LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	// Not closed until the end: a worker killed, whose Close never ran.
	t.Cleanup(func() { _ = gone.Close() })
	enqueue(t, o, "0")
	l, err := gone.Take(testCtx(t), 0)
	if err != nil || l == nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	if err := l.Complete(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	rc := redisServer.RedisClient(t)
	names := func() []string {
		var ns []string
		for _, c := range rc.XInfoConsumers(testCtx(t), o.Stream, o.Group).Val() {
			ns = append(ns, c.Name)
		}
		return ns
	}
	if diff := cmp.Diff([]string{"gone"}, names()); diff != "" {
		t.Fatalf("consumers (-want +got):\n%s", diff)
	}
	p := New(o)
	defer func() { _ = p.Close() }()
	eventually(t, "the idle consumer is deleted", func() bool {
		if _, err := p.Reap(testCtx(t), time.Now(), 0, nil); err != nil {
			t.Fatal(err)
		}
		return len(names()) == 0
	})
	// A consumer that holds an entry: the script refuses, whatever its idle time.
	enqueue(t, o, "1")
	if l, err := gone.Take(testCtx(t), 0); err != nil || l == nil {
		t.Fatalf("Take after the consumer was deleted = %v, %v; want the entry", l, err)
	}
	n, err := deleteConsumerScript.Run(testCtx(t), rc, []string{o.Stream}, o.Group, "gone").Int()
	if err != nil || n != 0 {
		t.Errorf("deleting a consumer with a pending entry = %d, %v; want 0", n, err)
	}
	if diff := cmp.Diff([]string{"gone"}, names()); diff != "" {
		t.Errorf("consumers (-want +got):\n%s", diff)
	}
}

// TestOptionsFromEnv reads back what WorkerEnv writes.
func TestOptionsFromEnv(t *testing.T) {
	env := map[string]string{EnvAddress: "r:6379", EnvStream: "s", EnvGroup: "g", EnvDB: "2", EnvUsername: "u", EnvPassword: "p",
		EnvLeaseSeconds: "45"}
	o, err := OptionsFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Address: "r:6379", Stream: "s", Group: "g", DB: 2, Username: "u", Password: "p", LeaseTTL: 45 * time.Second}
	if diff := cmp.Diff(want, o); diff != "" {
		t.Errorf("OptionsFromEnv (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"0", "-1", "3m"} {
		env[EnvLeaseSeconds] = bad
		if _, err := OptionsFromEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), EnvLeaseSeconds) {
			t.Errorf("OptionsFromEnv with %s=%q = %v, want an error naming it", EnvLeaseSeconds, bad, err)
		}
	}
	env[EnvLeaseSeconds] = "45"
	delete(env, EnvGroup)
	if _, err := OptionsFromEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), EnvGroup) {
		t.Errorf("OptionsFromEnv without a group = %v, want an error naming %s", err, EnvGroup)
	}
}

// TestGroupOf: the probe reads a group's lag where Redis tells it, and knows when it does
// not: a nil lag (after deletions) and a reply without a lag field (Redis 6.2), in the
// RESP3 and RESP2 shapes. Reading go-redis's XInfoGroup instead would count 0 ready
// entries on Redis 6.2 whatever the stream holds.
func TestGroupOf(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply any
		want  int64
	}{
		{name: "RESP3 with a lag", want: 3, reply: []any{
			map[any]any{"name": "other", "pending": int64(9), "lag": int64(9)},
			map[any]any{"name": "g", "pending": int64(2), "lag": int64(3)},
		}},
		{name: "RESP3, nil lag", want: 8, reply: []any{map[any]any{"name": "g", "pending": int64(2), "lag": nil}}},
		{name: "RESP2, Redis 6.2 (no lag)", want: 8, reply: []any{[]any{"name", "g", "consumers", int64(1), "pending", int64(2), "last-delivered-id", "1-0"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, ok := groupOf(tc.reply, "g")
			if !ok {
				t.Fatal("group not found")
			}
			if got := g.ready(10); got != tc.want || g.pending != 2 {
				t.Errorf("ready of XLEN 10 = %d (pending %d), want %d (pending 2)", got, g.pending, tc.want)
			}
		})
	}
	if _, ok := groupOf([]any{}, "g"); ok {
		t.Error("a group found in an empty reply")
	}
}

// TestDeletedStreamLosesLeases: a stream deleted (DEL) while workers hold its entries:
// Renew says the lease is lost, Complete, Fail and Release say ErrLeaseLost, not an error
// of the server; the next Take creates the group again.
func TestDeletedStreamLosesLeases(t *testing.T) {
	o := fresh(t, time.Minute)
	c := consumer(t, o, "a")
	enqueue(t, o, "1", "2", "3", "4")
	var ls []queue.Lease
	for range 4 {
		l, err := c.Take(testCtx(t), 0)
		if err != nil || l == nil {
			t.Fatalf("Take = %v, %v", l, err)
		}
		ls = append(ls, l)
	}
	redisServer.RedisClient(t).Del(testCtx(t), o.Stream)
	if ok, err := ls[0].Renew(testCtx(t)); ok || err != nil {
		t.Errorf("Renew = %v, %v; want false, nil", ok, err)
	}
	if err := ls[1].Complete(testCtx(t)); !errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Complete = %v, want ErrLeaseLost", err)
	}
	if _, err := ls[2].Fail(testCtx(t), errors.New("x")); !errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Fail = %v, want ErrLeaseLost", err)
	}
	if err := ls[3].Release(testCtx(t)); !errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Release = %v, want ErrLeaseLost", err)
	}
	enqueue(t, o, "5")
	if l, err := c.Take(testCtx(t), 0); err != nil || l == nil || string(l.Data()) != "5" {
		t.Errorf("Take after the stream was deleted and refilled = %v, %v; want 5", l, err)
	}
}

// TestCloseDeletesItsConsumer: a worker that closes deletes its consumer if it holds
// nothing (no consumer is left of a worker pod that exited), and keeps it if it does.
func TestCloseDeletesItsConsumer(t *testing.T) {
	o := fresh(t, time.Minute)
	enqueue(t, o, "1", "2")
	rc := redisServer.RedisClient(t)
	names := func() []string {
		var ns []string
		for _, c := range rc.XInfoConsumers(testCtx(t), o.Stream, o.Group).Val() {
			ns = append(ns, c.Name)
		}
		return ns
	}
	for _, tc := range []struct {
		session string
		finish  bool
		want    []string
	}{{"done", true, nil}, {"holding", false, []string{"holding"}}} {
		c, err := NewConsumer(testCtx(t), o, queue.ConsumerOptions{Session: tc.session})
		if err != nil {
			t.Fatal(err)
		}
		l, err := c.Take(testCtx(t), 0)
		if err != nil || l == nil {
			t.Fatalf("Take = %v, %v", l, err)
		}
		if tc.finish {
			if err := l.Complete(testCtx(t)); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, names()); diff != "" {
			t.Errorf("consumers after %s closed (-want +got):\n%s", tc.session, diff)
		}
	}
}

// TestFailedMoveKeepsEntry: a move whose XADD fails (here <stream>:failed is a string
// when a worker dead-letters at MaxAttempts) changes nothing: the entry stays pending for
// its worker, and once the key is fixed the same lease dead-letters it. This test fails
// if the script acknowledges the entry before it adds the copy (the entry would be left
// in the stream acknowledged, past the group's last-delivered-id: never delivered again).
func TestFailedMoveKeepsEntry(t *testing.T) {
	o := fresh(t, time.Minute)
	enqueue(t, o, "a")
	rc := redisServer.RedisClient(t)
	rc.Set(testCtx(t), FailedKey(o.Stream), "oops", 0)
	c, err := NewConsumer(testCtx(t), o, queue.ConsumerOptions{Session: "w", LeaseTTL: time.Minute, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	l, err := c.Take(testCtx(t), 0)
	if err != nil || l == nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	if _, err := l.Fail(testCtx(t), errors.New("boom")); err == nil || errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Fail with a string at :failed = %v, want the server's error", err)
	}
	p := rc.XPendingExt(testCtx(t), &goredis.XPendingExtArgs{Stream: o.Stream, Group: o.Group, Start: "-", End: "+", Count: 10}).Val()
	if len(p) != 1 || p[0].Consumer != "w" {
		t.Fatalf("pending after the failed move = %+v, want the entry still w's", p)
	}
	rc.Del(testCtx(t), FailedKey(o.Stream)) // the user fixes the key
	if dead, err := l.Fail(testCtx(t), errors.New("boom")); !dead || err != nil {
		t.Errorf("Fail once the key is fixed = %v, %v; want dead-lettered", dead, err)
	}
	if diff := cmp.Diff(queue.Counts{DeadLettered: 1}, probe(t, o)); diff != "" {
		t.Errorf("Probe (-want +got):\n%s", diff)
	}
}

// TestRenewsWithinTheReapersLease: a worker whose own lease (--lease,
// QUEUEJOB_LEASE_SECONDS) is longer than the reaper's (spec.queue.redisStream.leaseSeconds,
// Options.LeaseTTL) renews within the reaper's, so that the reaper never takes an entry
// from a live worker that renews on its schedule. This test fails if the worker renews
// every third of its own lease only.
func TestRenewsWithinTheReapersLease(t *testing.T) {
	o := fresh(t, 2*time.Second) // the reaper's lease
	enqueue(t, o, "a")
	c, err := NewConsumer(testCtx(t), o, queue.ConsumerOptions{Session: "live", LeaseTTL: 12 * time.Second, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	l, err := c.Take(testCtx(t), 0)
	if err != nil || l == nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	// The worker's schedule, as pkg/worker keeps it.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(l.RenewEvery())
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = l.Renew(testCtx(t))
			}
		}
	}()
	p := New(o)
	defer func() { _ = p.Close() }()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if n, err := p.Reap(testCtx(t), time.Now(), 0, nil); err != nil || n != 0 {
			t.Fatalf("Reap = %d, %v; the reaper took an entry from a live worker that renews every %s", n, err, l.RenewEvery())
		}
	}
}

// TestReapAfter: the reaper adds to the lease at most maxReapGrace of the grace the
// controller gives (max(10 s, 2 × probeIntervalSeconds)): a stream's idle times are kept
// by the server, so a long probe interval must not keep a crashed worker's entry for hours.
func TestReapAfter(t *testing.T) {
	for _, tc := range []struct {
		name         string
		lease, grace time.Duration
		want         time.Duration
	}{
		{"no grace", 30 * time.Second, 0, 30 * time.Second},
		{"the controller's least grace", 30 * time.Second, 10 * time.Second, 40 * time.Second},
		{"probe interval 3600 s", 30 * time.Second, 2 * time.Hour, 40 * time.Second},
		{"a short grace", time.Second, 3 * time.Second, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := reapAfter(tc.lease, tc.grace); got != tc.want {
				t.Errorf("reapAfter(%s, %s) = %s, want %s", tc.lease, tc.grace, got, tc.want)
			}
		})
	}
}

// busyScript keeps the server busy for ARGV[1] µs: commands sent meanwhile run after it.
var busyScript = goredis.NewScript(`
local t0 = redis.call('TIME')
local s = tonumber(t0[1]) * 1000000 + tonumber(t0[2])
while true do
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000000 + tonumber(t[2]) - s > tonumber(ARGV[1]) then return 1 end
end
`)

// TestLostReplyIsTakenAgain: a read that ran on the server but whose reply the worker
// never got (its client timed out while the server was busy) leaves the entry pending
// for the session; the worker's next Take hands it out again, its attempt unchanged,
// instead of leaving it to the reaper (lease + grace later, an attempt charged); an
// entry one of its leases holds is not handed out twice. This test fails if Take reads
// only new entries.
func TestLostReplyIsTakenAgain(t *testing.T) {
	o, c, held := lostReplyFixture(t, "held", "a")
	whileBusy(t, func() {
		if l, err := c.Take(testCtx(t), 0); err == nil {
			t.Fatalf("Take while the server is busy = %v, %v; want a timeout", l, err)
		}
	})
	rc := redisServer.RedisClient(t)
	p := rc.XPendingExt(testCtx(t), &goredis.XPendingExtArgs{Stream: o.Stream, Group: o.Group, Start: "-", End: "+", Count: 10}).Val()
	if len(p) != 2 || p[1].Consumer != "w" {
		t.Fatalf("pending = %+v, want the held entry and the one w's read delivered (the case this test is about)", p)
	}
	l, err := c.Take(testCtx(t), 0)
	if err != nil || l == nil || string(l.Data()) != "a" || l.Attempt() != 1 {
		t.Fatalf("Take after the lost reply = %v, %v; want a, attempt 1", l, err)
	}
	if again, err := c.Take(testCtx(t), 0); again != nil || err != nil {
		t.Errorf("Take with nothing ready = %v, %v; want nothing (the held entry is not handed out twice)", again, err)
	}
	for _, l := range []queue.Lease{held, l} {
		if err := l.Complete(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(queue.Counts{}, probe(t, o)); diff != "" {
		t.Errorf("Probe (-want +got):\n%s", diff)
	}
}

// lostReplyFixture is a fresh stream with items, whose commands time out after 300 ms,
// and the consumer "w" holding the first item.
func lostReplyFixture(t *testing.T, items ...string) (Options, *Consumer, queue.Lease) {
	t.Helper()
	o := fresh(t, time.Minute)
	o.Timeout = 300 * time.Millisecond
	enqueue(t, o, items...)
	c := consumer(t, o, "w")
	l, err := c.Take(testCtx(t), 0)
	if err != nil || l == nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	return o, c, l
}

// whileBusy runs f while the server runs busyScript for 3 s (commands sent meanwhile run
// after it), and returns once the script has ended.
func whileBusy(t *testing.T, f func()) {
	t.Helper()
	busy := redisServer.RedisClient(t)
	done := make(chan error, 1)
	go func() { done <- busyScript.Run(testCtx(t), busy, nil, 3_000_000).Err() }()
	ping := goredis.NewClient(&goredis.Options{Addr: redisServer.Addr(), ReadTimeout: 50 * time.Millisecond, MaxRetries: -1})
	defer func() { _ = ping.Close() }()
	eventually(t, "the server is busy", func() bool { return ping.Ping(testCtx(t)).Err() != nil })
	f()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestLostMultiReplyIsTakenAgain: CompleteAndTake's MULTI that ran on the server while
// its client timed out completed the entry and delivered the next to the session; the
// next Take hands that one out, its attempt unchanged.
func TestLostMultiReplyIsTakenAgain(t *testing.T) {
	o, c, l := lostReplyFixture(t, "a", "b")
	whileBusy(t, func() {
		if next, _, err := c.CompleteAndTake(testCtx(t), l); err == nil {
			t.Fatalf("CompleteAndTake while the server is busy = %v, %v; want a timeout", next, err)
		}
	})
	next, err := c.Take(testCtx(t), 0)
	if err != nil || next == nil || string(next.Data()) != "b" || next.Attempt() != 1 {
		t.Fatalf("Take after the lost reply = %v, %v; want b, attempt 1", next, err)
	}
	if err := next.Complete(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(queue.Counts{}, probe(t, o)); diff != "" {
		t.Errorf("Probe (-want +got):\n%s", diff)
	}
}

// TestReapGoesPastAnEntryItCannotMove: an entry whose copy the move script cannot add
// (5000 fields: Lua's unpack refuses them) must not stop the reaper: it dead-letters
// that entry with its item field alone, the entries behind it are returned, and the
// probe does not fail. This test fails if Reap stops at the first script error.
func TestReapGoesPastAnEntryItCannotMove(t *testing.T) {
	o := fresh(t, time.Minute)
	rc := redisServer.RedisClient(t)
	values := []any{FieldItem, "big"}
	for i := range 5000 {
		values = append(values, fmt.Sprintf("f%d", i), "v")
	}
	rc.XAdd(testCtx(t), &goredis.XAddArgs{Stream: o.Stream, Values: values})
	enqueue(t, o, "b")
	c := consumer(t, o, "gone")
	for range 2 {
		if l, err := c.Take(testCtx(t), 0); err != nil || l == nil {
			t.Fatalf("Take = %v, %v", l, err)
		}
	}
	short := o
	short.LeaseTTL = time.Millisecond
	reaper := New(short)
	defer func() { _ = reaper.Close() }()
	eventually(t, "the reaper returns b", func() bool {
		n, err := reaper.Reap(testCtx(t), time.Now(), 0, nil)
		if err != nil {
			t.Fatalf("Reap = %d, %v; want no error for an entry it could dead-letter", n, err)
		}
		return n == 1
	})
	dead := rc.XRange(testCtx(t), FailedKey(o.Stream), "-", "+").Val()
	if len(dead) != 1 || dead[0].Values[FieldItem] != "big" || dead[0].Values[FieldError] == nil {
		t.Errorf("%s = %d entries, want the big one's item with an error", FailedKey(o.Stream), len(dead))
	}
	if diff := cmp.Diff(queue.Counts{Ready: 1, DeadLettered: 1}, probe(t, o)); diff != "" {
		t.Errorf("Probe (-want +got):\n%s", diff)
	}
}

// TestRecoverLeavesHeldEntriesAlone: after a read failed, Take's scan of the session's
// pending entries hands out the one no lease holds, and leaves the idle time and the
// delivery count of the entries its leases hold as they were (a held entry whose Fail
// failed must still come back through the reaper). This test fails if the scan reads
// them with XREADGROUP ... 0, which resets their idle time and counts a delivery.
func TestRecoverLeavesHeldEntriesAlone(t *testing.T) {
	o := fresh(t, time.Minute)
	enqueue(t, o, "held", "orphan")
	c := consumer(t, o, "w")
	held, err := c.Take(testCtx(t), 0)
	if err != nil || held == nil {
		t.Fatalf("Take = %v, %v", held, err)
	}
	rc := redisServer.RedisClient(t)
	// A read that ran on the server, its reply lost.
	rc.XReadGroup(testCtx(t), &goredis.XReadGroupArgs{Group: o.Group, Consumer: "w", Streams: []string{o.Stream, ">"}, Count: 1, Block: -1})
	c.noteRead(nil, errors.New("i/o timeout"))
	heldOf := func() goredis.XPendingExt {
		p := rc.XPendingExt(testCtx(t), &goredis.XPendingExtArgs{Stream: o.Stream, Group: o.Group, Start: "-", End: "+", Count: 10}).Val()
		for _, e := range p {
			if e.ID == held.(*lease).id {
				return e
			}
		}
		t.Fatalf("pending = %+v, want the held entry among them", p)
		return goredis.XPendingExt{}
	}
	eventually(t, "the held entry is idle 300 ms", func() bool { return heldOf().Idle >= 300*time.Millisecond })
	l, err := c.Take(testCtx(t), 0)
	if err != nil || l == nil || string(l.Data()) != "orphan" || l.Attempt() != 1 {
		t.Fatalf("Take after the lost reply = %v, %v; want orphan, attempt 1", l, err)
	}
	if e := heldOf(); e.Idle < 300*time.Millisecond || e.RetryCount != 1 {
		t.Errorf("held entry after the scan: idle %s, delivered %d times; want idle >= 300ms, delivered once", e.Idle, e.RetryCount)
	}
}

// TestLeaseExpiresLocally: a worker takes its lease as lost a margin (a tenth of the
// lease) before the reaper may return the entry, timed from before its take or last
// renewal: once that passed, Renew says lost and Complete, Fail, Release and
// CompleteAndTake say ErrLeaseLost without acting, so a worker cut off from Redis never
// finishes an entry another worker runs. This test fails if a lease is only as good as
// the server's idle time.
func TestLeaseExpiresLocally(t *testing.T) {
	const ttl = 2 * time.Second
	o := fresh(t, ttl)
	enqueue(t, o, "a", "b")
	c, err := NewConsumer(testCtx(t), o, queue.ConsumerOptions{Session: "w", LeaseTTL: ttl, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	l, err := c.Take(testCtx(t), 0)
	if err != nil || l == nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	if ok, err := l.Renew(testCtx(t)); !ok || err != nil {
		t.Fatalf("Renew at once = %v, %v; want true", ok, err)
	}
	time.Sleep(ttl - ttl/20) // the clock under test: within the margin, before the reaper's lease
	if ok, err := l.Renew(testCtx(t)); ok || err != nil {
		t.Errorf("Renew within the margin = %v, %v; want false (lost)", ok, err)
	}
	if err := l.Complete(testCtx(t)); !errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Complete within the margin = %v, want ErrLeaseLost", err)
	}
	if _, err := l.Fail(testCtx(t), errors.New("boom")); !errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Fail within the margin = %v, want ErrLeaseLost", err)
	}
	if err := l.Release(testCtx(t)); !errors.Is(err, queue.ErrLeaseLost) {
		t.Errorf("Release within the margin = %v, want ErrLeaseLost", err)
	}
	if next, cerr, err := c.CompleteAndTake(testCtx(t), l); next != nil || !errors.Is(cerr, queue.ErrLeaseLost) || err != nil {
		t.Errorf("CompleteAndTake within the margin = %v, %v, %v; want nil, ErrLeaseLost, nil", next, cerr, err)
	}
	p := redisServer.RedisClient(t).XPendingExt(testCtx(t), &goredis.XPendingExtArgs{Stream: o.Stream, Group: o.Group, Start: "-", End: "+", Count: 10}).Val()
	if len(p) != 1 || p[0].ID != l.(*lease).id {
		t.Errorf("pending = %+v, want a's entry alone, untouched (the reaper returns it)", p)
	}
}
