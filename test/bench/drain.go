package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"k8s.io/utils/ptr"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/pkg/worker"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// Section 6: items per second through a WorkerPool of N queuejob-worker processes draining
// a Redis list, against the floor of the protocol on the same redis-server in the same
// run: N goroutines, each with a go-redis client of its own, doing the docs' rediswq
// minimum per item (LMOVE into <key>:processing, then LREM from it), nothing else.

const (
	drainKey     = "bench-drain"
	drainCommand = "true" // the cheapest real command
	// drainHandler is the cheapest real --persistent handler: bash builtins only, no
	// exec per item (docs/queues-and-workers.md's example, without its log line).
	drainHandler = `export LC_ALL=C; while read -r n attempt len; do IFS= read -r -N "$((len+1))" item; echo "ok $n" >&3; done`
	// drainPoll is how often the drain's end (both lists empty) is looked for.
	drainPoll = 10 * time.Millisecond
	drainPeer = "raw LMOVE+LREM loop (go-redis)"
)

// workerCounts are the counts of a queuejob-worker's last log line.
type workerCounts struct {
	Completed, Retried, DeadLettered, Lost int
	Code                                   int
	Msg                                    string
}

// parseWorkerExit reads the last "Exiting" line of a queuejob-worker's log (slog's text
// format: msg="Exiting: the queue is empty" code=0 completed=2500 retried=0 …).
func parseWorkerExit(log string) (workerCounts, error) {
	var line string
	s := bufio.NewScanner(strings.NewReader(log))
	s.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for s.Scan() {
		if strings.Contains(s.Text(), `msg="Exiting`) {
			line = s.Text()
		}
	}
	if line == "" {
		return workerCounts{}, errors.New("no Exiting line in the worker's log")
	}
	var c workerCounts
	if i := strings.Index(line, `msg="`); i >= 0 {
		rest := line[i+len(`msg="`):]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			c.Msg = rest[:j]
		}
	}
	fields := map[string]*int{"code": &c.Code, "completed": &c.Completed, "retried": &c.Retried, "deadLettered": &c.DeadLettered, "lost": &c.Lost}
	found := 0
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if p, want := fields[k]; ok && want {
			n, err := strconv.Atoi(v)
			if err != nil {
				return c, fmt.Errorf("%s=%q in %q", k, v, line)
			}
			*p = n
			found++
		}
	}
	if found != len(fields) {
		return c, fmt.Errorf("counts missing in %q", line)
	}
	return c, nil
}

// drainItems are the items of a run: distinct values, as rediswq's shared lease keys need.
func drainItem(i int) string { return fmt.Sprintf("item-%07d", i) }

// fillDrain empties the server and pushes items items onto drainKey.
func fillDrain(ctx context.Context, c *goredis.Client, items int) error {
	if err := c.FlushAll(ctx).Err(); err != nil {
		return err
	}
	const chunk = 1000
	for i := 0; i < items; i += chunk {
		vals := make([]any, 0, chunk)
		for j := i; j < min(i+chunk, items); j++ {
			vals = append(vals, drainItem(j))
		}
		if err := c.RPush(ctx, drainKey, vals...).Err(); err != nil {
			return err
		}
	}
	return nil
}

// drainLeft is, atomically, how many items are ready and in flight.
func drainLeft(ctx context.Context, c *goredis.Client) (ready, inFlight int64, err error) {
	var a, b *goredis.IntCmd
	_, err = c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		a = p.LLen(ctx, drainKey)
		b = p.LLen(ctx, redis.ProcessingKey(drainKey))
		return nil
	})
	return a.Val(), b.Val(), err
}

// drainRun is one drain: how long it took and whether every item was handled once.
type drainRun struct {
	wall time.Duration
	// failure says what went wrong; empty if the items were all handled exactly once.
	failure string
	// detail is for the note: what was checked, and costs.
	detail string
}

func (r drainRun) rate(items int) *float64 {
	if r.failure != "" || r.wall <= 0 {
		return nil
	}
	return ptr.To(float64(items) / r.wall.Seconds())
}

// drainMode is how the workers of a drain run their command: argv after the binary, and
// what the note calls it.
type drainMode struct {
	tag, what string
	args      []string
}

var (
	drainPerItem    = drainMode{tag: "exec", what: "`" + drainCommand + "` per item", args: []string{"--", drainCommand}}
	drainPersistent = drainMode{tag: "persistent", what: "`--persistent` bash handler", args: []string{"--persistent", "--", "bash", "-c", drainHandler}}
)

// drainWorkers drains items items with n queuejob-worker processes, each running its
// command as mode says, with the environment the operator gives a WorkerPool's pods.
func drainWorkers(ctx context.Context, c *goredis.Client, addr, bin, dir string, items, n int, mode drainMode, srvCPU func() (time.Duration, error)) (drainRun, error) {
	if err := fillDrain(ctx, c, items); err != nil {
		return drainRun{}, fmt.Errorf("fill the list: %w", err)
	}
	env := []string{
		queue.EnvBackend + "=redis",
		queue.EnvName + "=bench-drain",
		queue.EnvMode + "=WorkerPool",
		redis.EnvAddress + "=" + addr,
		redis.EnvKey + "=" + drainKey,
		redis.EnvDB + "=0",
	}
	s0, _ := srvCPU()
	procs := make([]*Proc, 0, n)
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	start := time.Now()
	for i := range n {
		p, err := startProc(fmt.Sprintf("queuejob-worker %d", i), filepath.Join(dir, fmt.Sprintf("%s-worker-%d-of-%d.log", mode.tag, i+1, n)), env, bin, mode.args...)
		if err != nil {
			return drainRun{}, err
		}
		procs = append(procs, p)
	}
	// The drain ends when nothing is ready and nothing in flight.
	timeout := max(2*time.Minute, time.Duration(items)*10*time.Millisecond)
	var r drainRun
	for {
		ready, inFlight, err := drainLeft(ctx, c)
		if err != nil {
			return drainRun{}, err
		}
		if ready == 0 && inFlight == 0 {
			r.wall = time.Since(start)
			break
		}
		if allExited(procs) {
			r.failure = fmt.Sprintf("every worker exited with %d items ready and %d in flight", ready, inFlight)
			break
		}
		if time.Since(start) > timeout {
			r.failure = fmt.Sprintf("not drained within %s: %d ready, %d in flight", timeout, ready, inFlight)
			break
		}
		select {
		case <-ctx.Done():
			return drainRun{}, ctx.Err()
		case <-time.After(drainPoll):
		}
	}
	s1, _ := srvCPU()
	// The workers see the queue empty and exit on their own.
	exitBy := time.Now().Add(30 * time.Second)
	for !allExited(procs) && time.Now().Before(exitBy) {
		time.Sleep(50 * time.Millisecond)
	}
	exitedAfter := time.Since(start) - r.wall
	var sum workerCounts
	var workerCPU time.Duration
	var problems []string
	for _, p := range procs {
		if done, _ := p.Exited(); !done {
			problems = append(problems, p.Name+" did not exit within 30 s of the drain")
			continue
		}
		if st := p.cmd.ProcessState; st != nil {
			// wait4's usage includes the children the worker waited for: its commands.
			workerCPU += st.UserTime() + st.SystemTime()
		}
		b, err := os.ReadFile(p.log.Name())
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		wc, err := parseWorkerExit(string(b))
		if err != nil {
			problems = append(problems, p.Name+": "+err.Error())
			continue
		}
		if wc.Code != 0 {
			problems = append(problems, fmt.Sprintf("%s exited %d: %s", p.Name, wc.Code, wc.Msg))
		}
		sum.Completed += wc.Completed
		sum.Retried += wc.Retried
		sum.DeadLettered += wc.DeadLettered
		sum.Lost += wc.Lost
	}
	failed, err := c.LLen(ctx, redis.FailedKey(drainKey)).Result()
	if err != nil {
		return drainRun{}, err
	}
	if sum.Completed != items || sum.Retried+sum.DeadLettered+sum.Lost != 0 || failed != 0 {
		problems = append(problems, fmt.Sprintf("the workers' counts: %d completed of %d items, %d retried, %d dead-lettered, %d lost; %d in %s",
			sum.Completed, items, sum.Retried, sum.DeadLettered, sum.Lost, failed, redis.FailedKey(drainKey)))
	}
	if len(problems) > 0 && r.failure == "" {
		r.failure = strings.Join(problems, "; ")
	}
	r.detail = fmt.Sprintf("ours (%s): workers' counts sum to %d completed, nothing retried, dead-lettered or lost, both lists and %s empty; workers exited %.1f s after the drain; CPU per item: workers %.0f µs (with their commands), redis-server %.0f µs (with its idle cron and this harness's check of both lists every 10 ms)",
		mode.what, sum.Completed, redis.FailedKey(drainKey), exitedAfter.Seconds(),
		float64(workerCPU.Microseconds())/float64(items), float64((s1-s0).Microseconds())/float64(items))
	return r, nil
}

// execCeiling is how fast n goroutines of this process, with nothing else to do, exec
// drainCommand count times in all: the ceiling of any worker that execs it per item, on
// this machine now. It is a reference for the note, not the peer.
func execCeiling(ctx context.Context, n, count int) (perSec float64, childCPU time.Duration, err error) {
	var c0, c1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c0)
	next := make(chan struct{}, count)
	for range count {
		next <- struct{}{}
	}
	close(next)
	errs := make([]error, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for range next {
				if errs[i] = exec.CommandContext(ctx, drainCommand).Run(); errs[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c1)
	if err := errors.Join(errs...); err != nil {
		return 0, 0, err
	}
	cpu := time.Duration(c1.Utime.Nano() + c1.Stime.Nano() - c0.Utime.Nano() - c0.Stime.Nano())
	return float64(count) / wall.Seconds(), cpu / time.Duration(count), nil
}

func allExited(procs []*Proc) bool {
	for _, p := range procs {
		if done, _ := p.Exited(); !done {
			return false
		}
	}
	return true
}

// drainRaw drains items items with n goroutines, each with a go-redis client of its own,
// doing rediswq's minimum: LMOVE the list's tail onto <key>:processing, LREM it from there.
func drainRaw(ctx context.Context, c *goredis.Client, addr string, items, n int, srvCPU func() (time.Duration, error)) (drainRun, error) {
	if err := fillDrain(ctx, c, items); err != nil {
		return drainRun{}, fmt.Errorf("fill the list: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, max(2*time.Minute, time.Duration(items)*10*time.Millisecond))
	defer cancel()
	proc := redis.ProcessingKey(drainKey)
	got := make([][]string, n)
	errs := make([]error, n)
	s0, _ := srvCPU()
	cpu0 := selfCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			rc := goredis.NewClient(&goredis.Options{Addr: addr})
			defer rc.Close()
			for {
				item, err := rc.LMove(ctx, drainKey, proc, "RIGHT", "LEFT").Result()
				if errors.Is(err, goredis.Nil) {
					return
				}
				if err == nil {
					err = rc.LRem(ctx, proc, 1, item).Err()
				}
				if err != nil {
					errs[i] = err
					return
				}
				got[i] = append(got[i], item)
			}
		})
	}
	wg.Wait()
	r := drainRun{wall: time.Since(start)}
	cpu := selfCPU() - cpu0
	s1, _ := srvCPU()
	if err := errors.Join(errs...); err != nil {
		r.failure = err.Error()
		return r, nil
	}
	ready, inFlight, err := drainLeft(ctx, c)
	if err != nil {
		return drainRun{}, err
	}
	if lost, dup := checkOnce(got, items); lost+dup > 0 || ready+inFlight > 0 {
		r.failure = fmt.Sprintf("%d items never taken, %d taken twice; %d ready and %d in flight left", lost, dup, ready, inFlight)
	}
	r.detail = fmt.Sprintf("raw: each of the %d items taken exactly once, both lists empty; CPU per item: this process %.0f µs, redis-server %.0f µs",
		items, float64(cpu.Microseconds())/float64(items), float64((s1-s0).Microseconds())/float64(items))
	return r, nil
}

// drainLibrary drains items items with n goroutines, each a pkg/worker Worker of its own
// (a connection each, as n worker pods have) running a handler that does nothing: the
// library's cost, without a process around it.
func drainLibrary(ctx context.Context, c *goredis.Client, addr string, items, n int, srvCPU func() (time.Duration, error)) (drainRun, error) {
	if err := fillDrain(ctx, c, items); err != nil {
		return drainRun{}, fmt.Errorf("fill the list: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, max(2*time.Minute, time.Duration(items)*10*time.Millisecond))
	defer cancel()
	ws := make([]*worker.Worker, n)
	for i := range ws {
		w, err := worker.New(ctx, worker.Options{Backend: worker.BackendRedis, Redis: redis.Options{Address: addr, Key: drainKey}})
		if err != nil {
			return drainRun{}, err
		}
		defer w.Close()
		ws[i] = w
	}
	stats := make([]worker.Stats, n)
	errs := make([]error, n)
	s0, _ := srvCPU()
	cpu0 := selfCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() {
			stats[i], errs[i] = w.Run(ctx, func(context.Context, *worker.Item) error { return nil }, worker.RunOptions{})
		})
	}
	wg.Wait()
	r := drainRun{wall: time.Since(start)}
	cpu := selfCPU() - cpu0
	s1, _ := srvCPU()
	if err := errors.Join(errs...); err != nil {
		r.failure = err.Error()
		return r, nil
	}
	var sum worker.Stats
	for _, st := range stats {
		sum.Completed += st.Completed
		sum.Retried += st.Retried + st.DeadLettered + st.Lost
	}
	ready, inFlight, err := drainLeft(ctx, c)
	if err != nil {
		return drainRun{}, err
	}
	if sum.Completed != items || sum.Retried != 0 || ready+inFlight > 0 {
		r.failure = fmt.Sprintf("%d completed of %d items, %d not completed; %d ready and %d in flight left", sum.Completed, items, sum.Retried, ready, inFlight)
	}
	r.detail = fmt.Sprintf("library: %d completed, nothing retried, dead-lettered or lost, both lists empty; CPU per item: this process %.0f µs, redis-server %.0f µs",
		sum.Completed, float64(cpu.Microseconds())/float64(items), float64((s1-s0).Microseconds())/float64(items))
	return r, nil
}

// checkOnce counts the items 0..items-1 (drainItem) that no list holds (lost) and the
// values beyond the first of each (taken more than once, or not an item at all).
func checkOnce(got [][]string, items int) (lost, dup int) {
	seen := make(map[string]bool, items)
	for _, g := range got {
		for _, it := range g {
			if seen[it] {
				dup++
			}
			seen[it] = true
		}
	}
	for i := range items {
		if !seen[drainItem(i)] {
			lost++
		}
		delete(seen, drainItem(i))
	}
	return lost, dup + len(seen)
}

// benchDrain is section 6.
func benchDrain(ctx context.Context, res *Results, workerBin string, items int, pools []int) error {
	title := sectionTitle["drain"]
	modes := []drainMode{drainPerItem, drainPersistent}
	fail := func(why string) error {
		for _, n := range pools {
			res.missing(title, drainLibraryRow(n, items), why)
			for _, m := range modes {
				res.missing(title, drainRowName(n, items, m), why)
			}
		}
		return nil
	}
	if _, err := os.Stat(workerBin); err != nil {
		return fail(fmt.Sprintf("%s: %v (make workers builds it)", workerBin, err))
	}
	res.Versions["queuejob-worker"] = binVersion(workerBin)
	if _, ok := res.Versions["redis-server"]; !ok {
		res.Versions["redis-server"] = redisVersion()
	}
	res.Settings["drain"] = fmt.Sprintf("%d items per run on one fresh redis-server, with QUEUEJOB_MODE=WorkerPool: queuejob-worker -- %s, and queuejob-worker --persistent -- bash -c '%s'", items, drainCommand, drainHandler)
	srv, err := servers.StartRedis("")
	if err != nil {
		return fail("start redis-server: " + err.Error())
	}
	defer srv.Close()
	dir, err := os.MkdirTemp("", "queuejob-bench-drain-")
	if err != nil {
		return err
	}
	d := &drainBench{res: res, title: title, bin: workerBin, dir: dir, items: items, srv: srv,
		c: goredis.NewClient(&goredis.Options{Addr: srv.Addr()})}
	defer d.c.Close()
	defer func() {
		if d.keep {
			logf("drain: the workers' logs are in %s", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	for i, n := range pools {
		if err := d.pool(ctx, n, modes, i == 0); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func drainRowName(n, items int, m drainMode) string {
	if m.tag == drainPersistent.tag {
		return fmt.Sprintf("WorkerPool of %d, --persistent, %d items: items/s", n, items)
	}
	return fmt.Sprintf("WorkerPool of %d, %d items: items/s", n, items)
}

func drainLibraryRow(n, items int) string {
	return fmt.Sprintf("%d pkg/worker Workers (the Go library, a no-op handler), %d items: items/s", n, items)
}

// drainBench is what the drains of section 6 share.
type drainBench struct {
	res      *Results
	title    string
	bin, dir string
	items    int
	srv      *servers.Server
	c        *goredis.Client
	keep     bool // a drain failed: keep the workers' logs
}

func (d *drainBench) srvCPU() (time.Duration, error) { return procCPU(d.srv.PID()) }

// pool measures a pool of n workers in each mode beside the raw loop of n goroutines.
func (d *drainBench) pool(ctx context.Context, n int, modes []drainMode, first bool) error {
	logf("drain: raw loop of %d goroutines, %d items", n, d.items)
	raw, err := drainRaw(ctx, d.c, d.srv.Addr(), d.items, n, d.srvCPU)
	if err != nil {
		d.keep = true
		d.res.missing(d.title, drainLibraryRow(n, d.items), "raw loop: "+err.Error())
		for _, m := range modes {
			d.res.missing(d.title, drainRowName(n, d.items, m), "raw loop: "+err.Error())
		}
		return ctx.Err()
	}
	rawNote := raw.detail
	if raw.failure != "" {
		rawNote = "raw FAILED, no figure: " + raw.failure
	}
	logf("drain: %d pkg/worker Workers in this process, %d items", n, d.items)
	if lib, err := drainLibrary(ctx, d.c, d.srv.Addr(), d.items, n, d.srvCPU); err != nil {
		d.res.missing(d.title, drainLibraryRow(n, d.items), err.Error())
	} else {
		note := lib.detail
		if lib.failure != "" {
			d.keep, note = true, "library FAILED, no figure: "+lib.failure
		}
		d.res.add(Row{Section: d.title, Name: drainLibraryRow(n, d.items), Unit: "items/s", Ours: lib.rate(d.items), Peer: raw.rate(d.items), PeerName: drainPeer, Note: note + "; " + rawNote})
	}
	for _, m := range modes {
		logf("drain: %d queuejob-workers (%s), %d items", n, m.what, d.items)
		ours, err := drainWorkers(ctx, d.c, d.srv.Addr(), d.bin, d.dir, d.items, n, m, d.srvCPU)
		if err != nil {
			d.keep = true
			d.res.missing(d.title, drainRowName(n, d.items, m), "queuejob-workers: "+err.Error())
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		notes := []string{ours.detail}
		if ours.failure != "" {
			d.keep = true
			notes = []string{"ours FAILED, no figure: " + ours.failure}
		}
		notes = append(notes, rawNote)
		if m.tag == drainPerItem.tag {
			notes = append(notes, d.execCeilingNote(ctx, n))
		}
		if first {
			notes = append(notes, "each item costs ours its command ("+m.what+") and a log line besides the protocol (take, claim the lease, complete); the raw loop takes no lease and runs nothing")
		}
		d.res.add(Row{Section: d.title, Name: drainRowName(n, d.items, m), Unit: "items/s", Ours: ours.rate(d.items), Peer: raw.rate(d.items), PeerName: drainPeer, Note: strings.Join(notes, "; ")})
	}
	return ctx.Err()
}

// execCeilingNote measures execCeiling for the note of an exec-per-item row.
func (d *drainBench) execCeilingNote(ctx context.Context, n int) string {
	rate, cpu, err := execCeiling(ctx, n, min(d.items, 200*n))
	if err != nil {
		return fmt.Sprintf("exec ceiling not measured: %v", err)
	}
	return fmt.Sprintf("for reference, %d goroutine(s) of this process doing nothing but exec `%s` in a loop, right after: %.0f execs/s, %.0f µs CPU per exec in `%s` itself",
		n, drainCommand, rate, float64(cpu.Microseconds()), drainCommand)
}
