package controllers

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

func TestPerItemSizing(t *testing.T) {
	cases := []struct {
		name                     string
		ready                    int64
		itemsPerPod, parallelism int32
		wantCompletions, wantPar int32
	}{
		{name: "seed job-wq-1: 8 items, 2 at a time", ready: 8, itemsPerPod: 1, parallelism: 2, wantCompletions: 8, wantPar: 2},
		{name: "rounds up", ready: 3, itemsPerPod: 2, parallelism: 5, wantCompletions: 2, wantPar: 2},
		{name: "exact multiple", ready: 10, itemsPerPod: 5, parallelism: 1, wantCompletions: 2, wantPar: 1},
		{name: "parallelism above completions is cut", ready: 1, itemsPerPod: 1, parallelism: 100, wantCompletions: 1, wantPar: 1},
		{name: "a billion items are capped to one wave's maximum", ready: 1_000_000_000, itemsPerPod: 1, parallelism: 10, wantCompletions: 100000, wantPar: 10},
		{name: "the largest depth does not overflow", ready: math.MaxInt64, itemsPerPod: 1, parallelism: 3, wantCompletions: 100000, wantPar: 3},
		{name: "the largest depth with the largest items per pod", ready: math.MaxInt64, itemsPerPod: math.MaxInt32, parallelism: 3, wantCompletions: 100000, wantPar: 3},
		{name: "items per pod 0 counts as 1", ready: 4, itemsPerPod: 0, parallelism: 2, wantCompletions: 4, wantPar: 2},
		{name: "an empty queue still sizes one pod", ready: 0, itemsPerPod: 1, parallelism: 2, wantCompletions: 1, wantPar: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := perItemSizing(tc.ready, tc.itemsPerPod, tc.parallelism)
			want := jobSizing{completions: ptr.To(tc.wantCompletions), parallelism: tc.wantPar}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(jobSizing{})); diff != "" {
				t.Errorf("perItemSizing(%d, %d, %d) (-want +got):\n%s", tc.ready, tc.itemsPerPod, tc.parallelism, diff)
			}
		})
	}
}

func TestWorkerPoolSizing(t *testing.T) {
	cases := []struct {
		name            string
		ready, inFlight int64
		parallelism     int32
		want            int32
	}{
		{name: "seed job-wq-2: 9 items, 2 workers", ready: 9, parallelism: 2, want: 2},
		{name: "no more workers than items", ready: 1, inFlight: 1, parallelism: 5, want: 2},
		{name: "nothing left still one worker", parallelism: 5, want: 1},
		{name: "the largest depth does not overflow", ready: math.MaxInt64, inFlight: 5, parallelism: 7, want: 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := workerPoolSizing(tc.ready, tc.inFlight, tc.parallelism)
			if got.completions != nil || got.parallelism != tc.want {
				t.Errorf("workerPoolSizing = {completions %v, parallelism %d}, want {nil, %d}", got.completions, got.parallelism, tc.want)
			}
		})
	}
}

func TestPlanWave(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	running := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "q-1"}, Status: batchv1.JobStatus{Active: 2}}
	done := func(t batchv1.JobConditionType) *batchv1.Job {
		return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "q-1"}, Status: batchv1.JobStatus{
			Conditions: []batchv1.JobCondition{{Type: t, Status: "True"}}}}
	}
	spec := func(mode qjv1.Mode, refill qjv1.Refill, mutate ...func(*qjv1.QueueJobSpec)) *qjv1.QueueJobSpec {
		s := &qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}, Mode: mode, Refill: refill, JobTemplate: qjv1.JobTemplateSpec{Spec: batchv1.JobSpec{Parallelism: ptr.To[int32](2)}}}
		for _, m := range mutate {
			m(s)
		}
		return s
	}
	ended := func(active, terminating int32, c *batchv1.JobCondition) *batchv1.Job {
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "q-1", Annotations: map[string]string{qjv1.AnnotationWaveEnded: "2026-11-27T12:00:00Z"}},
			Spec: batchv1.JobSpec{Suspend: ptr.To(true)}, Status: batchv1.JobStatus{Active: active, Terminating: ptr.To(terminating)}}
		if c != nil {
			j.Status.Conditions = []batchv1.JobCondition{*c}
		}
		return j
	}
	endedUnset := func() *batchv1.Job {
		j := ended(0, 0, nil)
		j.Status.Terminating = nil
		return j
	}
	type want struct {
		create       *jobSizing
		endWave      bool
		archiveEnded bool
		complete     string
		waiting      string
		drainedSince *time.Time
		requeue      time.Duration
	}
	cases := []struct {
		name string
		in   waveInput
		want want
	}{
		{name: "first PerItem wave", in: waveInput{spec: spec(qjv1.ModePerItem, ""), counts: queue.Counts{Ready: 8}},
			want: want{create: &jobSizing{completions: ptr.To[int32](8), parallelism: 2}}},
		{name: "first WorkerPool wave", in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), counts: queue.Counts{Ready: 9}},
			want: want{create: &jobSizing{parallelism: 2}}},
		{name: "a running PerItem wave runs to its end, whatever arrives", in: waveInput{spec: spec(qjv1.ModePerItem, ""), current: running, waves: 1, counts: queue.Counts{Ready: 50}}},
		{name: "a PerItem wave whose queue another consumer emptied: the grace starts",
			in:   waveInput{spec: spec(qjv1.ModePerItem, ""), current: running, waves: 1},
			want: want{drainedSince: &now, requeue: 30 * time.Second}},
		{name: "a PerItem wave whose pods wait for items past the grace: end the wave",
			in:   waveInput{spec: spec(qjv1.ModePerItem, ""), current: running, waves: 1, drainedSince: ago(30 * time.Second)},
			want: want{endWave: true}},
		{name: "a wave that spec.suspend holds is paused, not stuck: never ended",
			in: waveInput{spec: spec(qjv1.ModePerItem, "", func(s *qjv1.QueueJobSpec) { s.Suspend = ptr.To(true) }), current: running, waves: 1, drainedSince: ago(time.Hour)}},
		{name: "an ended wave that another controller (Kueue) resumed: archive it at once, its pods go with it",
			in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: func() *batchv1.Job {
				j := ended(2, 0, nil)
				j.Spec.Suspend = ptr.To(false)
				return j
			}(), endingPods: 2, waves: 1},
			want: want{archiveEnded: true, complete: qjv1.ReasonWorkersStopped}},
		{name: "an ended wave under Kueue whose Job runs on: wait for Kueue to stop it (its Workload is inactive)",
			in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: func() *batchv1.Job {
				j := kueueJobOf(ended(2, 0, nil), false)
				j.Annotations = map[string]string{qjv1.AnnotationWaveEnded: now.Add(-time.Minute).Format(time.RFC3339)}
				j.Spec.Suspend = ptr.To(false)
				return j
			}(), endingPods: 2, waves: 1},
			want: want{requeue: kueueStopGrace - time.Minute + time.Second}},
		{name: "an ended wave under Kueue whose Job still runs after the grace (Kueue down?): archive it, its pods go with it",
			in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: func() *batchv1.Job {
				j := kueueJobOf(ended(2, 0, nil), false)
				j.Annotations = map[string]string{qjv1.AnnotationWaveEnded: now.Add(-kueueStopGrace - time.Second).Format(time.RFC3339)}
				j.Spec.Suspend = ptr.To(false)
				return j
			}(), endingPods: 2, waves: 1},
			want: want{archiveEnded: true, complete: qjv1.ReasonWorkersStopped}},
		{name: "a PerItem wave whose pods hold items: it runs on",
			in: waveInput{spec: spec(qjv1.ModePerItem, ""), current: running, waves: 1, drainedSince: ago(time.Hour), counts: queue.Counts{InFlight: 1}}},
		{name: "a PerItem wave on RabbitMQ without the management API never ends on its own",
			in: waveInput{spec: spec(qjv1.ModePerItem, ""), current: running, waves: 1, drainedSince: ago(time.Hour), counts: queue.Counts{InFlightUnknown: true}}},
		{name: "an ended PerItem wave whose pods stopped, refill Once: archive it and complete",
			in:   waveInput{spec: spec(qjv1.ModePerItem, ""), current: ended(0, 0, nil), waves: 1},
			want: want{archiveEnded: true, complete: qjv1.ReasonWorkersStopped}},
		{name: "a running worker pool with work left", in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: running, waves: 1, counts: queue.Counts{InFlight: 1}}},
		{name: "a worker pool's queue just drained: the grace starts",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: running, waves: 1},
			want: want{drainedSince: &now, requeue: 30 * time.Second}},
		{name: "drained, within the grace",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: running, waves: 1, drainedSince: ago(20 * time.Second)},
			want: want{drainedSince: ago(20 * time.Second), requeue: 10 * time.Second}},
		{name: "drained past the grace, refill Once: end the wave, not yet complete",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: running, waves: 1, drainedSince: ago(30 * time.Second)},
			want: want{endWave: true}},
		{name: "an ended wave whose pods still run by the cache (status.terminating unset): wait",
			in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: endedUnset(), endingPods: 1, waves: 1}},
		{name: "an ended wave whose pods stopped, items arrived meanwhile: archive it, do not complete",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: ended(0, 0, nil), waves: 1, counts: queue.Counts{Ready: 2}},
			want: want{archiveEnded: true}},
		{name: "an ended wave whose pods stopped, an item in flight: archive it, do not complete",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: ended(0, 0, nil), waves: 1, counts: queue.Counts{InFlight: 1}},
			want: want{archiveEnded: true}},
		{name: "counts that may be 10s old: drained for 5s of a 2s grace is not enough",
			in: waveInput{spec: spec(qjv1.ModeWorkerPool, "", func(s *qjv1.QueueJobSpec) { s.DrainGracePeriodSeconds = ptr.To[int32](2) }),
				current: running, waves: 1, drainedSince: ago(5 * time.Second), counts: queue.Counts{Lag: 10 * time.Second}},
			want: want{drainedSince: ago(5 * time.Second), requeue: 5 * time.Second}},
		{name: "an ended wave whose pods still run: wait for them to stop and be counted",
			in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: ended(2, 0, nil), waves: 1}},
		{name: "an ended wave whose pods are still terminating: wait",
			in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: ended(0, 1, nil), waves: 1}},
		{name: "an ended wave whose pods stopped, refill Once: archive it with its counts and complete",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: ended(0, 0, nil), waves: 1},
			want: want{archiveEnded: true, complete: qjv1.ReasonWorkersStopped}},
		{name: "an ended wave whose pods stopped, refill Continuous: archive it only",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, qjv1.RefillContinuous), current: ended(0, 0, nil), waves: 1, counts: queue.Counts{Ready: 4}},
			want: want{archiveEnded: true}},
		{name: "an ended wave that the Job controller failed: ended, not a failure",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: ended(0, 0, &batchv1.JobCondition{Type: batchv1.JobFailed, Status: "True"}), waves: 1},
			want: want{archiveEnded: true, complete: qjv1.ReasonWorkersStopped}},
		{name: "drained past the grace, refill Continuous: end the wave only",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, qjv1.RefillContinuous, func(s *qjv1.QueueJobSpec) { s.DrainGracePeriodSeconds = ptr.To[int32](0) }), current: running, waves: 1},
			want: want{endWave: true}},
		{name: "RabbitMQ without a count of unacknowledged messages: a drained-looking queue never ends the wave",
			in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: running, waves: 1, drainedSince: ago(time.Hour), counts: queue.Counts{InFlightUnknown: true}}},
		{name: "RabbitMQ with unacknowledged messages counted: in flight keeps the wave running",
			in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: running, waves: 1, drainedSince: ago(time.Hour), counts: queue.Counts{InFlight: 3}}},
		{name: "a failed wave: nothing more", in: waveInput{spec: spec(qjv1.ModePerItem, ""), current: done(batchv1.JobFailed), waves: 1, counts: queue.Counts{Ready: 3}}},
		{name: "refill Continuous, a failed wave below the limit: the next wave takes its items",
			in: waveInput{spec: spec(qjv1.ModePerItem, qjv1.RefillContinuous), current: done(batchv1.JobFailed), waves: 1,
				failedInARow: 2, counts: queue.Counts{Ready: 3}},
			want: want{create: &jobSizing{completions: ptr.To[int32](3), parallelism: 2}}},
		{name: "refill Continuous, a failed wave below the limit, nothing ready: wait",
			in:   waveInput{spec: spec(qjv1.ModePerItem, qjv1.RefillContinuous), current: done(batchv1.JobFailed), waves: 1, failedInARow: 1},
			want: want{waiting: qjv1.ReasonWaitingForItems}},
		{name: "refill Continuous, the limit of failed waves reached: nothing more",
			in: waveInput{spec: spec(qjv1.ModePerItem, qjv1.RefillContinuous), current: done(batchv1.JobFailed), waves: 3,
				failedInARow: 3, counts: queue.Counts{Ready: 3}}},
		{name: "items left after a wave: the next wave", in: waveInput{spec: spec(qjv1.ModePerItem, ""), current: done(batchv1.JobComplete), waves: 1, counts: queue.Counts{Ready: 3}},
			want: want{create: &jobSizing{completions: ptr.To[int32](3), parallelism: 2}}},
		{name: "drained after a wave, refill Once: complete", in: waveInput{spec: spec(qjv1.ModePerItem, ""), current: done(batchv1.JobComplete), waves: 1},
			want: want{complete: qjv1.ReasonQueueDrained}},
		{name: "drained after a wave, refill Continuous: wait", in: waveInput{spec: spec(qjv1.ModePerItem, qjv1.RefillContinuous), current: done(batchv1.JobComplete), waves: 1},
			want: want{waiting: qjv1.ReasonWaitingForItems}},
		{name: "empty before any wave: wait, even under Once", in: waveInput{spec: spec(qjv1.ModePerItem, "")},
			want: want{waiting: qjv1.ReasonWaitingForItems}},
		{name: "only in-flight items and no wave: wait for them", in: waveInput{spec: spec(qjv1.ModePerItem, ""), waves: 1, counts: queue.Counts{InFlight: 2}},
			want: want{waiting: qjv1.ReasonWaitingForItems}},
		{name: "suspended: no new wave", in: waveInput{spec: spec(qjv1.ModePerItem, "", func(s *qjv1.QueueJobSpec) { s.Suspend = ptr.To(true) }), counts: queue.Counts{Ready: 1}},
			want: want{waiting: qjv1.ReasonSuspended}},
		// The wave state machine (docs/wave-state-machine.md).
		{name: "drained, then items arrive within the grace: the grace starts over",
			in: waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: running, waves: 1, drainedSince: ago(20 * time.Second), counts: queue.Counts{Ready: 1}}},
		{name: "RabbitMQ without the management API, no wave runs, nothing ready after a wave, refill Once: complete",
			in:   waveInput{spec: spec(qjv1.ModePerItem, ""), current: done(batchv1.JobComplete), waves: 1, counts: queue.Counts{InFlightUnknown: true}},
			want: want{complete: qjv1.ReasonQueueDrained}},
		{name: "suspended, drained after a wave, refill Once: complete all the same",
			in:   waveInput{spec: spec(qjv1.ModePerItem, "", func(s *qjv1.QueueJobSpec) { s.Suspend = ptr.To(true) }), current: done(batchv1.JobComplete), waves: 1},
			want: want{complete: qjv1.ReasonQueueDrained}},
		{name: "a wave another controller holds suspended whose queue stayed drained past the grace: end it",
			in: waveInput{spec: spec(qjv1.ModePerItem, ""),
				current: &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "q-1"}, Spec: batchv1.JobSpec{Suspend: ptr.To(true)}}, waves: 1, drainedSince: ago(30 * time.Second)},
			want: want{endWave: true}},
		{name: "an ended wave that completed on its own meanwhile, refill Once: archive it and complete",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, ""), current: ended(0, 0, &batchv1.JobCondition{Type: batchv1.JobComplete, Status: "True"}), waves: 1},
			want: want{archiveEnded: true, complete: qjv1.ReasonWorkersStopped}},
		{name: "an ended wave whose pods stopped while spec.suspend is set, refill Once: archive it and complete",
			in:   waveInput{spec: spec(qjv1.ModeWorkerPool, "", func(s *qjv1.QueueJobSpec) { s.Suspend = ptr.To(true) }), current: ended(0, 0, nil), waves: 1},
			want: want{archiveEnded: true, complete: qjv1.ReasonWorkersStopped}},
		{name: "refill Continuous, a failed wave below the limit, only in-flight items: wait for them",
			in:   waveInput{spec: spec(qjv1.ModePerItem, qjv1.RefillContinuous), current: done(batchv1.JobFailed), waves: 1, failedInARow: 1, counts: queue.Counts{InFlight: 2}},
			want: want{waiting: qjv1.ReasonWaitingForItems}},
		{name: "a wave that completed with items still in flight, refill Once: wait for them, do not complete",
			in:   waveInput{spec: spec(qjv1.ModePerItem, ""), current: done(batchv1.JobComplete), waves: 1, counts: queue.Counts{InFlight: 1}},
			want: want{waiting: qjv1.ReasonWaitingForItems}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.now = now
			p := planWave(tc.in)
			got := want{create: p.create, endWave: p.endWave, archiveEnded: p.archiveEnded, drainedSince: p.drainedSince, requeue: p.requeue}
			if p.complete != nil {
				got.complete = p.complete.reason
			}
			if p.waiting != nil {
				got.waiting = p.waiting.reason
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{}, jobSizing{})); diff != "" {
				t.Errorf("planWave (-want +got):\n%s", diff)
			}
		})
	}
}

func BenchmarkPlanWave(b *testing.B) {
	in := waveInput{spec: &qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}, JobTemplate: qjv1.JobTemplateSpec{Spec: batchv1.JobSpec{Parallelism: ptr.To[int32](10)}}},
		counts: queue.Counts{Ready: 1_000_000_000}, now: time.Now()}
	for b.Loop() {
		if p := planWave(in); p.create == nil {
			b.Fatal("no wave")
		}
	}
}

// TestPlanWaveDeadLettered: a drained queue finishes a refill Once QueueJob; items
// dead-lettered during its run (beyond those of earlier runs) make it fail, unless
// spec.deadLetterPolicy is Complete, when the Complete condition counts them.
func TestPlanWaveDeadLettered(t *testing.T) {
	done := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "q-2"}, Status: batchv1.JobStatus{
		Conditions: []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: "True"}}}}
	ended := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "q-2", Annotations: map[string]string{qjv1.AnnotationWaveEnded: "2026-11-27T12:00:00Z"}},
		Spec: batchv1.JobSpec{Suspend: ptr.To(true)}, Status: batchv1.JobStatus{Succeeded: 4, Terminating: ptr.To[int32](0)}}
	spec := func(refill qjv1.Refill, policy qjv1.DeadLetterPolicy) *qjv1.QueueJobSpec {
		return &qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}, Refill: refill, DeadLetterPolicy: policy}
	}
	in := func(s *qjv1.QueueJobSpec, current *batchv1.Job, c queue.Counts, atStart int64) waveInput {
		return waveInput{spec: s, current: current, waves: 2, counts: c, deadLetteredAtStart: atStart,
			deadLetterQueue: `Redis list "jobs:failed"`, name: "q", now: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	}
	const drained = "The queue is drained: no ready and no in-flight items after 2 waves"
	const stopped = "The queue was drained for 30s while pods of Job q-2 still ran: the operator stopped them (4 succeeded, 0 failed)"
	failed := func(what string, n int) *progressProblem {
		return &progressProblem{qjv1.ReasonItemsDeadLettered, fmt.Sprintf("%s, but %d items were dead-lettered to "+
			`Redis list "jobs:failed" during this run: requeue them with "qj requeue q" and run them with a new QueueJob, `+
			"or set spec.deadLetterPolicy: Complete to let a run with dead-lettered items complete", what, n)}
	}
	type want struct {
		complete, fail *progressProblem
		archiveEnded   bool
		waiting        string
	}
	cases := []struct {
		name string
		in   waveInput
		want want
	}{
		{name: "drained, 3 items dead-lettered during the run, policy Fail: fail",
			in:   in(spec("", qjv1.DeadLetterPolicyFail), done, queue.Counts{DeadLettered: 5}, 2),
			want: want{fail: failed(drained, 3)}},
		{name: "drained, items dead-lettered during the run, no policy (an object stored before the field): fail",
			in:   in(spec("", ""), done, queue.Counts{DeadLettered: 1}, 0),
			want: want{fail: failed(drained, 1)}},
		{name: "drained, items dead-lettered during the run, policy Complete: complete, counting them",
			in: in(spec("", qjv1.DeadLetterPolicyComplete), done, queue.Counts{DeadLettered: 5}, 2),
			want: want{complete: &progressProblem{qjv1.ReasonQueueDrained, drained + `; 3 items were dead-lettered to Redis list "jobs:failed" ` +
				`during this run (spec.deadLetterPolicy is Complete): requeue them with "qj requeue q"`}}},
		{name: "drained, the dead-letter list holds only earlier runs' items: complete as ever",
			in:   in(spec("", qjv1.DeadLetterPolicyFail), done, queue.Counts{DeadLettered: 5}, 5),
			want: want{complete: &progressProblem{qjv1.ReasonQueueDrained, drained}}},
		{name: "drained, items requeued from the dead-letter list below its start: none this run",
			in:   in(spec("", qjv1.DeadLetterPolicyFail), done, queue.Counts{DeadLettered: 1}, 5),
			want: want{complete: &progressProblem{qjv1.ReasonQueueDrained, drained}}},
		{name: "an ended wave whose pods stopped, items dead-lettered, policy Fail: archive it and fail",
			in:   in(spec("", ""), ended, queue.Counts{DeadLettered: 2}, 0),
			want: want{archiveEnded: true, fail: failed(stopped, 2)}},
		{name: "drained with items dead-lettered, refill Continuous: wait as ever",
			in:   in(spec(qjv1.RefillContinuous, qjv1.DeadLetterPolicyFail), done, queue.Counts{DeadLettered: 2}, 0),
			want: want{waiting: qjv1.ReasonWaitingForItems}},
		{name: "drained, the dead-letter list cannot be read: complete, saying so",
			in: in(spec("", qjv1.DeadLetterPolicyFail), done, queue.Counts{DeadLetteredUnknown: true}, 0),
			want: want{complete: &progressProblem{qjv1.ReasonQueueDrained, drained + `; Redis list "jobs:failed" ` +
				`could not be read (grant the queue's user read access to it): items dead-lettered during this run are not counted`}}},
		{name: "items dead-lettered while others are in flight: wait for them",
			in:   in(spec("", qjv1.DeadLetterPolicyFail), done, queue.Counts{InFlight: 1, DeadLettered: 2}, 0),
			want: want{waiting: qjv1.ReasonWaitingForItems}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := planWave(tc.in)
			got := want{complete: p.complete, fail: p.fail, archiveEnded: p.archiveEnded}
			if p.waiting != nil {
				got.waiting = p.waiting.reason
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{}, progressProblem{})); diff != "" {
				t.Errorf("planWave (-want +got):\n%s", diff)
			}
		})
	}
}
