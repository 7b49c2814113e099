package chart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// kustomizeBin is $KUSTOMIZE (the Makefile's pinned bin/kustomize-<version>), else the one
// bin/kustomize-* there is.
func kustomizeBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("KUSTOMIZE")
	if bin == "" {
		found, _ := filepath.Glob("../../bin/kustomize-v*")
		if len(found) != 1 {
			t.Fatalf("want one bin/kustomize-v*, found %v: run `make kustomize` (or `make test`, which builds it), or set KUSTOMIZE", found)
		}
		bin = found[0]
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("no kustomize at %s (%v): run `make kustomize`", abs, err)
	}
	return abs
}

// installer returns what `make build-installer` writes to dist/install.yaml at the default
// IMG: config/default built with kustomize.
func installer(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(kustomizeBin(t), "build", "../../config/default")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kustomize build config/default: %v\n%s", err, stderr.String())
	}
	return stdout.String()
}

// TestInstallerIsTheChartAtDefaults checks that dist/install.yaml (config/default) and the
// chart at its default values, installed as release "qj" in namespace queuejob-system, are
// equivalent. Equivalent means, after the normalization below, the same objects field by
// field:
//
//   - the same set of objects by kind, namespace and name, where a name is compared modulo
//     its prefix: the chart's full name (qj-queuejob-operator) and the installer's
//     (queuejob-operator) both read as <fullname>, in names and in every string field that
//     refers to one (serviceAccountName, roleRef, subjects);
//   - except the installer's Namespace queuejob-system (enforcing the restricted Pod Security
//     Standard), which a Helm user creates with --create-namespace;
//   - labels and annotations are not compared (Helm's app.kubernetes.io labels against the
//     installer's control-plane label; the CRD's helm.sh/resource-policy), nor the label
//     selectors made of them (Deployment and Service selectors, the pod template's labels),
//     except the labels that aggregate the user roles into admin, edit and view; each side's
//     Service and Deployment selectors must still pick its own manager pods;
//   - the order of RBAC rules, and of the verbs, resources and groups in a rule, is not
//     compared.
//
// So the CRD's spec, every RBAC rule, binding, roleRef and subject, the Service's ports, and
// the whole Deployment spec (replicas, ServiceAccount, pod and container securityContext,
// image, pull policy, command, args, ports, probes, resources) must be the same.
func TestInstallerIsTheChartAtDefaults(t *testing.T) {
	inst := splitYAML(t, installer(t))
	chart := renderAs(t, "qj", "queuejob-system")

	var ns []object
	inst = slices.DeleteFunc(inst, func(o object) bool {
		if o.kind == "Namespace" {
			ns = append(ns, o)
			return true
		}
		return false
	})
	if len(ns) != 1 || ns[0].name != "queuejob-system" || !strings.Contains(string(ns[0].doc), "pod-security.kubernetes.io/enforce: restricted") {
		t.Errorf("the installer's Namespace objects = %v, want queuejob-system enforcing restricted", ns)
	}
	for _, side := range []struct {
		name string
		objs []object
	}{{"installer", inst}, {"chart", chart}} {
		checkSelectsManager(t, side.name, side.objs)
	}

	want := normalizeAll(t, inst, "queuejob-operator")
	got := normalizeAll(t, chart, "qj-queuejob-operator")
	if diff := cmp.Diff(slices.Sorted(mapKeys(want)), slices.Sorted(mapKeys(got))); diff != "" {
		t.Errorf("objects (-installer +chart):\n%s", diff)
	}
	for key, w := range want {
		if g, ok := got[key]; ok {
			if diff := cmp.Diff(w, g); diff != "" {
				t.Errorf("%s (-installer +chart):\n%s", key, diff)
			}
		}
	}
	t.Logf("compared %d objects (the installer has %d with its Namespace)", len(want), len(inst)+len(ns))
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// checkSelectsManager: the Service's and the Deployment's selectors pick the pod template.
func checkSelectsManager(t *testing.T, side string, objs []object) {
	t.Helper()
	var d appsv1.Deployment
	only(t, objs, "Deployment", &d)
	pods := d.Spec.Template.Labels
	for k, v := range d.Spec.Selector.MatchLabels {
		if pods[k] != v {
			t.Errorf("%s: the Deployment's selector %s=%s does not pick its pods (%v)", side, k, v, pods)
		}
	}
	for _, o := range ofKind(objs, "Service") {
		var svc struct {
			Spec struct {
				Selector map[string]string `json:"selector"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(o.doc, &svc); err != nil {
			t.Fatal(err)
		}
		if len(svc.Spec.Selector) == 0 {
			t.Errorf("%s: %s selects nothing", side, o)
		}
		for k, v := range svc.Spec.Selector {
			if pods[k] != v {
				t.Errorf("%s: %s selects %s=%s, which the manager pods lack (%v)", side, o, k, v, pods)
			}
		}
	}
}

// normalizeAll decodes each object, drops what TestInstallerIsTheChartAtDefaults does not
// compare and replaces the name prefix with <fullname>; it keys them by kind, namespace and
// normalized name.
func normalizeAll(t *testing.T, objs []object, prefix string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, o := range objs {
		var m map[string]any
		if err := yaml.Unmarshal(o.doc, &m); err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		meta, _ := m["metadata"].(map[string]any)
		var keep map[string]any
		if labels, ok := meta["labels"].(map[string]any); ok {
			for k, v := range labels {
				if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
					if keep == nil {
						keep = map[string]any{}
					}
					keep[k] = v
				}
			}
		}
		delete(meta, "labels")
		delete(meta, "annotations")
		if keep != nil {
			meta["labels"] = keep
		}
		spec, _ := m["spec"].(map[string]any)
		switch o.kind {
		case "Deployment":
			delete(spec, "selector")
			if tmpl, ok := spec["template"].(map[string]any); ok {
				delete(tmpl, "metadata")
			}
		case "Service":
			delete(spec, "selector")
		case "ClusterRole", "Role":
			m["rules"] = sortRules(t, m["rules"])
		}
		n := renamePrefix(m, prefix).(map[string]any)
		nm := n["metadata"].(map[string]any)
		key := fmt.Sprintf("%s %v", o.kind, nm["name"])
		if ns, ok := nm["namespace"]; ok {
			key = fmt.Sprintf("%s %v/%v", o.kind, ns, nm["name"])
		}
		if _, dup := out[key]; dup {
			t.Fatalf("two objects %s", key)
		}
		out[key] = n
	}
	return out
}

// sortRules sorts each rule's lists and then the rules.
func sortRules(t *testing.T, rules any) any {
	t.Helper()
	list, _ := rules.([]any)
	var keyed []string
	byKey := map[string]any{}
	for _, r := range list {
		rule := r.(map[string]any)
		for _, f := range []string{"apiGroups", "resources", "resourceNames", "verbs", "nonResourceURLs"} {
			if vs, ok := rule[f].([]any); ok {
				sort.Slice(vs, func(i, j int) bool { return fmt.Sprint(vs[i]) < fmt.Sprint(vs[j]) })
			}
		}
		b, err := json.Marshal(rule)
		if err != nil {
			t.Fatal(err)
		}
		keyed = append(keyed, string(b))
		byKey[string(b)] = rule
	}
	sort.Strings(keyed)
	out := make([]any, 0, len(keyed))
	for _, k := range keyed {
		out = append(out, byKey[k])
	}
	return out
}

// renamePrefix replaces prefix at the start of every string that is prefix or starts with
// prefix + "-" by "<fullname>".
func renamePrefix(v any, prefix string) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = renamePrefix(e, prefix)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = renamePrefix(e, prefix)
		}
		return v
	case string:
		if v == prefix || strings.HasPrefix(v, prefix+"-") {
			return "<fullname>" + strings.TrimPrefix(v, prefix)
		}
		return v
	}
	return v
}

// TestInstallerAppliesWithKubectl applies dist/install.yaml (config/default) with a
// client-side `kubectl apply -f`, as a user without Helm would, to envtest's API server; a
// second apply finds nothing to change.
func TestInstallerAppliesWithKubectl(t *testing.T) {
	needCluster(t)
	path, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("this test needs kubectl on PATH (Debian's kubernetes-client): %v", err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, testEnv.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "install.yaml")
	if err := os.WriteFile(file, []byte(installer(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, path, append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	out := kubectl("apply", "-f", file)
	objs := splitYAML(t, installer(t))
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != len(objs) {
		t.Errorf("kubectl apply printed %d lines for %d objects:\n%s", len(lines), len(objs), out)
	}
	out = kubectl("apply", "-f", file)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasSuffix(line, " unchanged") {
			t.Errorf("the second kubectl apply changed something: %q", line)
		}
	}
	var d appsv1.Deployment
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "queuejob-system", Name: "queuejob-operator"}, &d); err != nil {
		t.Fatalf("the installer's Deployment: %v", err)
	}
	if c := d.Spec.Template.Spec.Containers[0]; c.Image != "ghcr.io/queuejob/queuejob-operator:0.1.0" {
		t.Errorf("image = %s", c.Image)
	}
	t.Logf("kubectl applied %d objects", len(objs))
}
