package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// protocolLoop is a bash handler of --persistent's protocol with builtins only: $seq,
// $attempt and $item per item, then body, which answers on descriptor 3.
func protocolLoop(body string) string {
	return `export LC_ALL=C
while read -r seq attempt n; do
  IFS= read -r -N "$((n+1))" item; item=${item%$'\n'}
  ` + body + `
done`
}

// --persistent starts COMMAND once and hands it every item, exactly, whatever bytes it
// holds; lines that are no answer go to the worker's stdout; at the end COMMAND's stdin
// closes and it exits.
func TestPersistentHandlesEveryItemInOneProcess(t *testing.T) {
	k := key(t)
	items := []string{"apple", "two\nlines", "üñí", " padded "}
	push(t, k, items...)
	p := startWorker(t, k, nil, "--persistent", "--",
		"bash", "-c", protocolLoop(`echo "pid=$$ attempt=$attempt len=$n item=[${item//$'\n'/|}]"; echo "ok $seq" >&3`)+`
echo "stdin closed"`)
	checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
	out := p.output()
	if len(out) != len(items)+1 || out[len(out)-1] != "stdin closed" {
		t.Fatalf("output %q: want a line per item, then the handler's last words", out)
	}
	pid := strings.Fields(out[0])[0]
	for i, it := range items {
		want := fmt.Sprintf("%s attempt=1 len=%d item=[%s]", pid, len(it), strings.ReplaceAll(it, "\n", "|"))
		if out[i] != want {
			t.Errorf("line %d = %q, want %q", i, out[i], want)
		}
	}
	if n := strings.Count(p.logs(), "Started the command"); n != 1 {
		t.Errorf("the command started %d times, want once", n)
	}
	if !strings.Contains(p.lastLog(), "completed=4") {
		t.Errorf("last log line %q, want completed=4", p.lastLog())
	}
	checkLists(t, k, nil, nil, nil)
}

// An answer "fail" fails the item (retried, then dead-lettered); COMMAND exiting or not
// answering within --timeout fails the item in hand, and the next item starts COMMAND
// again.
func TestPersistentFailuresAndRestarts(t *testing.T) {
	k := key(t)
	push(t, k, "poison", "crash", "slow", "good")
	p := startWorker(t, k, nil, "--persistent", "--max-attempts=2", "--timeout=2s", "--grace=1s", "--",
		"bash", "-c", protocolLoop(`echo "$item $attempt"
  case "$item/$attempt" in
    poison/*) echo "fail $seq poisoned" >&3 ;;
    crash/1) exit 3 ;;
    slow/1) sleep 60 ;;
    *) echo "ok $seq" >&3 ;;
  esac`))
	checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
	want := []string{"poison 1", "crash 1", "slow 1", "good 1", "poison 2", "crash 2", "slow 2"}
	if got := p.output(); !slices.Equal(got, want) {
		t.Errorf("items handled %q, want %q", got, want)
	}
	if last := p.lastLog(); !strings.Contains(last, "completed=3 retried=3 deadLettered=1") {
		t.Errorf("last log line %q, want completed=3 retried=3 deadLettered=1", last)
	}
	logs := p.logs()
	if n := strings.Count(logs, "Started the command"); n != 3 {
		t.Errorf("the command started %d times, want 3: at first, after it exited, after --timeout stopped it", n)
	}
	for _, want := range []string{`error="the command answered \"fail poisoned\""`, `error="the command exited before it answered (exit status 3)`,
		`error="the command did not answer within --timeout 2s"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line with %s", want)
		}
	}
	checkLists(t, k, nil, nil, []string{"poison"})
}

// The protocol holds whatever COMMAND does around it (a hostile review's cases): an exit
// whose child keeps its stdout open is seen at once; an "ok" on stdout is output, not an
// answer; an answer while the item was still being written, or one with no item in hand,
// restarts COMMAND before the next item, which is read whole; NUL bytes reach a handler
// that reads bytes.
func TestPersistentProtocolHolds(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	// handler reads each item whole, except a big one, answered on attempt 1 after its
	// header alone (it then reads nothing more: the worker's write waits); "double" is
	// answered twice, the second time once the next item is in hand; "word" is answered
	// with a word that is no answer on attempt 1; "stray" prints an answer on stdout and
	// fails; "child" leaves a child with its stdout and exits on attempt 1.
	handler := `import os, sys, subprocess, time
inp, answers = sys.stdin.buffer, os.fdopen(3, "w", buffering=1)
for header in inp:
    seq, attempt, n = map(int, header.split())
    if n > 100000 and attempt == 1:
        print("fail %d early" % seq, file=answers)
        time.sleep(30)  # reads no more: the worker's write of the item waits
        continue
    item = inp.read(n + 1)[:-1]
    print("got %r %d" % (item[:8], attempt), flush=True)
    if item == b"stray":
        print("ok %d" % seq, flush=True)
        print("fail %d stray" % seq, file=answers)
    elif item == b"child" and attempt == 1:
        subprocess.Popen(["sleep", "20"])
        sys.exit(3)
    elif item == b"double":
        print("ok %d" % seq, file=answers)
        time.sleep(0.3)  # the next item is in hand by now
        print("ok %d" % seq, file=answers)
    elif item == b"word" and attempt == 1:
        print("OK %d" % seq, file=answers)
    else:
        print("ok %d" % seq, file=answers)
`
	k := key(t)
	big := "bigitem-" + strings.Repeat("x", 200<<10)
	push(t, k, big, "after-big", "stray", "child", "double", "after-double", "nul\x00byte", "word")
	start := time.Now()
	p := startWorker(t, k, nil, "--persistent", "--max-attempts=2", "--", python, "-c", handler)
	checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
	// By the worker's own clock: the test's reader of its stdout waits for the child too.
	at, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(strings.Fields(p.lastLog() + " ")[0], "time="))
	if took := at.Sub(start); err != nil || took > 10*time.Second {
		t.Errorf("the worker exited %s after it started: the exit of a command whose child holds its stdout was not seen at once", took)
	}
	out := strings.Join(p.output(), "\n")
	// after-double: failed by the second answer to "double", which came while it was in
	// hand (taken as its answer, it would have been completed unread).
	for _, want := range []string{"got b'after-bi' 1", "got b'after-do' 2", "got b'nul\\x00byte' 1", "got b'bigitem-' 2", "got b'child' 2", "got b'word' 2", "got b'stray' 2\nok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "got b'after-bi' 2") {
		t.Errorf("the item after one answered before it was read failed: %q", out)
	}
	if last := p.lastLog(); !strings.Contains(last, "completed=7 retried=5 deadLettered=1") {
		t.Errorf("last log line %q, want completed=7 (all but stray) retried=5 (big, child, stray, after-double, word) deadLettered=1 (stray)", last)
	}
	checkLists(t, k, nil, nil, []string{"stray"})
	logs := p.logs()
	for _, want := range []string{"answered before it read the whole item", "answered an item that is not in hand", "wrote something other than an answer"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line says the command %s", want)
		}
	}
}

// A COMMAND that dies while the worker waits for items (killed, say) is started again for
// the next item, which it handles on its first attempt.
func TestPersistentExitWhileIdle(t *testing.T) {
	k := key(t)
	push(t, k, "a")
	// Another worker holds an item: the queue is not empty, so this one waits.
	c := rdb(t)
	if err := c.RPush(testCtx(t), k, "held").Err(); err != nil {
		t.Fatal(err)
	}
	held := rediswqLease(t, c, k)
	p := startWorker(t, k, nil, "--persistent", "--", "bash", "-c", protocolLoop(`echo "pid=$$ got=$item attempt=$attempt"; echo "ok $seq" >&3`))
	line := p.expectSuffix(t, "got=a attempt=1")
	pid, err := strconv.Atoi(strings.TrimPrefix(strings.Fields(line)[0], "pid="))
	if err != nil {
		t.Fatalf("no pid in %q", line)
	}
	// Once its answer is in: the command is then idle.
	for deadline := time.Now().Add(time.Minute); !strings.Contains(p.logs(), "Completed an item"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("item a not completed within a minute")
		}
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Reaped by the worker: the exit is known before the next item comes.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed command was not reaped within a minute")
		}
	}
	push(t, k, "b")
	p.expectSuffix(t, "got=b attempt=1")
	complete(t, c, k, held)
	checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
	if !strings.Contains(p.logs(), "exited between items") {
		t.Error("no log line says the command exited between items")
	}
	if last := p.lastLog(); !strings.Contains(last, "completed=2 retried=0") {
		t.Errorf("last log line %q, want completed=2 retried=0", last)
	}
}

// On SIGTERM the item in hand goes back to the queue and COMMAND gets the signal.
func TestPersistentSIGTERMReturnsItem(t *testing.T) {
	k := key(t)
	push(t, k, "x")
	p := startWorker(t, k, nil, "--persistent", "--lease=300s", "--",
		"bash", "-c", `trap "echo got-TERM; exit 1" TERM
`+protocolLoop(`echo started; while :; do sleep 0.1; done`))
	p.expect(t, "started")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.expect(t, "got-TERM")
	checkExit(t, p, 143, `msg="Exiting: stopped by SIGTERM; an item in hand went back to the queue"`)
	checkLists(t, k, []string{"x"}, nil, nil)
	if n := attemptsOf(t, k, "x"); n != 0 {
		t.Errorf("attempts = %d after SIGTERM, want 0", n)
	}
	if n := rdb(t).Exists(testCtx(t), redis.LeaseKey(k, "x")).Val(); n != 0 {
		t.Error("the lease key is left")
	}
}

// A COMMAND that ignores the end of its stdin is killed --grace after the worker is done.
func TestPersistentKilledAfterGrace(t *testing.T) {
	k := key(t)
	push(t, k, "x")
	start := time.Now()
	p := startWorker(t, k, nil, "--persistent", "--grace=1s", "--",
		"bash", "-c", protocolLoop(`echo "ok $seq" >&3`)+`
while :; do sleep 0.1; done`)
	checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
	if !strings.Contains(p.logs(), "Killed the command: it did not stop within --grace") {
		t.Error("no log line says the command was killed")
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("the worker exited %s after it started, before the command's grace of 1s", took)
	}
}

// The bash and Python handlers of docs/queues-and-workers.md's --persistent section
// handle items as the docs say.
func TestPersistentDocsExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "queues-and-workers.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)[strings.Index(string(doc), "**`--persistent`**"):]
	block := func(lang string) string {
		start := strings.Index(section, "```"+lang+"\n")
		if start < 0 {
			t.Fatalf("no %s block in the --persistent section", lang)
		}
		body := section[start+len("```"+lang+"\n"):]
		return dedent(body[:strings.Index(body, "```")])
	}
	shell := block("sh")
	if !strings.HasPrefix(shell, "queuejob-worker ") {
		t.Fatalf("the sh block %q does not start with queuejob-worker", shell)
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3, for the docs' Python handler: %v", err)
	}
	for name, argv := range map[string][]string{
		"bash":   {"sh", "-c", binary + strings.TrimPrefix(shell, "queuejob-worker")},
		"python": {binary, "--persistent", "--", python, "-c", block("python")},
	} {
		t.Run(name, func(t *testing.T) {
			k := key(t)
			push(t, k, "a", "two\nlines", "c")
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = append(os.Environ(), redisEnv(k)...)
			p := startProc(t, cmd)
			checkExit(t, p, 0, `msg="Exiting: the queue is empty"`)
			if !strings.Contains(p.lastLog(), "completed=3 retried=0 deadLettered=0") {
				t.Errorf("last log line %q, want completed=3", p.lastLog())
			}
			checkLists(t, k, nil, nil, nil)
		})
	}
}

// dedent removes the indentation of a Markdown list item's code block.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "   ")
	}
	return strings.Join(lines, "\n")
}

// expectSuffix waits for a line of the worker's stdout that ends in suffix and returns it.
func (p *proc) expectSuffix(t *testing.T, suffix string) string {
	t.Helper()
	timeout := time.After(90 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if strings.HasSuffix(l, suffix) {
				return l
			}
		case <-p.done:
			t.Fatalf("the worker exited (%v) before printing a line ending in %q", p.cmd.ProcessState, suffix)
		case <-timeout:
			t.Fatalf("the worker printed no line ending in %q within 90s", suffix)
		}
	}
}

// rediswqLease takes the list's next item as a rediswq worker would (RPOPLPUSH and a
// lease key of 5 minutes) and returns it.
func rediswqLease(t *testing.T, c *goredis.Client, k string) string {
	t.Helper()
	item, err := c.RPopLPush(testCtx(t), k, redis.ProcessingKey(k)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetEx(testCtx(t), redis.LeaseKey(k, item), "another-worker", 5*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	return item
}

// complete completes an item of rediswqLease.
func complete(t *testing.T, c *goredis.Client, k, item string) {
	t.Helper()
	if err := c.LRem(testCtx(t), redis.ProcessingKey(k), 1, item).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Del(testCtx(t), redis.LeaseKey(k, item)).Err(); err != nil {
		t.Fatal(err)
	}
}
