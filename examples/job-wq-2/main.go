// Command job-wq-2 is the article's worker.py (example 3, fine parallel processing) in Go
// on pkg/worker: it works on the items of a Redis list until the list is empty, and prints
// what worker.py prints:
//
//	Worker with sessionID: <session>
//	Initial queue state: empty=False
//	Working on apple
//	...
//	Queue empty, exiting
//
// Unlike worker.py with rediswq.py, a lease is renewed while an item is worked on, an item
// of a crashed worker comes back (the operator's reaper), a failed item is retried and
// dead-lettered, and SIGTERM returns the item in hand at once. It reads the queue from
// the QUEUEJOB_* variables the operator puts into the QueueJob's pods (the article's
// worker has host "redis" and list "job2" in its code; config/samples sets them in the
// QueueJob instead); QUEUEJOB_MODE=PerItem makes it stop after QUEUEJOB_ITEMS_PER_POD
// items. --sleep is the work, the article's time.sleep(10).
//
// Exit codes, as queuejob-worker's: 0 the queue is empty (or the items asked for are
// done), 2 configuration, 3 the queue cannot be reached or failed, 143 (130) stopped by
// SIGTERM (SIGINT) with the item in hand returned. The log goes to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/worker"

	// Go's fallback root CAs: the images (FROM scratch) have no CA bundle, and TLS to a
	// queue without a caSecretRef verifies the server with the system roots.
	_ "golang.org/x/crypto/x509roots/fallback"
)

func main() { os.Exit(run()) }

func run() int {
	sleep := flag.Duration("sleep", 10*time.Second, "how long the work on each item takes (the article's time.sleep(10))")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	var sig os.Signal
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case sig = <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()

	o, err := worker.OptionsFromEnv()
	if err != nil {
		log.Error("Exiting: configuration error", "code", 2, "error", err)
		return 2
	}
	o.Logger = log
	ro, err := worker.RunOptionsFromEnv(worker.RunOptions{})
	if err != nil {
		log.Error("Exiting: configuration error", "code", 2, "error", err)
		return 2
	}
	w, err := worker.New(ctx, o)
	if err != nil {
		log.Error("Exiting: queue error", "code", 3, "error", err)
		return 3
	}
	defer func() { _ = w.Close() }()

	fmt.Println("Worker with sessionID: " + w.Options().Session)
	empty, err := w.Empty(ctx)
	if err != nil {
		log.Error("Exiting: queue error", "code", 3, "error", err)
		return 3
	}
	fmt.Println("Initial queue state: empty=" + pyBool(empty))
	st, err := w.Run(ctx, func(ctx context.Context, it *worker.Item) error {
		fmt.Println("Working on " + string(it.Data()))
		t := time.NewTimer(*sleep) // Put your actual work here instead of sleep.
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}, ro)
	switch {
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		code := 128 + int(sig.(syscall.Signal))
		log.Info("Exiting: stopped by "+sig.String()+"; an item in hand went back to the queue", "code", code, "completed", st.Completed)
		return code
	case err != nil:
		log.Error("Exiting: queue error", "code", 3, "error", err)
		return 3
	case ro.Items > 0 && st.Handled() >= ro.Items:
		fmt.Printf("Handled %d items, exiting\n", st.Handled())
		return 0
	}
	fmt.Println("Queue empty, exiting")
	return 0
}

// pyBool spells a bool as Python prints it.
func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}
