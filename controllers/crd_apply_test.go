package controllers

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// These specs run the real kubectl against the envtest API server, as a user installing the
// CRD would.
var _ = Describe("The QueueJob CRD", func() {
	crdFile := filepath.Join("..", "config", "crd", "bases", "batch.queuejob.io_queuejobs.yaml")

	// kubectl runs kubectl as envtest's admin user and returns what it printed, and an
	// error that says how it exited if it failed.
	var kubectl func(args ...string) (string, error)
	BeforeEach(func() {
		path, err := exec.LookPath("kubectl")
		if err != nil {
			Fail("these specs need kubectl on PATH (Debian's kubernetes-client, or a kubectl built from source): " + err.Error())
		}
		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(os.WriteFile(kubeconfig, testEnv.KubeConfig, 0o600)).To(Succeed())
		kubectl = func(args ...string) (string, error) {
			ctx, cancel := context.WithTimeout(suiteCtx, timeout)
			defer cancel()
			out, err := exec.CommandContext(ctx, path, append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
			if err != nil {
				return string(out), fmt.Errorf("kubectl %s: %v", strings.Join(args, " "), err)
			}
			return string(out), nil
		}
	})

	DescribeTable("applies with a client-side kubectl apply",
		func(args ...string) {
			// The CRD is already installed (by envtest, without the annotation): kubectl patches
			// it and stores the whole CRD as JSON in its last-applied-configuration annotation.
			apply := append([]string{"apply"}, args...)
			out, err := kubectl(apply...)
			Expect(err).NotTo(HaveOccurred(), "a client-side `kubectl %s` failed:\n%s", strings.Join(apply, " "), out)
			Expect(out).To(ContainSubstring("customresourcedefinition.apiextensions.k8s.io/queuejobs.batch.queuejob.io"))

			crd := &metav1.PartialObjectMetadata{}
			crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
			Expect(k8s.Get(suiteCtx, client.ObjectKey{Name: "queuejobs.batch.queuejob.io"}, crd)).To(Succeed())
			lastApplied := crd.Annotations["kubectl.kubernetes.io/last-applied-configuration"]
			Expect(lastApplied).NotTo(BeEmpty(), "kubectl apply stored no last-applied-configuration")
			GinkgoWriter.Printf("last-applied-configuration of the CRD: %d bytes\n", len(lastApplied))

			// A second apply finds nothing to change.
			out, err = kubectl(apply...)
			Expect(err).NotTo(HaveOccurred(), "the second `kubectl %s` failed:\n%s", strings.Join(apply, " "), out)
			Expect(out).To(ContainSubstring("unchanged"))
		},
		Entry("the CRD file", "-f", crdFile),
		Entry("the config/crd kustomization", "-k", filepath.Join("..", "config", "crd")),
	)

	It("keeps the QueueJob field docs for kubectl explain", func() {
		// kubectl explain reads the OpenAPI the API server publishes for the CRD; after an
		// update it may lag a little. Its output is wrapped: compare words.
		explains := map[string][]string{
			"queuejob.spec.queue": {
				"queue is where the work items wait.",
				"redis is a Redis list, read with the protocol of the Kubernetes docs' rediswq.py.",
			},
			"queuejob.spec.cleanup": {
				"cleanup says when finished Jobs and pods are deleted while the QueueJob and its counts stay.",
				"ttlSecondsAfterFinished deletes the QueueJob's finished Jobs",
			},
			"queuejob.spec.jobTemplate": {
				"jobTemplate is the Job each wave runs, as in a CronJob's spec.jobTemplate",
			},
			"queuejob.spec.ttlSecondsAfterFinished": {
				"ttlSecondsAfterFinished deletes the QueueJob itself",
			},
			"queuejob.status.state": {
				"state sums up the conditions in one word",
			},
		}
		for field, docs := range explains {
			Eventually(func(g Gomega) {
				out, err := kubectl("explain", field)
				g.Expect(err).NotTo(HaveOccurred(), "kubectl explain %s:\n%s", field, out)
				words := strings.Join(strings.Fields(out), " ")
				for _, doc := range docs {
					g.Expect(words).To(ContainSubstring(doc), "kubectl explain %s:\n%s", field, out)
				}
			}, timeout, interval).Should(Succeed())
		}
	})
})
