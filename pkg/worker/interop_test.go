package worker

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// The interoperability tests share queues between Go workers of this package, Python
// workers speaking the rediswq protocol with Debian's python3-redis
// (testdata/rediswq_worker.py), and the operator's reaper.

const pyWorker = "testdata/rediswq_worker.py"

// python is a python3 that has the redis module: Debian's /usr/bin/python3 with
// python3-redis (make servers installs it), else the first python3 on PATH.
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import redis").Run() == nil {
			return p
		}
	}
	t.Fatal("no python3 with the redis module: run make servers (apt-get install python3-redis)")
	return ""
}

func pyCommand(t *testing.T, k, name, mode string, args ...string) *exec.Cmd {
	return exec.Command(python(t), append([]string{pyWorker, redisServer.Addr(), k, name, mode}, args...)...)
}

// A lease written by Go is the one Python looks for, and the reverse: one lease key.
func TestRediswqInteropLeaseKey(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "shared-ü")
	w := newRedisWorker(t, k, Options{Session: "go-pod"})
	it, err := w.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pyCommand(t, k, "py", "holder", "shared-ü").Output()
	if err != nil {
		t.Fatalf("%s holder: %v", pyWorker, err)
	}
	if got := strings.TrimSpace(string(out)); got != "go-pod" {
		t.Errorf("Python sees the lease of the Go worker held by %q, want go-pod", got)
	}
	if err := it.Complete(ctx); err != nil {
		t.Fatal(err)
	}
}

// Two Python and two Go workers drain one queue while the reaper runs with a grace of 1s:
// every item is processed exactly once, and no lease of either kind is reaped, also of
// items that take longer than the grace.
func TestRediswqInteropSharedQueue(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	const n = 300
	var items []string
	for i := range n {
		// Every 30th item takes longer than the reaper's grace: the reaper reclaims it
		// unless the lease of whichever worker holds it counts.
		if i%30 == 0 {
			items = append(items, fmt.Sprintf("item-%03d-slow", i))
		} else {
			items = append(items, fmt.Sprintf("item-%03d", i))
		}
	}
	push(t, k, items...)

	reapCtx, stopReaping := context.WithCancel(ctx)
	reaped := make(chan int, 1)
	go func() {
		r := reaper(t, k)
		total := 0
		for reapCtx.Err() == nil {
			got, _ := r.Reap(reapCtx, time.Now(), time.Second, nil)
			total += got
			time.Sleep(50 * time.Millisecond)
		}
		reaped <- total
	}()

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 2 {
		name := fmt.Sprintf("py%d", i)
		cmd := pyCommand(t, k, name, "work")
		wg.Go(func() {
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%s: %v\n%s", name, err, out)
			}
		})
	}
	for i := range 2 {
		name := fmt.Sprintf("go%d", i)
		w := newRedisWorker(t, k, Options{LeaseTTL: 3 * time.Second, Wait: 100 * time.Millisecond})
		wg.Go(func() {
			c := rdb(t)
			_, err := w.Run(ctx, func(ctx context.Context, it *Item) error {
				if strings.HasSuffix(string(it.Data()), "slow") {
					time.Sleep(1500 * time.Millisecond)
				}
				return c.RPush(ctx, k+":done", name+" "+string(it.Data())).Err()
			}, RunOptions{})
			if err != nil {
				errs <- fmt.Errorf("%s: %v", name, err)
			}
		})
	}
	wg.Wait()
	stopReaping()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := <-reaped; got != 0 {
		t.Errorf("the reaper reclaimed %d items of live workers", got)
	}

	done := listOf(t, k+":done")
	byKind := map[string]int{}
	var got []string
	for _, d := range done {
		name, item, _ := strings.Cut(d, " ")
		byKind[name[:2]]++
		got = append(got, item)
	}
	slices.Sort(got)
	if !slices.Equal(got, items) {
		t.Errorf("processed %d items (%d distinct), want each of %d exactly once", len(got), len(slices.Compact(slices.Clone(got))), n)
	}
	if byKind["py"] == 0 || byKind["go"] == 0 {
		t.Errorf("items by kind of worker: %v; want both to have taken some", byKind)
	}
	t.Logf("items by kind of worker: %v", byKind)
	if l := listOf(t, redis.ProcessingKey(k)); len(l) != 0 {
		t.Errorf("processing = %q, want empty", l)
	}
	if keys := rdb(t).Keys(ctx, k+":leased_by_session:*").Val(); len(keys) != 0 {
		t.Errorf("%d lease keys left", len(keys))
	}
}

// A Python worker killed mid-item: the reaper returns the item and a Go worker processes
// it.
func TestRediswqInteropKilledPythonWorker(t *testing.T) {
	k := key(t)
	ctx := testCtx(t)
	push(t, k, "orphan")
	cmd := pyCommand(t, k, "py", "hold", "1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		s.Scan()
		line <- s.Text()
	}()
	select {
	case l := <-line:
		if l != "leased orphan" {
			t.Fatalf("the Python worker printed %q", l)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the Python worker leased nothing within 60s")
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	reapUntil(t, k, 1)
	w := newRedisWorker(t, k, Options{})
	it, err := w.Lease(ctx)
	if err != nil || string(it.Data()) != "orphan" {
		t.Fatalf("Lease = %v, %v; want orphan", itemData(it), err)
	}
	if err := it.Complete(ctx); err != nil {
		t.Fatal(err)
	}
}
