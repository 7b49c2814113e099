package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// Kueue's CRDs and webhook configurations come from its module
// (config/components/{crd,webhook}), rewritten for a manager that runs on the node: every
// clientConfig names https://<node IP>:<port><path> and the cluster CA instead of the
// kueue-system webhook Service, which this cluster does not have. Kustomize's other work
// (namePrefix kueue-, the kueue-system namespace) is redone here only where it shows.

const kueueModule = "sigs.k8s.io/kueue"

// kueueModuleDir returns the module's directory in the module cache (downloading it through
// the proxy if needed).
func kueueModuleDir() (string, error) {
	out, err := exec.Command("go", "mod", "download", "-json", kueueModule+"@"+kueueVersion).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", kueueModule, kueueVersion, err)
	}
	var info struct{ Dir string }
	if err := json.Unmarshal(out, &info); err != nil {
		return "", err
	}
	return info.Dir, nil
}

// kueueCRDKustomization is the part of config/components/crd/kustomization.yaml read here:
// the CRD files, and the patches that give a CRD a conversion webhook.
type kueueCRDKustomization struct {
	Resources []string `json:"resources"`
	Patches   []struct {
		Path string `json:"path"`
	} `json:"patches"`
}

// kueueCRDs reads the CRDs that Kueue's kustomization lists, each with a conversion
// webhook at url+"/convert" if the kustomization patches one in.
func kueueCRDs(crdDir, url string, caBundle []byte) ([]apiextv1.CustomResourceDefinition, error) {
	var k kueueCRDKustomization
	if err := readYAML(filepath.Join(crdDir, "kustomization.yaml"), &k); err != nil {
		return nil, err
	}
	converted := map[string]bool{}
	for _, p := range k.Patches {
		var patch apiextv1.CustomResourceDefinition
		if err := readYAML(filepath.Join(crdDir, p.Path), &patch); err != nil {
			return nil, err
		}
		if patch.Spec.Conversion != nil && patch.Spec.Conversion.Strategy == apiextv1.WebhookConverter {
			converted[patch.Name] = true
		}
	}
	var crds []apiextv1.CustomResourceDefinition
	for _, r := range k.Resources {
		var crd apiextv1.CustomResourceDefinition
		if err := readYAML(filepath.Join(crdDir, r), &crd); err != nil {
			return nil, err
		}
		if converted[crd.Name] {
			crd.Spec.Conversion = conversionWebhook(url, caBundle)
		}
		crds = append(crds, crd)
	}
	if len(crds) == 0 {
		return nil, fmt.Errorf("%s/kustomization.yaml lists no CRD", crdDir)
	}
	return crds, nil
}

func conversionWebhook(url string, caBundle []byte) *apiextv1.CustomResourceConversion {
	return &apiextv1.CustomResourceConversion{
		Strategy: apiextv1.WebhookConverter,
		Webhook: &apiextv1.WebhookConversion{
			ClientConfig:             &apiextv1.WebhookClientConfig{URL: ptr.To(url + "/convert"), CABundle: caBundle},
			ConversionReviewVersions: []string{"v1"},
		},
	}
}

// kueueWebhooks parses config/components/webhook/manifests.yaml and keeps only the webhooks
// of Kueue's own kinds and of batch/v1 Jobs, the one integration up enables. The manager
// also serves the others, as no-op webhooks for disabled integrations
// (pkg/controller/jobframework/setup.go), but registering them would send every Pod, Deployment
// and StatefulSet of the cluster through one host process with failurePolicy Fail, for
// nothing.
func kueueWebhooks(manifests []byte, url string, caBundle []byte) (*admissionv1.MutatingWebhookConfiguration, *admissionv1.ValidatingWebhookConfiguration, error) {
	var mut *admissionv1.MutatingWebhookConfiguration
	var val *admissionv1.ValidatingWebhookConfiguration
	for _, doc := range yamlDocs(manifests) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, nil, err
		}
		switch meta.Kind {
		case "MutatingWebhookConfiguration":
			mut = &admissionv1.MutatingWebhookConfiguration{}
			if err := yaml.Unmarshal(doc, mut); err != nil {
				return nil, nil, err
			}
			mut.Name = "kueue-" + mut.Name
			mut.Webhooks = slices.DeleteFunc(mut.Webhooks, func(w admissionv1.MutatingWebhook) bool { return !kueueServes(w.Rules) })
			for i := range mut.Webhooks {
				pointAt(&mut.Webhooks[i].ClientConfig, url, caBundle)
			}
		case "ValidatingWebhookConfiguration":
			val = &admissionv1.ValidatingWebhookConfiguration{}
			if err := yaml.Unmarshal(doc, val); err != nil {
				return nil, nil, err
			}
			val.Name = "kueue-" + val.Name
			val.Webhooks = slices.DeleteFunc(val.Webhooks, func(w admissionv1.ValidatingWebhook) bool { return !kueueServes(w.Rules) })
			for i := range val.Webhooks {
				pointAt(&val.Webhooks[i].ClientConfig, url, caBundle)
			}
		}
	}
	if mut == nil || val == nil || len(mut.Webhooks) == 0 || len(val.Webhooks) == 0 {
		return nil, nil, fmt.Errorf("no Kueue or batch/v1 Job webhooks in both a mutating and a validating configuration")
	}
	return mut, val, nil
}

// kueueServes tells whether a webhook's rules are for Kueue's own API group or for
// batch/v1 Jobs.
func kueueServes(rules []admissionv1.RuleWithOperations) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, "kueue.x-k8s.io") ||
			(slices.Contains(r.APIGroups, "batch") && slices.Contains(r.Resources, "jobs")) {
			return true
		}
	}
	return false
}

// pointAt replaces the Service of a webhook's clientConfig with url plus its path.
func pointAt(cc *admissionv1.WebhookClientConfig, url string, caBundle []byte) {
	path := ""
	if cc.Service != nil && cc.Service.Path != nil {
		path = *cc.Service.Path
	}
	cc.Service = nil
	cc.URL = ptr.To(url + path)
	cc.CABundle = caBundle
}

// yamlDocs splits a multi-document YAML file, dropping empty documents.
func yamlDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), b...), []byte("\n---")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func readYAML(path string, into any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// kueueObjects are what up --kueue applies.
type kueueObjects struct {
	CRDs       []apiextv1.CustomResourceDefinition
	Mutating   *admissionv1.MutatingWebhookConfiguration
	Validating *admissionv1.ValidatingWebhookConfiguration
}

// readKueueObjects reads them from the module directory mod.
func readKueueObjects(mod, url string, caBundle []byte) (kueueObjects, error) {
	crds, err := kueueCRDs(filepath.Join(mod, "config", "components", "crd"), url, caBundle)
	if err != nil {
		return kueueObjects{}, err
	}
	b, err := os.ReadFile(filepath.Join(mod, "config", "components", "webhook", "manifests.yaml"))
	if err != nil {
		return kueueObjects{}, err
	}
	mut, val, err := kueueWebhooks(b, url, caBundle)
	if err != nil {
		return kueueObjects{}, err
	}
	return kueueObjects{CRDs: crds, Mutating: mut, Validating: val}, nil
}

// crdNames returns the CRDs' names.
func (m kueueObjects) crdNames() []string {
	var names []string
	for _, c := range m.CRDs {
		names = append(names, c.Name)
	}
	return names
}
