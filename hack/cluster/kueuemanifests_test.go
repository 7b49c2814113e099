package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

const testWebhookURL = "https://192.0.2.10:9443"

var testCA = []byte("-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n")

// webhookManifests is the shape of Kueue's config/components/webhook/manifests.yaml: one
// webhook each for a Pod, a batch/v1 Job and a Workload.
const webhookManifests = `---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: mutating-webhook-configuration
webhooks:
- admissionReviewVersions: [v1]
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate-batch-v1-job}
  failurePolicy: Fail
  name: mjob.kb.io
  rules:
  - apiGroups: [batch]
    apiVersions: [v1]
    operations: [CREATE]
    resources: [jobs]
  sideEffects: None
- admissionReviewVersions: [v1]
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}
  failurePolicy: Fail
  name: mpod.kb.io
  rules:
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE]
    resources: [pods]
  sideEffects: None
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: validating-webhook-configuration
webhooks:
- admissionReviewVersions: [v1]
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /validate-kueue-x-k8s-io-v1beta2-workload}
  failurePolicy: Fail
  name: vworkload.kb.io
  rules:
  - apiGroups: [kueue.x-k8s.io]
    apiVersions: [v1beta2]
    operations: [CREATE, UPDATE]
    resources: [workloads, workloads/status]
  sideEffects: None
`

func TestKueueWebhooks(t *testing.T) {
	mut, val, err := kueueWebhooks([]byte(webhookManifests), testWebhookURL, testCA)
	if err != nil {
		t.Fatal(err)
	}
	type hook struct{ Config, Name, URL string }
	var got []hook
	for _, w := range mut.Webhooks {
		got = append(got, hook{mut.Name, w.Name, ptr.Deref(w.ClientConfig.URL, "")})
		checkClientConfig(t, w.Name, w.ClientConfig)
	}
	for _, w := range val.Webhooks {
		got = append(got, hook{val.Name, w.Name, ptr.Deref(w.ClientConfig.URL, "")})
		checkClientConfig(t, w.Name, w.ClientConfig)
	}
	// The Pod webhook is dropped: the manager serves only batch/job and Kueue's own kinds.
	want := []hook{
		{"kueue-mutating-webhook-configuration", "mjob.kb.io", testWebhookURL + "/mutate-batch-v1-job"},
		{"kueue-validating-webhook-configuration", "vworkload.kb.io", testWebhookURL + "/validate-kueue-x-k8s-io-v1beta2-workload"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("webhooks (-want +got):\n%s", d)
	}
	if mut.Kind != "MutatingWebhookConfiguration" || mut.APIVersion != "admissionregistration.k8s.io/v1" {
		t.Errorf("mutating configuration lost its type (server-side apply needs it): %+v", mut.TypeMeta)
	}
}

func checkClientConfig(t *testing.T, name string, cc admissionv1.WebhookClientConfig) {
	t.Helper()
	if cc.Service != nil {
		t.Errorf("%s: clientConfig.service still set: %+v", name, cc.Service)
	}
	if string(cc.CABundle) != string(testCA) {
		t.Errorf("%s: caBundle %q, want the cluster CA", name, cc.CABundle)
	}
}

func TestKueueWebhooksErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		manifests string
	}{
		{"empty", ""},
		{"only a mutating configuration", webhookManifests[:strings.Index(webhookManifests, "---\napiVersion: admissionregistration.k8s.io/v1\nkind: Validating")]},
		{"no webhook the manager serves", `apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: m}
webhooks:
- name: mpod.kb.io
  rules: [{apiGroups: [""], resources: [pods]}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: v}
webhooks:
- name: vpod.kb.io
  rules: [{apiGroups: [""], resources: [pods]}]
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := kueueWebhooks([]byte(tc.manifests), testWebhookURL, testCA); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestKueueServes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []admissionv1.RuleWithOperations
		want  bool
	}{
		{"batch jobs", rules([]string{"batch"}, "jobs"), true},
		{"kueue workloads", rules([]string{"kueue.x-k8s.io"}, "workloads"), true},
		{"batch cronjobs", rules([]string{"batch"}, "cronjobs"), false},
		{"core pods", rules([]string{""}, "pods"), false},
		{"apps deployments", rules([]string{"apps"}, "deployments"), false},
		{"jobset", rules([]string{"jobset.x-k8s.io"}, "jobsets"), false},
		{"no rules", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := kueueServes(tc.rules); got != tc.want {
				t.Errorf("kueueServes = %v, want %v", got, tc.want)
			}
		})
	}
}

func rules(groups []string, resources ...string) []admissionv1.RuleWithOperations {
	return []admissionv1.RuleWithOperations{{Rule: admissionv1.Rule{APIGroups: groups, Resources: resources}}}
}

// TestKueueCRDs: every listed CRD is read; those the kustomization patches with a
// conversion webhook get one at the manager's URL, the others keep none.
func TestKueueCRDs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kustomization.yaml", `resources:
- bases/kueue.x-k8s.io_workloads.yaml
- bases/kueue.x-k8s.io_topologies.yaml
patches:
- path: patches/webhook_in_workloads.yaml
configurations:
- kustomizeconfig.yaml
`)
	for _, n := range []string{"workloads", "topologies"} {
		write("bases/kueue.x-k8s.io_"+n+".yaml", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: "+n+".kueue.x-k8s.io\nspec:\n  group: kueue.x-k8s.io\n")
	}
	write("patches/webhook_in_workloads.yaml", `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: workloads.kueue.x-k8s.io
spec:
  conversion:
    strategy: Webhook
    webhook:
      clientConfig:
        service: {namespace: system, name: webhook-service, path: /convert}
      conversionReviewVersions: [v1]
`)
	crds, err := kueueCRDs(dir, testWebhookURL, testCA)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*apiextv1.CustomResourceConversion{}
	for _, c := range crds {
		got[c.Name] = c.Spec.Conversion
	}
	want := map[string]*apiextv1.CustomResourceConversion{
		"workloads.kueue.x-k8s.io": {Strategy: apiextv1.WebhookConverter, Webhook: &apiextv1.WebhookConversion{
			ClientConfig:             &apiextv1.WebhookClientConfig{URL: ptr.To(testWebhookURL + "/convert"), CABundle: testCA},
			ConversionReviewVersions: []string{"v1"},
		}},
		"topologies.kueue.x-k8s.io": nil,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("conversion per CRD (-want +got):\n%s", d)
	}
}

func TestYAMLDocs(t *testing.T) {
	got := yamlDocs([]byte("---\na: 1\n---\n\n---\nb: 2\n"))
	var keys []string
	for _, d := range got {
		var m map[string]int
		if err := yaml.Unmarshal(d, &m); err != nil {
			t.Fatal(err)
		}
		for k := range m {
			keys = append(keys, k)
		}
	}
	if d := cmp.Diff([]string{"a", "b"}, keys); d != "" {
		t.Errorf("documents (-want +got):\n%s", d)
	}
}

// TestKueueModuleManifests reads the real manifests of kueueVersion from the module cache
// (go mod download: the Go module proxy, once): the CRDs and webhooks up applies.
func TestKueueModuleManifests(t *testing.T) {
	if testing.Short() {
		t.Skip("reads sigs.k8s.io/kueue through the module proxy")
	}
	mod, err := kueueModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	m, err := readKueueObjects(mod, testWebhookURL, testCA)
	if err != nil {
		t.Fatal(err)
	}
	converted := 0
	for _, c := range m.CRDs {
		if c.Spec.Group != "kueue.x-k8s.io" {
			t.Errorf("CRD %s of group %s", c.Name, c.Spec.Group)
		}
		if c.Spec.Conversion != nil && c.Spec.Conversion.Webhook != nil {
			converted++
		}
	}
	t.Logf("%d CRDs, %d with a conversion webhook", len(m.CRDs), converted)
	var paths []string
	for _, w := range m.Mutating.Webhooks {
		paths = append(paths, *w.ClientConfig.URL)
		checkClientConfig(t, w.Name, w.ClientConfig)
	}
	for _, w := range m.Validating.Webhooks {
		paths = append(paths, *w.ClientConfig.URL)
		checkClientConfig(t, w.Name, w.ClientConfig)
	}
	t.Logf("webhooks: %v", paths)
	for _, want := range []string{"/mutate-batch-v1-job", "/validate-batch-v1-job", "/mutate-kueue-x-k8s-io-v1beta2-workload"} {
		if !slices.Contains(paths, testWebhookURL+want) {
			t.Errorf("no webhook at %s", want)
		}
	}
	for _, p := range paths {
		if strings.Contains(p, "pod") || strings.Contains(p, "deployment") || strings.Contains(p, "statefulset") {
			t.Errorf("webhook %s kept: the manager does not serve it with batch/job alone", p)
		}
	}
}
