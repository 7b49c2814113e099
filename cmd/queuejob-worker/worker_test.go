package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// A command that succeeds completes every item; the worker exits 0 once the queue is
// empty. The command gets the item and its attempt in its environment.
func TestCompletesItems(t *testing.T) {
	k := key(t)
	push(t, k, "apple", "banana", "cherry")
	p := startWorker(t, k, nil, "--until-empty", "--",
		"sh", "-c", `echo "item=$QUEUEJOB_ITEM attempt=$QUEUEJOB_ITEM_ATTEMPT"`)
	checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
	want := []string{"item=apple attempt=1", "item=banana attempt=1", "item=cherry attempt=1"}
	if got := p.output(); !slices.Equal(got, want) {
		t.Errorf("output %q, want %q", got, want)
	}
	if !strings.Contains(p.lastLog(), "completed=3") {
		t.Errorf("last log line %q, want completed=3", p.lastLog())
	}
	checkLists(t, k, nil, nil, nil)
	if n := attemptsOf(t, k, "apple"); n != 0 {
		t.Errorf("attempts of a completed item = %d, want 0 (forgotten)", n)
	}
}

// A command that reads stdin gets the item there, exactly, whatever its size (a large
// item is not put in QUEUEJOB_ITEM, which Linux would refuse).
func TestCommandReadsStdin(t *testing.T) {
	k := key(t)
	big := strings.Repeat("x", 100<<10) + "end"
	items := []string{"hello world", "two\nlines", big}
	push(t, k, items...)
	p := startWorker(t, k, nil, "--", "cat")
	checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
	if got, want := strings.Join(p.output(), "\n"), strings.Join(items, ""); got != want {
		t.Errorf("output (%d bytes) %.100q..., want the items, %d bytes, %.100q...", len(got), got, len(want), want)
	}
	if !strings.Contains(p.logs(), "too large for QUEUEJOB_ITEM") {
		t.Error("no log line says the large item is on stdin only")
	}
	checkLists(t, k, nil, nil, nil)
}

// A PerItem pod handles its items and exits 0, leaving the rest; a WorkerPool worker
// drains the queue. Flags or the QUEUEJOB_MODE variables say which.
func TestItemsPerPod(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    []string
		args   []string
		left   int
		reason string
	}{
		{name: "flag", args: []string{"--items=2"}, left: 3, reason: `msg="Exiting: handled 2 of 2 items (--items)"`},
		{name: "env PerItem", env: []string{queue.EnvMode + "=PerItem", queue.EnvItemsPerPod + "=2"}, left: 3,
			reason: `msg="Exiting: handled 2 of 2 items (QUEUEJOB_ITEMS_PER_POD)"`},
		{name: "flag over env", env: []string{queue.EnvMode + "=WorkerPool"}, args: []string{"--items=1"}, left: 4,
			reason: `msg="Exiting: handled 1 of 1 items (--items)"`},
		{name: "env WorkerPool", env: []string{queue.EnvMode + "=WorkerPool"}, left: 0, reason: `msg="Exiting: the queue is empty"`},
		{name: "more items than the queue", args: []string{"--items=9"}, left: 0, reason: `msg="Exiting: the queue is empty"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := key(t)
			push(t, k, "1", "2", "3", "4", "5")
			p := startWorker(t, k, tc.env, append(tc.args, "--", "true")...)
			checkExit(t, p, 0, tc.reason)
			if got := listOf(t, k); len(got) != tc.left {
				t.Errorf("queue %q, want %d items left", got, tc.left)
			}
			for _, l := range []string{redis.ProcessingKey(k), redis.FailedKey(k)} {
				if got := listOf(t, l); len(got) != 0 {
					t.Errorf("%s = %q, want it empty", l, got)
				}
			}
		})
	}
}

// A command that fails fails the item: it is retried, and dead-lettered into
// <key>:failed after --max-attempts; the worker goes on with the other items.
func TestFailingCommandDeadLetters(t *testing.T) {
	k := key(t)
	push(t, k, "poison", "good")
	p := startWorker(t, k, nil, "--max-attempts=3", "--",
		"sh", "-c", `echo "$QUEUEJOB_ITEM $QUEUEJOB_ITEM_ATTEMPT"; test "$QUEUEJOB_ITEM" != poison`)
	checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
	// A failed item goes behind the waiting ones.
	want := []string{"poison 1", "good 1", "poison 2", "poison 3"}
	if got := p.output(); !slices.Equal(got, want) {
		t.Errorf("runs %q, want %q", got, want)
	}
	if last := p.lastLog(); !strings.Contains(last, "completed=1 retried=2 deadLettered=1") {
		t.Errorf("last log line %q, want completed=1 retried=2 deadLettered=1", last)
	}
	checkLists(t, k, nil, nil, []string{"poison"})
	if !strings.Contains(p.logs(), `msg="Failed an item on its last attempt: it went to the dead-letter list" attempt=3 took=`) {
		t.Error("no log line says the item was dead-lettered on attempt 3")
	}
}

// --on-failure=exit ends the worker with code 4 after failing the item, which waits for
// its next attempt.
func TestOnFailureExit(t *testing.T) {
	k := key(t)
	push(t, k, "poison", "next")
	p := startWorker(t, k, nil, "--on-failure=exit", "--", "sh", "-c", "exit 7")
	checkExit(t, p, 4, `msg="Exiting: the command failed on an item (--on-failure=exit)"`)
	if !strings.Contains(p.lastLog(), `error="exit status 7"`) {
		t.Errorf("last log line %q, want the command's exit status 7", p.lastLog())
	}
	checkLists(t, k, []string{"poison", "next"}, nil, nil)
	if n := attemptsOf(t, k, "poison"); n != 1 {
		t.Errorf("attempts = %d, want 1", n)
	}
}

// A command that hangs past its lease keeps the item: the worker renews the lease, so the
// operator's reaper does not take it back; --timeout then stops the command and fails the
// item.
func TestHangingCommandRenewedThenTimedOut(t *testing.T) {
	k := key(t)
	push(t, k, "slow")
	// A 2 s lease renewed every 2/3 s: only a stall of the worker or of Redis over ~2 s
	// would let the reaper (1 s grace) take the item back.
	const lease, timeout = 2 * time.Second, 10 * time.Second
	start := time.Now()
	p := startWorker(t, k, nil, "--lease="+lease.String(), "--timeout="+timeout.String(), "--max-attempts=1", "--grace=2s",
		"--", "sh", "-c", "echo started; exec sleep 300")
	p.expect(t, "started")
	// The reaper, with a short grace, for as long as the command runs (five leases):
	// without renewals it reclaims the item a lease and a grace after it was taken.
	r := redis.New(redis.Options{Address: redisServer.Addr(), Key: k})
	defer r.Close()
	passes := 0
	for !p.exited() {
		n, err := r.Reap(testCtx(t), time.Now(), time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("the reaper reclaimed the item %s after the command started: its lease was not renewed", time.Since(start).Round(time.Millisecond))
		}
		// Read before --timeout can have fired (its timer starts after start), the item
		// is in processing.
		if got := listOf(t, redis.ProcessingKey(k)); time.Since(start) < timeout && !slices.Equal(got, []string{"slow"}) {
			t.Fatalf("processing = %q while the command runs, want [slow]", got)
		}
		passes++
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(start)
	checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
	t.Logf("the worker exited %s after it started, %d reaper passes", took.Round(time.Millisecond), passes)
	if took < timeout {
		t.Errorf("the worker exited after %s, before --timeout %s", took, timeout)
	}
	if took > 90*time.Second {
		t.Errorf("the worker exited after %s: the command was not stopped at --timeout", took)
	}
	for _, want := range []string{`msg="Stopping the command" reason="it ran past --timeout 10s" signal=SIGTERM`,
		`msg="Failed an item on its last attempt: it went to the dead-letter list" attempt=1`} {
		if !strings.Contains(p.logs(), want) {
			t.Errorf("no log line %q", want)
		}
	}
	checkLists(t, k, nil, nil, []string{"slow"})
}

// SIGTERM mid-item returns the item to the queue at once, forwards the signal to the
// command, and exits 143.
func TestSIGTERMReturnsItem(t *testing.T) {
	t.Run("command stops", func(t *testing.T) {
		k := key(t)
		push(t, k, "x")
		p := startWorker(t, k, nil, "--lease=300s", "--",
			"sh", "-c", `trap "echo got-TERM; exit 1" TERM; echo started; while :; do sleep 0.1; done`)
		p.expect(t, "started")
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		p.expect(t, "got-TERM")
		checkExit(t, p, 143, `msg="Exiting: stopped by SIGTERM; an item in hand went back to the queue"`)
		// Back in the queue, not waiting for its 300 s lease and the reaper; the
		// shutdown cost no attempt.
		checkLists(t, k, []string{"x"}, nil, nil)
		if n := rdb(t).Exists(testCtx(t), redis.LeaseKey(k, "x")).Val(); n != 0 {
			t.Error("the lease key is left")
		}
		if n := attemptsOf(t, k, "x"); n != 0 {
			t.Errorf("attempts = %d after SIGTERM, want 0", n)
		}
	})
	t.Run("command ignores it", func(t *testing.T) {
		k := key(t)
		push(t, k, "x")
		const grace = 5 * time.Second
		p := startWorker(t, k, nil, "--lease=300s", "--grace="+grace.String(), "--",
			"sh", "-c", `trap "" TERM; echo started; while :; do sleep 0.1; done`)
		p.expect(t, "started")
		start := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// The item is back while the command still runs out its grace.
		servers.Eventually(t, 60*time.Second, func() error {
			if got := listOf(t, k); !slices.Equal(got, []string{"x"}) {
				return fmt.Errorf("queue = %q, want [x]", got)
			}
			return nil
		})
		back := time.Since(start)
		if p.exited() {
			t.Errorf("the worker exited before the item was seen back (%s after SIGTERM): the item must go back at once, not at exit", back)
		}
		checkExit(t, p, 143, `msg="Exiting: stopped by SIGTERM; an item in hand went back to the queue"`)
		took := time.Since(start)
		t.Logf("item back %s after SIGTERM, worker exited after %s", back.Round(time.Millisecond), took.Round(time.Millisecond))
		if took < grace {
			t.Errorf("the worker exited %s after SIGTERM, before the command's grace of %s", took, grace)
		}
		if !strings.Contains(p.logs(), `msg="Killed the command: it did not stop within --grace"`) {
			t.Error("no log line says the command was killed")
		}
		checkLists(t, k, []string{"x"}, nil, nil)
	})
}

// A worker killed with SIGKILL mid-item returns nothing: the item stays in processing
// until the operator's reaper returns it, after its lease expired; then another worker
// processes it, on its second attempt.
func TestSIGKILLItemReaped(t *testing.T) {
	k := key(t)
	push(t, k, "x")
	const lease = time.Second
	p := startWorker(t, k, nil, "--lease="+lease.String(), "--", "sh", "-c", "echo started; exec sleep 300")
	p.expect(t, "started")
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	killed := time.Now()
	// Nothing but the reaper returns it: it stays in processing well past its lease.
	for time.Since(killed) < 3*lease {
		checkLists(t, k, nil, []string{"x"}, nil)
		if t.Failed() {
			t.FailNow()
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := rdb(t).Exists(testCtx(t), redis.LeaseKey(k, "x")).Val(); n != 0 {
		t.Fatalf("the lease key is still there %s after the worker died: it was renewed", time.Since(killed))
	}
	r := redis.New(redis.Options{Address: redisServer.Addr(), Key: k})
	defer r.Close()
	servers.Eventually(t, 60*time.Second, func() error {
		n, err := r.Reap(testCtx(t), time.Now(), time.Second, nil)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("the reaper reclaimed %d items, want 1", n)
		}
		return nil
	})
	checkLists(t, k, []string{"x"}, nil, nil)
	q := startWorker(t, k, nil, "--", "sh", "-c", `echo "item=$QUEUEJOB_ITEM attempt=$QUEUEJOB_ITEM_ATTEMPT"`)
	checkExit(t, q, 0, `msg="Exiting: the queue is empty"`)
	if got, want := q.output(), []string{"item=x attempt=2"}; !slices.Equal(got, want) {
		t.Errorf("the second worker printed %q, want %q (the crash counted as an attempt)", got, want)
	}
	checkLists(t, k, nil, nil, nil)
}

// Configuration and queue errors end the worker at once with their own codes and say why.
func TestExitCodes(t *testing.T) {
	closed, err := servers.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		env    []string
		args   []string
		setup  func(t *testing.T, k string)
		code   int
		reason string
	}{
		{name: "no command", code: 2, reason: "no command"},
		{name: "unknown flag", args: []string{"--nope", "--", "true"}, code: 2, reason: "flag provided but not defined"},
		{name: "command not found", args: []string{"--", "no-such-command"}, code: 2, reason: "executable file not found"},
		{name: "items and until-empty", args: []string{"--items=1", "--until-empty", "--", "true"}, code: 2, reason: "give one"},
		{name: "bad mode", env: []string{queue.EnvMode + "=Sometimes"}, args: []string{"--", "true"}, code: 2, reason: "want PerItem or WorkerPool"},
		{name: "no backend", env: []string{queue.EnvBackend + "="}, args: []string{"--", "true"}, code: 2, reason: "QUEUEJOB_BACKEND is not set"},
		{name: "unreachable", env: []string{redis.EnvAddress + fmt.Sprintf("=127.0.0.1:%d", closed[0])}, args: []string{"--", "true"},
			code: 3, reason: "cannot reach Redis"},
		{name: "wrong key type", args: []string{"--", "true"}, code: 3, reason: "WRONGTYPE",
			setup: func(t *testing.T, k string) { rdb(t).Set(testCtx(t), k, "a string", 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := key(t)
			if tc.setup != nil {
				tc.setup(t, k)
			}
			p := startWorker(t, k, tc.env, tc.args...)
			checkExit(t, p, tc.code, tc.reason)
			if !strings.Contains(p.lastLog(), `msg="Exiting: `) {
				t.Errorf("last log line %q does not say it is exiting", p.lastLog())
			}
		})
	}
}

// A command that cannot be started (here: removed after the worker started) is not the
// item's fault: the item goes back to the queue uncounted and the worker exits 2.
func TestCommandNotStartable(t *testing.T) {
	k := key(t)
	script := filepath.Join(t.TempDir(), "work.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// An item in flight elsewhere keeps the worker waiting for one.
	c := rdb(t)
	c.LPush(testCtx(t), redis.ProcessingKey(k), "elsewhere")
	c.Set(testCtx(t), redis.LeaseKey(k, "elsewhere"), "another-worker", time.Minute)
	p := startWorker(t, k, nil, "--", script)
	servers.Eventually(t, 60*time.Second, func() error {
		if !strings.Contains(p.logs(), "msg=Started") {
			return fmt.Errorf("the worker has not started")
		}
		return nil
	})
	if err := os.Remove(script); err != nil {
		t.Fatal(err)
	}
	push(t, k, "x")
	checkExit(t, p, 2, `msg="Exiting: configuration error"`)
	if !strings.Contains(p.lastLog(), "could not start the command") {
		t.Errorf("last log line %q, want it to say the command could not start", p.lastLog())
	}
	checkLists(t, k, []string{"x"}, []string{"elsewhere"}, nil)
	if n := attemptsOf(t, k, "x"); n != 0 {
		t.Errorf("attempts = %d, want 0: the item was not at fault", n)
	}
}
