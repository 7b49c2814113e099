package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// protocolLoop is a bash handler of --persistent's line protocol with builtins only:
// $attempt and $item per item, then body, which answers.
func protocolLoop(body string) string {
	return `export LC_ALL=C
while read -r attempt n; do
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
		"bash", "-c", protocolLoop(`echo "pid=$$ attempt=$attempt len=$n item=[${item//$'\n'/|}]"; echo ok`)+`
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
    poison/*) echo "fail poisoned" ;;
    crash/1) exit 3 ;;
    slow/1) sleep 60 ;;
    *) echo ok ;;
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
		"bash", "-c", protocolLoop(`echo ok`)+`
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
