package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// newRedisWorker is a Worker on list k of the test's redis-server.
func newRedisWorker(t testing.TB, k string, o Options) *Worker {
	t.Helper()
	o.Backend = BackendRedis
	o.Redis = redis.Options{Address: redisServer.Addr(), Key: k}
	return newWorker(t, o)
}

// push puts items into list k in order: the first is taken first.
func push(t testing.TB, k string, items ...string) {
	t.Helper()
	redisServer.RedisPush(t, k, items...)
}

// reaper is the operator's lease reaper on list k.
func reaper(t testing.TB, k string) *redis.Conn {
	r := redis.New(redis.Options{Address: redisServer.Addr(), Key: k})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// listOf is the contents of a list, head first.
func listOf(t testing.TB, k string) []string {
	t.Helper()
	return redisServer.RedisList(t, k)
}

func attemptsOf(t testing.TB, k, item string) int {
	t.Helper()
	n, err := redis.WQ{Client: rdb(t), Key: k}.Attempts(testCtx(t), item)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRedisLeaseComplete(t *testing.T) {
	k := key(t)
	c := rdb(t)
	ctx := testCtx(t)
	push(t, k, "a", "b")
	w := newRedisWorker(t, k, Options{LeaseTTL: time.Minute, Session: "pod-1"})

	it, err := w.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(it.Data()); got != "a" {
		t.Errorf("leased %q, want a (the oldest)", got)
	}
	if it.Attempt() != 1 {
		t.Errorf("Attempt = %d, want 1", it.Attempt())
	}
	// The rediswq protocol: in <key>:processing, the sha224 lease key with our session and
	// the lease's expiry.
	if diff := cmp.Diff([]string{"a"}, listOf(t, redis.ProcessingKey(k))); diff != "" {
		t.Errorf("processing (-want +got):\n%s", diff)
	}
	if v, _ := c.Get(ctx, redis.LeaseKey(k, "a")).Result(); v != "pod-1" {
		t.Errorf("lease key holds %q, want the session pod-1", v)
	}
	if ttl := c.PTTL(ctx, redis.LeaseKey(k, "a")).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("lease TTL = %s, want within (0, 1m]", ttl)
	}
	if n := attemptsOf(t, k, "a"); n != 1 {
		t.Errorf("attempts in Redis = %d, want 1", n)
	}
	if empty, err := w.Empty(ctx); err != nil || empty {
		t.Errorf("Empty = %v, %v with one ready and one in flight", empty, err)
	}

	if err := it.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := it.Complete(ctx); !errors.Is(err, ErrFinished) {
		t.Errorf("second Complete = %v, want ErrFinished", err)
	}
	if it.Context().Err() == nil {
		t.Error("the item's context is not done after Complete")
	}
	if l := listOf(t, redis.ProcessingKey(k)); len(l) != 0 {
		t.Errorf("processing after Complete = %q, want empty", l)
	}
	if n := c.Exists(ctx, redis.LeaseKey(k, "a"), redis.AttemptsKey(k)).Val(); n != 0 {
		t.Errorf("lease key or attempts left after Complete: %d keys", n)
	}

	it, err = w.Lease(ctx)
	if err != nil || string(it.Data()) != "b" {
		t.Fatalf("second Lease = %v, %v; want b", itemData(it), err)
	}
	if err := it.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	if empty, err := w.Empty(ctx); err != nil || !empty {
		t.Errorf("Empty = %v, %v on a drained queue", empty, err)
	}
	if it, err := w.Lease(ctx); !errors.Is(err, ErrEmpty) {
		t.Errorf("Lease on a drained queue = %v, %v; want ErrEmpty", itemData(it), err)
	}
}

// Lease waits while an item is in flight elsewhere: it may come back.
func TestRedisLeaseWaitsForInFlight(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "x")
	w1 := newRedisWorker(t, k, Options{})
	w2 := newRedisWorker(t, k, Options{Wait: 100 * time.Millisecond})
	it, err := w1.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		it2, err := w2.Lease(ctx)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(it2.Data())
		_ = it2.Complete(ctx)
	}()
	// Failing the first attempt puts the item back, and the waiting worker takes it.
	if err := it.Fail(ctx, errors.New("boom")); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != "x" {
			t.Errorf("the waiting worker got %q, want x", g)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the waiting worker got nothing")
	}
}

// Renewal keeps an item that takes longer than its lease from being reaped.
func TestRedisRenewalKeepsSlowItem(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "slow")
	const ttl = 2 * time.Second
	w := newRedisWorker(t, k, Options{LeaseTTL: ttl})
	it, err := w.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The reaper runs, with a short grace, for three lease times: without renewal the
	// lease expires after one and the item is reclaimed within the grace after that.
	r := reaper(t, k)
	until := time.Now().Add(3 * ttl)
	for time.Now().Before(until) {
		n, err := r.Reap(ctx, time.Now(), 300*time.Millisecond, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("the reaper reclaimed the item after %s of a %s lease: it was not renewed", time.Since(until.Add(-3*ttl)).Round(time.Millisecond), ttl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if it.Context().Err() != nil {
		t.Fatalf("the item's context ended: %v", context.Cause(it.Context()))
	}
	if err := it.Complete(ctx); err != nil {
		t.Fatalf("Complete after renewals: %v", err)
	}
	if l := listOf(t, k); len(l) != 0 {
		t.Errorf("the queue has %q, want nothing: the item ran once", l)
	}
}

// An item whose lease is gone and that the reaper returned is lost: the holder learns it
// from its context and from Complete.
func TestRedisLeaseLost(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "x")
	const ttl = 600 * time.Millisecond
	w := newRedisWorker(t, k, Options{LeaseTTL: ttl})
	it, err := w.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// What the reaper does once the lease has expired: the item back to the queue,
	// where another worker takes it.
	c := rdb(t)
	c.Del(ctx, redis.LeaseKey(k, "x"))
	c.LRem(ctx, redis.ProcessingKey(k), 1, "x")
	c.RPush(ctx, k, "x")
	servers.Eventually(t, 30*time.Second, func() error {
		if !errors.Is(context.Cause(it.Context()), ErrLeaseLost) {
			return fmt.Errorf("the item's context cause is %v, want ErrLeaseLost", context.Cause(it.Context()))
		}
		return nil
	})
	if err := it.Complete(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Complete of a lost item = %v, want ErrLeaseLost", err)
	}
	if diff := cmp.Diff([]string{"x"}, listOf(t, k)); diff != "" {
		t.Errorf("the queue (-want +got): the lost item must stay for the next worker\n%s", diff)
	}
}

// Cancelling the context given to Lease (SIGTERM) returns the item at once.
func TestRedisCancelReturnsItem(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "x", "y")
	w := newRedisWorker(t, k, Options{LeaseTTL: 5 * time.Minute})
	lctx, cancel := context.WithCancel(ctx)
	it, err := w.Lease(lctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-it.Context().Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the item's context is not done after cancel")
	}
	servers.Eventually(t, 30*time.Second, func() error {
		// Back at the tail, taken next, long before its 5-minute lease would expire.
		if got := listOf(t, k); !slices.Equal(got, []string{"y", "x"}) {
			return fmt.Errorf("queue = %q, want [y x]", got)
		}
		if got := listOf(t, redis.ProcessingKey(k)); len(got) != 0 {
			return fmt.Errorf("processing = %q", got)
		}
		return nil
	})
	if n := rdb(t).Exists(ctx, redis.LeaseKey(k, "x")).Val(); n != 0 {
		t.Error("the lease key is left")
	}
	if n := attemptsOf(t, k, "x"); n != 0 {
		t.Errorf("attempts = %d after a shutdown, want 0 (given back)", n)
	}
	if err := it.Complete(ctx); !errors.Is(err, ErrReleased) {
		t.Errorf("Complete after shutdown = %v, want ErrReleased", err)
	}
}

// The same, in a worker process that gets SIGTERM while its handler works.
func TestRedisSIGTERMReturnsItem(t *testing.T) {
	k := key(t)
	push(t, k, "x")
	h := startHelper(t, "run", redisEnv(k, EnvLeaseSeconds+"=300")...)
	if got := h.expect(t, "leased "); got != "x" {
		t.Fatalf("the worker leased %q", got)
	}
	start := time.Now()
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	h.expect(t, "run returned: context canceled")
	took := time.Since(start)
	if code := h.wait(t); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	// Returned by the worker, not by a lease expiry (300 s) and the reaper.
	if got := listOf(t, k); !slices.Equal(got, []string{"x"}) {
		t.Errorf("queue after SIGTERM = %q, want [x]", got)
	}
	if got := listOf(t, redis.ProcessingKey(k)); len(got) != 0 {
		t.Errorf("processing after SIGTERM = %q, want empty", got)
	}
	if n := rdb(t).Exists(testCtx(t), redis.LeaseKey(k, "x")).Val(); n != 0 {
		t.Error("the lease key is left")
	}
	if n := attemptsOf(t, k, "x"); n != 0 {
		t.Errorf("attempts = %d after SIGTERM, want 0: a shutdown is not the item's failure", n)
	}
	t.Logf("returned within %s of SIGTERM", took.Round(time.Millisecond))
}

// A worker killed mid-item: the reaper reclaims the item once the lease expired, and
// another worker processes it; the crash counted as an attempt.
func TestRedisKilledWorkerItemReaped(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "x")
	h := startHelper(t, "hold", redisEnv(k, EnvLeaseSeconds+"=1")...)
	if got := h.expect(t, "leased "); got != "x" {
		t.Fatalf("the worker leased %q", got)
	}
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.wait(t)
	reapUntil(t, k, 1)
	w := newRedisWorker(t, k, Options{})
	it, err := w.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(it.Data()) != "x" || it.Attempt() != 2 {
		t.Errorf("leased %q attempt %d, want x attempt 2 (the crash counted)", it.Data(), it.Attempt())
	}
	if err := it.Complete(ctx); err != nil {
		t.Fatal(err)
	}
}

// reapUntil runs the operator's reaper with a short grace until it has reclaimed n items.
func reapUntil(t *testing.T, k string, n int) {
	t.Helper()
	r := reaper(t, k)
	total := 0
	servers.Eventually(t, 60*time.Second, func() error {
		got, err := r.Reap(testCtx(t), time.Now(), 300*time.Millisecond, nil)
		if err != nil {
			return err
		}
		if total += got; total < n {
			return fmt.Errorf("the reaper reclaimed %d items, want %d", total, n)
		}
		return nil
	})
}

// An item that fails MaxAttempts times goes to <key>:failed, from where it can be
// requeued with a fresh count.
func TestRedisDeadLetter(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "poison")
	w := newRedisWorker(t, k, Options{MaxAttempts: 3})
	for attempt := 1; attempt <= 3; attempt++ {
		it, err := w.Lease(ctx)
		if err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		if it.Attempt() != attempt {
			t.Errorf("Attempt = %d, want %d", it.Attempt(), attempt)
		}
		if err := it.Fail(ctx, errors.New("bad input")); err != nil {
			t.Fatal(err)
		}
		if want := attempt == 3; it.DeadLettered() != want {
			t.Errorf("attempt %d: DeadLettered = %v, want %v", attempt, it.DeadLettered(), want)
		}
	}
	if got := listOf(t, redis.FailedKey(k)); !slices.Equal(got, []string{"poison"}) {
		t.Errorf("%s = %q, want [poison]", redis.FailedKey(k), got)
	}
	if got := listOf(t, k); len(got) != 0 {
		t.Errorf("queue = %q, want empty", got)
	}
	if n := attemptsOf(t, k, "poison"); n != 0 {
		t.Errorf("attempts of a dead-lettered item = %d, want 0 (dropped)", n)
	}
	if _, err := w.Lease(ctx); !errors.Is(err, ErrEmpty) {
		t.Errorf("Lease = %v, want ErrEmpty: dead-lettered items are not in flight", err)
	}
	failed, err := w.Failed(ctx)
	if err != nil || len(failed) != 1 || string(failed[0]) != "poison" {
		t.Errorf("Failed = %q, %v", failed, err)
	}
	if n, err := w.RequeueFailed(ctx, 0); n != 1 || err != nil {
		t.Fatalf("RequeueFailed = %d, %v", n, err)
	}
	it, err := w.Lease(ctx)
	if err != nil || string(it.Data()) != "poison" || it.Attempt() != 1 {
		t.Fatalf("Lease after requeue = %v, %v; want poison, attempt 1", itemData(it), err)
	}
	if err := it.Complete(ctx); err != nil {
		t.Fatal(err)
	}
}

// The count lives in Redis: a new Worker (a restarted pod) goes on counting.
func TestRedisAttemptsSurviveNewWorker(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "x")
	for attempt := 1; attempt <= 2; attempt++ {
		w := newRedisWorker(t, k, Options{MaxAttempts: 2})
		it, err := w.Lease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if it.Attempt() != attempt {
			t.Errorf("a new worker's attempt = %d, want %d", it.Attempt(), attempt)
		}
		if err := it.Fail(ctx, errors.New("boom")); err != nil {
			t.Fatal(err)
		}
		_ = w.Close()
	}
	if got := listOf(t, redis.FailedKey(k)); !slices.Equal(got, []string{"x"}) {
		t.Errorf("%s = %q, want [x]", redis.FailedKey(k), got)
	}
}

// A poison item that kills its worker every time: each crash counts, and after
// MaxAttempts crashes the next lease dead-letters it instead of handing it out.
func TestRedisCrashLoopDeadLetters(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "oom")
	for range 2 {
		h := startHelper(t, "hold", redisEnv(k, EnvLeaseSeconds+"=1", EnvMaxAttempts+"=2")...)
		h.expect(t, "leased ")
		_ = h.cmd.Process.Signal(syscall.SIGKILL)
		h.wait(t)
		reapUntil(t, k, 1)
	}
	w := newRedisWorker(t, k, Options{MaxAttempts: 2})
	if it, err := w.Lease(ctx); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Lease = %v, %v; want ErrEmpty, the item dead-lettered", itemData(it), err)
	}
	if got := listOf(t, redis.FailedKey(k)); !slices.Equal(got, []string{"oom"}) {
		t.Errorf("%s = %q, want [oom]", redis.FailedKey(k), got)
	}
}

func TestRedisRun(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "1", "2", "bad", "3", "4")
	w := newRedisWorker(t, k, Options{MaxAttempts: 2, Wait: 100 * time.Millisecond})
	var seen []string
	handler := func(ctx context.Context, it *Item) error {
		seen = append(seen, string(it.Data())+"#"+strconv.Itoa(it.Attempt()))
		if string(it.Data()) == "bad" {
			return errors.New("bad item")
		}
		return nil
	}
	// PerItem: two items, then return.
	st, err := w.Run(ctx, handler, RunOptions{Items: 2})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Stats{Completed: 2}, st); diff != "" {
		t.Errorf("PerItem stats (-want +got):\n%s", diff)
	}
	// WorkerPool: until the queue is empty; the bad item fails twice and is dead-lettered.
	st, err = w.Run(ctx, handler, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Stats{Completed: 2, Retried: 1, DeadLettered: 1}, st); diff != "" {
		t.Errorf("WorkerPool stats (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"1#1", "2#1", "bad#1", "3#1", "4#1", "bad#2"}, seen); diff != "" {
		t.Errorf("handled (-want +got):\n%s", diff)
	}
	if got := listOf(t, redis.FailedKey(k)); !slices.Equal(got, []string{"bad"}) {
		t.Errorf("dead-lettered %q, want [bad]", got)
	}
}

// FromEnv reads what the operator injects: TLS with a CA and server name, an ACL user.
func TestRedisFromEnvTLS(t *testing.T) {
	k := key(t)
	env := map[string]string{
		queue.EnvBackend:       "redis",
		redis.EnvAddress:       tlsRedis.Addr(),
		redis.EnvKey:           k,
		redis.EnvDB:            "0",
		redis.EnvUsername:      aclUser,
		redis.EnvPassword:      aclPassword,
		redis.EnvTLS:           "true",
		redis.EnvTLSCA:         string(testCA.PEM()),
		redis.EnvTLSServerName: "localhost",
		EnvLeaseSeconds:        "7",
		EnvMaxAttempts:         "4",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	w, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if o := w.Options(); o.LeaseTTL != 7*time.Second || o.MaxAttempts != 4 {
		t.Errorf("LeaseTTL, MaxAttempts = %s, %d; want 7s, 4", o.LeaseTTL, o.MaxAttempts)
	}
	ctx := testCtx(t)
	if _, err := w.Lease(ctx); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Lease on an empty list over TLS = %v, want ErrEmpty", err)
	}

	other, err := servers.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(redis.EnvTLSCA, string(other.PEM()))
	if _, err := FromEnv(); err == nil || queue.ReasonOf(err) != queue.ReasonTLSFailed {
		t.Errorf("FromEnv with the wrong CA = %v, want a TLSFailed error", err)
	}
	t.Setenv(redis.EnvTLSCA, string(testCA.PEM()))
	t.Setenv(redis.EnvPassword, "wrong")
	if _, err := FromEnv(); err == nil || queue.ReasonOf(err) != queue.ReasonAuthFailed {
		t.Errorf("FromEnv with a wrong password = %v, want an AuthFailed error", err)
	}
}

func TestOptionsFromEnvErrors(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"no backend":      {},
		"unknown backend": {queue.EnvBackend: "kafka"},
		"no key":          {queue.EnvBackend: "redis", redis.EnvAddress: "h:1"},
		"bad lease":       {queue.EnvBackend: "redis", redis.EnvAddress: "h:1", redis.EnvKey: "k", EnvLeaseSeconds: "0"},
		"bad db":          {queue.EnvBackend: "redis", redis.EnvAddress: "h:1", redis.EnvKey: "k", redis.EnvDB: "x"},
		"bad CA":          {queue.EnvBackend: "redis", redis.EnvAddress: "h:1", redis.EnvKey: "k", redis.EnvTLS: "true", redis.EnvTLSCA: "nope"},
		"CA without TLS":  {queue.EnvBackend: "redis", redis.EnvAddress: "h:1", redis.EnvKey: "k", redis.EnvTLSCA: "x"},
		"no queue":        {queue.EnvBackend: "rabbitmq", rabbitmq.EnvURL: "amqp://h/"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := optionsFromEnv(func(k string) string { return env[k] }); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestRunOptionsFromEnv(t *testing.T) {
	for name, tc := range map[string]struct {
		env     map[string]string
		want    RunOptions
		wantErr bool
	}{
		"unset":          {env: nil, want: RunOptions{Items: 9}},
		"worker pool":    {env: map[string]string{queue.EnvMode: "WorkerPool"}, want: RunOptions{}},
		"per item":       {env: map[string]string{queue.EnvMode: "PerItem"}, want: RunOptions{Items: 1}},
		"items per pod":  {env: map[string]string{queue.EnvMode: "PerItem", queue.EnvItemsPerPod: "5"}, want: RunOptions{Items: 5}},
		"bad mode":       {env: map[string]string{queue.EnvMode: "Batch"}, wantErr: true},
		"bad item count": {env: map[string]string{queue.EnvMode: "PerItem", queue.EnvItemsPerPod: "0"}, wantErr: true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := runOptionsFromEnv(func(k string) string { return tc.env[k] }, RunOptions{Items: 9})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
