package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/worker"
)

// --persistent: COMMAND starts once and handles every item, so that a Python or shell
// handler pays no fork and exec per item. The line protocol (docs/queues-and-workers.md):
//
//	worker to COMMAND's stdin, per item:  <attempt> <length>\n<length bytes of the item>\n
//	COMMAND's stdout, per item:           ok\n  or  fail\n  or  fail <reason>\n
//
// Other lines COMMAND writes on its stdout are copied to the worker's. COMMAND exiting,
// or answering past --timeout, fails the item in hand; the next item starts it again.
// Once the worker is done, COMMAND's stdin is closed: it should exit.

// Answers of the protocol.
const (
	answerOK   = "ok"
	answerFail = "fail"
)

// maxAnswerLine bounds a line of COMMAND's stdout; a longer one is copied in pieces.
const maxAnswerLine = 64 << 10

// persistent is a COMMAND started once (nil cmd: not running).
type persistent struct {
	c   *config
	log *slog.Logger

	cmd   *exec.Cmd
	stdin io.WriteCloser
	// answers carries COMMAND's answers while an item is in hand (waiting); exited its
	// exit, after its last answer.
	answers chan string
	exited  chan error
	waiting *atomic.Bool
}

// start runs COMMAND with a pipe to its stdin and one from its stdout.
func (p *persistent) start() error {
	cmd := &exec.Cmd{
		Path: p.c.path, Args: p.c.argv, Env: p.c.commandEnv, Stderr: p.c.stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd, p.stdin = cmd, stdin
	p.answers, p.exited, p.waiting = make(chan string), make(chan error, 1), &atomic.Bool{}
	go p.read(cmd, stdout, p.answers, p.exited, p.waiting)
	p.log.Info("Started the command, to handle the items one after another (--persistent)", "pid", cmd.Process.Pid)
	return nil
}

// read passes COMMAND's answers on while an item is in hand and copies its other lines
// to the worker's stdout; at the end of its stdout, it waits for COMMAND to exit.
func (p *persistent) read(cmd *exec.Cmd, stdout io.Reader, answers chan<- string, exited chan<- error, waiting *atomic.Bool) {
	r := bufio.NewReaderSize(stdout, maxAnswerLine)
	for {
		line, err := r.ReadSlice('\n')
		text := strings.TrimSuffix(string(line), "\n")
		switch {
		case len(line) > 0 && isAnswer(text) && waiting.CompareAndSwap(true, false):
			answers <- text
		case len(line) > 0 && isAnswer(text):
			p.log.Warn("The command answered with no item in hand: ignored (one answer line per item)")
		case len(line) > 0:
			_, _ = p.c.stdout.Write(line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			exited <- cmd.Wait()
			return
		}
	}
}

// isAnswer reports whether a line of COMMAND's stdout is an answer of the protocol.
func isAnswer(line string) bool {
	return line == answerOK || line == answerFail || strings.HasPrefix(line, answerFail+" ")
}

// handle hands COMMAND the item and returns nil if it answered ok. Like runCommand, it
// stops COMMAND when the item's context ends or --timeout passes.
func (p *persistent) handle(ctx context.Context, it *worker.Item, stop context.CancelCauseFunc) error {
	if p.cmd == nil {
		if err := p.start(); err != nil {
			stop(exitf(exitConfig, "could not start the command %q: %v", p.c.argv[0], err))
			return err
		}
	}
	data := it.Data()
	p.waiting.Store(true)
	defer p.waiting.Store(false)
	// Written aside: COMMAND may not read it all (it exits, or hangs).
	go func(w io.Writer) {
		_, _ = fmt.Fprintf(w, "%d %d\n%s\n", it.Attempt(), len(data), data)
	}(p.stdin)
	var timeout <-chan time.Time
	if p.c.timeout > 0 {
		t := time.NewTimer(p.c.timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case a := <-p.answers:
		if a == answerOK {
			return nil
		}
		return fmt.Errorf("the command answered %q", boundAnswer(a))
	case err := <-p.exited:
		p.cmd = nil
		return fmt.Errorf("the command exited before it answered (%s); the next item starts it again", exitStatus(err))
	case <-timeout:
		p.terminate(syscall.SIGTERM, "it answered no item within --timeout "+p.c.timeout.String())
		return fmt.Errorf("the command did not answer within --timeout %s", p.c.timeout)
	case <-ctx.Done():
		cause := context.Cause(ctx)
		sig := syscall.SIGTERM
		var se signalError
		if errors.As(cause, &se) {
			sig = se.sig
		}
		p.terminate(sig, cause.Error())
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
	pid := p.cmd.Process.Pid
	p.log.Info("Stopping the command", "reason", why, "signal", sigName(sig), "grace", p.c.grace)
	_ = syscall.Kill(-pid, sig)
	p.await(pid)
}

// close ends COMMAND's stdin once the worker is done, and waits --grace for it to exit.
func (p *persistent) close() {
	if p.cmd == nil {
		return
	}
	_ = p.stdin.Close()
	p.await(p.cmd.Process.Pid)
}

// await waits --grace for COMMAND to exit, then kills its process group.
func (p *persistent) await(pid int) {
	defer func() { p.cmd = nil }()
	t := time.NewTimer(p.c.grace)
	defer t.Stop()
	for {
		select {
		case err := <-p.exited:
			p.log.Info("The command stopped", "status", exitStatus(err))
			return
		case <-p.answers: // an answer too late for its item
			continue
		case <-t.C:
		}
		break
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for {
		select {
		case <-p.exited:
			p.log.Warn("Killed the command: it did not stop within --grace", "grace", p.c.grace)
			return
		case <-p.answers:
		}
	}
}
