package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// startStreamWorker runs queuejob-worker on the Redis stream s (group "workers") with
// args, as the operator's WorkerEnv sets it up.
func startStreamWorker(t *testing.T, s string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(),
		queue.EnvBackend+"=redis-stream",
		stream.EnvAddress+"="+redisServer.Addr(),
		stream.EnvStream+"="+s,
		stream.EnvGroup+"=workers")
	return startProc(t, cmd)
}

// xadd adds items to stream s as a producer does (XADD s * item ...).
func xadd(t *testing.T, s string, items ...string) {
	t.Helper()
	for _, it := range items {
		if err := rdb(t).XAdd(testCtx(t), &goredis.XAddArgs{Stream: s, Values: []any{stream.FieldItem, it}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// streamCounts is the stream's length and its group's pending entries.
func streamCounts(t *testing.T, s string) (length, pending int64) {
	t.Helper()
	c := rdb(t)
	p, err := c.XPending(testCtx(t), s, "workers").Result()
	if err != nil {
		t.Fatal(err)
	}
	return c.XLen(testCtx(t), s).Val(), p.Count
}

// queuejob-worker serves a Redis stream: it completes the entries of a producer's XADDs
// (gone from the stream), gives an entry back on SIGTERM without counting the attempt,
// and an entry of a worker killed mid-item comes back through the operator's reaper once
// its lease ran out, on its second attempt.
func TestRedisStream(t *testing.T) {
	s := key(t)
	xadd(t, s, "apple", "banana")
	p := startStreamWorker(t, s, "--until-empty", "--", "sh", "-c", `echo "item=$QUEUEJOB_ITEM attempt=$QUEUEJOB_ITEM_ATTEMPT"`)
	checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
	if got, want := p.output(), []string{"item=apple attempt=1", "item=banana attempt=1"}; !slices.Equal(got, want) {
		t.Errorf("output %q, want %q", got, want)
	}
	if n, pending := streamCounts(t, s); n != 0 || pending != 0 {
		t.Errorf("after the run: %d entries, %d pending; want none", n, pending)
	}

	xadd(t, s, "x")
	p = startStreamWorker(t, s, "--lease=300s", "--", "sh", "-c", `echo started; exec sleep 300`)
	p.expect(t, "started")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	checkExit(t, p, 143, `an item in hand went back to the queue`)
	if n, pending := streamCounts(t, s); n != 1 || pending != 0 {
		t.Fatalf("after SIGTERM: %d entries, %d pending; want the entry back, not pending", n, pending)
	}

	const lease = time.Second
	p = startStreamWorker(t, s, "--lease="+lease.String(), "--", "sh", "-c", `echo "started $QUEUEJOB_ITEM_ATTEMPT"; exec sleep 300`)
	p.expect(t, "started 1")
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	r := stream.New(stream.Options{Address: redisServer.Addr(), Stream: s, Group: "workers", LeaseTTL: lease})
	defer func() { _ = r.Close() }()
	servers.Eventually(t, 60*time.Second, func() error {
		n, err := r.Reap(testCtx(t), time.Now(), time.Second, nil)
		if err == nil && n != 1 {
			err = fmt.Errorf("the reaper reclaimed %d entries, want 1", n)
		}
		return err
	})
	q := startStreamWorker(t, s, "--", "sh", "-c", `echo "item=$QUEUEJOB_ITEM attempt=$QUEUEJOB_ITEM_ATTEMPT"`)
	checkExit(t, q, 0, `msg="Exiting: the queue is empty"`)
	if got, want := q.output(), []string{"item=x attempt=2"}; !slices.Equal(got, want) {
		t.Errorf("the second worker printed %q, want %q (the crash counted as an attempt)", got, want)
	}
}
