// Command queuejob-worker turns any command into a worker of a QueueJob's queue:
//
//	queuejob-worker [flags] -- COMMAND ARGS...
//
// It leases an item from the queue the operator's QUEUEJOB_* variables name (see
// docs/queues-and-workers.md, "What worker pods get"), runs COMMAND with the item on its stdin and in the
// variable QUEUEJOB_ITEM (and the attempt number, 1 the first time, in
// QUEUEJOB_ITEM_ATTEMPT), and completes the item when COMMAND exits 0 or fails it
// otherwise: a failed item goes back to the queue for another attempt, or, after
// --max-attempts, to the dead-letter list (Redis <key>:failed, RabbitMQ <queue>.failed).
// The lease is renewed while COMMAND runs, however long it takes. COMMAND's stdout and
// stderr are the worker's; the worker's own log lines go to stderr. Item contents are
// never logged.
//
// With --persistent, COMMAND starts once and handles every item over a small protocol
// instead: the worker writes "<n> <attempt> <length>\n", the item and "\n" to its stdin,
// and it answers each item with a line "ok <n>" or "fail <n> [reason]" on its file
// descriptor 3 (n numbers the items). COMMAND exiting or not answering within --timeout
// fails the item; the next item starts it again. A Python or shell handler pays no exec
// per item.
//
// How many items: --items N handles N items (a PerItem pod's itemsPerPod) and exits;
// --until-empty runs until nothing is ready and nothing is in flight (a WorkerPool
// worker). Without either, QUEUEJOB_MODE and QUEUEJOB_ITEMS_PER_POD decide if they are
// set (PerItem: itemsPerPod items, WorkerPool: until empty), and otherwise the worker runs
// until the queue is empty. Either way it exits 0 as soon as the queue is empty.
//
// On SIGTERM (or SIGINT) the item in hand goes back to the queue at once, without
// counting an attempt, the signal is forwarded to COMMAND's process group, and COMMAND
// gets --grace to exit before it is killed; then the worker exits 128+signal. Keep
// --grace below the pod's terminationGracePeriodSeconds (30 s by default), after which
// the kubelet kills everything.
//
// # Exit codes
//
// The last log line says why the worker exited ("Exiting" with code and reason):
//
//	0    done: the queue is empty, or the worker handled the items it was to handle
//	1    an unexpected error (a bug; the log line says what)
//	2    configuration: bad flags, no COMMAND, COMMAND not found or not startable,
//	     QUEUEJOB_* variables missing or wrong
//	3    the queue: it cannot be reached or refused the worker (wrong password,
//	     certificate, missing queue, wrong key type), or an operation on it failed
//	4    --on-failure=exit and COMMAND failed on an item (the item was failed first:
//	     retried or dead-lettered as usual)
//	130  stopped by SIGINT, 143 by SIGTERM: the item in hand went back to the queue
//
// A failing COMMAND does not end the worker by default (--on-failure=continue): the item
// is retried or dead-lettered and the worker goes on with the next one. --timeout bounds
// one run of COMMAND: past it COMMAND is stopped (SIGTERM, then SIGKILL after --grace)
// and the item fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/version"
	"github.com/queuejob/queuejob-operator/pkg/worker"

	// Go's fallback root CAs: the images (FROM scratch) have no CA bundle, and TLS to a
	// queue without a caSecretRef verifies the server with the system roots.
	_ "golang.org/x/crypto/x509roots/fallback"
)

// Exit codes; see the package doc.
const (
	exitDone     = 0
	exitInternal = 1
	exitConfig   = 2
	exitQueue    = 3
	exitCommand  = 4
	// A signal's exit code is 128 + its number, as a shell's.
	exitSignalBase = 128
)

// Variables COMMAND gets besides the worker's own environment.
const (
	envItem        = "QUEUEJOB_ITEM"
	envItemAttempt = "QUEUEJOB_ITEM_ATTEMPT"
)

// Failure policies of --on-failure.
const (
	onFailureContinue = "continue"
	onFailureExit     = "exit"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config is what the flags and the environment say.
type config struct {
	opts       worker.Options
	run        worker.RunOptions
	argv       []string
	path       string // argv[0], looked up
	timeout    time.Duration
	grace      time.Duration
	onFailure  string
	persistent bool
	itemsFrom  string // where run.Items came from, for the log
	stdout     io.Writer
	stderr     io.Writer
	commandEnv []string
}

// exitError is an error with the exit code it ends the worker with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitf(code int, format string, a ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, a...)}
}

// errShowVersion is parse's answer to --version.
var errShowVersion = errors.New("--version")

func run(args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	c, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitDone
	}
	if errors.Is(err, errShowVersion) {
		fmt.Fprintln(stdout, version.String("queuejob-worker"))
		return exitDone
	}
	if err != nil {
		log.Error("Exiting: configuration error", "code", exitConfig, "error", err)
		return exitConfig
	}
	c.stdout, c.stderr = stdout, stderr
	c.opts.Logger = log
	c.commandEnv = os.Environ()

	// The first SIGTERM or SIGINT cancels ctx with the signal as its cause; a second
	// SIGINT kills the worker (the default action), for an impatient terminal.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case s := <-sigs:
			signal.Reset(syscall.SIGINT)
			cancel(signalError{s.(syscall.Signal)})
		case <-ctx.Done():
		}
	}()
	defer signal.Stop(sigs)

	st, err := work(ctx, c, log)
	return exit(log, c, st, err)
}

// signalError is the cause of the worker's context once a signal stopped it.
type signalError struct{ sig syscall.Signal }

func (e signalError) Error() string { return "received " + sigName(e.sig) }

func sigName(s syscall.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGKILL:
		return "SIGKILL"
	}
	return s.String()
}

// exit logs the last line and returns the exit code.
func exit(log *slog.Logger, c *config, st worker.Stats, err error) int {
	counts := []any{"completed", st.Completed, "retried", st.Retried, "deadLettered", st.DeadLettered, "lost", st.Lost}
	var sig signalError
	var ee *exitError
	switch {
	case err == nil && c.run.Items > 0 && st.Handled() >= c.run.Items:
		log.Info(fmt.Sprintf("Exiting: handled %d of %d items (%s)", st.Handled(), c.run.Items, c.itemsFrom),
			append([]any{"code", exitDone}, counts...)...)
		return exitDone
	case err == nil:
		log.Info("Exiting: the queue is empty", append([]any{"code", exitDone}, counts...)...)
		return exitDone
	case errors.As(err, &sig):
		code := exitSignalBase + int(sig.sig)
		log.Info("Exiting: stopped by "+sigName(sig.sig)+"; an item in hand went back to the queue",
			append([]any{"code", code}, counts...)...)
		return code
	case errors.As(err, &ee):
		msg := map[int]string{
			exitConfig:  "Exiting: configuration error",
			exitQueue:   "Exiting: queue error",
			exitCommand: "Exiting: the command failed on an item (--on-failure=exit)",
		}[ee.code]
		if msg == "" {
			msg = "Exiting: unexpected error"
		}
		log.Error(msg, append([]any{"code", ee.code, "error", ee.err}, counts...)...)
		return ee.code
	default:
		log.Error("Exiting: unexpected error", append([]any{"code", exitInternal, "error", err}, counts...)...)
		return exitInternal
	}
}

func parse(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("queuejob-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: queuejob-worker [flags] -- COMMAND ARGS...")
		fmt.Fprintln(stderr, "Runs COMMAND once per item of the QueueJob's queue (QUEUEJOB_* variables), the item on its stdin and in $"+envItem+".")
		fmt.Fprintln(stderr, "Exit codes: 0 done, 1 unexpected error, 2 configuration, 3 queue, 4 command failed (--on-failure=exit), 128+signal stopped.")
		fmt.Fprintln(stderr, "Flags:")
		fs.PrintDefaults()
	}
	c := &config{}
	items := fs.Int("items", 0, "handle this many items, then exit 0 (a PerItem pod's itemsPerPod); default: QUEUEJOB_MODE and QUEUEJOB_ITEMS_PER_POD, or until the queue is empty")
	untilEmpty := fs.Bool("until-empty", false, "run until no item is ready or in flight (a WorkerPool worker)")
	lease := fs.Duration("lease", 0, "lease of a Redis item or stream entry, renewed every third of it while COMMAND runs (default $"+worker.EnvLeaseSeconds+" or 30s)")
	maxAttempts := fs.Int("max-attempts", 0, "attempts of an item before it is dead-lettered, negative for never (default $"+worker.EnvMaxAttempts+" or 5)")
	fs.DurationVar(&c.timeout, "timeout", 0, "stop COMMAND after this long and fail the item (0: no limit)")
	fs.DurationVar(&c.grace, "grace", 20*time.Second, "how long COMMAND may take to exit after SIGTERM (on shutdown, --timeout, a lost lease) before it is killed; keep it below terminationGracePeriodSeconds")
	fs.StringVar(&c.onFailure, "on-failure", onFailureContinue, "when COMMAND fails on an item: continue with the next item, or exit (code 4) after failing it")
	fs.BoolVar(&c.persistent, "persistent", false, "start COMMAND once and hand it every item over a line protocol instead of running it per item: "+
		"the worker writes \"<n> <attempt> <length>\\n<item>\\n\" to its stdin and it answers each item with a line \"ok <n>\" or \"fail <n> [reason]\" on its file descriptor 3 (docs/queues-and-workers.md)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *showVersion {
		return nil, errShowVersion
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	c.argv = fs.Args()
	if len(c.argv) == 0 {
		return nil, errors.New("no command: usage is queuejob-worker [flags] -- COMMAND ARGS...")
	}
	var err error
	if c.path, err = exec.LookPath(c.argv[0]); err != nil {
		return nil, fmt.Errorf("command %q: %w", c.argv[0], err)
	}
	if c.onFailure != onFailureContinue && c.onFailure != onFailureExit {
		return nil, fmt.Errorf("--on-failure=%q: want %s or %s", c.onFailure, onFailureContinue, onFailureExit)
	}
	if c.timeout < 0 || c.grace < 0 {
		return nil, errors.New("--timeout and --grace must not be negative")
	}

	switch {
	case set["items"] && *untilEmpty:
		return nil, errors.New("--items and --until-empty: give one")
	case set["items"]:
		if *items <= 0 {
			return nil, fmt.Errorf("--items=%d: want a positive number", *items)
		}
		c.run, c.itemsFrom = worker.RunOptions{Items: *items}, "--items"
	case *untilEmpty:
		c.run = worker.RunOptions{}
	default:
		if c.run, err = worker.RunOptionsFromEnv(worker.RunOptions{}); err != nil {
			return nil, err
		}
		c.itemsFrom = queue.EnvItemsPerPod
	}

	if c.opts, err = worker.OptionsFromEnv(); err != nil {
		return nil, err
	}
	if set["lease"] {
		if *lease < time.Second {
			return nil, fmt.Errorf("--lease=%s: want at least 1s", *lease)
		}
		c.opts.LeaseTTL = *lease
	}
	if set["max-attempts"] {
		if *maxAttempts == 0 {
			return nil, errors.New("--max-attempts=0: want a positive number, or negative for never")
		}
		c.opts.MaxAttempts = *maxAttempts
	}
	return c, nil
}
