package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/version"
)

// options are what every command shares: the kubeconfig flags, the output format and the
// streams.
type options struct {
	streams genericiooptions.IOStreams
	kube    *genericclioptions.ConfigFlags
	output  string
	// timeout bounds the talk with the queue server and the API server.
	timeout time.Duration
	// now is the clock of ages and lease times; time.Now but in tests.
	now func() time.Time
}

// commandName is how the user called us: "kubectl qj" when kubectl runs us as its
// plugin kubectl-qj, "qj" otherwise.
func commandName() string {
	if strings.HasPrefix(filepath.Base(os.Args[0]), "kubectl-") {
		return "kubectl qj"
	}
	return "qj"
}

func newRootCmd(streams genericiooptions.IOStreams) *cobra.Command {
	o := &options{
		streams: streams,
		kube:    genericclioptions.NewConfigFlags(true),
		now:     time.Now,
	}
	name := commandName()
	root := &cobra.Command{
		Use:   name,
		Short: "Fill, inspect and watch the queues of QueueJobs",
		Long: `Fill, inspect and watch the queues of QueueJobs (batch.queuejob.io).

It reads QueueJobs, their Secrets, Jobs and pods with your kubeconfig and your RBAC, and
talks to the queue (a Redis list or stream, or RabbitMQ) directly: the queue's address must be reachable
from here (kubectl port-forward, then --redis-address or --rabbitmq-url-env). enqueue and
inspect also work without a cluster when the queue's coordinates are given as flags.
Secret values are never printed.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		CompletionOptions: cobra.CompletionOptions{
			HiddenDefaultCmd: true,
		},
	}
	// --version prints "qj 0.1.0 (revision ...)".
	root.Version = version.Version
	root.SetVersionTemplate(version.String(name) + "\n")
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o.kube.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVarP(&o.output, "output", "o", "", "Output format: json or yaml (machine-readable); empty for human-readable tables.")
	root.PersistentFlags().DurationVar(&o.timeout, "timeout", 30*time.Second, "How long to wait for the queue server and the API server on each step.")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		switch o.output {
		case "", "json", "yaml":
		default:
			return fmt.Errorf("unknown output format %q: use -o json, -o yaml, or no -o for tables", o.output)
		}
		if o.timeout <= 0 {
			return fmt.Errorf("--timeout must be positive, e.g. 30s")
		}
		return nil
	}
	root.AddCommand(newEnqueueCmd(o), newInspectCmd(o), newStatusCmd(o), newRequeueCmd(o), newDropCmd(o))
	return root
}

// scheme knows QueueJobs and the built-in types.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(qjv1.AddToScheme(s))
	return s
}()

// kubeClient is a client of the cluster of the kubeconfig, and the namespace to use:
// -n, or the kubeconfig context's, or "default".
func (o *options) kubeClient() (client.Client, string, error) {
	ns, _, err := o.kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("reading the kubeconfig: %w", err)
	}
	cfg, err := o.kube.ToRESTConfig()
	if err != nil {
		return nil, "", fmt.Errorf("reading the kubeconfig: %w: set --kubeconfig, $KUBECONFIG or --context", err)
	}
	cfg.Timeout = o.timeout
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("connecting to the cluster at %s: %w", cfg.Host, err)
	}
	return c, ns, nil
}

// withTimeout bounds one step.
func (o *options) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, o.timeout)
}
