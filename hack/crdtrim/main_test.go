package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// crdFile is the QueueJob CRD as `make manifests` writes it.
var crdFile = filepath.Join("..", "..", "config", "crd", "bases", "batch.queuejob.io_queuejobs.yaml")

// maxCRDJSONBytes is the QueueJob CRD's budget as JSON. A client-side `kubectl apply` stores
// the whole object as JSON in the last-applied-configuration annotation, and the annotations
// of an object hold at most 262144 bytes; the budget leaves room for a Job template
// (spec.jobTemplate) and for the fields still to come.
const maxCRDJSONBytes = 200 << 10

func readCRD(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(crdFile)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestCRDFitsClientSideApply(t *testing.T) {
	j, err := yaml.YAMLToJSON(readCRD(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(j) >= maxCRDJSONBytes {
		t.Fatalf("%s is %d bytes as JSON, want under %d (200 KiB): a client-side `kubectl apply` "+
			"stores the CRD in its last-applied-configuration annotation, which holds at most 262144 bytes. "+
			"Run `make manifests` (it drops the descriptions of the embedded upstream types), or add the "+
			"spec field that embeds a new upstream type to embeddedFields in hack/crdtrim/main.go",
			crdFile, len(j), maxCRDJSONBytes)
	}
	t.Logf("%s: %d bytes as JSON, budget %d", crdFile, len(j), maxCRDJSONBytes)
}

func TestCRDKeepsOwnDescriptions(t *testing.T) {
	var crd apiextv1.CustomResourceDefinition
	if err := yaml.Unmarshal(readCRD(t), &crd); err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Versions) == 0 {
		t.Fatal("the CRD has no versions")
	}
	for _, v := range crd.Spec.Versions {
		var checked, missing []string
		eachSchema(v.Schema.OpenAPIV3Schema, "", func(path string, s *apiextv1.JSONSchemaProps) bool {
			if isEmbedded(path) {
				return false
			}
			for name, p := range s.Properties {
				// The object's metadata is ObjectMeta, which controller-gen writes without a
				// description; the API server documents it.
				if path == "" && name == "metadata" {
					continue
				}
				checked = append(checked, path+"."+name)
				if strings.TrimSpace(p.Description) == "" {
					missing = append(missing, path+"."+name)
				}
			}
			return true
		})
		slices.Sort(missing)
		if len(missing) > 0 {
			t.Errorf("version %s: these fields have no description, so `kubectl explain` shows none: %s",
				v.Name, strings.Join(missing, ", "))
		}
		// The walk reached our own types, and the embedded fields themselves.
		for _, want := range []string{".spec.queue.redis.address", ".spec.cleanup.ttlSecondsAfterFinished", ".status.queue.inFlight", ".spec.jobTemplate", ".status.state"} {
			if !slices.Contains(checked, want) {
				t.Errorf("version %s: the walk did not check %s", v.Name, want)
			}
		}
	}
}

// isEmbedded reports whether path is a spec field whose schema is an upstream type.
func isEmbedded(path string) bool {
	for _, f := range embeddedFields {
		if path == ".spec."+f {
			return true
		}
	}
	return false
}

func TestGeneratedCRDIsTrimmed(t *testing.T) {
	in := readCRD(t)
	out, err := trim(in)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(in), string(out)); diff != "" {
		t.Errorf("crdtrim changes %s: run `make manifests` (-committed +trimmed):\n%s", crdFile, diff)
	}
}

func TestTrim(t *testing.T) {
	const crd = `---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: things.example.com
spec:
  versions:
  - name: v1
    schema:
      openAPIV3Schema:
        description: Thing is ours.
        properties:
          spec:
            description: Spec is ours.
            properties:
              jobTemplate:
                description: JobTemplate is ours.
                properties:
                  description:
                    description: A field named description.
                    type: string
                  labels:
                    additionalProperties:
                      description: A label value.
                      type: string
                    type: object
                type: object
              size:
                description: Size is ours.
                maximum: 9007199254740993
                type: integer
              template:
                description: Template is ours.
                properties:
                  containers:
                    description: The containers.
                    items:
                      description: A container.
                      properties:
                        port:
                          anyOf:
                          - description: A number.
                            type: integer
                          - type: string
                          description: The port.
                          x-kubernetes-int-or-string: true
                      type: object
                    type: array
                type: object
            type: object
        type: object
    served: true
    storage: true
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: left-alone
data:
  template: |-
    description: stays
`
	const want = `---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: things.example.com
spec:
  versions:
  - name: v1
    schema:
      openAPIV3Schema:
        description: Thing is ours.
        properties:
          spec:
            description: Spec is ours.
            properties:
              jobTemplate:
                description: JobTemplate is ours.
                properties:
                  description:
                    type: string
                  labels:
                    additionalProperties:
                      type: string
                    type: object
                type: object
              size:
                description: Size is ours.
                maximum: 9007199254740993
                type: integer
              template:
                description: Template is ours.
                properties:
                  containers:
                    items:
                      properties:
                        port:
                          anyOf:
                          - type: integer
                          - type: string
                          x-kubernetes-int-or-string: true
                      type: object
                    type: array
                type: object
            type: object
        type: object
    served: true
    storage: true
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: left-alone
data:
  template: |-
    description: stays
`
	got, err := trim([]byte(crd))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("trim (-want +got):\n%s", diff)
	}
	again, err := trim(got)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(got), string(again)); diff != "" {
		t.Errorf("a second trim changed the output (-first +second):\n%s", diff)
	}
}
