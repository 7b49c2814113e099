package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/worker"
)

// maxItemEnv is the largest item passed in QUEUEJOB_ITEM too; Linux refuses a variable
// over 128 KiB (MAX_ARG_STRLEN), and all of them over a quarter of the stack limit.
const maxItemEnv = 64 << 10

// work connects to the queue and handles items until it has handled c.run.Items of them
// (if non-zero) or the queue is empty. Its error is an *exitError, or the cause of ctx
// (a signalError) if ctx was cancelled.
func work(ctx context.Context, c *config, log *slog.Logger) (worker.Stats, error) {
	var total worker.Stats
	w, err := worker.New(ctx, c.opts)
	if err != nil {
		if ctx.Err() != nil {
			return total, context.Cause(ctx)
		}
		return total, &exitError{code: exitQueue, err: err}
	}
	defer func() { _ = w.Close() }()
	o := w.Options()
	items := "until the queue is empty"
	if c.run.Items > 0 {
		items = fmt.Sprintf("%d (%s)", c.run.Items, c.itemsFrom)
	}
	log.Info("Started", "backend", o.Backend, "session", o.Session, "items", items,
		"lease", o.LeaseTTL, "maxAttempts", o.MaxAttempts, "timeout", c.timeout, "command", c.argv[0])

	// runCtx is also cancelled when the command cannot be started: the item goes back.
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	h := &handler{c: c, log: log, stop: stop}
	if c.persistent {
		h.persistent = &persistent{c: c, log: log}
		defer h.persistent.close()
	}
	for c.run.Items == 0 || total.Handled() < c.run.Items {
		// One item a call, so that each item's outcome is known before the next: the
		// library's Run finishes it (complete, fail with attempts and dead-letter, or
		// return on shutdown) and, on RabbitMQ, stops the consumer before the item, so
		// that no message comes to a worker about to exit.
		st, err := w.Run(runCtx, h.handle, worker.RunOptions{Items: 1})
		total.Completed += st.Completed
		total.Retried += st.Retried
		total.DeadLettered += st.DeadLettered
		total.Lost += st.Lost
		if err != nil {
			if runCtx.Err() != nil {
				return total, context.Cause(runCtx)
			}
			return total, &exitError{code: exitQueue, err: err}
		}
		if st.Handled() == 0 {
			return total, nil // the queue is empty
		}
		r := h.last
		switch {
		case st.Completed > 0:
			log.Info("Completed an item", "attempt", r.attempt, "took", r.took.Round(time.Millisecond))
		case st.Retried > 0:
			log.Warn("Failed an item: it goes back to the queue for another attempt",
				"attempt", r.attempt, "maxAttempts", o.MaxAttempts, "took", r.took.Round(time.Millisecond), "error", r.err)
		case st.DeadLettered > 0:
			log.Warn("Failed an item on its last attempt: it went to the dead-letter list",
				"attempt", r.attempt, "took", r.took.Round(time.Millisecond), "error", r.err)
		case st.Lost > 0:
			log.Warn("Lost an item's lease while the command ran: the item may run again elsewhere",
				"attempt", r.attempt, "took", r.took.Round(time.Millisecond))
		}
		if c.onFailure == onFailureExit && st.Retried+st.DeadLettered > 0 {
			return total, &exitError{code: exitCommand, err: r.err}
		}
	}
	return total, nil
}

// handler runs the command on one item.
type handler struct {
	c    *config
	log  *slog.Logger
	stop context.CancelCauseFunc
	// persistent, with --persistent, is the COMMAND that handles every item.
	persistent *persistent
	// last is the outcome of the last item; Run calls handle on its own goroutine, which
	// is work's.
	last result
}

type result struct {
	attempt int
	took    time.Duration
	err     error
}

func (h *handler) handle(ctx context.Context, it *worker.Item) error {
	start := time.Now()
	var err error
	if h.persistent != nil {
		err = h.persistent.handle(ctx, it, h.stop)
	} else {
		err = h.runCommand(ctx, it)
	}
	h.last = result{attempt: it.Attempt(), took: time.Since(start), err: err}
	return err
}

// runCommand runs the command on the item and returns nil if it exited 0. It stops the
// command when the item's context ends (shutdown, lost lease) or --timeout passes.
func (h *handler) runCommand(ctx context.Context, it *worker.Item) error {
	c := h.c
	data := it.Data()
	env := append(slices.Clip(c.commandEnv), envItemAttempt+"="+strconv.Itoa(it.Attempt()))
	if len(data) <= maxItemEnv && bytes.IndexByte(data, 0) < 0 {
		env = append(env, envItem+"="+string(data))
	} else {
		h.log.Warn("The item is too large for "+envItem+" or holds a NUL byte: the command gets it on stdin only", "size", len(data))
		env = append(env, envItem+"=")
	}
	cmd := &exec.Cmd{
		Path:   c.path,
		Args:   c.argv,
		Env:    env,
		Stdin:  bytes.NewReader(data),
		Stdout: c.stdout,
		Stderr: c.stderr,
		// Its own process group, so that a signal reaches what it starts too; killed if
		// the worker dies first.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	if err := cmd.Start(); err != nil {
		// Not the item's fault: return it and exit.
		h.stop(exitf(exitConfig, "could not start the command %q: %v", c.argv[0], err))
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var timeout <-chan time.Time
	if c.timeout > 0 {
		t := time.NewTimer(c.timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case err := <-done:
		return err
	case <-timeout:
		h.terminate(cmd, done, syscall.SIGTERM, "it ran past --timeout "+c.timeout.String())
		return fmt.Errorf("the command ran past --timeout %s", c.timeout)
	case <-ctx.Done():
		cause := context.Cause(ctx)
		h.terminate(cmd, done, stopSignal(cause), cause.Error())
		return fmt.Errorf("the command was stopped: %w", cause)
	}
}

// stopSignal is the signal that stops a command when an item's context ended with cause:
// the worker's own (SIGTERM or SIGINT), else SIGTERM (a lost lease, say).
func stopSignal(cause error) syscall.Signal {
	var se signalError
	if errors.As(cause, &se) {
		return se.sig
	}
	return syscall.SIGTERM
}

// terminate sends sig to the command's process group, waits --grace for it to exit and
// kills the group if it has not.
func (h *handler) terminate(cmd *exec.Cmd, done <-chan error, sig syscall.Signal, why string) {
	pid := cmd.Process.Pid
	h.log.Info("Stopping the command", "reason", why, "signal", sigName(sig), "grace", h.c.grace)
	_ = syscall.Kill(-pid, sig)
	t := time.NewTimer(h.c.grace)
	defer t.Stop()
	select {
	case err := <-done:
		h.log.Info("The command stopped", "status", exitStatus(err))
		return
	case <-t.C:
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-done
	h.log.Warn("Killed the command: it did not stop within --grace", "grace", h.c.grace)
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
