// Command manager runs the queuejob-operator's controller manager.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/controllers"
	"github.com/queuejob/queuejob-operator/internal/metricsauth"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/version"

	// Go's fallback root CAs: the images (FROM scratch) have no CA bundle, and TLS to a
	// queue without a caSecretRef verifies the server with the system roots.
	_ "golang.org/x/crypto/x509roots/fallback"
)

// managerFlags are the manager's command-line settings.
type managerFlags struct {
	metricsAddr   string
	metricsSecure bool
	probeAddr     string
	pprofAddr     string
	leaderElect   bool
	leaderElectNS string
	qps           float64
	burst         int
	workers       int
	watchNS       string
	secretRefresh time.Duration
	watchQueues   bool
	allowedAddrs  string
	showVersion   bool
	zap           zap.Options
}

func main() {
	f := parseFlags()
	if f.showVersion {
		fmt.Println(version.String("queuejob-operator"))
		os.Exit(0)
	}
	if f.secretRefresh <= 0 {
		fmt.Fprintln(os.Stderr, "--secret-refresh-interval must be positive, e.g. 1m")
		os.Exit(2)
	}
	allowed, err := backends.ParseAddressPolicy(f.allowedAddrs)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&f.zap)))
	log := ctrl.Log.WithName("setup")
	if limit, err := setMemoryLimit(); err != nil {
		log.Error(err, "Not setting the Go runtime's memory limit")
	} else if limit > 0 {
		log.Info("Keeping the Go runtime's memory under 90 % of the container's limit", "GOMEMLIMIT", limit)
	}
	if !allowed.AllowsAll() {
		log.Info("Restricting the queue addresses the manager connects to", "allowed", allowed.String())
	}
	if err := run(f, allowed); err != nil {
		log.Error(err, "The manager stopped with an error")
		os.Exit(1)
	}
}

func parseFlags() *managerFlags {
	f := &managerFlags{}
	flag.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "Address the metrics endpoint binds to; 0 disables it.")
	flag.BoolVar(&f.metricsSecure, "metrics-secure", false, "Serve metrics over HTTPS and require an authenticated, authorized client (needs RBAC for TokenReviews and SubjectAccessReviews).")
	flag.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
	flag.StringVar(&f.pprofAddr, "pprof-bind-address", "", "Address Go's pprof endpoints (/debug/pprof/) bind to, e.g. 127.0.0.1:8082; empty or 0 disables them. They are unauthenticated: bind them to loopback.")
	flag.BoolVar(&f.leaderElect, "leader-elect", false, "Elect a leader, so that only one of several managers reconciles at a time.")
	flag.StringVar(&f.leaderElectNS, "leader-election-namespace", "", "Namespace of the leader election Lease; defaults to the manager's own namespace.")
	// Kueue's defaults. An idle QueueJob costs no requests; a finishing one about seven
	// (status, events, the TTL's reads and deletes), so at client-go's 20/30 a hundred
	// QueueJobs finishing together waited 15 s for their TTLs (make bench, cleanup).
	flag.Float64Var(&f.qps, "kube-api-qps", 50, "Queries per second to the API server.")
	flag.IntVar(&f.burst, "kube-api-burst", 100, "Burst of queries to the API server.")
	flag.StringVar(&f.watchNS, "watch-namespaces", "", "Comma-separated namespaces whose QueueJobs, Jobs and pods the manager watches and caches; empty: the whole cluster.")
	flag.IntVar(&f.workers, "max-concurrent-reconciles", 4, "QueueJobs reconciled at once; a probe of an unreachable queue holds one for up to 10 s.")
	flag.DurationVar(&f.secretRefresh, "secret-refresh-interval", time.Minute, "How long the values of the Secrets a QueueJob references are reused before they are read again from the API server; they are also read again when the QueueJob changes and after a probe that failed to connect or log in.")
	flag.BoolVar(&f.watchQueues, "watch-queues", true, "Hear of items added to an empty queue at once, instead of at the QueueJob's next probe: Redis lists and streams through Redis's client-side caching (CLIENT TRACKING with a redirect to a subscribed connection: two connections per Redis server and user, needing the CLIENT and SUBSCRIBE commands), NATS through a subscription to the stream's subjects (one connection per stream and credentials, needing permission to subscribe). The probes go on either way.")
	flag.StringVar(&f.allowedAddrs, "allowed-queue-addresses", "", "Comma-separated queue addresses the manager may connect to: CIDRs (10.0.0.0/8), IP addresses, "+
		"host names (redis.prod) and *.domain patterns (*.svc.cluster.local), each with an optional :port. A host pattern matches the host as written in the QueueJob; "+
		"a host name no pattern matches is resolved, and allowed only if every address it resolves to is in an allowed CIDR. Any other queue is refused before "+
		"the manager connects (QueueReachable=False, AddressNotAllowed). Empty: any address.")
	flag.BoolVar(&f.showVersion, "version", false, "Print the version and exit.")
	f.zap.BindFlags(flag.CommandLine) // --zap-log-level, --zap-devel, ...
	flag.Parse()
	return f
}

// run builds the manager and its QueueJob controller and runs them until a signal.
func run(f *managerFlags, allowed backends.AddressPolicy) error {
	mgr, err := newManager(f)
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	ctx := ctrl.SetupSignalHandler()
	if err := (&controllers.QueueJobReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("queuejob-controller"),

		MaxConcurrentReconciles: f.workers,
		SecretRefresh:           f.secretRefresh,
		NoQueueWatch:            !f.watchQueues,
		AllowedAddresses:        allowed,
	}).SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("setting up the QueueJob controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("setting up the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("setting up the ready check: %w", err)
	}
	ctrl.Log.WithName("setup").Info("Starting the manager")
	return mgr.Start(ctx)
}

// newManager returns a manager of the flags' API client, metrics, probes and election.
func newManager(f *managerFlags) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(qjv1.AddToScheme(scheme))

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(f.qps), f.burst

	metricsOpts := metricsserver.Options{
		BindAddress:   f.metricsAddr,
		SecureServing: f.metricsSecure,
		// HTTP/2 stays off: it is exposed to the HTTP/2 Rapid Reset and Stream Cancellation CVEs.
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
	if f.metricsSecure {
		metricsOpts.FilterProvider = metricsauth.Provider
	}
	return ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        f.probeAddr,
		PprofBindAddress:              f.pprofAddr,
		LeaderElection:                f.leaderElect,
		LeaderElectionID:              "queuejob-operator.batch.queuejob.io",
		LeaderElectionNamespace:       f.leaderElectNS,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(splitList(f.watchNS)...),
	})
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
