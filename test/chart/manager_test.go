package chart

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// lockedBuffer is a bytes.Buffer the manager's stderr and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runManagerAs builds cmd (the manager) and runs it against envtest as the chart's
// ServiceAccount (impersonated: envtest has no token for it), with the chart's Deployment
// args plus the leader election namespace, which outside a pod it cannot read from its
// ServiceAccount. It returns the manager's log; the manager stops with the test.
func runManagerAs(t *testing.T, m *matrixRun, extra ...string) *lockedBuffer {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "manager")
	buildArgs := []string{"build", "-o", bin}
	if raceEnabled {
		buildArgs = append(buildArgs, "-race")
	}
	build := exec.Command("go", append(buildArgs, "../../cmd")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd: %v\n%s", err, out)
	}

	cfg, err := clientcmd.Load(testEnv.KubeConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range cfg.AuthInfos {
		user.Impersonate = m.serviceAccount()
		user.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + m.namespace, "system:authenticated"}
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}

	args := m.deployment(t).Spec.Template.Spec.Containers[0].Args
	args = append(append(args, "--kubeconfig="+kubeconfig, "--leader-election-namespace="+m.namespace,
		// Free ports: the test machine may run other managers.
		"--health-probe-bind-address=127.0.0.1:0", "--metrics-bind-address=127.0.0.1:0"), extra...)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("the manager's log:\n%s", log.String())
		}
	})
	return log
}

// checkManagerRuns runs the real manager with only what the chart granted its
// ServiceAccount: it takes the lease in the release namespace and runs a QueueJob's Job in
// namespace ns, and its log shows no RBAC refusal. With watchNamespaces (Roles in the watched
// namespaces, the leader election Role, the metrics auth ClusterRole) that shows that its
// cache (controllers.CacheOptions) lists and watches nothing cluster-wide.
func checkManagerRuns(t *testing.T, m *matrixRun, ns string) {
	if testing.Short() {
		t.Skip("builds and runs the manager")
	}
	b, err := os.ReadFile("../../config/samples/batch_v1alpha1_queuejob_pi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	qj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &qj.Object); err != nil {
		t.Fatal(err)
	}
	qj.SetNamespace(ns)
	// The CRD the chart applied is established by now (TestValuesMatrix applied it first).
	if err := m.c.Create(m.ctx, qj); err != nil {
		t.Fatalf("creating QueueJob pi: %v", err)
	}
	log := runManagerAs(t, m)

	deadline := time.Now().Add(90 * time.Second)
	var job batchv1.Job
	var lease coordinationv1.Lease
	for {
		errJob := m.c.Get(m.ctx, client.ObjectKey{Namespace: ns, Name: "pi"}, &job)
		errLease := m.c.Get(m.ctx, client.ObjectKey{Namespace: m.namespace, Name: "queuejob-operator.batch.queuejob.io"}, &lease)
		if errJob == nil && errLease == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90 s: Job %s/pi: %v; Lease in %s: %v", ns, errJob, m.namespace, errLease)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// Let the informers and the reconciler run a little past the Job's creation.
	time.Sleep(3 * time.Second)
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, "forbidden") || strings.Contains(line, "is not allowed") {
			t.Errorf("the manager was refused something: %s", line)
		}
	}
	t.Logf("the manager, as %s with the chart's RBAC, took the lease in %s and created Job %s/pi", m.serviceAccount(), m.namespace, ns)
}
