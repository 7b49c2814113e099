// Command crdtrim rewrites, in place, CRD files that controller-gen wrote: it drops the
// descriptions inside the spec fields that embed upstream Kubernetes types (a pod template,
// a Job template), and keeps the description of each such field and every description of
// our own types.
//
// Without it the QueueJob CRD is over 330 KB as JSON, more than the 262144 bytes that the
// annotations of an object may hold, so a client-side `kubectl apply` (which stores the
// whole object in the last-applied-configuration annotation) is refused. The upstream
// descriptions are the ones `kubectl explain pod.spec` already shows.
//
// Usage: go run ./hack/crdtrim config/crd/bases/*.yaml
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// embeddedFields are the fields of spec whose schema is an upstream Kubernetes type: the
// descriptions below them are dropped. A field that a CRD does not have is skipped.
var embeddedFields = []string{"template", "jobTemplate"}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crdtrim CRD.yaml...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		if err := trimFile(path); err != nil {
			fmt.Fprintf(os.Stderr, "crdtrim: %s: %v\n", path, err)
			os.Exit(1)
		}
	}
}

// trimFile trims the CRDs of one file and writes it back if that changed anything.
func trimFile(path string) error {
	in, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := trim(in)
	if err != nil {
		return err
	}
	if bytes.Equal(in, out) {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, fi.Mode().Perm())
}

// trim trims every CRD of a multi-document YAML file and writes it as controller-gen does:
// "---" before it, keys sorted, by sigs.k8s.io/yaml. So a CRD that needs no trimming comes
// back byte for byte, and a second run changes nothing. Other documents are copied as
// they are.
func trim(in []byte) ([]byte, error) {
	var out bytes.Buffer
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(in)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, err := decodeJSONObject(doc)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		if obj["kind"] != "CustomResourceDefinition" {
			out.Write(doc)
			continue
		}
		if err := trimCRD(obj); err != nil {
			return nil, err
		}
		y, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		out.Write(y)
	}
	return out.Bytes(), nil
}

// trimCRD drops the descriptions below the embedded fields of every version's schema.
func trimCRD(obj map[string]any) error {
	versions, _, err := unstructured.NestedFieldNoCopy(obj, "spec", "versions")
	if err != nil {
		return err
	}
	list, _ := versions.([]any)
	for i, v := range list {
		version, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("spec.versions[%d] is not an object", i)
		}
		specProps, _, err := unstructured.NestedFieldNoCopy(version, "schema", "openAPIV3Schema", "properties", "spec", "properties")
		if err != nil {
			return fmt.Errorf("spec.versions[%d]: %w", i, err)
		}
		props, _ := specProps.(map[string]any)
		for _, name := range embeddedFields {
			sub, ok := props[name]
			if !ok {
				continue
			}
			trimmed, err := trimSchema(sub)
			if err != nil {
				return fmt.Errorf("spec.versions[%d]: spec.%s: %w", i, name, err)
			}
			props[name] = trimmed
		}
	}
	return nil
}

// trimSchema drops every description below the schema in, and keeps its own.
func trimSchema(in any) (map[string]any, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	var s apiextv1.JSONSchemaProps
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	own := s.Description
	eachSchema(&s, "", func(_ string, s *apiextv1.JSONSchemaProps) bool {
		s.Description = ""
		return true
	})
	s.Description = own
	if b, err = json.Marshal(&s); err != nil {
		return nil, err
	}
	return decodeJSONObject(b)
}

// decodeJSONObject decodes one YAML (or JSON) object as controller-gen holds it before it
// writes it: numbers as json.Number, so that none loses precision.
func decodeJSONObject(doc []byte) (map[string]any, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.UseNumber()
	var obj map[string]any
	if err := d.Decode(&obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// eachSchema calls visit for s and, as long as visit returns true, for every schema below
// it. path is where the value that a schema describes sits below s: ".queue.redis",
// ".containers[*]", ".labels{*}" (a value of a map); the schemas of allOf, anyOf, oneOf and
// not describe the value they sit on.
func eachSchema(s *apiextv1.JSONSchemaProps, path string, visit func(path string, s *apiextv1.JSONSchemaProps) bool) {
	if s == nil || !visit(path, s) {
		return
	}
	eachInMap := func(m map[string]apiextv1.JSONSchemaProps, prefix, suffix string) {
		for name, sub := range m {
			eachSchema(&sub, prefix+name+suffix, visit)
			m[name] = sub
		}
	}
	eachInSlice := func(l []apiextv1.JSONSchemaProps, path string) {
		for i := range l {
			eachSchema(&l[i], path, visit)
		}
	}
	eachInMap(s.Properties, path+".", "")
	eachInMap(s.PatternProperties, path+"{", "}")
	eachInMap(s.Definitions, "#/definitions/", "")
	if s.Items != nil {
		eachSchema(s.Items.Schema, path+"[*]", visit)
		eachInSlice(s.Items.JSONSchemas, path+"[*]")
	}
	if s.AdditionalItems != nil {
		eachSchema(s.AdditionalItems.Schema, path+"[*]", visit)
	}
	if s.AdditionalProperties != nil {
		eachSchema(s.AdditionalProperties.Schema, path+"{*}", visit)
	}
	for name, dep := range s.Dependencies {
		eachSchema(dep.Schema, path+"."+name, visit)
	}
	eachInSlice(s.AllOf, path)
	eachInSlice(s.AnyOf, path)
	eachInSlice(s.OneOf, path)
	eachSchema(s.Not, path, visit)
}
