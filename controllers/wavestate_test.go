package controllers

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// TestObserveWave: how a queue-driven QueueJob's status follows the wave state machine
// (docs/wave-state-machine.md): the one-word state, the conditions, the count of failed waves,
// drainedSince, what is archived, and the events of the transition from the status as read.
func TestObserveWave(t *testing.T) {
	now := t0.Add(time.Hour)
	ago := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-d)); return &t }
	// unfinished is the status of a queue-driven QueueJob that has not finished.
	unfinished := func(mutate ...func(*qjv1.QueueJobStatus)) qjv1.QueueJobStatus {
		st := qjv1.QueueJobStatus{Waves: 1, Queue: &qjv1.QueueStatus{}, Conditions: []metav1.Condition{
			{Type: qjv1.ConditionComplete, Status: metav1.ConditionFalse, Reason: qjv1.ReasonNotFinished},
			{Type: qjv1.ConditionFailed, Status: metav1.ConditionFalse, Reason: qjv1.ReasonNotFinished},
			{Type: qjv1.ConditionSuspended, Status: metav1.ConditionFalse, Reason: qjv1.ReasonNotSuspended},
			{Type: qjv1.ConditionQueueReachable, Status: metav1.ConditionTrue, Reason: qjv1.ReasonProbed},
			{Type: qjv1.ConditionUpToDate, Status: metav1.ConditionTrue, Reason: qjv1.ReasonUpToDate},
		}}
		for _, m := range mutate {
			m(&st)
		}
		return st
	}
	suspendedStatus := func(st *qjv1.QueueJobStatus) {
		st.Conditions[2] = metav1.Condition{Type: qjv1.ConditionSuspended, Status: metav1.ConditionTrue, Reason: qjv1.ReasonSuspended}
	}
	failedBefore := func(n int32) func(*qjv1.QueueJobStatus) {
		return func(st *qjv1.QueueJobStatus) { st.ConsecutiveFailedWaves, st.LastFinishedWave, st.Waves = n, n, n+1 }
	}
	continuous := func(s *qjv1.QueueJobSpec) { s.Refill = qjv1.RefillContinuous }
	suspend := func(s *qjv1.QueueJobSpec) { s.Suspend = ptr.To(true) }
	probed := func(ready, inFlight int64) *probeResult {
		return &probeResult{counts: &queue.Counts{Ready: ready, InFlight: inFlight}}
	}
	probeFailed := &probeResult{err: queue.Errorf(queue.ReasonConnectionFailed, "cannot connect")}
	// endedByOperator marks a Job as a wave the operator ended (endWave).
	endedByOperator := func(j *batchv1.Job) {
		j.Annotations = map[string]string{qjv1.AnnotationWaveEnded: "2026-11-27T13:00:00Z", qjv1.AnnotationTemplateHash: "old"}
		j.Spec.Suspend = ptr.To(true)
	}
	jobSuspended := func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(true) }
	builtFromAnOlderSpec := func(j *batchv1.Job) { j.Annotations = map[string]string{qjv1.AnnotationTemplateHash: "old"} }
	waiting := func(reason string) *wavePlan { return &wavePlan{waiting: &progressProblem{reason, "m"}} }
	completes := func(reason string) *wavePlan { return &wavePlan{complete: &progressProblem{reason, "m"}} }

	type want struct {
		state        qjv1.State
		conds        map[string]condWant // only these are compared
		failedInARow int32
		drainedSince *metav1.Time
		archived     []string
		succeeded    int32
		inFlight     int64
		events       []string
	}
	cases := []struct {
		name    string
		spec    []func(*qjv1.QueueJobSpec)
		status  qjv1.QueueJobStatus
		jobs    []batchv1.Job
		archive []int // indexes into jobs that this reconcile archives
		probe   *probeResult
		plan    *wavePlan
		want    want
	}{
		{name: "no wave, the queue empty: Waiting, WaitingForItems",
			status: unfinished(func(st *qjv1.QueueJobStatus) { st.Waves = 0 }), probe: probed(0, 0), plan: waiting(qjv1.ReasonWaitingForItems),
			want: want{state: qjv1.StateWaiting, conds: map[string]condWant{
				qjv1.ConditionProgressing: {metav1.ConditionTrue, qjv1.ReasonWaitingForItems}}}},
		{name: "no wave, only in-flight items: Waiting, WaitingForItems",
			status: unfinished(), probe: probed(0, 2), plan: waiting(qjv1.ReasonWaitingForItems),
			want: want{state: qjv1.StateWaiting, inFlight: 2, conds: map[string]condWant{
				qjv1.ConditionProgressing: {metav1.ConditionTrue, qjv1.ReasonWaitingForItems}}}},
		{name: "no wave, a failed probe: Waiting, ProbeFailed, QueueUnreachable",
			status: unfinished(), probe: probeFailed,
			want: want{state: qjv1.StateWaiting, events: []string{qjv1.EventQueueUnreachable}, conds: map[string]condWant{
				qjv1.ConditionProgressing:    {metav1.ConditionFalse, qjv1.ReasonProbeFailed},
				qjv1.ConditionQueueReachable: {metav1.ConditionFalse, queue.ReasonConnectionFailed}}}},
		{name: "a wave runs: Running, WaveRunning",
			status: unfinished(), jobs: []batchv1.Job{job(1, running(2, 0, 0))}, probe: probed(3, 0), plan: &wavePlan{},
			want: want{state: qjv1.StateRunning, conds: map[string]condWant{
				qjv1.ConditionProgressing: {metav1.ConditionTrue, qjv1.ReasonWaveRunning}}}},
		{name: "the queue drained while the wave runs: drainedSince recorded",
			status: unfinished(), jobs: []batchv1.Job{job(1, running(2, 0, 0))}, probe: probed(0, 0),
			plan: &wavePlan{drainedSince: ptr.To(ago(10 * time.Second).Time), requeue: 20 * time.Second},
			want: want{state: qjv1.StateRunning, drainedSince: ago(10 * time.Second), conds: map[string]condWant{
				qjv1.ConditionProgressing: {metav1.ConditionTrue, qjv1.ReasonWaveRunning}}}},
		{name: "items came back during the grace: drainedSince cleared",
			status: unfinished(func(st *qjv1.QueueJobStatus) { st.Queue.DrainedSince = ago(10 * time.Second) }),
			jobs:   []batchv1.Job{job(1, running(2, 0, 0))}, probe: probed(1, 0), plan: &wavePlan{},
			want: want{state: qjv1.StateRunning}},
		{name: "a failed probe during the grace keeps drainedSince: the outage counts toward the grace",
			status: unfinished(func(st *qjv1.QueueJobStatus) { st.Queue.DrainedSince = ago(10 * time.Second) }),
			jobs:   []batchv1.Job{job(1, running(2, 0, 0))}, probe: probeFailed,
			want: want{state: qjv1.StateRunning, drainedSince: ago(10 * time.Second), events: []string{qjv1.EventQueueUnreachable}, conds: map[string]condWant{
				qjv1.ConditionProgressing:    {metav1.ConditionTrue, qjv1.ReasonWaveRunning},
				qjv1.ConditionQueueReachable: {metav1.ConditionFalse, queue.ReasonConnectionFailed}}}},
		{name: "the wave ended, its pods stopping: Running, WaveEnding, and a template change no longer pending",
			status: unfinished(), jobs: []batchv1.Job{job(1, running(1, 0, 0), endedByOperator)}, probe: probed(0, 0), plan: &wavePlan{},
			want: want{state: qjv1.StateRunning, conds: map[string]condWant{
				qjv1.ConditionProgressing: {metav1.ConditionTrue, qjv1.ReasonWaveEnding},
				qjv1.ConditionUpToDate:    {metav1.ConditionTrue, qjv1.ReasonUpToDate}}}},
		{name: "an ended wave whose pods stopped, the queue still drained, refill Once: Complete WorkersStopped, the Job archived",
			status: unfinished(), jobs: []batchv1.Job{job(1, running(0, 2, 0), endedByOperator)}, archive: []int{0}, probe: probed(0, 0),
			plan: &wavePlan{archiveEnded: true, complete: &progressProblem{qjv1.ReasonWorkersStopped, "m"}},
			want: want{state: qjv1.StateComplete, archived: []string{"pi-1"}, succeeded: 2, events: []string{qjv1.EventCompleted}, conds: map[string]condWant{
				qjv1.ConditionComplete:    {metav1.ConditionTrue, qjv1.ReasonWorkersStopped},
				qjv1.ConditionProgressing: {metav1.ConditionFalse, qjv1.ReasonFinished}}}},
		{name: "an ended wave that the Job controller failed: no failure, not counted as a failed wave",
			spec: []func(*qjv1.QueueJobSpec){continuous}, status: unfinished(),
			jobs: []batchv1.Job{job(1, running(0, 0, 2), endedByOperator, ended(batchv1.JobFailed, "BackoffLimitExceeded"))}, archive: []int{0},
			probe: probed(0, 0), plan: &wavePlan{archiveEnded: true},
			want: want{state: qjv1.StateWaiting, archived: []string{"pi-1"}, conds: map[string]condWant{
				qjv1.ConditionFailed: {metav1.ConditionFalse, qjv1.ReasonNotFinished}}}},
		{name: "a wave completed, the queue drained, refill Once: Complete QueueDrained, not the Job's reason",
			status: unfinished(), jobs: []batchv1.Job{job(1, running(0, 3, 0), ended(batchv1.JobComplete, "CompletionsReached"))},
			probe: probed(0, 0), plan: completes(qjv1.ReasonQueueDrained),
			want: want{state: qjv1.StateComplete, succeeded: 3, events: []string{qjv1.EventCompleted}, conds: map[string]condWant{
				qjv1.ConditionComplete: {metav1.ConditionTrue, qjv1.ReasonQueueDrained}}}},
		{name: "a wave completed, no probe in this reconcile: no verdict yet",
			status: unfinished(), jobs: []batchv1.Job{job(1, running(0, 3, 0), ended(batchv1.JobComplete, "CompletionsReached"))},
			want: want{state: qjv1.StateWaiting, succeeded: 3, conds: map[string]condWant{
				qjv1.ConditionComplete: {metav1.ConditionFalse, qjv1.ReasonNotFinished}}}},
		{name: "a wave failed, refill Once: Failed with the Job's reason, without waiting for a probe",
			status: unfinished(), jobs: []batchv1.Job{job(1, running(0, 0, 7), ended(batchv1.JobFailed, "BackoffLimitExceeded"))},
			want: want{state: qjv1.StateFailed, failedInARow: 1, events: []string{qjv1.EventFailed}, conds: map[string]condWant{
				qjv1.ConditionFailed:      {metav1.ConditionTrue, "BackoffLimitExceeded"},
				qjv1.ConditionProgressing: {metav1.ConditionFalse, qjv1.ReasonFinished}}}},
		{name: "a wave failed, refill Continuous, below the limit: WaveFailed, Waiting",
			spec: []func(*qjv1.QueueJobSpec){continuous}, status: unfinished(),
			jobs:  []batchv1.Job{job(1, running(0, 0, 7), ended(batchv1.JobFailed, "BackoffLimitExceeded"))},
			probe: probed(0, 0), plan: waiting(qjv1.ReasonWaitingForItems),
			want: want{state: qjv1.StateWaiting, failedInARow: 1, events: []string{qjv1.EventWaveFailed}, conds: map[string]condWant{
				qjv1.ConditionFailed: {metav1.ConditionFalse, qjv1.ReasonNotFinished}}}},
		{name: "a wave failed, refill Continuous, at the limit: Failed",
			spec: []func(*qjv1.QueueJobSpec){continuous}, status: unfinished(failedBefore(2)),
			jobs:  []batchv1.Job{job(3, running(0, 0, 7), ended(batchv1.JobFailed, "BackoffLimitExceeded"))},
			probe: probed(4, 0), plan: &wavePlan{},
			want: want{state: qjv1.StateFailed, failedInARow: 3, inFlight: 0, events: []string{qjv1.EventFailed}, conds: map[string]condWant{
				qjv1.ConditionFailed: {metav1.ConditionTrue, "BackoffLimitExceeded"}}}},
		{name: "a wave succeeded after failed ones, refill Continuous: the count resets",
			spec: []func(*qjv1.QueueJobSpec){continuous}, status: unfinished(failedBefore(2)),
			jobs:  []batchv1.Job{job(3, running(0, 1, 0), ended(batchv1.JobComplete, "CompletionsReached"))},
			probe: probed(0, 0), plan: waiting(qjv1.ReasonWaitingForItems),
			want: want{state: qjv1.StateWaiting, succeeded: 1}},
		{name: "spec.suspend, no wave, items ready: Suspended",
			spec: []func(*qjv1.QueueJobSpec){suspend}, status: unfinished(), probe: probed(2, 0), plan: waiting(qjv1.ReasonSuspended),
			want: want{state: qjv1.StateSuspended, events: []string{qjv1.EventSuspended}, conds: map[string]condWant{
				qjv1.ConditionSuspended:   {metav1.ConditionTrue, qjv1.ReasonSuspended},
				qjv1.ConditionProgressing: {metav1.ConditionFalse, qjv1.ReasonSuspended}}}},
		{name: "spec.suspend set while a wave runs: Suspended",
			spec: []func(*qjv1.QueueJobSpec){suspend}, status: unfinished(), jobs: []batchv1.Job{job(1, running(0, 0, 0), jobSuspended)},
			probe: probed(2, 0), plan: &wavePlan{},
			want: want{state: qjv1.StateSuspended, events: []string{qjv1.EventSuspended}, conds: map[string]condWant{
				qjv1.ConditionSuspended:   {metav1.ConditionTrue, qjv1.ReasonSuspended},
				qjv1.ConditionProgressing: {metav1.ConditionFalse, qjv1.ReasonSuspended}}}},
		{name: "spec.suspend cleared: Resumed, Running",
			status: unfinished(suspendedStatus), jobs: []batchv1.Job{job(1, running(2, 0, 0))}, probe: probed(2, 0), plan: &wavePlan{},
			want: want{state: qjv1.StateRunning, events: []string{qjv1.EventResumed}, conds: map[string]condWant{
				qjv1.ConditionSuspended: {metav1.ConditionFalse, qjv1.ReasonNotSuspended}}}},
		{name: "spec.suspend, drained after a wave, refill Once: Complete all the same, no longer Suspended",
			spec: []func(*qjv1.QueueJobSpec){suspend}, status: unfinished(suspendedStatus),
			jobs:  []batchv1.Job{job(1, running(0, 1, 0), ended(batchv1.JobComplete, "CompletionsReached"))},
			probe: probed(0, 0), plan: completes(qjv1.ReasonQueueDrained),
			want: want{state: qjv1.StateComplete, succeeded: 1, events: []string{qjv1.EventCompleted}, conds: map[string]condWant{
				qjv1.ConditionComplete:  {metav1.ConditionTrue, qjv1.ReasonQueueDrained},
				qjv1.ConditionSuspended: {metav1.ConditionFalse, qjv1.ReasonNotSuspended}}}},
		{name: "a wave another controller holds suspended: Waiting, JobSuspendedByAnother",
			status: unfinished(), jobs: []batchv1.Job{job(1, jobSuspended)}, probe: probed(2, 0), plan: &wavePlan{},
			want: want{state: qjv1.StateWaiting, conds: map[string]condWant{
				qjv1.ConditionProgressing: {metav1.ConditionTrue, qjv1.ReasonJobSuspendedByAnother}}}},
		{name: "a template change while the wave runs: UpToDate=False NextWave, SpecChangePending",
			status: unfinished(), jobs: []batchv1.Job{job(1, running(2, 0, 0), builtFromAnOlderSpec)}, probe: probed(2, 0), plan: &wavePlan{},
			want: want{state: qjv1.StateRunning, events: []string{qjv1.EventSpecChangePending}, conds: map[string]condWant{
				qjv1.ConditionUpToDate: {metav1.ConditionFalse, qjv1.ReasonNextWave}}}},
		{name: "the running wave's Job deleted by hand: Waiting, its pod counts lost",
			status: unfinished(func(st *qjv1.QueueJobStatus) { st.Active, st.Succeeded, st.JobName = 2, 3, "pi-1" }),
			probe:  probed(0, 2), plan: waiting(qjv1.ReasonWaitingForItems),
			want: want{state: qjv1.StateWaiting, inFlight: 2, conds: map[string]condWant{
				qjv1.ConditionProgressing: {metav1.ConditionTrue, qjv1.ReasonWaitingForItems}}}},
		{name: "Failed with items in flight: the probes that reap them still count them",
			status: unfinished(func(st *qjv1.QueueJobStatus) {
				st.Conditions[1] = metav1.Condition{Type: qjv1.ConditionFailed, Status: metav1.ConditionTrue, Reason: "BackoffLimitExceeded"}
				st.Queue.InFlight = 2
			}),
			jobs:  []batchv1.Job{job(1, running(0, 0, 7), ended(batchv1.JobFailed, "BackoffLimitExceeded"))},
			probe: probed(1, 1),
			want: want{state: qjv1.StateFailed, inFlight: 1, conds: map[string]condWant{
				qjv1.ConditionFailed:      {metav1.ConditionTrue, "BackoffLimitExceeded"},
				qjv1.ConditionProgressing: {metav1.ConditionFalse, qjv1.ReasonFinished}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			qj := queueJob("ns", "pi", func(q *qjv1.QueueJob) {
				q.Spec.Queue = &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "r:1", Key: "k"}}
				for _, m := range tc.spec {
					m(&q.Spec)
				}
			})
			qj.Status = tc.status
			var archive []*batchv1.Job
			for _, i := range tc.archive {
				archive = append(archive, &tc.jobs[i])
			}
			got := observe(observeInput{qj: qj, jobs: tc.jobs, archive: archive, probe: tc.probe, plan: tc.plan, now: metav1.NewTime(now)})

			gotW := want{state: got.State, failedInARow: got.ConsecutiveFailedWaves, succeeded: got.Succeeded}
			if got.Queue != nil {
				gotW.drainedSince, gotW.inFlight = got.Queue.DrainedSince, got.Queue.InFlight
			}
			if got.Archived != nil {
				gotW.archived = got.Archived.Jobs
			}
			if tc.want.conds != nil {
				gotW.conds = map[string]condWant{}
				for typ := range tc.want.conds {
					if c := condition(&qjv1.QueueJob{Status: got}, typ); c != nil {
						gotW.conds[typ] = condWant{c.Status, c.Reason}
					}
				}
			}
			for _, e := range transitions(&qj.Status, &got) {
				gotW.events = append(gotW.events, e.reason)
			}
			if diff := cmp.Diff(tc.want, gotW, cmp.AllowUnexported(want{}, condWant{})); diff != "" {
				t.Errorf("observe (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDesiredParallelism: what syncJob sets on the running Job. A WorkerPool grows with its
// queue up to the template's parallelism and never shrinks on its own; a PerItem wave runs at
// most its completions; a parallelism edit applies to the running Job.
func TestDesiredParallelism(t *testing.T) {
	pool := func(parallelism int32) *qjv1.QueueJobSpec {
		return &qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}, Mode: qjv1.ModeWorkerPool,
			JobTemplate: qjv1.JobTemplateSpec{Spec: batchv1.JobSpec{Parallelism: ptr.To(parallelism)}}}
	}
	perItem := func(parallelism int32) *qjv1.QueueJobSpec {
		s := pool(parallelism)
		s.Mode = qjv1.ModePerItem
		return s
	}
	poolJob := &batchv1.Job{}
	perItemJob := &batchv1.Job{Spec: batchv1.JobSpec{Completions: ptr.To[int32](3)}}
	cases := []struct {
		name    string
		spec    *qjv1.QueueJobSpec
		job     *batchv1.Job
		applied int32
		probe   *probeResult
		want    int32
	}{
		{name: "a WorkerPool whose queue grew: more workers, up to the template's", spec: pool(5), job: poolJob, applied: 2,
			probe: &probeResult{counts: &queue.Counts{Ready: 3, InFlight: 1}}, want: 4},
		{name: "a WorkerPool whose queue grew past the template's parallelism: the template's", spec: pool(5), job: poolJob, applied: 2,
			probe: &probeResult{counts: &queue.Counts{Ready: 100}}, want: 5},
		{name: "a WorkerPool whose queue shrank: no fewer workers", spec: pool(5), job: poolJob, applied: 4,
			probe: &probeResult{counts: &queue.Counts{Ready: 1}}, want: 4},
		{name: "a WorkerPool whose template's parallelism was lowered: the new parallelism", spec: pool(2), job: poolJob, applied: 4,
			probe: &probeResult{counts: &queue.Counts{Ready: 10}}, want: 2},
		{name: "a WorkerPool, a failed probe: as applied, within the template's", spec: pool(5), job: poolJob, applied: 3,
			probe: &probeResult{err: queue.Errorf(queue.ReasonConnectionFailed, "x")}, want: 3},
		{name: "a PerItem wave: the template's parallelism, at most its completions", spec: perItem(5), job: perItemJob, applied: 1, want: 3},
		{name: "a PerItem wave whose template's parallelism was lowered", spec: perItem(2), job: perItemJob, applied: 3, want: 2},
		{name: "a WorkerPool wave under Kueue whose queue grew: as applied (Kueue would evict it)", spec: pool(5), job: kueueJobOf(poolJob, false),
			applied: 2, probe: &probeResult{counts: &queue.Counts{Ready: 3, InFlight: 1}}, want: 2},
		{name: "a WorkerPool wave under Kueue, not admitted yet (suspended), whose queue grew: as applied (Kueue would requeue it, and the wave keeps its partial admission)", spec: pool(5),
			job:     func() *batchv1.Job { j := kueueJobOf(poolJob, false); j.Spec.Suspend = ptr.To(true); return j }(),
			applied: 2, probe: &probeResult{counts: &queue.Counts{Ready: 3, InFlight: 1}}, want: 2},
		{name: "a PerItem wave under Kueue whose template's parallelism was lowered: as applied", spec: perItem(2), job: kueueJobOf(perItemJob, false),
			applied: 3, want: 3},
		{name: "an elastic WorkerPool wave under Kueue whose queue grew: more workers", spec: pool(5), job: kueueJobOf(poolJob, true),
			applied: 2, probe: &probeResult{counts: &queue.Counts{Ready: 3, InFlight: 1}}, want: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := desiredParallelism(tc.spec, tc.job, tc.applied, tc.probe); got != tc.want {
				t.Errorf("desiredParallelism = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestWaveTableNamesTests keeps the wave state machine table of docs/wave-state-machine.md
// honest: every row names at least one test, and every test it names exists: a Go test
// function (and, for TestName/"case", a string literal "case" inside it), or a Ginkgo
// It("text").
func TestWaveTableNamesTests(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "wave-state-machine.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## The wave state machine\n")
	if !ok {
		t.Fatal(`docs/wave-state-machine.md has no "## The wave state machine" section`)
	}
	if end := strings.Index(section, "\n#"); end >= 0 {
		section = section[:end]
	}

	// What the test files define: functions with the string literals in each, and It texts.
	funcs := map[string]map[string]bool{}
	its := map[string]bool{}
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	e2e, err := filepath.Glob("../test/e2e/*_test.go") // the specs that need a real cluster, or Kueue
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, e2e...)
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
				lits := map[string]bool{}
				ast.Inspect(fd, func(n ast.Node) bool {
					if bl, ok := n.(*ast.BasicLit); ok && bl.Kind == token.STRING {
						if s, err := strconv.Unquote(bl.Value); err == nil {
							lits[s] = true
						}
					}
					return true
				})
				funcs[fd.Name.Name] = lits
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			if id, ok := call.Fun.(*ast.Ident); ok && id.Name == "It" {
				if bl, ok := call.Args[0].(*ast.BasicLit); ok && bl.Kind == token.STRING {
					if s, err := strconv.Unquote(bl.Value); err == nil {
						its[s] = true
					}
				}
			}
			return true
		})
	}

	refRE := regexp.MustCompile("`([^`]+)`")
	goRE := regexp.MustCompile(`^(Test\w+)(?:/"(.+)")?$`)
	itRE := regexp.MustCompile(`^It\("(.+)"\)$`)
	rows := 0
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| state |") {
			continue
		}
		rows++
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 5 {
			t.Errorf("row with %d cells, want 5 (state | event | action | next state | test): %s", len(cells), line)
			continue
		}
		refs := refRE.FindAllStringSubmatch(cells[4], -1)
		if len(refs) == 0 {
			t.Errorf("row names no test: %s", line)
		}
		for _, ref := range refs {
			switch g, it := goRE.FindStringSubmatch(ref[1]), itRE.FindStringSubmatch(ref[1]); {
			case it != nil:
				if !its[it[1]] {
					t.Errorf("no Ginkgo spec It(%q), named in the row %q", it[1], cells[0]+" | "+cells[1])
				}
			case g != nil:
				lits, ok := funcs[g[1]]
				switch {
				case !ok:
					t.Errorf("no test function %s, named in the row %q", g[1], cells[0]+" | "+cells[1])
				case g[2] != "" && !lits[g[2]]:
					t.Errorf("%s has no case %q, named in the row %q", g[1], g[2], cells[0]+" | "+cells[1])
				}
			default:
				t.Errorf("cannot read the test reference %q in the row %q", ref[1], cells[0]+" | "+cells[1])
			}
		}
	}
	if rows == 0 {
		t.Error("the wave state machine section has no table rows")
	}
}

// TestWaveStateOf: the one place that reads a wave's state from its Job
// (docs/wave-state-machine.md), and what each state lets the phases do.
func TestWaveStateOf(t *testing.T) {
	suspendedJob := func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(true) }
	resumedJob := func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(false) }
	endedByTheOperator := func(j *batchv1.Job) {
		j.Annotations = map[string]string{qjv1.AnnotationWaveEnded: "2026-11-27T13:00:00Z"}
		j.Spec.Suspend = ptr.To(true)
	}
	type got struct {
		State                                       waveState
		Runs, JobRuns, CreatesPods, EndedByOperator bool
	}
	for _, tc := range []struct {
		name          string
		job           *batchv1.Job // nil: no current Job
		specSuspended bool
		want          got
	}{
		{name: "no Job: None", want: got{State: waveNone}},
		{name: "a Job that runs: Running", job: ptr.To(job(1, running(2, 0, 0))),
			want: got{State: waveRunning, Runs: true, JobRuns: true, CreatesPods: true}},
		{name: "a Job that runs, spec.suspend set but not carried to it yet: Running", job: ptr.To(job(1, running(2, 0, 0))), specSuspended: true,
			want: got{State: waveRunning, Runs: true, JobRuns: true, CreatesPods: true}},
		{name: "a Job suspended by another controller: Held", job: ptr.To(job(1, suspendedJob)),
			want: got{State: waveHeld, Runs: true, JobRuns: true}},
		{name: "a Job suspended under spec.suspend: Suspended", job: ptr.To(job(1, suspendedJob)), specSuspended: true,
			want: got{State: waveSuspended, Runs: true, JobRuns: true}},
		{name: "a wave the operator ended, its pods stopping: Ending", job: ptr.To(job(1, running(2, 0, 0), endedByTheOperator)),
			want: got{State: waveEnding, JobRuns: true, EndedByOperator: true}},
		{name: "an ended wave that another controller resumed: Ending, its pods created", job: ptr.To(job(1, endedByTheOperator, resumedJob)),
			want: got{State: waveEnding, JobRuns: true, CreatesPods: true, EndedByOperator: true}},
		{name: "an ended wave whose Job then completed: Ended", job: ptr.To(job(1, endedByTheOperator, ended(batchv1.JobComplete, "CompletionsReached"))),
			want: got{State: waveEndedFinished, EndedByOperator: true}},
		{name: "an ended wave whose Job then failed: Ended, no failure", job: ptr.To(job(1, endedByTheOperator, ended(batchv1.JobFailed, "BackoffLimitExceeded"))),
			want: got{State: waveEndedFinished, EndedByOperator: true}},
		{name: "a Job that completed: Complete", job: ptr.To(job(1, ended(batchv1.JobComplete, "CompletionsReached"))),
			want: got{State: waveComplete}},
		{name: "a Job that failed: Failed", job: ptr.To(job(1, ended(batchv1.JobFailed, "BackoffLimitExceeded"))),
			want: got{State: waveFailed}},
		{name: "a suspended Job that failed (its deadline passed): Failed", job: ptr.To(job(1, suspendedJob, ended(batchv1.JobFailed, "DeadlineExceeded"))),
			want: got{State: waveFailed}},
		{name: "a Job whose terminal condition is False: Running", job: ptr.To(job(1, func(j *batchv1.Job) {
			j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: "False"}}
		})), want: got{State: waveRunning, Runs: true, JobRuns: true, CreatesPods: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := &qjv1.QueueJobSpec{}
			if tc.specSuspended {
				spec.Suspend = ptr.To(true)
			}
			w := waveOf(tc.job, spec)
			g := got{State: w.state, Runs: w.state.runs(), JobRuns: w.state.jobRuns(), CreatesPods: w.createsPods(),
				EndedByOperator: w.state.endedByOperator()}
			if diff := cmp.Diff(tc.want, g); diff != "" {
				t.Errorf("waveOf (-want +got):\n%s", diff)
			}
			if w.job != tc.job {
				t.Errorf("waveOf kept Job %v, want %v", w.job, tc.job)
			}
		})
	}
}
