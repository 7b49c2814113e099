package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

func TestTTLRemaining(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		ttl  int32
		now  time.Time
		want time.Duration
	}{
		{name: "zero TTL expires at once", ttl: 0, now: t0, want: 0},
		{name: "not yet", ttl: 60, now: t0.Add(15 * time.Second), want: 45 * time.Second},
		{name: "just expired", ttl: 60, now: t0.Add(60 * time.Second), want: 0},
		{name: "long expired", ttl: 60, now: t0.Add(time.Hour), want: -59 * time.Minute},
		{name: "largest TTL does not overflow", ttl: 2147483647, now: t0, want: 2147483647 * time.Second},
		{name: "clock behind the finish time", ttl: 10, now: t0.Add(-5 * time.Second), want: 15 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ttlRemaining(t0, tc.ttl, tc.now)); diff != "" {
				t.Errorf("ttlRemaining (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPodFinishTime(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
	terminated := func(d time.Duration) corev1.ContainerStatus {
		return corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: at(d)}}}
	}
	cases := []struct {
		name   string
		pod    corev1.Pod
		want   time.Time
		wantOK bool
	}{
		{name: "running pod", pod: corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}},
		{name: "pending pod", pod: corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}},
		{
			name:   "succeeded: the last container to finish",
			pod:    corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{terminated(time.Second), terminated(time.Minute)}}},
			want:   t0.Add(time.Minute),
			wantOK: true,
		},
		{
			name: "failed: init containers count too",
			pod: corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed,
				InitContainerStatuses: []corev1.ContainerStatus{terminated(2 * time.Minute)},
				ContainerStatuses:     []corev1.ContainerStatus{{}}}},
			want:   t0.Add(2 * time.Minute),
			wantOK: true,
		},
		{
			name: "no container statuses: the Ready condition's transition",
			pod: corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed,
				Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, LastTransitionTime: at(0)}, {Type: corev1.PodReady, LastTransitionTime: at(time.Hour)}}}},
			want:   t0.Add(time.Hour),
			wantOK: true,
		},
		{
			name:   "nothing else: the creation time",
			pod:    corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: at(-time.Hour)}, Status: corev1.PodStatus{Phase: corev1.PodSucceeded}},
			want:   t0.Add(-time.Hour),
			wantOK: true,
		},
		{
			name: "still counted by the Job controller",
			pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Finalizers: []string{batchv1.JobTrackingFinalizer}},
				Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{terminated(0)}}},
		},
		{
			name: "already being deleted",
			pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &metav1.Time{Time: t0}},
				Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{terminated(0)}}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := podFinishTime(&tc.pod)
			if ok != tc.wantOK {
				t.Fatalf("podFinishTime ok = %v, want %v", ok, tc.wantOK)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("podFinishTime (-want +got):\n%s", diff)
			}
		})
	}
}

func TestArchiveExpired(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	finishedAgo := func(n int32, d time.Duration) batchv1.Job {
		j := job(n)
		j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: "True", LastTransitionTime: metav1.NewTime(now.Add(-d))}}
		return j
	}
	jobs := []batchv1.Job{finishedAgo(1, 2*time.Hour), finishedAgo(2, 30*time.Minute), job(3)}
	cases := []struct {
		name        string
		spec        qjv1.QueueJobSpec
		status      qjv1.QueueJobStatus
		wantArchive []string
		wantRequeue time.Duration
	}{
		{name: "Continuous: each wave from its own finish",
			spec:        qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}, Refill: qjv1.RefillContinuous},
			wantArchive: []string{"pi-1"}, wantRequeue: 30 * time.Minute},
		{name: "Once, not finished: nothing yet",
			spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}}},
		{name: "Once, finished 10 minutes ago: all finished waves in 50 minutes",
			spec:        qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}},
			status:      finishedStatus(now.Add(-10 * time.Minute)),
			wantRequeue: 50 * time.Minute},
		{name: "Once, finished 2 hours ago: every finished wave",
			spec:        qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}},
			status:      finishedStatus(now.Add(-2 * time.Hour)),
			wantArchive: []string{"pi-1", "pi-2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &scope{read: &qjv1.QueueJob{Status: tc.status}, qj: &qjv1.QueueJob{Spec: tc.spec}, jobs: jobs, now: now}
			archiveExpired(s, 3600)
			var got []string
			for _, j := range s.archive {
				got = append(got, j.Name)
			}
			if diff := cmp.Diff(tc.wantArchive, got); diff != "" {
				t.Errorf("archived (-want +got):\n%s", diff)
			}
			if s.requeueAfter != tc.wantRequeue {
				t.Errorf("requeue = %s, want %s", s.requeueAfter, tc.wantRequeue)
			}
		})
	}
}

func finishedStatus(at time.Time) qjv1.QueueJobStatus {
	t := metav1.NewTime(at)
	return qjv1.QueueJobStatus{CompletionTime: &t, Conditions: []metav1.Condition{
		{Type: qjv1.ConditionComplete, Status: metav1.ConditionTrue, Reason: qjv1.ReasonQueueDrained, LastTransitionTime: t}}}
}

func TestArchiveBeyondHistory(t *testing.T) {
	wave := func(n int32, c batchv1.JobConditionType) batchv1.Job {
		j := job(n)
		if c != "" {
			j.Status.Conditions = []batchv1.JobCondition{{Type: c, Status: "True"}}
		}
		return j
	}
	s := &scope{
		read: &qjv1.QueueJob{Status: qjv1.QueueJobStatus{Archived: &qjv1.ArchivedJobs{Jobs: []string{"pi-1"}}}},
		qj: &qjv1.QueueJob{Spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{},
			SuccessfulWavesHistoryLimit: ptr.To[int32](2), FailedWavesHistoryLimit: ptr.To[int32](0)}},
		jobs: []batchv1.Job{
			wave(1, batchv1.JobComplete), // archived already
			wave(2, batchv1.JobComplete), // beyond the 2 kept
			wave(3, batchv1.JobFailed),   // failed, none kept
			wave(4, batchv1.JobComplete), // kept
			wave(5, ""),                  // running
			wave(6, batchv1.JobComplete), // kept
			wave(7, batchv1.JobFailed),   // the latest: always kept
		},
	}
	archiveBeyondHistory(s)
	var got []string
	for _, j := range s.archive {
		got = append(got, j.Name)
	}
	if diff := cmp.Diff([]string{"pi-3", "pi-2"}, got); diff != "" {
		t.Errorf("archived (-want +got):\n%s", diff)
	}
}
