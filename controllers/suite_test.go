package controllers

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// The suite runs against a real kube-apiserver and etcd (make envtest builds them). It
// runs no Job controller and no garbage collector: tests drive Job and pod status
// themselves.

var (
	cfg       *rest.Config
	k8s       client.Client
	testEnv   *envtest.Environment
	scheme    = runtime.NewScheme()
	suiteCtx  context.Context
	cancelAll context.CancelFunc
	stopMgr   func()
	// reconciler is the running manager's reconciler.
	reconciler *QueueJobReconciler

	// suiteLog holds everything the managers logged.
	suiteLog syncBuffer

	// Real queue servers, started once for the suite on free ports. The broker also
	// listens for amqps and https, with a certificate of suiteCA.
	redisSrv  *servers.Server
	rabbitSrv *servers.RabbitMQ
	suiteCA   *servers.CA
)

// timeout bounds every Eventually: generous, for a loaded 2-core machine.
const (
	timeout  = 60 * time.Second
	interval = 100 * time.Millisecond
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controller Suite")
}

var _ = BeforeSuite(func() {
	// The operator's own levels (it logs up to V(1)) and V(2): tests read the log for what
	// must, or must not, be there.
	logf.SetLogger(zap.New(zap.WriteTo(io.MultiWriter(GinkgoWriter, &suiteLog)), zap.UseDevMode(true), zap.Level(zapcore.Level(-2))))
	suiteCtx, cancelAll = context.WithCancel(context.Background())

	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(qjv1.AddToScheme(scheme))

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases"), filepath.Join("testdata", "kueue")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred(), "starting envtest: run `make test` (or `make envtest`) so that KUBEBUILDER_ASSETS is set")

	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	redisSrv, err = servers.StartRedis("")
	Expect(err).NotTo(HaveOccurred())
	suiteCA, err = servers.NewCA("queuejob suite CA")
	Expect(err).NotTo(HaveOccurred())
	rabbitSrv, err = servers.StartRabbitMQWith(amqpReady, servers.RabbitMQOptions{TLS: suiteCA})
	Expect(err).NotTo(HaveOccurred())

	stopMgr = startManager()
})

var _ = AfterSuite(func() {
	if stopMgr != nil {
		stopMgr()
	}
	cancelAll()
	if redisSrv != nil {
		redisSrv.Close()
	}
	if rabbitSrv != nil {
		rabbitSrv.Close()
	}
	Expect(testEnv.Stop()).To(Succeed())
})

// startManager starts a manager running the QueueJob reconciler and returns a function
// that stops it and waits until it has stopped.
func startManager() (stop func()) {
	stop, _ = startManagerWith(cfg)
	return stop
}

// startManagerWith starts a manager with its own client configuration and options; it
// also returns the channel that closes once the manager leads (at once without leader
// election).
func startManagerWith(cfg *rest.Config, opts ...func(*ctrl.Options)) (stop func(), elected <-chan struct{}) {
	return startManagerWithReconciler(cfg, nil, opts...)
}

// startManagerWithReconciler is startManagerWith with changes to the reconciler's settings.
func startManagerWithReconciler(cfg *rest.Config, reconcilerOpts []func(*QueueJobReconciler), opts ...func(*ctrl.Options)) (stop func(), elected <-chan struct{}) {
	o := ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  CacheOptions(),
		// Each restart registers the controller name again.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}
	for _, f := range opts {
		f(&o)
	}
	mgr, err := ctrl.NewManager(cfg, o)
	Expect(err).NotTo(HaveOccurred())
	r := &QueueJobReconciler{
		Client: mgr.GetClient(),
		// Counts the Secrets the manager reads, by namespace.
		APIReader: countingReader{Reader: mgr.GetAPIReader(), gets: &suiteSecretGets},
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("queuejob-controller"),
		// ProbeTimeout stays at its default (10s), above the backends' own 5s: RabbitMQ
		// answers a wrong password only after 3s. Short, so that tests of stuck creates
		// stay quick.
		CreateRetry: 3 * time.Second,
		// Longer than any spec: a spec sees Secrets read again only because its QueueJob
		// changed or a probe failed, never because a period ran out (a unit test covers it).
		SecretRefresh: 10 * time.Minute,
		// Short, so that the specs of pods that cannot start stay quick; a unit test
		// covers the grace (TestPodStartWatch).
		PodStartGrace: 2 * time.Second,
	}
	for _, f := range reconcilerOpts {
		f(r)
	}
	Expect(r.SetupWithManager(suiteCtx, mgr)).To(Succeed())
	reconciler = r

	ctx, cancel := context.WithCancel(suiteCtx)
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		// A leader stopped without releasing its lease reports "leader election lost", and so
		// does one that misses a renewal on a loaded machine: both are how leader election works.
		err := mgr.Start(ctx)
		if ctx.Err() == nil && !(o.LeaderElection && err != nil && strings.Contains(err.Error(), "leader election lost")) {
			Expect(err).NotTo(HaveOccurred())
		}
	}()
	return func() {
		cancel()
		Eventually(done, timeout).Should(BeClosed())
	}, mgr.Elected()
}

// restartManager stops the running manager and starts a new one, as a crash and restart
// of the operator would.
func restartManager() {
	stopMgr()
	stopMgr = startManager()
}

// newNamespace creates a namespace for one test.
func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "qj-test-"}}
	Expect(k8s.Create(suiteCtx, ns)).To(Succeed())
	// envtest runs no namespace controller: delete the QueueJobs, so that those of finished
	// specs stop probing and do not load the specs after them.
	DeferCleanup(func() {
		Expect(k8s.DeleteAllOf(suiteCtx, &qjv1.QueueJob{}, client.InNamespace(ns.Name))).To(Succeed())
	})
	return ns.Name
}

// getQJ reads a QueueJob fresh from the API server.
func getQJ(ns, name string) func(g Gomega) *qjv1.QueueJob {
	return func(g Gomega) *qjv1.QueueJob {
		qj := &qjv1.QueueJob{}
		g.Expect(k8s.Get(suiteCtx, client.ObjectKey{Namespace: ns, Name: name}, qj)).To(Succeed())
		return qj
	}
}

// updateQJ re-reads a QueueJob and writes it back changed, retrying on conflicts.
func updateQJ(ns, name string, change func(*qjv1.QueueJob)) {
	Eventually(func(g Gomega) {
		cur := getQJ(ns, name)(g)
		change(cur)
		g.Expect(k8s.Update(suiteCtx, cur)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

// wipeStatus empties a QueueJob's status, as a manager that crashed before its status write
// would leave it.
func wipeStatus(ns, name string) {
	Eventually(func(g Gomega) {
		cur := getQJ(ns, name)(g)
		cur.Status = qjv1.QueueJobStatus{}
		g.Expect(k8s.Status().Update(suiteCtx, cur)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

func amqpReady(url string) error {
	c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return err
	}
	return c.Close()
}

// statusSeam wraps a manager's client so that a test can fail status writes: the one seam
// the suite uses to inject a fault that a real API server would only produce by chance.
type statusSeam struct {
	client.Client
	// fail returns the error a status patch of obj fails with, nil to let it through.
	fail func(obj client.Object) error
}

func (c statusSeam) Status() client.SubResourceWriter {
	return seamStatusWriter{c.Client.Status(), c.fail}
}

type seamStatusWriter struct {
	client.SubResourceWriter
	fail func(obj client.Object) error
}

func (w seamStatusWriter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if err := w.fail(obj); err != nil {
		return err
	}
	return w.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

// withStatusFaults makes the manager's status writes go through fail first.
func withStatusFaults(fail func(obj client.Object) error) func(*ctrl.Options) {
	return func(o *ctrl.Options) {
		o.NewClient = func(config *rest.Config, options client.Options) (client.Client, error) {
			c, err := client.New(config, options)
			if err != nil {
				return nil, err
			}
			return statusSeam{Client: c, fail: fail}, nil
		}
	}
}

// logLinesOf is what the managers logged about the objects of a namespace.
func logLinesOf(ns string) []string {
	var out []string
	for _, l := range strings.Split(suiteLog.String(), "\n") {
		if strings.Contains(l, `"namespace": "`+ns+`"`) || strings.Contains(l, `"namespace":"`+ns+`"`) {
			out = append(out, l)
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
