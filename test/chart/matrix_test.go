package chart

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// matrixCase is one set of values: the chart is rendered with them as release "qj-<name>" in
// namespace "<name>-system", and check says what must then be true of the objects.
type matrixCase struct {
	name string
	set  []string // --set arguments
	// watch are the namespaces of watchNamespaces, without the "<name>-" prefix the test
	// gives them so that the cases' namespaces differ.
	watch []string
	check func(t *testing.T, m *matrixRun)
}

// matrixCases are TestValuesMatrix's cases; TestHelmLintStrict lints the chart with each
// one's values too.
func matrixCases() []matrixCase {
	return []matrixCase{
		{name: "defaults", check: checkDefaults},
		{name: "watch", set: []string{"watchNamespaces={WATCH}"}, watch: []string{"a", "b"}, check: checkWatchNamespaces},
		{name: "insecure", set: []string{"metrics.secure=false"}, check: checkInsecureMetrics},
		{name: "servicemonitor", set: []string{"metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.interval=30s", "metrics.serviceMonitor.labels.release=prometheus"}, check: checkServiceMonitor},
		{name: "pdb", set: []string{"replicas=2", "podDisruptionBudget.enabled=true"}, check: checkPDB},
		{name: "certsecret", set: []string{"metrics.certSecret=metrics-tls", "metrics.serviceMonitor.enabled=true"}, check: checkCertSecret},
	}
}

// watchNamespaces are the full names of the case's watched namespaces.
func (tc matrixCase) watchNamespaces() []string {
	var ns []string
	for _, w := range tc.watch {
		ns = append(ns, tc.name+"-"+w)
	}
	return ns
}

// args are the case's --set arguments, WATCH replaced with its watched namespaces.
func (tc matrixCase) args() []string {
	var args []string
	for _, s := range tc.set {
		args = append(args, "--set", strings.ReplaceAll(s, "WATCH", strings.Join(tc.watchNamespaces(), ",")))
	}
	return args
}

// matrixRun is what a case's check works with.
type matrixRun struct {
	ctx       context.Context
	c         client.Client
	release   string // also the objects' name prefix, as the release contains no "queuejob-operator"
	namespace string
	watch     []string // the watched namespaces' full names
	objs      []object
}

func (m *matrixRun) fullname() string { return m.release + "-queuejob-operator" }
func (m *matrixRun) serviceAccount() string {
	return "system:serviceaccount:" + m.namespace + ":" + m.fullname()
}

func (m *matrixRun) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	only(t, m.objs, "Deployment", &d)
	return &d
}

// may asks the API server's RBAC authorizer whether the manager's ServiceAccount may do verb
// on resource (group/resource) in namespace ns ("" for the whole cluster).
func (m *matrixRun) may(t *testing.T, verb, group, resource, ns string) bool {
	t.Helper()
	return m.mayNamed(t, verb, group, resource, ns, "")
}

// mayNamed is may for the object called name ("" for any).
func (m *matrixRun) mayNamed(t *testing.T, verb, group, resource, ns, name string) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: m.serviceAccount(),
		// A ServiceAccount's groups, as its token would carry them.
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + m.namespace, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Verb: verb, Group: group, Resource: resource, Name: name,
		},
	}}
	if err := m.c.Create(m.ctx, sar); err != nil {
		t.Fatalf("SubjectAccessReview: %v", err)
	}
	return sar.Status.Allowed
}

// wantAccess checks each "verb group/resource ns" against the RBAC authorizer. The
// authorizer reads RBAC objects from an informer: a grant just applied may take a moment
// to count, so an allowed request is asked again for up to a minute.
func (m *matrixRun) wantAccess(t *testing.T, allowed bool, reqs ...[4]string) {
	t.Helper()
	for _, r := range reqs {
		got := m.may(t, r[0], r[1], r[2], r[3])
		for deadline := time.Now().Add(time.Minute); allowed && !got && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			got = m.may(t, r[0], r[1], r[2], r[3])
		}
		if got != allowed {
			where := "cluster-wide"
			if r[3] != "" {
				where = "in namespace " + r[3]
			}
			t.Errorf("the manager may %s %s/%s %s: %v, want %v", r[0], r[1], r[2], where, got, allowed)
		}
	}
}

// TestValuesMatrix renders the chart for each case, applies every object to envtest's real
// API server with a server-side apply (namespaces created first; nothing is a dry-run except
// the pod below), and checks what the case must make true: the objects it rendered, and what
// the API server's RBAC authorizer lets the manager's ServiceAccount do. For every case the
// Deployment's pod template is admitted in a namespace enforcing the restricted Pod Security
// Standard. It logs each case's object count.
func TestValuesMatrix(t *testing.T) {
	c := needCluster(t)
	installServiceMonitorCRD(t, c)

	for _, tc := range matrixCases() {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			m := &matrixRun{ctx: ctx, c: c, release: "qj-" + tc.name, namespace: tc.name + "-system", watch: tc.watchNamespaces()}
			args := tc.args()
			m.objs = renderAs(t, m.release, m.namespace, args...)
			t.Logf("case %s (%s): %d rendered objects", tc.name, strings.Join(args, " "), len(m.objs))

			for _, ns := range append([]string{m.namespace}, m.watch...) {
				createNamespace(t, ctx, c, ns, nil)
			}
			for _, o := range m.objs {
				applyObject(t, ctx, c, o)
			}
			admitPodTemplate(t, ctx, c, tc.name+"-restricted", m.deployment(t))
			m.wantCodeAccess(t, m.namespace, leaderElectionAccess)
			tc.check(t, m)
		})
	}
}

// applyObject applies o with a server-side apply and reads it back.
func applyObject(t *testing.T, ctx context.Context, c client.Client, o object) {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(o.doc, &u.Object); err != nil {
		t.Fatalf("%s: %v", o, err)
	}
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("chart-test"), client.ForceOwnership); err != nil {
		t.Errorf("server-side apply of %s: %v", o, err)
		return
	}
	back := &unstructured.Unstructured{}
	back.SetGroupVersionKind(u.GroupVersionKind())
	if err := c.Get(ctx, client.ObjectKeyFromObject(u), back); err != nil {
		t.Errorf("reading back %s: %v", o, err)
	}
}

// installServiceMonitorCRD installs a stand-in for prometheus-operator's ServiceMonitor CRD,
// which envtest does not serve: the real group, version, kind and scope, but no schema
// (x-kubernetes-preserve-unknown-fields), so the API server stores what the chart renders
// without checking its fields; checkServiceMonitor checks those explicitly.
func installServiceMonitorCRD(t *testing.T, c client.Client) {
	t.Helper()
	ctx := testCtx(t)
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "servicemonitors.monitoring.coreos.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "monitoring.coreos.com",
			Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Plural: "servicemonitors", Singular: "servicemonitor", Kind: "ServiceMonitor", ListKind: "ServiceMonitorList",
			},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: ptr.To(true),
				}},
			}},
		},
	}
	if err := apiextensionsv1.AddToScheme(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, crd); err != nil {
		t.Fatalf("creating the stand-in ServiceMonitor CRD: %v", err)
	}
	for {
		if err := c.Get(ctx, client.ObjectKeyFromObject(crd), crd); err != nil {
			t.Fatal(err)
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("the stand-in ServiceMonitor CRD was not established")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkSecureMetrics: HTTPS on 8443 with --metrics-secure, the TokenReview and
// SubjectAccessReview RBAC bound to the manager, and a metrics-reader ClusterRole.
func checkSecureMetrics(t *testing.T, m *matrixRun) {
	t.Helper()
	ctr := m.deployment(t).Spec.Template.Spec.Containers[0]
	for _, arg := range []string{"--metrics-bind-address=:8443", "--metrics-secure", "--zap-encoder=json", "--zap-log-level=info", "--leader-elect"} {
		if !slices.Contains(ctr.Args, arg) {
			t.Errorf("args %q lack %s", ctr.Args, arg)
		}
	}
	checkMetricsService(t, m, "https", 8443)

	var auth rbacv1.ClusterRole
	named(t, m.objs, "ClusterRole", m.fullname()+"-metrics-auth", &auth)
	wantAuth := []rbacv1.PolicyRule{
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
	}
	if diff := cmp.Diff(wantAuth, auth.Rules); diff != "" {
		t.Errorf("metrics-auth rules (-want +got):\n%s", diff)
	}
	var reader rbacv1.ClusterRole
	named(t, m.objs, "ClusterRole", m.fullname()+"-metrics-reader", &reader)
	if diff := cmp.Diff([]rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}, reader.Rules); diff != "" {
		t.Errorf("metrics-reader rules (-want +got):\n%s", diff)
	}
	m.wantAccess(t, true,
		[4]string{"create", "authentication.k8s.io", "tokenreviews", ""},
		[4]string{"create", "authorization.k8s.io", "subjectaccessreviews", ""})
}

// checkMetricsService: the metrics Service's one port, named for its scheme, reaches the
// container's metrics port, and its selector picks the manager pods.
func checkMetricsService(t *testing.T, m *matrixRun, scheme string, port int32) {
	t.Helper()
	var svc corev1.Service
	named(t, m.objs, "Service", m.fullname()+"-metrics", &svc)
	want := []corev1.ServicePort{{Name: scheme, Port: port, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP}}
	if diff := cmp.Diff(want, svc.Spec.Ports); diff != "" {
		t.Errorf("metrics Service ports (-want +got):\n%s", diff)
	}
	d := m.deployment(t)
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("the metrics Service selects %s=%s, which the manager pods lack (%v)", k, v, d.Spec.Template.Labels)
		}
	}
	ctr := d.Spec.Template.Spec.Containers[0]
	if !slices.ContainsFunc(ctr.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" && p.ContainerPort == port }) {
		t.Errorf("container ports %+v lack metrics on %d", ctr.Ports, port)
	}
}

// codeAccess is one API request the manager's code makes, and where it makes it.
type codeAccess struct {
	verb, group, resource string
	name                  string // the object's name, when the code asks for one object by a fixed name
	where                 string
}

// queueJobAccess is every request the manager makes about QueueJobs and the objects of
// their namespaces (the cache's list and watch included): the RBAC the chart (and the
// kubebuilder markers in controllers/queuejob_controller.go) grant must allow each of them,
// wherever QueueJobs are watched. A new request in the code belongs here.
var queueJobAccess = []codeAccess{
	{verb: "get", resource: "pods", where: "controllers/cleanup.go: APIReader.Get of a pod before deleting it"},
	{verb: "list", resource: "pods", where: "the cache (Owns/watches in SetupWithManager); r.List of a Job's pods in controllers/wave.go and cleanup.go"},
	{verb: "watch", resource: "pods", where: "the cache's informer for pods"},
	{verb: "delete", resource: "pods", where: "controllers/cleanup.go: r.Delete of a pod"},
	{verb: "get", group: "batch", resource: "jobs", where: "APIReader.Get of a Job in controllers/wave.go (endWave, createJob) and cleanup.go"},
	{verb: "list", group: "batch", resource: "jobs", where: "the cache; r.List of a QueueJob's Jobs in controllers/queuejob_controller.go"},
	{verb: "watch", group: "batch", resource: "jobs", where: "the cache's informer for Jobs (Owns)"},
	{verb: "create", group: "batch", resource: "jobs", where: "controllers/wave.go: r.Create of a wave's Job"},
	{verb: "patch", group: "batch", resource: "jobs", where: "controllers/syncjob.go and wave.go: r.Patch of a Job (suspend, end a wave)"},
	{verb: "delete", group: "batch", resource: "jobs", where: "controllers/cleanup.go: r.Delete of an archived Job"},
	{verb: "get", group: "batch.queuejob.io", resource: "queuejobs", where: "controllers/cleanup.go: APIReader.Get of an expired QueueJob; r.Get in Reconcile (cached)"},
	{verb: "list", group: "batch.queuejob.io", resource: "queuejobs", where: "the cache's informer for QueueJobs (For)"},
	{verb: "watch", group: "batch.queuejob.io", resource: "queuejobs", where: "the cache's informer for QueueJobs (For)"},
	{verb: "delete", group: "batch.queuejob.io", resource: "queuejobs", where: "controllers/cleanup.go: r.Delete of an expired QueueJob (ttlSecondsAfterFinished)"},
	{verb: "patch", group: "batch.queuejob.io", resource: "queuejobs/status", where: "controllers/queuejob_controller.go: r.Status().Patch"},
	{verb: "update", group: "batch.queuejob.io", resource: "queuejobs/finalizers", where: "controllers/wave.go: SetControllerReference sets blockOwnerDeletion on a Job, which needs it"},
	{verb: "get", resource: "secrets", where: "controllers/secrets.go: APIReader.Get of a queue's password/CA Secret"},
	{verb: "create", group: "events.k8s.io", resource: "events", where: "controllers/queuejob_controller.go: r.Recorder.Eventf (cmd/main.go: mgr.GetEventRecorder, the events.k8s.io API)"},
	{verb: "patch", group: "events.k8s.io", resource: "events", where: "the same recorder, when it counts a repeated event"},
	{verb: "list", resource: "events", where: "controllers/podcreation.go: checkPodCreation, r.APIReader.List of a Job's FailedCreate events"},
}

// leaderElectionAccess is every request of the manager's leader election (cmd/main.go:
// --leader-elect, LeaderElectionID), in the release namespace.
var leaderElectionAccess = []codeAccess{
	{verb: "get", group: "coordination.k8s.io", resource: "leases", name: leaderElectionID, where: "client-go's LeaseLock: reads the Lease"},
	{verb: "create", group: "coordination.k8s.io", resource: "leases", where: "client-go's LeaseLock: creates the Lease the first time"},
	{verb: "update", group: "coordination.k8s.io", resource: "leases", name: leaderElectionID, where: "client-go's LeaseLock: takes and renews the Lease"},
	{verb: "create", resource: "events", where: "controller-runtime's leader election records \"became leader\" with the core events API"},
	{verb: "patch", resource: "events", where: "the same recorder, when it counts a repeated event"},
}

// leaderElectionID is cmd/main.go's LeaderElectionID: the name of the manager's Lease.
const leaderElectionID = "queuejob-operator.batch.queuejob.io"

// wantCodeAccess checks that the manager may make each request of accesses in namespace ns
// ("" for the whole cluster).
func (m *matrixRun) wantCodeAccess(t *testing.T, ns string, accesses []codeAccess) {
	t.Helper()
	for _, a := range accesses {
		ok := m.mayNamed(t, a.verb, a.group, a.resource, ns, a.name)
		// As in wantAccess: a grant just applied may take a moment to count.
		for deadline := time.Now().Add(time.Minute); !ok && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			ok = m.mayNamed(t, a.verb, a.group, a.resource, ns, a.name)
		}
		if !ok {
			t.Errorf("the manager may not %s %s/%s %q in namespace %q, which it needs for %s", a.verb, a.group, a.resource, a.name, ns, a.where)
		}
	}
}

// checkLeastPrivilege: what the manager may do with the resources of QueueJobs in ns ("" for
// the whole cluster): every request its code makes, Secrets get only, no wildcards' reach.
func checkLeastPrivilege(t *testing.T, m *matrixRun, ns string) {
	t.Helper()
	m.wantCodeAccess(t, ns, queueJobAccess)
	m.wantAccess(t, false,
		[4]string{"list", "", "secrets", ns},
		[4]string{"watch", "", "secrets", ns},
		[4]string{"create", "", "pods", ns},
		[4]string{"update", "batch", "jobs", ns},
		[4]string{"update", "batch.queuejob.io", "queuejobs", ns},
		[4]string{"create", "batch.queuejob.io", "queuejobs", ns},
		[4]string{"get", "batch.queuejob.io", "queuejobs/status", ns}, // the code only patches it
		[4]string{"get", "", "configmaps", ns})
}

func checkDefaults(t *testing.T, m *matrixRun) {
	if len(m.objs) != 13 {
		t.Errorf("rendered %d objects at default values, want 13: %v", len(m.objs), m.objs)
	}
	checkSecureMetrics(t, m)
	checkLeastPrivilege(t, m, "")
	checkLeastPrivilege(t, m, "anywhere")
	// Leader election: nothing but the manager's own Lease, besides creating it.
	m.wantAccess(t, false,
		[4]string{"list", "coordination.k8s.io", "leases", m.namespace},
		[4]string{"watch", "coordination.k8s.io", "leases", m.namespace},
		[4]string{"delete", "coordination.k8s.io", "leases", m.namespace},
		[4]string{"get", "coordination.k8s.io", "leases", m.namespace}, // any Lease: no name
		[4]string{"update", "coordination.k8s.io", "leases", m.namespace},
		[4]string{"patch", "coordination.k8s.io", "leases", m.namespace})
	if ofKind(m.objs, "ServiceMonitor") != nil || ofKind(m.objs, "PodDisruptionBudget") != nil {
		t.Error("a ServiceMonitor or PodDisruptionBudget at default values")
	}
	if d := m.deployment(t); *d.Spec.Replicas != 1 {
		t.Errorf("replicas = %d, want 1", *d.Spec.Replicas)
	} else if pod := d.Spec.Template.Spec; len(pod.Volumes) != 0 || len(pod.Containers[0].VolumeMounts) != 0 {
		t.Errorf("volumes %+v, mounts %+v at default values: want none", pod.Volumes, pod.Containers[0].VolumeMounts)
	} else if diff := cmp.Diff([]corev1.EnvVar{memoryLimitEnv}, pod.Containers[0].Env); diff != "" {
		t.Errorf("env at default values (-want +got):\n%s", diff)
	}
	createNamespace(t, m.ctx, m.c, "defaults-work", nil)
	checkManagerRuns(t, m, "defaults-work") // last: it skips the rest with -short
}

// checkWatchNamespaces: a Role and a RoleBinding in each watched namespace, no ClusterRole
// about namespaced resources bound to the manager, --watch-namespaces=<a>,<b>; the RBAC
// authorizer lets the manager list and watch only in those namespaces (its cache,
// controllers.CacheOptions, lists and watches QueueJobs, Jobs and pods only there; Secrets
// it reads uncached with get).
func checkWatchNamespaces(t *testing.T, m *matrixRun) {
	ctr := m.deployment(t).Spec.Template.Spec.Containers[0]
	if want := "--watch-namespaces=" + strings.Join(m.watch, ","); !slices.Contains(ctr.Args, want) {
		t.Errorf("args %q lack %s", ctr.Args, want)
	}
	for _, ns := range m.watch {
		var role rbacv1.Role
		var binding rbacv1.RoleBinding
		for _, o := range m.objs {
			if o.namespace != ns || o.name != m.fullname()+"-manager" {
				continue
			}
			switch o.kind {
			case "Role":
				if err := yaml.UnmarshalStrict(o.doc, &role); err != nil {
					t.Fatal(err)
				}
			case "RoleBinding":
				if err := yaml.UnmarshalStrict(o.doc, &binding); err != nil {
					t.Fatal(err)
				}
			}
		}
		if len(role.Rules) == 0 {
			t.Errorf("no manager Role in %s", ns)
		}
		if binding.RoleRef.Kind != "Role" || binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 ||
			binding.Subjects[0].Name != m.fullname() || binding.Subjects[0].Namespace != m.namespace {
			t.Errorf("RoleBinding in %s = %+v, want the manager's ServiceAccount bound to its Role", ns, binding)
		}
		checkLeastPrivilege(t, m, ns)
	}
	// The ClusterRoles bound to the manager: only the metrics authn/authz, about cluster-scoped
	// reviews. The user editor/viewer roles are bound to no one by the chart.
	bound := map[string]bool{}
	for _, o := range ofKind(m.objs, "ClusterRoleBinding") {
		var b rbacv1.ClusterRoleBinding
		if err := yaml.UnmarshalStrict(o.doc, &b); err != nil {
			t.Fatal(err)
		}
		bound[b.RoleRef.Name] = true
	}
	for _, o := range ofKind(m.objs, "ClusterRole") {
		if !bound[o.name] {
			continue
		}
		var r rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict(o.doc, &r); err != nil {
			t.Fatal(err)
		}
		for _, rule := range r.Rules {
			for _, res := range rule.Resources {
				if res != "tokenreviews" && res != "subjectaccessreviews" {
					t.Errorf("ClusterRole %s bound to the manager grants %v on %s, a namespaced resource", o.name, rule.Verbs, res)
				}
			}
		}
	}
	// Nothing outside the watched namespaces, nor cluster-wide.
	m.wantAccess(t, false,
		[4]string{"list", "", "pods", ""},
		[4]string{"watch", "batch", "jobs", ""},
		[4]string{"list", "batch.queuejob.io", "queuejobs", ""},
		[4]string{"get", "", "secrets", ""},
		[4]string{"get", "", "secrets", "elsewhere"},
		[4]string{"list", "", "pods", "elsewhere"},
		[4]string{"watch", "batch.queuejob.io", "queuejobs", "elsewhere"})
	// Leader election stays in the release namespace (TestValuesMatrix checks it there).
	if m.mayNamed(t, "update", "coordination.k8s.io", "leases", m.watch[0], leaderElectionID) {
		t.Errorf("the manager may update its Lease in %s, outside the release namespace", m.watch[0])
	}
	checkSecureMetrics(t, m)
	checkManagerRuns(t, m, m.watch[0]) // last: it skips the rest with -short
}

// checkInsecureMetrics: plain HTTP on 8080, no --metrics-secure, no TokenReview RBAC.
func checkInsecureMetrics(t *testing.T, m *matrixRun) {
	ctr := m.deployment(t).Spec.Template.Spec.Containers[0]
	if !slices.Contains(ctr.Args, "--metrics-bind-address=:8080") || slices.Contains(ctr.Args, "--metrics-secure") {
		t.Errorf("args %q: want --metrics-bind-address=:8080 without --metrics-secure", ctr.Args)
	}
	checkMetricsService(t, m, "http", 8080)
	for _, o := range m.objs {
		if strings.HasSuffix(o.name, "-metrics-auth") || strings.HasSuffix(o.name, "-metrics-reader") {
			t.Errorf("%s rendered with metrics.secure=false", o)
		}
	}
	m.wantAccess(t, false,
		[4]string{"create", "authentication.k8s.io", "tokenreviews", ""},
		[4]string{"create", "authorization.k8s.io", "subjectaccessreviews", ""})
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the chart renders;
// decoding strictly into it fails on any other field.
type serviceMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port            string `json:"port"`
			Scheme          string `json:"scheme"`
			Path            string `json:"path"`
			Interval        string `json:"interval,omitempty"`
			BearerTokenFile string `json:"bearerTokenFile,omitempty"`
			TLSConfig       *struct {
				InsecureSkipVerify bool   `json:"insecureSkipVerify,omitempty"`
				ServerName         string `json:"serverName,omitempty"`
				CA                 *struct {
					Secret corev1.SecretKeySelector `json:"secret"`
				} `json:"ca,omitempty"`
			} `json:"tlsConfig,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// checkServiceMonitor: the ServiceMonitor (stored by the stand-in CRD, so its fields are
// checked here) scrapes the metrics Service's port with its scheme: https with the
// scraper's ServiceAccount token and no certificate check, since the manager's is
// self-signed; with metrics.secure=false, http without either.
func checkServiceMonitor(t *testing.T, m *matrixRun) {
	checkSecureMetrics(t, m)
	var sm serviceMonitor
	only(t, m.objs, "ServiceMonitor", &sm)
	if sm.APIVersion != "monitoring.coreos.com/v1" {
		t.Errorf("apiVersion = %s", sm.APIVersion)
	}
	if sm.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("labels = %v, want the extra label release=prometheus", sm.Metadata.Labels)
	}
	var svc corev1.Service
	named(t, m.objs, "Service", m.fullname()+"-metrics", &svc)
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%s, which the metrics Service lacks (%v)", k, v, svc.Labels)
		}
	}
	if diff := cmp.Diff([]string{m.namespace}, sm.Spec.NamespaceSelector.MatchNames); diff != "" {
		t.Errorf("namespaceSelector (-want +got):\n%s", diff)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("endpoints = %+v, want one", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != svc.Spec.Ports[0].Name || ep.Scheme != "https" || ep.Path != "/metrics" || ep.Interval != "30s" ||
		ep.BearerTokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" || ep.TLSConfig == nil || !ep.TLSConfig.InsecureSkipVerify {
		t.Errorf("endpoint = %+v, want port https, scheme https, path /metrics, interval 30s, the ServiceAccount token and insecureSkipVerify", ep)
	}

	// Plain HTTP: the same ServiceMonitor without token or TLS (rendered only).
	var plain serviceMonitor
	only(t, renderAs(t, m.release, m.namespace, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.secure=false"), "ServiceMonitor", &plain)
	if ep := plain.Spec.Endpoints[0]; ep.Port != "http" || ep.Scheme != "http" || ep.BearerTokenFile != "" || ep.TLSConfig != nil || ep.Interval != "" {
		t.Errorf("endpoint with metrics.secure=false = %+v, want port and scheme http, no token, no TLS, no interval", ep)
	}
	// No metrics, no ServiceMonitor.
	if sms := ofKind(renderAs(t, m.release, m.namespace, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.enabled=false"), "ServiceMonitor"); sms != nil {
		t.Errorf("a ServiceMonitor with metrics.enabled=false: %v", sms)
	}
}

// checkPDB: 2 replicas and a PodDisruptionBudget of minAvailable 1 that selects the manager
// pods; a minAvailable that would block every eviction fails the render.
func checkPDB(t *testing.T, m *matrixRun) {
	checkSecureMetrics(t, m)
	d := m.deployment(t)
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d, want 2", *d.Spec.Replicas)
	}
	var pdb policyv1.PodDisruptionBudget
	only(t, m.objs, "PodDisruptionBudget", &pdb)
	if pdb.Spec.MinAvailable == nil || *pdb.Spec.MinAvailable != intstr.FromInt32(1) {
		t.Errorf("minAvailable = %v, want 1", pdb.Spec.MinAvailable)
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the PodDisruptionBudget's selector %s does not select the manager pods (%v)", sel, d.Spec.Template.Labels)
	}
	// Stored as rendered.
	var live policyv1.PodDisruptionBudget
	if err := m.c.Get(m.ctx, client.ObjectKey{Namespace: m.namespace, Name: pdb.Name}, &live); err != nil {
		t.Fatal(err)
	}
	if live.Spec.MinAvailable == nil || live.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("stored minAvailable = %v", live.Spec.MinAvailable)
	}

	// A minAvailable that leaves no pod evictable fails the render: a number from values.yaml
	// (a float64 to the template), from --set (an int64), or a percentage, which the
	// disruption controller rounds up.
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{}, "minAvailable (1) must be below replicas (1)"},
		{[]string{"replicas=2", "podDisruptionBudget.minAvailable=2"}, "minAvailable (2) must be below replicas (2)"},
		{[]string{"replicas=2", "podDisruptionBudget.minAvailable=3"}, "minAvailable (3) must be below replicas (2)"},
		{[]string{"podDisruptionBudget.minAvailable=1"}, "minAvailable (1) must be below replicas (1)"},
		{[]string{"replicas=2", "podDisruptionBudget.minAvailable=100%"}, "minAvailable (100%) of 2 replicas rounds up to 2"},
		{[]string{"replicas=2", "podDisruptionBudget.minAvailable=60%"}, "minAvailable (60%) of 2 replicas rounds up to 2"},
		{[]string{"replicas=5", "podDisruptionBudget.minAvailable=81%"}, "minAvailable (81%) of 5 replicas rounds up to 5"},
		{[]string{"podDisruptionBudget.minAvailable=1%"}, "minAvailable (1%) of 1 replicas rounds up to 1"},
	} {
		args := []string{"--set", "podDisruptionBudget.enabled=true"}
		for _, s := range tc.set {
			args = append(args, "--set", s)
		}
		_, stderr, err := templateAs(t, m.release, m.namespace, args...)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: err = %v, stderr:\n%s\nwant the render to fail with %q", args, err, stderr, tc.want)
		}
	}
	for _, tc := range []struct{ replicas, min string }{{"3", "50%"}, {"2", "50%"}, {"5", "80%"}, {"2", "0%"}, {"3", "2"}, {"2", "0"}} {
		pdbs := ofKind(renderAs(t, m.release, m.namespace, "--set", "podDisruptionBudget.enabled=true", "--set", "replicas="+tc.replicas, "--set", "podDisruptionBudget.minAvailable="+tc.min), "PodDisruptionBudget")
		if len(pdbs) != 1 || !strings.Contains(string(pdbs[0].doc), "minAvailable: "+tc.min+"\n") {
			t.Errorf("minAvailable %s of %s replicas: %v", tc.min, tc.replicas, pdbs)
		}
	}
}

// memoryLimitEnv hands the manager its container's memory limit, for GOMEMLIMIT.
var memoryLimitEnv = corev1.EnvVar{Name: "QUEUEJOB_MEMORY_LIMIT", ValueFrom: &corev1.EnvVarSource{
	ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}}

// checkCertSecret: metrics.certSecret mounts the Secret's tls.crt and tls.key, read-only, at
// controller-runtime's default metrics certificate directory ($TMPDIR, set to /tmp, then
// k8s-metrics-server/serving-certs), and the ServiceMonitor verifies the certificate with
// the Secret's ca.crt instead of skipping the check.
func checkCertSecret(t *testing.T, m *matrixRun) {
	checkSecureMetrics(t, m)
	pod := m.deployment(t).Spec.Template.Spec
	ctr := pod.Containers[0]
	wantVolumes := []corev1.Volume{{Name: "metrics-cert", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: "metrics-tls",
		Items:      []corev1.KeyToPath{{Key: "tls.crt", Path: "tls.crt"}, {Key: "tls.key", Path: "tls.key"}},
	}}}}
	if diff := cmp.Diff(wantVolumes, pod.Volumes); diff != "" {
		t.Errorf("volumes (-want +got):\n%s", diff)
	}
	wantMounts := []corev1.VolumeMount{{Name: "metrics-cert", MountPath: "/tmp/k8s-metrics-server/serving-certs", ReadOnly: true}}
	if diff := cmp.Diff(wantMounts, ctr.VolumeMounts); diff != "" {
		t.Errorf("volumeMounts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]corev1.EnvVar{memoryLimitEnv, {Name: "TMPDIR", Value: "/tmp"}}, ctr.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	var sm serviceMonitor
	only(t, m.objs, "ServiceMonitor", &sm)
	tls := sm.Spec.Endpoints[0].TLSConfig
	if tls == nil || tls.InsecureSkipVerify || tls.ServerName != m.fullname()+"-metrics."+m.namespace+".svc" ||
		tls.CA == nil || tls.CA.Secret.Name != "metrics-tls" || tls.CA.Secret.Key != "ca.crt" {
		t.Errorf("tlsConfig = %+v, want the Service's DNS name checked with metrics-tls's ca.crt", tls)
	}
	// Plain HTTP ignores the certificate.
	var d appsv1.Deployment
	only(t, renderAs(t, m.release, m.namespace, "--set", "metrics.certSecret=metrics-tls", "--set", "metrics.secure=false"), "Deployment", &d)
	if len(d.Spec.Template.Spec.Volumes) != 0 {
		t.Errorf("volumes with metrics.secure=false: %+v", d.Spec.Template.Spec.Volumes)
	}
}
