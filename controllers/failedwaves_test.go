package controllers

import (
	"strconv"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

func failedWavesJob(wave int32, failed bool) batchv1.Job {
	j := batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: jobName("c", wave), Labels: map[string]string{qjv1.LabelWave: strconv.Itoa(int(wave))}}}
	if failed {
		j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue}}
	}
	return j
}

// Wave 3 failed; the reconcile that saw it created wave 4, and its status write was lost
// (conflict ignored, or the manager killed). The next reconcile never counts wave 3.
func TestFailedWaveCountedWhenTheNextWaveStartedFirst(t *testing.T) {
	now := time.Now()
	qj := &qjv1.QueueJob{Spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{}}, Refill: qjv1.RefillContinuous}}
	qj.Status.ConsecutiveFailedWaves, qj.Status.LastFinishedWave, qj.Status.Waves = 2, 2, 3
	jobs := []batchv1.Job{failedWavesJob(3, true), failedWavesJob(4, false)}
	st := observe(observeInput{qj: qj, jobs: jobs, now: metav1.NewTime(now)})
	if st.ConsecutiveFailedWaves != 3 {
		t.Errorf("consecutiveFailedWaves = %d, lastFinishedWave = %d; want 3 (wave 3 failed; limit 3 should fail the QueueJob)", st.ConsecutiveFailedWaves, st.LastFinishedWave)
	}
	_ = ptr.To[int32]
}

// TestStrandedItems: a Failed QueueJob keeps probing, and so reaping, while items are in
// flight, and until a probe after its failure has counted them.
func TestStrandedItems(t *testing.T) {
	failedAt := metav1.NewTime(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	before, after := metav1.NewTime(failedAt.Add(-time.Second)), metav1.NewTime(failedAt.Add(time.Second))
	failed := []metav1.Condition{{Type: qjv1.ConditionFailed, Status: metav1.ConditionTrue}}
	complete := []metav1.Condition{{Type: qjv1.ConditionComplete, Status: metav1.ConditionTrue}}
	deadLettered := []metav1.Condition{{Type: qjv1.ConditionFailed, Status: metav1.ConditionTrue, Reason: qjv1.ReasonItemsDeadLettered}}
	for name, tc := range map[string]struct {
		st   qjv1.QueueJobStatus
		want bool
	}{
		"running":                                      {qjv1.QueueJobStatus{Queue: &qjv1.QueueStatus{InFlight: 3, LastProbeTime: &after}}, false},
		"complete":                                     {qjv1.QueueJobStatus{Conditions: complete, CompletionTime: &failedAt, Queue: &qjv1.QueueStatus{LastProbeTime: &before}}, false},
		"failed, items in flight":                      {qjv1.QueueJobStatus{Conditions: failed, CompletionTime: &failedAt, Queue: &qjv1.QueueStatus{InFlight: 1, LastProbeTime: &after}}, true},
		"failed, none in flight since":                 {qjv1.QueueJobStatus{Conditions: failed, CompletionTime: &failedAt, Queue: &qjv1.QueueStatus{LastProbeTime: &after}}, false},
		"failed, last counted before it failed":        {qjv1.QueueJobStatus{Conditions: failed, CompletionTime: &failedAt, Queue: &qjv1.QueueStatus{LastProbeTime: &before}}, true},
		"failed, last counted in the second it failed": {qjv1.QueueJobStatus{Conditions: failed, CompletionTime: &failedAt, Queue: &qjv1.QueueStatus{LastProbeTime: &failedAt}}, true},
		// Items dead-lettered fail it like any other cause: probed once more, then not.
		"failed for dead-lettered items, in the second it failed": {qjv1.QueueJobStatus{Conditions: deadLettered, CompletionTime: &failedAt,
			Queue: &qjv1.QueueStatus{DeadLettered: 3, DeadLetteredAtStart: ptr.To[int64](0), LastProbeTime: &failedAt}}, true},
		"failed for dead-lettered items, none in flight since": {qjv1.QueueJobStatus{Conditions: deadLettered, CompletionTime: &failedAt,
			Queue: &qjv1.QueueStatus{DeadLettered: 3, DeadLetteredAtStart: ptr.To[int64](0), LastProbeTime: &after}}, false},
	} {
		if got := strandedItems(&tc.st); got != tc.want {
			t.Errorf("%s: strandedItems = %v, want %v", name, got, tc.want)
		}
	}
}
