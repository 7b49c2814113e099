package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

func TestTrimPod(t *testing.T) {
	at := func(s int) metav1.Time { return metav1.NewTime(time.Date(2026, 11, 27, 12, 0, s, 0, time.UTC)) }
	full := func(phase corev1.PodPhase, finalizers ...string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: "q-1-abcde", GenerateName: "q-1-", Namespace: "ns", UID: "uid-1", CreationTimestamp: at(0),
				Labels: map[string]string{qjv1.LabelQueueJob: "q", qjv1.LabelWave: "1", "batch.kubernetes.io/job-name": "q-1",
					"batch.kubernetes.io/controller-uid": "job-uid", "job-name": "q-1", "controller-uid": "job-uid", "app": "worker"},
				Annotations: map[string]string{"big": "annotation"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "n", UID: "node-uid"},
					{APIVersion: "batch/v1", Kind: "Job", Name: "q-1", UID: "job-uid", Controller: ptr.To(true)}},
				Finalizers:    finalizers,
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}},
			},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "worker", Command: []string{"run"},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}}}},
			Status: corev1.PodStatus{
				Phase: phase, PodIP: "10.0.0.1", QOSClass: corev1.PodQOSBurstable,
				Conditions: []corev1.PodCondition{
					{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: at(1)},
					{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: at(9), Message: "containers not ready"},
				},
				InitContainerStatuses: []corev1.ContainerStatus{{Name: "init", Image: "init", State: corev1.ContainerState{
					Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, StartedAt: at(2), FinishedAt: at(3)}}}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "c", Image: "worker", ImageID: "sha256:x", State: corev1.ContainerState{
					Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", StartedAt: at(4), FinishedAt: at(8)}}}},
			},
		}
	}
	got, err := trimPod(full(corev1.PodFailed))
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "q-1-abcde", Namespace: "ns", UID: "uid-1", CreationTimestamp: at(0),
			Labels:          map[string]string{qjv1.LabelQueueJob: "q", qjv1.LabelWave: "1"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: "q-1", UID: "job-uid", Controller: ptr.To(true)}},
		},
		Status: corev1.PodStatus{
			Phase:                 corev1.PodFailed,
			Conditions:            []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: at(9)}},
			InitContainerStatuses: []corev1.ContainerStatus{{Name: "init", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: at(3)}}}},
			ContainerStatuses:     []corev1.ContainerStatus{{Name: "c", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: at(8)}}}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("trimPod (-want +got):\n%s", diff)
	}

	// What cleanup decides from a cached pod must not change with the trim.
	for _, p := range []*corev1.Pod{full(corev1.PodSucceeded), full(corev1.PodFailed), full(corev1.PodRunning),
		full(corev1.PodSucceeded, batchv1.JobTrackingFinalizer)} {
		wantAt, wantOK := podFinishTime(p.DeepCopy())
		trimmed, _ := trimPod(p.DeepCopy())
		gotAt, gotOK := podFinishTime(trimmed.(*corev1.Pod))
		if gotAt != wantAt || gotOK != wantOK {
			t.Errorf("podFinishTime of a %s pod (finalizers %v): trimmed %v %v, full %v %v", p.Status.Phase, p.Finalizers, gotAt, gotOK, wantAt, wantOK)
		}
	}
}

var _ = Describe("A manager restricted to namespaces", func() {
	It("runs the QueueJobs of its namespaces only", func() {
		watched, other := newNamespace(), newNamespace()
		stopMgr()
		stopMgr, _ = startManagerWith(cfg, func(o *ctrl.Options) { o.Cache = CacheOptions(watched) })
		DeferCleanup(restartManager)

		in, out := queueJob(watched, "pi"), queueJob(other, "pi")
		Expect(k8s.Create(suiteCtx, in)).To(Succeed())
		Expect(k8s.Create(suiteCtx, out)).To(Succeed())
		theJob(in)
		Consistently(func(g Gomega) []batchv1.Job { return ownedJobs(g, out) }, 3*time.Second, 300*time.Millisecond).Should(BeEmpty())
		Expect(getQJ(other, "pi")(Default).Status.Conditions).To(BeEmpty(), "a QueueJob of an unwatched namespace was reconciled")
	})
})
