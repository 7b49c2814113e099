package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// The CLI's tests run the commands in-process (cobra with arguments, output captured)
// against a real kube-apiserver and etcd (envtest, with the QueueJob CRD and no manager)
// and real redis-server and rabbitmq-server. Each is started on first use, once for the
// package, so the parsing tests need none of them; TestMain stops them.

const redisPassword = "s3cret-qj-redis-pass"

var (
	envOnce    sync.Once
	envErr     error
	testEnv    *envtest.Environment
	restCfg    *rest.Config
	k8s        client.Client
	adminKC    string // a kubeconfig file of a cluster admin
	kubeDir    string
	redisOnce  sync.Once
	redisErr   error
	redisSrv   *servers.Server // requires redisPassword
	rabbitOnce sync.Once
	rabbitErr  error
	rabbitSrv  *servers.RabbitMQ
)

func TestMain(m *testing.M) {
	code := m.Run()
	if redisSrv != nil {
		redisSrv.Close()
	}
	if rabbitSrv != nil {
		rabbitSrv.Close()
	}
	if testEnv != nil {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}
	if kubeDir != "" {
		_ = os.RemoveAll(kubeDir)
	}
	os.Exit(code)
}

// needCluster starts envtest (once) and returns a kubeconfig file of a cluster admin.
func needCluster(t *testing.T) string {
	t.Helper()
	envOnce.Do(func() {
		testEnv = &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
			ErrorIfCRDPathMissing: true,
		}
		if restCfg, envErr = testEnv.Start(); envErr != nil {
			envErr = fmt.Errorf("starting envtest: %w: run `make test` (or `make envtest`), which sets KUBEBUILDER_ASSETS", envErr)
			return
		}
		if k8s, envErr = client.New(restCfg, client.Options{Scheme: scheme}); envErr != nil {
			return
		}
		if kubeDir, envErr = os.MkdirTemp("", "qj-kube-"); envErr != nil {
			return
		}
		adminKC, envErr = userKubeconfig("admin", "system:masters")
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return adminKC
}

// userKubeconfig adds a user to envtest's API server and writes a kubeconfig of it.
func userKubeconfig(name string, groups ...string) (string, error) {
	u, err := testEnv.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return "", err
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(kubeDir, name+".kubeconfig")
	return path, os.WriteFile(path, kc, 0o600)
}

func needRedis(t *testing.T) *servers.Server {
	t.Helper()
	redisOnce.Do(func() { redisSrv, redisErr = servers.StartRedis(redisPassword) })
	if redisErr != nil {
		t.Fatal("starting redis-server (make servers installs it):", redisErr)
	}
	return redisSrv
}

func needRabbitMQ(t *testing.T) *servers.RabbitMQ {
	t.Helper()
	rabbitOnce.Do(func() {
		rabbitSrv, rabbitErr = servers.StartRabbitMQ(servers.AMQPReady)
	})
	if rabbitErr != nil {
		t.Fatal("starting rabbitmq-server (make servers installs it):", rabbitErr)
	}
	return rabbitSrv
}

// testCtx is bounded generously for a loaded 2-core machine.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// result is one run of the CLI.
type result struct {
	out, errOut string
	err         error
}

// all is everything the run printed, its error included.
func (r result) all() string {
	s := r.out + r.errOut
	if r.err != nil {
		s += "error: " + r.err.Error()
	}
	return s
}

// run runs the CLI in-process with args and stdin, as `qj ARGS...`.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd(genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(testCtx(t))
	r := result{out: out.String(), errOut: errOut.String(), err: err}
	t.Logf("qj %s\n%s", strings.Join(args, " "), r.all())
	return r
}

// mustRun is run that fails the test on an error.
func mustRun(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	r := run(t, stdin, args...)
	if r.err != nil {
		t.Fatalf("qj %s: %v\nstderr: %s", strings.Join(args, " "), r.err, r.errOut)
	}
	return r
}

// wantErr checks that a run failed with an error containing every part.
func wantErr(t *testing.T, r result, parts ...string) {
	t.Helper()
	if r.err == nil {
		t.Fatalf("no error, want one containing %q; output:\n%s", parts, r.all())
	}
	for _, p := range parts {
		if !strings.Contains(r.err.Error(), p) {
			t.Errorf("error %q does not contain %q", r.err, p)
		}
	}
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "qj-cli-"}}
	if err := k8s.Create(testCtx(t), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// create creates objects, failing the test on an error.
func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := k8s.Create(testCtx(t), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// eventually polls cond until it holds or the generous deadline passes.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60s; last: %s", what, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestVersion(t *testing.T) {
	r := mustRun(t, "", "--version")
	if !strings.HasPrefix(r.out, "qj dev (revision ") || !strings.HasSuffix(r.out, ")\n") {
		t.Errorf("--version printed %q, want \"qj dev (revision ...)\"", r.out)
	}
}
