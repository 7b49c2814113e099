// Command qj fills and inspects the queues of QueueJobs. Installed on the PATH as
// kubectl-qj it is the kubectl plugin "kubectl qj".
//
//	qj enqueue NAME [ITEMS...] [-f FILE|-] [--json-lines]
//	qj inspect NAME
//	qj status NAME
//
// It reads QueueJobs, their Secrets, Jobs and pods with the user's kubeconfig and RBAC,
// and talks to the queue directly; or, for enqueue and inspect, takes the queue's
// coordinates as flags and reads no cluster at all.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := newRootCmd(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
