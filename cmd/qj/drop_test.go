package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"
)

// TestRequeueAndDropItem: requeue --item moves one dead letter back; drop --item asks
// first, deletes the next waiting copy, then a dead-lettered one, never one in flight,
// and says when there is none.
func TestRequeueAndDropItem(t *testing.T) {
	srv := needRedis(t)
	rc := redisFor(t)
	ctx := testCtx(t)
	key := fmt.Sprintf("items-%d", time.Now().UnixNano())
	t.Setenv("QJ_TEST_REDIS_PASSWORD", redisPassword)
	flags := []string{"--redis-address", srv.Addr(), "--redis-key", key, "--redis-password-env", "QJ_TEST_REDIS_PASSWORD"}
	qj := func(args ...string) []string { return append(args, flags...) }
	rc.RPush(ctx, key, "a", "poison")
	rc.LPush(ctx, key+":failed", "poison", "other")
	rc.RPush(ctx, key+":processing", "busy")

	wantErr(t, run(t, "", qj("requeue", "--item", "missing")...), `no dead-lettered item "missing"`)
	wantErr(t, run(t, "", qj("requeue", "--item", "other", "--count", "2")...), "--count and --item exclude each other")
	r := mustRun(t, "", qj("requeue", "--item", "other", "-o", "json")...)
	var rq requeueResult
	if err := json.Unmarshal([]byte(r.out), &rq); err != nil || rq.Requeued != 1 {
		t.Errorf("requeue --item -o json = %s (%v)", r.out, err)
	}
	if got := rc.LRange(ctx, key, 0, -1).Val(); !slices.Equal(got, []string{"other", "a", "poison"}) {
		t.Errorf("after requeue --item the list is %q", got)
	}

	// Not a terminal: not read as an answer, nothing changes.
	wantErr(t, run(t, "y\n", qj("drop", "--item", "poison")...), "standard input is not a terminal; give --yes")
	// A terminal: anything but y or yes changes nothing.
	isTerminal := stdinIsTerminal
	stdinIsTerminal = func(io.Reader) bool { return true }
	t.Cleanup(func() { stdinIsTerminal = isTerminal })
	for _, answer := range []string{"", "n\n", "nope\n", "\ny\n"} {
		wantErr(t, run(t, answer, qj("drop", "--item", "poison")...), "not confirmed: nothing changed")
	}
	if n := rc.LLen(ctx, key).Val(); n != 3 {
		t.Errorf("an unconfirmed drop changed the list: %d items", n)
	}
	r = mustRun(t, "y\n", qj("drop", "--item", "poison")...)
	if r.out != `Deleted item "poison" from `+key+"\n" {
		t.Errorf("drop printed %q", r.out)
	}
	r = mustRun(t, "", qj("drop", "--item", "poison", "--yes", "-o", "json")...)
	var d dropResult
	if err := json.Unmarshal([]byte(r.out), &d); err != nil || d.From != key+":failed" || d.Item != "poison" {
		t.Errorf("drop -o json = %s (%v)", r.out, err)
	}
	wantErr(t, run(t, "", qj("drop", "--item", "poison", "--yes")...), `no waiting or dead-lettered item "poison"`)
	wantErr(t, run(t, "", qj("drop", "--item", "busy", "--yes")...), `no waiting or dead-lettered item "busy"`)
	if got := rc.LRange(ctx, key+":processing", 0, -1).Val(); !slices.Equal(got, []string{"busy"}) {
		t.Errorf("an item in flight was dropped: processing = %q", got)
	}
	wantErr(t, run(t, "", qj("drop", "--yes")...), "--item is required")
}
