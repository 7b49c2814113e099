package controllers

import (
	"strings"
	"unicode"
	"unicode/utf8"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// CacheOptions keeps the manager's cache small, so that its memory follows the QueueJobs'
// own objects and not the cluster's size:
//   - only the Jobs and pods that carry the batch.queuejob.io/queuejob label;
//   - no managedFields, and of a pod only what the controller reads (trimPod): a wave of
//     10 000 pods costs their metadata and status, not their specs;
//   - with namespaces, only those namespaces (empty: the whole cluster).
func CacheOptions(namespaces ...string) cache.Options {
	req, err := labels.NewRequirement(qjv1.LabelQueueJob, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant, valid label key
	}
	sel := labels.NewSelector().Add(*req)
	o := cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&batchv1.Job{}: {Label: sel},
			&corev1.Pod{}:  {Label: sel, Transform: trimPod},
		},
	}
	if len(namespaces) > 0 {
		o.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			o.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return o
}

// trimPod keeps of a pod what the controller reads from the cache: its metadata (its
// QueueJob's two labels, its controller, finalizers, deletion; not its other labels and
// owners, annotations and managedFields), its phase, its
// Ready condition, when its containers terminated, and what blocks it from starting
// (podStartBlock: a container's blocking wait, its message bounded). Everything it deletes it first reads again from the API server.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone of a deleted pod
	}
	pod.ManagedFields = nil
	pod.Annotations = nil
	pod.GenerateName = ""
	pod.Labels = ourLabels(pod.Labels)
	if ref := metav1.GetControllerOf(pod); ref != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*ref}
	} else {
		pod.OwnerReferences = nil
	}
	pod.Spec = corev1.PodSpec{}
	st := corev1.PodStatus{Phase: pod.Status.Phase}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			st.Conditions = append(st.Conditions, corev1.PodCondition{Type: c.Type, Status: c.Status, LastTransitionTime: c.LastTransitionTime})
		}
	}
	st.InitContainerStatuses = containerStates(pod.Status.InitContainerStatuses)
	st.ContainerStatuses = containerStates(pod.Status.ContainerStatuses)
	pod.Status = st
	return pod, nil
}

// ourLabels is the labels the controller reads of a pod: its QueueJob and its wave. The
// Job controller's four and the template's own would cost every cached pod a few
// hundred bytes more.
func ourLabels(in map[string]string) map[string]string {
	out := make(map[string]string, 2)
	for _, k := range []string{qjv1.LabelQueueJob, qjv1.LabelWave} {
		if v, ok := in[k]; ok {
			out[k] = v
		}
	}
	return out
}

// containerStates keeps of container statuses when each container terminated, and the
// reason and message of a container waiting for a reason that blocks it (blockingWaits).
func containerStates(in []corev1.ContainerStatus) []corev1.ContainerStatus {
	var out []corev1.ContainerStatus
	for _, cs := range in {
		switch t, w := cs.State.Terminated, cs.State.Waiting; {
		case t != nil:
			out = append(out, corev1.ContainerStatus{Name: cs.Name, State: corev1.ContainerState{
				Terminated: &corev1.ContainerStateTerminated{FinishedAt: t.FinishedAt}}})
		case w != nil && blockingWaits[w.Reason]:
			out = append(out, corev1.ContainerStatus{Name: cs.Name, State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: w.Reason, Message: boundMessage(w.Message)}}})
		}
	}
	return out
}

// boundMessage is a kubelet's message on one line, at most maxBlockMessage
// bytes (cut at a rune, marked with "...").
func boundMessage(msg string) string {
	msg = strings.Join(strings.FieldsFunc(msg, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
	if len(msg) <= maxBlockMessage {
		return msg
	}
	cut := maxBlockMessage - len("...")
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "..."
}
