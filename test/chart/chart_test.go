// Package chart tests the Helm chart in charts/queuejob-operator: it renders the chart with
// the helm binary that `make helm` builds into ./bin and checks the objects it renders.
package chart

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "../../charts/queuejob-operator"
	release   = "qj"
	namespace = "queuejob-system"
)

// helmBin is $HELM, else ./bin/helm (a link to the pinned version that `make helm` builds).
func helmBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		bin = "../../bin/helm"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no helm binary at %s (%v): run `make helm` (or `make test`, which builds it), or set HELM", bin, err)
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// template runs `helm template` of release qj in namespace queuejob-system with args after the
// chart; it returns stdout, stderr and the error.
func template(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	return templateAs(t, release, namespace, args...)
}

// templateAs is template for release rel in namespace ns.
func templateAs(t *testing.T, rel, ns string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), append([]string{"template", rel, chartDir, "--namespace", ns}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// object is one rendered document: its kind, namespace, name and YAML.
type object struct {
	kind, namespace, name string
	doc                   []byte
}

func (o object) String() string {
	if o.namespace == "" {
		return o.kind + " " + o.name
	}
	return o.kind + " " + o.namespace + "/" + o.name
}

// render runs `helm template` and splits its output into objects; it fails the test on an error.
func render(t *testing.T, args ...string) []object {
	t.Helper()
	return renderAs(t, release, namespace, args...)
}

// renderAs is render for release rel in namespace ns.
func renderAs(t *testing.T, rel, ns string, args ...string) []object {
	t.Helper()
	out, stderr, err := templateAs(t, rel, ns, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, stderr)
	}
	return splitYAML(t, out)
}

// splitYAML splits a stream of YAML documents into objects, dropping empty ones.
func splitYAML(t *testing.T, out string) []object {
	t.Helper()
	var objs []object
	for _, doc := range strings.Split("\n"+out, "\n---") {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("rendered document does not parse: %v\n%s", err, doc)
		}
		if meta.Kind == "" {
			continue // a document of comments only
		}
		objs = append(objs, object{kind: meta.Kind, namespace: meta.Metadata.Namespace, name: meta.Metadata.Name, doc: []byte(doc)})
	}
	return objs
}

// named returns the object of kind and name in objs, decoded into into; it fails the test
// if there is none.
func named(t *testing.T, objs []object, kind, name string, into any) {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			if err := yaml.UnmarshalStrict(o.doc, into); err != nil {
				t.Fatalf("%s: %v", o, err)
			}
			return
		}
	}
	t.Fatalf("no %s %s among %v", kind, name, objs)
}

// ofKind returns the objects of kind in objs.
func ofKind(objs []object, kind string) []object {
	var out []object
	for _, o := range objs {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// only returns the one object of kind in objs, decoded into into.
func only(t *testing.T, objs []object, kind string, into any) {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s, rendered %d", kind, len(found))
	}
	if err := yaml.UnmarshalStrict(found[0].doc, into); err != nil {
		t.Fatalf("%s %s: %v", kind, found[0].name, err)
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestDefaultsRenderTheseKinds(t *testing.T) {
	var kinds []string
	for _, o := range render(t) {
		kinds = append(kinds, o.kind)
	}
	slices.Sort(kinds)
	want := []string{
		"ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", // manager, metrics-auth, metrics-reader, editor, viewer
		"ClusterRoleBinding", "ClusterRoleBinding", // manager, metrics-auth
		"CustomResourceDefinition", "Deployment",
		"Role", "RoleBinding", // leader election
		"Service", // metrics
		"ServiceAccount",
	}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("kinds (-want +got):\n%s", diff)
	}
}

func TestDeploymentIsRestricted(t *testing.T) {
	var d appsv1.Deployment
	only(t, render(t), "Deployment", &d)
	pod := d.Spec.Template.Spec
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v, want runAsNonRoot and seccomp RuntimeDefault", sc)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("the manager container has no securityContext")
	}
	for name, ok := range map[string]bool{
		"allowPrivilegeEscalation: false": sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation,
		"readOnlyRootFilesystem: true":    sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem,
		"runAsNonRoot: true":              sc.RunAsNonRoot != nil && *sc.RunAsNonRoot,
		"capabilities.drop: [ALL]":        sc.Capabilities != nil && slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) && len(sc.Capabilities.Add) == 0,
	} {
		if !ok {
			t.Errorf("container securityContext: want %s", name)
		}
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("container securityContext: privileged")
	}
}

func TestDeploymentDefaults(t *testing.T) {
	var d appsv1.Deployment
	only(t, render(t), "Deployment", &d)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas = %v, want 1", d.Spec.Replicas)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if want := "ghcr.io/queuejob/queuejob-operator:0.1.0"; c.Image != want {
		t.Errorf("image = %q, want %q (the chart's appVersion)", c.Image, want)
	}
	wantArgs := []string{
		"--leader-elect", "--health-probe-bind-address=:8081",
		"--metrics-bind-address=:8443", "--metrics-secure",
		"--zap-encoder=json", "--zap-log-level=info",
	}
	if diff := cmp.Diff(wantArgs, c.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	// The probes reach the port cmd/main.go's --health-probe-bind-address binds.
	for path, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "health" {
			t.Errorf("probe of %s = %+v, want an HTTP GET on port health", path, p)
		}
	}
	wantPorts := []corev1.ContainerPort{{Name: "health", ContainerPort: 8081}, {Name: "metrics", ContainerPort: 8443}}
	if diff := cmp.Diff(wantPorts, c.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want requests and limits", c.Resources)
	}
	if d.Spec.Template.Spec.ServiceAccountName != release+"-queuejob-operator" {
		t.Errorf("serviceAccountName = %q", d.Spec.Template.Spec.ServiceAccountName)
	}
}

func TestDeploymentValues(t *testing.T) {
	var d appsv1.Deployment
	only(t, render(t,
		"--set", "replicas=2",
		"--set", "watchNamespaces={team-a,team-b}",
		"--set", "extraArgs={--secret-refresh-interval=30s}",
		"--set", "image.tag=dev",
		"--set", "logging.format=console",
		"--set", "logging.level=debug",
		"--set", "imagePullSecrets[0].name=regcred",
		"--set", "priorityClassName=system-cluster-critical",
		"--set", "nodeSelector.kubernetes\\.io/os=linux",
	), "Deployment", &d)
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d, want 2", *d.Spec.Replicas)
	}
	for _, arg := range []string{"--leader-elect", "--watch-namespaces=team-a,team-b", "--secret-refresh-interval=30s", "--zap-encoder=console", "--zap-log-level=debug"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %q lack %q", c.Args, arg)
		}
	}
	if c.Image != "ghcr.io/queuejob/queuejob-operator:dev" {
		t.Errorf("image = %q", c.Image)
	}
	if len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "regcred" {
		t.Errorf("imagePullSecrets = %+v", spec.ImagePullSecrets)
	}
	if spec.PriorityClassName != "system-cluster-critical" || spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("priorityClassName = %q, nodeSelector = %v", spec.PriorityClassName, spec.NodeSelector)
	}
}

// The chart's manager ClusterRole, and with watchNamespaces each Role, is
// config/rbac/role.yaml's, which controller-gen writes from the +kubebuilder:rbac markers.
func TestManagerRulesAreTheGeneratedRole(t *testing.T) {
	var want rbacv1.ClusterRole
	readYAML(t, "../../config/rbac/role.yaml", &want)

	var got rbacv1.ClusterRole
	named(t, render(t), "ClusterRole", release+"-queuejob-operator-manager", &got)
	if diff := cmp.Diff(want.Rules, got.Rules); diff != "" {
		t.Errorf("ClusterRole rules (-config/rbac/role.yaml +chart):\n%s", diff)
	}

	objs := render(t, "--set", "watchNamespaces={team-a,team-b}")
	roles := 0
	for _, o := range ofKind(objs, "Role") {
		if o.name != release+"-queuejob-operator-manager" {
			continue
		}
		roles++
		var r rbacv1.Role
		if err := yaml.UnmarshalStrict(o.doc, &r); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want.Rules, r.Rules); diff != "" {
			t.Errorf("%s rules (-config/rbac/role.yaml +chart):\n%s", o, diff)
		}
	}
	if roles != 2 {
		t.Errorf("rendered %d manager Roles, want one in each of team-a and team-b", roles)
	}
}

func TestCRD(t *testing.T) {
	type crd struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name        string            `json:"name"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec map[string]any `json:"spec"`
	}
	matches, err := filepath.Glob("../../config/crd/bases/*.yaml")
	if err != nil || len(matches) != 1 {
		t.Fatalf("want one CRD in config/crd/bases, got %v (%v)", matches, err)
	}
	var want crd
	readYAML(t, matches[0], &want)

	var got crd
	only(t, render(t), "CustomResourceDefinition", &got)
	if diff := cmp.Diff(want.Spec, got.Spec); diff != "" {
		t.Errorf("CRD spec (-config/crd/bases +chart); run make chart-crd:\n%s", diff)
	}
	if got.Metadata.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("annotations = %v, want helm.sh/resource-policy: keep by default", got.Metadata.Annotations)
	}

	got = crd{}
	only(t, render(t, "--set", "crds.keep=false"), "CustomResourceDefinition", &got)
	if _, ok := got.Metadata.Annotations["helm.sh/resource-policy"]; ok {
		t.Errorf("annotations = %v, want no resource policy with crds.keep=false", got.Metadata.Annotations)
	}
}

// values.schema.json rejects a mistyped value, with a message that names the field.
func TestSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name, set, field string
	}{
		{"replicas not a number", "replicas=abc", "replicas"},
		{"unknown pull policy", "image.pullPolicy=Sometimes", "pullPolicy"},
		{"misspelt top-level key", "replica=2", "replica"},
		{"watchNamespaces a string", "watchNamespaces=team-a", "watchNamespaces"},
		{"crds.keep not a boolean", "crds.keep=maybe", "keep"},
		{"the old metricsPort", "metricsPort=8080", "metricsPort"},
		{"metrics.secure not a boolean", "metrics.secure=perhaps", "secure"},
		{"metrics.port out of range", "metrics.port=70000", "port"},
		{"misspelt metrics key", "metrics.secured=false", "secured"},
		{"serviceMonitor.interval not a duration", "metrics.serviceMonitor.interval=often", "interval"},
		{"serviceMonitor.enabled not a boolean", "metrics.serviceMonitor.enabled=yes", "enabled"},
		{"minAvailable neither a number nor a percentage", "podDisruptionBudget.minAvailable=half", "minAvailable"},
		{"unknown log format", "logging.format=text", "format"},
		{"unknown log level", "logging.level=verbose", "level"},
		{"rbac.userRoles not a boolean", "rbac.userRoles=some", "userRoles"},
		{"certSecret not a Secret name", "metrics.certSecret=Bad_Name", "certSecret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := template(t, "--set", tc.set)
			if err == nil {
				t.Fatalf("helm template --set %s succeeded, want a schema error", tc.set)
			}
			if !strings.Contains(stderr, "schema") || !strings.Contains(stderr, tc.field) {
				t.Errorf("helm template --set %s: want a schema error naming %q, got:\n%s", tc.set, tc.field, stderr)
			}
		})
	}
}

// metrics.enabled=false binds no metrics port and renders no metrics objects; metrics.port
// moves the endpoint and the Service together.
func TestMetricsValues(t *testing.T) {
	objs := render(t, "--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true")
	var d appsv1.Deployment
	only(t, objs, "Deployment", &d)
	c := d.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--metrics-bind-address=0") || slices.Contains(c.Args, "--metrics-secure") {
		t.Errorf("args %q: want --metrics-bind-address=0 and no --metrics-secure", c.Args)
	}
	for _, o := range objs {
		if o.kind == "Service" || o.kind == "ServiceMonitor" || strings.Contains(o.name, "metrics") {
			t.Errorf("%s rendered with metrics.enabled=false", o)
		}
	}
	if slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" }) {
		t.Errorf("ports %+v: a metrics port with metrics.enabled=false", c.Ports)
	}

	objs = render(t, "--set", "metrics.port=9443")
	only(t, objs, "Deployment", &d)
	c = d.Spec.Template.Spec.Containers[0]
	var svc corev1.Service
	only(t, objs, "Service", &svc)
	if !slices.Contains(c.Args, "--metrics-bind-address=:9443") || svc.Spec.Ports[0].Port != 9443 ||
		!slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" && p.ContainerPort == 9443 }) {
		t.Errorf("metrics.port=9443: args %q, ports %+v, Service ports %+v", c.Args, c.Ports, svc.Spec.Ports)
	}
}

// TestLeaderElectionRole: the chart's leader-election Role grants what config/rbac's does,
// and only on the Lease that cmd/main.go names (LeaderElectionID).
func TestLeaderElectionRole(t *testing.T) {
	var chart, config rbacv1.Role
	named(t, render(t), "Role", release+"-queuejob-operator-leader-election", &chart)
	readYAML(t, "../../config/rbac/leader_election_role.yaml", &config)
	if diff := cmp.Diff(config.Rules, chart.Rules); diff != "" {
		t.Errorf("the chart's leader-election rules differ from config/rbac/leader_election_role.yaml (-config +chart):\n%s", diff)
	}
	main, err := os.ReadFile("../../cmd/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if want := `LeaderElectionID:              "` + leaderElectionID + `"`; !strings.Contains(string(main), want) {
		t.Errorf("cmd/main.go lacks %s: the Role's resourceNames must name the manager's Lease", want)
	}
	for _, r := range chart.Rules {
		if slices.Contains(r.Resources, "leases") && !slices.Equal(r.Verbs, []string{"create"}) &&
			!slices.Equal(r.ResourceNames, []string{leaderElectionID}) {
			t.Errorf("rule %+v: verbs on leases other than create must name the Lease %s", r, leaderElectionID)
		}
	}
}

// TestMetricsPortIsNotTheProbePort: a metrics port equal to healthProbePort (set, or the
// default 8443/8080) fails the render instead of giving the container two listeners on one
// port; with metrics off, the port is free.
func TestMetricsPortIsNotTheProbePort(t *testing.T) {
	for _, set := range [][]string{
		{"metrics.port=8081"},
		{"healthProbePort=9000", "metrics.port=9000"},
		{"healthProbePort=8443"},
		{"healthProbePort=8080", "metrics.secure=false"},
	} {
		var args []string
		for _, s := range set {
			args = append(args, "--set", s)
		}
		_, stderr, err := template(t, args...)
		if err == nil || !strings.Contains(stderr, "must differ from healthProbePort") {
			t.Errorf("%v: err = %v, stderr:\n%s\nwant the render to fail: metrics port must differ from healthProbePort", set, err, stderr)
		}
	}
	render(t, "--set", "metrics.enabled=false", "--set", "healthProbePort=8443")
}

// TestPodLabelsKeepTheSelector: podLabels add to the pod template's labels but cannot
// replace the chart's (no duplicate keys): the selector still selects the pods.
func TestPodLabelsKeepTheSelector(t *testing.T) {
	var d appsv1.Deployment
	only(t, render(t, "--set", `podLabels.app\.kubernetes\.io/name=other`, "--set", `podLabels.app\.kubernetes\.io/instance=other`,
		"--set", "podLabels.team=a"), "Deployment", &d)
	labels := d.Spec.Template.Labels
	for k, v := range d.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("pod label %s=%q, want the selector's %q", k, labels[k], v)
		}
	}
	if labels["team"] != "a" {
		t.Errorf("pod labels %v lack podLabels' team=a", labels)
	}
}
