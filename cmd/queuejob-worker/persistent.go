package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/worker"
)

// --persistent: COMMAND starts once and handles every item, so that a Python or shell
// handler pays no fork and exec per item. The protocol (docs/queues-and-workers.md):
//
//	the worker to COMMAND's stdin, per item:  <n> <attempt> <length>\n<length bytes of the item>\n
//	COMMAND to its file descriptor 3:         ok <n>\n  or  fail <n>\n  or  fail <n> <reason>\n
//
// where n numbers the items from 1, so that an answer is never taken for another item's.
// Answers have a descriptor of their own, so that nothing COMMAND or what it starts
// prints on its stdout, which is the worker's, is taken for one. COMMAND exiting, or not
// answering within --timeout, fails the item in hand; the next item starts it again.
// Breaking the protocol (a line that is no answer, an answer to another item, an answer
// before it read the whole item) fails the item in hand, if any, and COMMAND is restarted
// before the next item. Once the worker is done, COMMAND's
// stdin is closed: it should exit.

// Answers of the protocol.
const (
	answerOK   = "ok"
	answerFail = "fail"
)

// maxAnswerLine bounds an answer line; a longer one breaks the protocol.
const maxAnswerLine = 4 << 10

// answerDrain is how long, after COMMAND exited, its last answers may take to be read.
const answerDrain = 200 * time.Millisecond

// persistent is the COMMAND of --persistent, started on the first item.
type persistent struct {
	c    *config
	log  *slog.Logger
	proc *handlerProc // nil: not running
}

// handlerProc is one run of COMMAND.
type handlerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// answers carries COMMAND's answer to the item in hand, numbered waiting (0: none);
	// exited its exit status, after its last answer.
	answers chan string
	exited  chan error
	waiting atomic.Uint64
	// sent numbers the items handed to this run of COMMAND.
	sent uint64
	// broken is set when COMMAND broke the protocol: it is restarted before the next item,
	// and brokeCh, closed then, fails the item in hand.
	broken    atomic.Bool
	brokeCh   chan struct{}
	breakOnce sync.Once
}

// breakProtocol records that COMMAND broke the protocol.
func (h *handlerProc) breakProtocol() {
	h.broken.Store(true)
	h.breakOnce.Do(func() { close(h.brokeCh) })
}

// start runs COMMAND with a pipe to its stdin and one from its descriptor 3.
func (p *persistent) start() error {
	ar, aw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := &exec.Cmd{
		Path: p.c.path, Args: p.c.argv, Env: p.c.commandEnv, Stdout: p.c.stdout, Stderr: p.c.stderr,
		ExtraFiles:  []*os.File{aw}, // its descriptor 3
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	stdin, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	_ = aw.Close() // COMMAND holds it now
	if err != nil {
		_ = ar.Close()
		return err
	}
	// answers holds one: an answer sent as an item's wait ended is left to a process that
	// is stopped (every way out of handle but an answer stops it).
	h := &handlerProc{cmd: cmd, stdin: stdin, answers: make(chan string, 1), exited: make(chan error, 1), brokeCh: make(chan struct{})}
	read := make(chan struct{})
	go p.readAnswers(h, ar, read)
	go func() {
		// Its exit, not the end of descriptor 3: what it started may hold that open.
		err := cmd.Wait()
		select {
		case <-read:
		case <-time.After(answerDrain):
			_ = ar.Close() // ends the read
			<-read
		}
		h.exited <- err
	}()
	p.proc = h
	p.log.Info("Started the command, to handle the items one after another (--persistent)", "pid", cmd.Process.Pid)
	return nil
}

// readAnswers passes COMMAND's answers on while an item is in hand; anything else on
// descriptor 3 breaks the protocol.
func (p *persistent) readAnswers(h *handlerProc, r *os.File, done chan<- struct{}) {
	defer close(done)
	defer r.Close()
	br := bufio.NewReaderSize(r, maxAnswerLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			word, n, ok := parseAnswer(strings.TrimRight(string(line), "\r\n"))
			switch {
			case errors.Is(err, bufio.ErrBufferFull) || !ok:
				h.breakProtocol()
				p.log.Warn("The command wrote something other than an answer (ok <n>, fail <n> or fail <n> <reason>, a line each) to descriptor 3: it is restarted", "bytes", len(line))
				if errors.Is(err, bufio.ErrBufferFull) {
					return
				}
			case n != 0 && h.waiting.CompareAndSwap(n, 0):
				h.answers <- word
			default:
				h.breakProtocol()
				p.log.Warn("The command answered an item that is not in hand (one answer per item, with its number): it is restarted", "answered", n, "inHand", h.waiting.Load())
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// parseAnswer splits an answer line "ok <n>" or "fail <n> [reason]" into the answer (ok,
// or fail with its reason) and the item's number.
func parseAnswer(line string) (answer string, n uint64, ok bool) {
	word, rest, _ := strings.Cut(line, " ")
	num, reason, _ := strings.Cut(rest, " ")
	n, err := strconv.ParseUint(num, 10, 64)
	switch {
	case err != nil || n == 0:
		return "", 0, false
	case word == answerOK && reason == "":
		return answerOK, n, true
	case word == answerFail:
		return strings.TrimSpace(answerFail + " " + reason), n, true
	}
	return "", 0, false
}

// ready returns COMMAND running and in step with the protocol: started if it is not, or
// if it exited or broke the protocol since the last item.
func (p *persistent) ready() (*handlerProc, error) {
	if h := p.proc; h != nil {
		select {
		case err := <-h.exited:
			p.log.Info("The command exited between items; starting it again", "status", exitStatus(err))
			p.proc = nil
		default:
			if h.broken.Load() {
				p.terminate(syscall.SIGTERM, "it broke the protocol")
			}
		}
	}
	if p.proc == nil {
		if err := p.start(); err != nil {
			return nil, err
		}
	}
	return p.proc, nil
}

// handle hands COMMAND the item and returns nil if it answered ok. Like runCommand, it
// stops COMMAND when the item's context ends or --timeout passes.
func (p *persistent) handle(ctx context.Context, it *worker.Item, stop context.CancelCauseFunc) error {
	h, err := p.ready()
	if err != nil {
		stop(exitf(exitConfig, "could not start the command %q: %v", p.c.argv[0], err))
		return err
	}
	data := it.Data()
	h.sent++
	seq := h.sent
	h.waiting.Store(seq)
	defer h.waiting.Store(0)
	written := make(chan struct{})
	// Written aside: COMMAND may not read it all (it exits, or hangs).
	go func() {
		defer close(written)
		_, _ = fmt.Fprintf(h.stdin, "%d %d %d\n%s\n", seq, it.Attempt(), len(data), data)
	}()
	var timeout <-chan time.Time
	if p.c.timeout > 0 {
		t := time.NewTimer(p.c.timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case a := <-h.answers:
		select {
		case <-written:
		case <-time.After(answerDrain):
			// The write still waits for COMMAND to read: the rest of the item would be
			// read as the next one's header.
			h.breakProtocol()
			p.log.Warn("The command answered before it read the whole item: it is restarted before the next item")
		}
		if a == answerOK {
			return nil
		}
		return fmt.Errorf("the command answered %q", boundAnswer(a))
	case err := <-h.exited:
		p.proc = nil
		return fmt.Errorf("the command exited before it answered (%s); the next item starts it again", exitStatus(err))
	case <-h.brokeCh:
		return errors.New("the command broke the protocol (an answer is a line ok <n>, fail <n> or fail <n> <reason> on descriptor 3); it is restarted before the next item")
	case <-timeout:
		p.terminate(syscall.SIGTERM, "it answered no item within --timeout "+p.c.timeout.String())
		return fmt.Errorf("the command did not answer within --timeout %s", p.c.timeout)
	case <-ctx.Done():
		cause := context.Cause(ctx)
		p.terminate(stopSignal(cause), cause.Error())
		return fmt.Errorf("the command was stopped: %w", cause)
	}
}

// boundAnswer is an answer cut to 200 bytes for the log.
func boundAnswer(a string) string {
	if len(a) > 200 {
		return a[:200] + "..."
	}
	return a
}

// terminate sends sig to COMMAND's process group, waits --grace for it to exit and kills
// the group if it has not.
func (p *persistent) terminate(sig syscall.Signal, why string) {
	h := p.proc
	p.log.Info("Stopping the command", "reason", why, "signal", sigName(sig), "grace", p.c.grace)
	_ = syscall.Kill(-h.cmd.Process.Pid, sig)
	p.await(h)
}

// close ends COMMAND's stdin once the worker is done, and waits --grace for it to exit.
func (p *persistent) close() {
	if p.proc == nil {
		return
	}
	_ = p.proc.stdin.Close()
	p.await(p.proc)
}

// await waits --grace for COMMAND to exit, then kills its process group.
func (p *persistent) await(h *handlerProc) {
	defer func() { p.proc = nil }()
	t := time.NewTimer(p.c.grace)
	defer t.Stop()
	select {
	case err := <-h.exited:
		p.log.Info("The command stopped", "status", exitStatus(err))
		return
	case <-t.C:
	}
	_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
	<-h.exited
	p.log.Warn("Killed the command: it did not stop within --grace", "grace", p.c.grace)
}
