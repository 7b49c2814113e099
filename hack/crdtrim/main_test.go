package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

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
