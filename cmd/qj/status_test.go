package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// TestStatusSaysWhyPodsWait: a pod's waiting reason beside its phase (init containers
// first), and the PodsCannotStart condition on its own line at the end.
func TestStatusSaysWhyPodsWait(t *testing.T) {
	wait := func(name, reason string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "q-1-abcde", Labels: map[string]string{qjv1.LabelWave: "1"}},
		Spec:       corev1.PodSpec{InitContainers: []corev1.Container{{Name: "init"}}, Containers: []corev1.Container{{Name: "c"}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{wait("init", "CreateContainerConfigError")},
			ContainerStatuses:     []corev1.ContainerStatus{wait("c", "PodInitializing")}},
	}
	wp := summarizePod(pod)
	if wp.Waiting != "CreateContainerConfigError" || wp.Phase != "Pending" {
		t.Errorf("summarizePod: waiting %q, phase %q", wp.Waiting, wp.Phase)
	}
	msg := `The pods of Job q-1 cannot start: CreateContainerConfigError (container "init"): secret "creds" not found [pod q-1-abcde]`
	r := &statusResult{QueueJob: "q", Pods: []wavePod{wp}, Conditions: []metav1.Condition{
		{Type: qjv1.ConditionProgressing, Status: metav1.ConditionFalse, Reason: qjv1.ReasonPodsCannotStart, Message: msg}}}
	var out bytes.Buffer
	(&statusOptions{options: &options{now: time.Now}}).human(&out, r)
	for _, s := range []string{"Pending (CreateContainerConfigError)", "\nThe pods cannot start (PodsCannotStart): " + msg + "\n"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("status does not show %q:\n%s", s, out.String())
		}
	}
}

// TestStatusShowsRedelivered: NATS's redelivered count, in -o json and beside the in-flight
// count; nothing of it where there is none.
func TestStatusShowsRedelivered(t *testing.T) {
	now := metav1.Now()
	src := &qjv1.QueueSource{NATS: &qjv1.NATSQueue{URL: "nats://nats:4222", Stream: "jobs", Consumer: "workers"}}
	for _, tc := range []struct {
		redelivered int64
		want        string
	}{{2, "4 ready, 3 in flight (2 redelivered), 1 reclaimed"}, {0, "4 ready, 3 in flight, 1 reclaimed"}} {
		qs := summarizeQueue(src, &qjv1.QueueStatus{Ready: 4, InFlight: 3, Reclaimed: 1, Redelivered: tc.redelivered, LastProbeTime: &now})
		if qs.Redelivered != tc.redelivered {
			t.Errorf("summarizeQueue: redelivered %d, want %d", qs.Redelivered, tc.redelivered)
		}
		var out bytes.Buffer
		(&statusOptions{options: &options{now: time.Now}}).human(&out, &statusResult{QueueJob: "q", Queue: qs})
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("status does not show %q:\n%s", tc.want, out.String())
		}
	}
}
