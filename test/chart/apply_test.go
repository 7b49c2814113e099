package chart

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

var (
	envOnce sync.Once
	testEnv *envtest.Environment
	k8s     client.Client
	envErr  error
)

func TestMain(m *testing.M) {
	// What envtest and the client log (e.g. a slow control plane's retries) goes to stderr,
	// instead of controller-runtime's warning that no logger was set.
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	code := m.Run()
	if testEnv != nil {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}
	os.Exit(code)
}

// needCluster starts envtest (once, without CRDs: the chart brings its own) and returns a
// client of a cluster admin.
func needCluster(t *testing.T) client.Client {
	t.Helper()
	envOnce.Do(func() {
		testEnv = &envtest.Environment{}
		cfg, err := testEnv.Start()
		if err != nil {
			envErr = fmt.Errorf("starting envtest: %w: run `make test` (or `make envtest`), which sets KUBEBUILDER_ASSETS", err)
			return
		}
		k8s, envErr = client.New(cfg, client.Options{})
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return k8s
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func createNamespace(t *testing.T, ctx context.Context, c client.Client, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// The rendered Deployment's pod template, created as a Pod in a namespace that enforces the
// restricted Pod Security Standard, is admitted; a privileged copy is not, which shows the
// namespace enforces it. TestValuesMatrix checks the first for each of its cases.
func TestPodTemplateIsAdmittedUnderRestricted(t *testing.T) {
	c := needCluster(t)
	ctx := testCtx(t)
	var d appsv1.Deployment
	only(t, render(t), "Deployment", &d)
	ns := admitPodTemplate(t, ctx, c, "restricted", &d)

	bad := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "privileged", Namespace: ns, Labels: d.Spec.Template.Labels},
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
	}
	bad.Spec.Containers[0].SecurityContext.Privileged = ptr.To(true)
	bad.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
	err := c.Create(ctx, bad, client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Errorf("a privileged pod in namespace %s: err = %v, want a PodSecurity violation (is the namespace enforcing?)", ns, err)
	}
}

// admitPodTemplate creates namespace ns enforcing the restricted Pod Security Standard, with
// the Deployment's ServiceAccount, and checks that the Deployment's pod template, as a Pod,
// is admitted there (server-side dry-run). It returns ns.
func admitPodTemplate(t *testing.T, ctx context.Context, c client.Client, ns string, d *appsv1.Deployment) string {
	t.Helper()
	createNamespace(t, ctx, c, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: d.Spec.Template.Spec.ServiceAccountName, Namespace: ns}}
	if err := c.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "manager", Namespace: ns, Labels: d.Spec.Template.Labels},
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
	}
	if err := c.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Errorf("the manager's pod template was not admitted under restricted in %s: %v", ns, err)
	}
	return ns
}
