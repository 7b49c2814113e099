package controllers

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

var (
	t0    = metav1.NewTime(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	tDone = metav1.NewTime(t0.Add(time.Minute))
)

func job(wave int32, mutate ...func(*batchv1.Job)) batchv1.Job {
	j := batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: jobName("pi", wave), Labels: map[string]string{qjv1.LabelWave: itoa(wave)}}}
	for _, m := range mutate {
		m(&j)
	}
	return j
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

func running(active, succeeded, failed int32) func(*batchv1.Job) {
	return func(j *batchv1.Job) {
		j.Status.StartTime = &t0
		j.Status.Active, j.Status.Succeeded, j.Status.Failed = active, succeeded, failed
	}
}

func ended(condType batchv1.JobConditionType, reason string) func(*batchv1.Job) {
	return func(j *batchv1.Job) {
		j.Status.Conditions = append(j.Status.Conditions, batchv1.JobCondition{
			Type: condType, Status: corev1.ConditionTrue, Reason: reason, Message: "m", LastTransitionTime: tDone})
	}
}

// conds is a compact want-list of conditions: type -> status/reason.
type condWant struct {
	status metav1.ConditionStatus
	reason string
}

func TestObserve(t *testing.T) {
	type want struct {
		active, succeeded, failed int32
		jobName                   string
		waves                     int32
		start, completion         *metav1.Time
		conds                     map[string]condWant
	}
	notFinished := map[string]condWant{
		qjv1.ConditionComplete:  {metav1.ConditionFalse, qjv1.ReasonNotFinished},
		qjv1.ConditionFailed:    {metav1.ConditionFalse, qjv1.ReasonNotFinished},
		qjv1.ConditionSuspended: {metav1.ConditionFalse, qjv1.ReasonNotSuspended},
		qjv1.ConditionUpToDate:  {metav1.ConditionTrue, qjv1.ReasonUpToDate},
	}
	with := func(base map[string]condWant, extra map[string]condWant) map[string]condWant {
		out := map[string]condWant{}
		for k, v := range base {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	completedStatus := qjv1.QueueJobStatus{
		Succeeded: 3, JobName: "pi-1", Waves: 1, CompletionTime: &tDone,
		Archived: &qjv1.ArchivedJobs{Succeeded: 3, Jobs: []string{"pi-1"}},
		Conditions: []metav1.Condition{
			{Type: qjv1.ConditionComplete, Status: metav1.ConditionTrue, Reason: "CompletionsReached", LastTransitionTime: tDone},
			{Type: qjv1.ConditionFailed, Status: metav1.ConditionFalse, Reason: "CompletionsReached", LastTransitionTime: tDone},
		},
	}
	cases := []struct {
		name    string
		spec    func(*qjv1.QueueJobSpec)
		status  qjv1.QueueJobStatus
		jobs    []batchv1.Job
		problem *progressProblem
		want    want
	}{
		{
			name: "no Job yet",
			want: want{conds: notFinished},
		},
		{
			name: "running Job",
			jobs: []batchv1.Job{job(1, running(2, 1, 1))},
			want: want{active: 2, succeeded: 1, failed: 1, jobName: "pi-1", waves: 1, start: &t0,
				conds: with(notFinished, map[string]condWant{qjv1.ConditionProgressing: {metav1.ConditionTrue, qjv1.ReasonJobRunning}})},
		},
		{
			name: "Job complete: the Job's reason and finish time",
			jobs: []batchv1.Job{job(1, running(0, 3, 0), ended(batchv1.JobSuccessCriteriaMet, "CompletionsReached"), ended(batchv1.JobComplete, "CompletionsReached"))},
			want: want{succeeded: 3, jobName: "pi-1", waves: 1, start: &t0, completion: &tDone, conds: map[string]condWant{
				qjv1.ConditionComplete:    {metav1.ConditionTrue, "CompletionsReached"},
				qjv1.ConditionFailed:      {metav1.ConditionFalse, "CompletionsReached"},
				qjv1.ConditionSuspended:   {metav1.ConditionFalse, qjv1.ReasonNotSuspended},
				qjv1.ConditionUpToDate:    {metav1.ConditionTrue, qjv1.ReasonUpToDate},
				qjv1.ConditionProgressing: {metav1.ConditionFalse, qjv1.ReasonFinished},
			}},
		},
		{
			name: "Job failed without a reason",
			jobs: []batchv1.Job{job(1, running(0, 0, 7), ended(batchv1.JobFailed, ""))},
			want: want{failed: 7, jobName: "pi-1", waves: 1, start: &t0, completion: &tDone, conds: map[string]condWant{
				qjv1.ConditionComplete:    {metav1.ConditionFalse, qjv1.ReasonJobFailed},
				qjv1.ConditionFailed:      {metav1.ConditionTrue, qjv1.ReasonJobFailed},
				qjv1.ConditionSuspended:   {metav1.ConditionFalse, qjv1.ReasonNotSuspended},
				qjv1.ConditionUpToDate:    {metav1.ConditionTrue, qjv1.ReasonUpToDate},
				qjv1.ConditionProgressing: {metav1.ConditionFalse, qjv1.ReasonFinished},
			}},
		},
		{
			name:   "finished and the Job deleted by the TTL: counts and conditions stay",
			status: completedStatus,
			want: want{succeeded: 3, jobName: "pi-1", waves: 1, completion: &tDone, conds: map[string]condWant{
				qjv1.ConditionComplete:    {metav1.ConditionTrue, "CompletionsReached"},
				qjv1.ConditionFailed:      {metav1.ConditionFalse, "CompletionsReached"},
				qjv1.ConditionSuspended:   {metav1.ConditionFalse, qjv1.ReasonNotSuspended},
				qjv1.ConditionUpToDate:    {metav1.ConditionTrue, qjv1.ReasonUpToDate},
				qjv1.ConditionProgressing: {metav1.ConditionFalse, qjv1.ReasonFinished},
			}},
		},
		{
			name:   "an archived Job still present is counted once",
			status: qjv1.QueueJobStatus{Archived: &qjv1.ArchivedJobs{Succeeded: 4, Failed: 1, Jobs: []string{"pi-1"}}, Waves: 2},
			jobs:   []batchv1.Job{job(1, running(0, 4, 1), ended(batchv1.JobComplete, "CompletionsReached")), job(2, running(1, 2, 0))},
			want: want{active: 1, succeeded: 6, failed: 1, jobName: "pi-2", waves: 2, start: &t0,
				conds: with(notFinished, map[string]condWant{qjv1.ConditionProgressing: {metav1.ConditionTrue, qjv1.ReasonJobRunning}})},
		},
		{
			name: "suspended",
			spec: func(s *qjv1.QueueJobSpec) { s.Suspend = ptr.To(true) },
			jobs: []batchv1.Job{job(1)},
			want: want{jobName: "pi-1", waves: 1, conds: with(notFinished, map[string]condWant{
				qjv1.ConditionSuspended:   {metav1.ConditionTrue, qjv1.ReasonSuspended},
				qjv1.ConditionProgressing: {metav1.ConditionFalse, qjv1.ReasonSuspended},
			})},
		},
		{
			name:    "a refused Job is reported",
			problem: &progressProblem{reason: qjv1.ReasonJobCreateFailed, message: "refused"},
			want: want{conds: with(notFinished, map[string]condWant{
				qjv1.ConditionProgressing: {metav1.ConditionFalse, qjv1.ReasonJobCreateFailed},
			})},
		},
		{
			name: "counts add up over waves; the latest is current",
			jobs: []batchv1.Job{job(1, running(0, 4, 1)), job(2, running(3, 2, 0))},
			want: want{active: 3, succeeded: 6, failed: 1, jobName: "pi-2", waves: 2, start: &t0,
				conds: with(notFinished, map[string]condWant{qjv1.ConditionProgressing: {metav1.ConditionTrue, qjv1.ReasonJobRunning}})},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			qj := &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Name: "pi", Generation: 4}, Status: tc.status}
			if tc.spec != nil {
				tc.spec(&qj.Spec)
			}
			read := qj.DeepCopy()
			got := observe(observeInput{qj: qj, jobs: tc.jobs, problem: tc.problem})

			gotConds := map[string]condWant{}
			for _, c := range got.Conditions {
				gotConds[c.Type] = condWant{c.Status, c.Reason}
				if c.ObservedGeneration != 4 {
					t.Errorf("condition %s has observedGeneration %d, want 4", c.Type, c.ObservedGeneration)
				}
			}
			gotW := want{got.Active, got.Succeeded, got.Failed, got.JobName, got.Waves, got.StartTime, got.CompletionTime, gotConds}
			if diff := cmp.Diff(tc.want, gotW, cmp.AllowUnexported(want{}, condWant{})); diff != "" {
				t.Errorf("observe (-want +got):\n%s", diff)
			}
			if got.ObservedGeneration != 4 {
				t.Errorf("observedGeneration = %d, want 4", got.ObservedGeneration)
			}
			if diff := cmp.Diff(read, qj); diff != "" {
				t.Errorf("observe changed its input (-before +after):\n%s", diff)
			}
			again := observe(observeInput{qj: &qjv1.QueueJob{ObjectMeta: qj.ObjectMeta, Spec: qj.Spec, Status: got}, jobs: tc.jobs, problem: tc.problem})
			if diff := cmp.Diff(got, again, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("observe is not stable: a second pass changed the status (-first +second):\n%s", diff)
			}
		})
	}
}

func TestTransitions(t *testing.T) {
	st := func(conds ...metav1.Condition) *qjv1.QueueJobStatus { return &qjv1.QueueJobStatus{Conditions: conds} }
	c := func(typ string, s metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: "msg"}
	}
	cases := []struct {
		name     string
		old, cur *qjv1.QueueJobStatus
		want     []string
	}{
		{name: "nothing changed", old: st(c(qjv1.ConditionComplete, "False", "NotFinished")), cur: st(c(qjv1.ConditionComplete, "False", "NotFinished"))},
		{name: "completed", old: st(c(qjv1.ConditionComplete, "False", "NotFinished")), cur: st(c(qjv1.ConditionComplete, "True", "CompletionsReached")),
			want: []string{qjv1.EventCompleted}},
		{name: "still complete", old: st(c(qjv1.ConditionComplete, "True", "CompletionsReached")), cur: st(c(qjv1.ConditionComplete, "True", "CompletionsReached"))},
		{name: "failed", old: st(), cur: st(c(qjv1.ConditionFailed, "True", "BackoffLimitExceeded")), want: []string{qjv1.EventFailed}},
		{name: "suspended", old: st(c(qjv1.ConditionSuspended, "False", "NotSuspended")), cur: st(c(qjv1.ConditionSuspended, "True", "Suspended")),
			want: []string{qjv1.EventSuspended}},
		{name: "resumed", old: st(c(qjv1.ConditionSuspended, "True", "Suspended")), cur: st(c(qjv1.ConditionSuspended, "False", "NotSuspended")),
			want: []string{qjv1.EventResumed}},
		{name: "Job refused", old: st(c(qjv1.ConditionProgressing, "True", "JobRunning")), cur: st(c(qjv1.ConditionProgressing, "False", qjv1.ReasonJobCreateFailed)),
			want: []string{qjv1.EventJobCreateFailed}},
		{name: "Job still refused", old: st(c(qjv1.ConditionProgressing, "False", qjv1.ReasonJobCreateFailed)), cur: st(c(qjv1.ConditionProgressing, "False", qjv1.ReasonJobCreateFailed))},
		{name: "a spec change waits for the next wave", old: st(c(qjv1.ConditionUpToDate, "True", qjv1.ReasonUpToDate)), cur: st(c(qjv1.ConditionUpToDate, "False", qjv1.ReasonNextWave)),
			want: []string{qjv1.EventSpecChangePending}},
		{name: "a spec change still waits", old: st(c(qjv1.ConditionUpToDate, "False", qjv1.ReasonNextWave)), cur: st(c(qjv1.ConditionUpToDate, "False", qjv1.ReasonNextWave))},
		{name: "finished is no Progressing warning", old: st(c(qjv1.ConditionProgressing, "True", "JobRunning")), cur: st(c(qjv1.ConditionProgressing, "False", qjv1.ReasonFinished))},
		// The wave state machine (docs/wave-state-machine.md).
		{name: "a wave failed under refill Continuous below the limit: WaveFailed",
			old:  &qjv1.QueueJobStatus{Conditions: []metav1.Condition{c(qjv1.ConditionFailed, "False", qjv1.ReasonNotFinished)}},
			cur:  &qjv1.QueueJobStatus{ConsecutiveFailedWaves: 1, LastFinishedWave: 1, Conditions: []metav1.Condition{c(qjv1.ConditionFailed, "False", qjv1.ReasonNotFinished)}},
			want: []string{qjv1.EventWaveFailed}},
		{name: "the failed wave that reaches the limit: Failed, no WaveFailed",
			old:  &qjv1.QueueJobStatus{ConsecutiveFailedWaves: 1, Conditions: []metav1.Condition{c(qjv1.ConditionFailed, "False", qjv1.ReasonNotFinished)}},
			cur:  &qjv1.QueueJobStatus{ConsecutiveFailedWaves: 2, Conditions: []metav1.Condition{c(qjv1.ConditionFailed, "True", "BackoffLimitExceeded")}},
			want: []string{qjv1.EventFailed}},
		{name: "a successful wave resets the count: no event",
			old: &qjv1.QueueJobStatus{ConsecutiveFailedWaves: 1}, cur: &qjv1.QueueJobStatus{ConsecutiveFailedWaves: 0}},
		{name: "a probe failed: QueueUnreachable", old: st(c(qjv1.ConditionQueueReachable, "True", qjv1.ReasonProbed)), cur: st(c(qjv1.ConditionQueueReachable, "False", "ConnectionFailed")),
			want: []string{qjv1.EventQueueUnreachable}},
		{name: "a probe failed for another reason: QueueUnreachable again", old: st(c(qjv1.ConditionQueueReachable, "False", "ConnectionFailed")), cur: st(c(qjv1.ConditionQueueReachable, "False", "AuthFailed")),
			want: []string{qjv1.EventQueueUnreachable}},
		{name: "a probe succeeded again: QueueReachable", old: st(c(qjv1.ConditionQueueReachable, "False", "ConnectionFailed")), cur: st(c(qjv1.ConditionQueueReachable, "True", qjv1.ReasonProbed)),
			want: []string{qjv1.EventQueueReachable}},
		{name: "failed because items were dead-lettered: one ItemsDeadLettered warning, no Failed",
			old: st(c(qjv1.ConditionFailed, "False", qjv1.ReasonNotFinished)), cur: st(c(qjv1.ConditionFailed, "True", qjv1.ReasonItemsDeadLettered)),
			want: []string{qjv1.EventItemsDeadLettered}},
		{name: "completed with items dead-lettered during the run (policy Complete): Completed and an ItemsDeadLettered warning",
			old: st(c(qjv1.ConditionComplete, "False", qjv1.ReasonNotFinished)),
			cur: &qjv1.QueueJobStatus{Queue: &qjv1.QueueStatus{DeadLettered: 5, DeadLetteredAtStart: ptr.To[int64](2)},
				Conditions: []metav1.Condition{c(qjv1.ConditionComplete, "True", qjv1.ReasonQueueDrained)}},
			want: []string{qjv1.EventCompleted, qjv1.EventItemsDeadLettered}},
		{name: "completed with only earlier runs' items dead-lettered: Completed alone",
			old: st(c(qjv1.ConditionComplete, "False", qjv1.ReasonNotFinished)),
			cur: &qjv1.QueueJobStatus{Queue: &qjv1.QueueStatus{DeadLettered: 5, DeadLetteredAtStart: ptr.To[int64](5)},
				Conditions: []metav1.Condition{c(qjv1.ConditionComplete, "True", qjv1.ReasonQueueDrained)}},
			want: []string{qjv1.EventCompleted}},
		{name: "completed while suspended: Completed, no Resumed",
			old:  st(c(qjv1.ConditionComplete, "False", qjv1.ReasonNotFinished), c(qjv1.ConditionSuspended, "True", qjv1.ReasonSuspended)),
			cur:  st(c(qjv1.ConditionComplete, "True", qjv1.ReasonQueueDrained), c(qjv1.ConditionSuspended, "False", qjv1.ReasonNotSuspended)),
			want: []string{qjv1.EventCompleted}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, e := range transitions(tc.old, tc.cur) {
				got = append(got, e.reason)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("transitions (-want +got):\n%s", diff)
			}
		})
	}
}

// TestObserveSummary: the one-word state, the mode, the completions and the duration that
// kubectl get shows, and the UpToDate condition.
func TestObserveSummary(t *testing.T) {
	plain := func(*qjv1.QueueJob) {}
	queued := func(q *qjv1.QueueJob) {
		q.Spec.Queue = &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "r:1", Key: "k"}}
	}
	built := func(q *qjv1.QueueJob) func(*batchv1.Job) {
		return func(j *batchv1.Job) {
			j.Annotations = map[string]string{qjv1.AnnotationTemplateHash: templateHash(&q.Spec)}
		}
	}
	sized := func(completions *int32, parallelism int32) func(*batchv1.Job) {
		return func(j *batchv1.Job) { j.Spec.Completions, j.Spec.Parallelism = completions, ptr.To(parallelism) }
	}
	type want struct {
		state             qjv1.State
		mode, completions string
		duration          string
		upToDate          metav1.ConditionStatus
		progressing       string
	}
	cases := []struct {
		name   string
		qj     func(*qjv1.QueueJob)
		status qjv1.QueueJobStatus
		jobs   func(q *qjv1.QueueJob) []batchv1.Job
		want   want
	}{
		{name: "no Job yet: waiting", qj: plain, jobs: func(*qjv1.QueueJob) []batchv1.Job { return nil },
			want: want{state: qjv1.StateWaiting, mode: qjv1.ModeJob, upToDate: metav1.ConditionTrue}},
		{name: "a plain Job running", qj: plain,
			jobs: func(q *qjv1.QueueJob) []batchv1.Job {
				return []batchv1.Job{job(1, running(1, 2, 0), sized(ptr.To[int32](5), 1), built(q))}
			},
			want: want{state: qjv1.StateRunning, mode: qjv1.ModeJob, completions: "2/5", upToDate: metav1.ConditionTrue, progressing: qjv1.ReasonJobRunning}},
		{name: "a WorkerPool wave shows completions as kubectl get jobs does", qj: func(q *qjv1.QueueJob) { queued(q); q.Spec.Mode = qjv1.ModeWorkerPool },
			jobs: func(q *qjv1.QueueJob) []batchv1.Job {
				return []batchv1.Job{job(1, running(3, 1, 0), sized(nil, 4), built(q))}
			},
			want: want{state: qjv1.StateRunning, mode: "WorkerPool", completions: "1/1 of 4", upToDate: metav1.ConditionTrue, progressing: qjv1.ReasonWaveRunning}},
		{name: "a template changed since the wave started: not up to date", qj: queued,
			jobs: func(q *qjv1.QueueJob) []batchv1.Job {
				old := q.DeepCopy()
				old.Spec.JobTemplate.Spec.BackoffLimit = ptr.To[int32](9)
				return []batchv1.Job{job(1, running(1, 0, 0), sized(ptr.To[int32](2), 1), built(old))}
			},
			want: want{state: qjv1.StateRunning, mode: "PerItem", completions: "0/2", upToDate: metav1.ConditionFalse, progressing: qjv1.ReasonWaveRunning}},
		{name: "a Job another controller holds suspended: waiting", qj: queued,
			jobs: func(q *qjv1.QueueJob) []batchv1.Job {
				return []batchv1.Job{job(1, sized(ptr.To[int32](2), 1), built(q), func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(true) })}
			},
			want: want{state: qjv1.StateWaiting, mode: "PerItem", completions: "0/2", upToDate: metav1.ConditionTrue, progressing: qjv1.ReasonJobSuspendedByAnother}},
		{name: "suspended by spec.suspend", qj: func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(true) },
			jobs: func(q *qjv1.QueueJob) []batchv1.Job {
				return []batchv1.Job{job(1, sized(nil, 1), built(q), func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(true) })}
			},
			want: want{state: qjv1.StateSuspended, mode: qjv1.ModeJob, completions: "0/1 of 1", upToDate: metav1.ConditionTrue, progressing: qjv1.ReasonSuspended}},
		{name: "complete, with its duration", qj: plain,
			jobs: func(q *qjv1.QueueJob) []batchv1.Job {
				return []batchv1.Job{job(1, running(0, 1, 0), sized(ptr.To[int32](1), 1), built(q), ended(batchv1.JobComplete, "CompletionsReached"))}
			},
			want: want{state: qjv1.StateComplete, mode: qjv1.ModeJob, completions: "1/1", duration: "60s", upToDate: metav1.ConditionTrue, progressing: qjv1.ReasonFinished}},
		{name: "failed", qj: plain,
			jobs: func(q *qjv1.QueueJob) []batchv1.Job {
				return []batchv1.Job{job(1, running(0, 0, 3), sized(ptr.To[int32](1), 1), built(q), ended(batchv1.JobFailed, "BackoffLimitExceeded"))}
			},
			want: want{state: qjv1.StateFailed, mode: qjv1.ModeJob, completions: "0/1", duration: "60s", upToDate: metav1.ConditionTrue, progressing: qjv1.ReasonFinished}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			qj := queueJob("ns", "pi", tc.qj)
			qj.Status = tc.status
			got := observe(observeInput{qj: qj, jobs: tc.jobs(qj)})
			gotW := want{state: got.State, mode: got.Mode, completions: got.Completions, duration: got.Duration}
			for _, c := range got.Conditions {
				switch c.Type {
				case qjv1.ConditionUpToDate:
					gotW.upToDate = c.Status
				case qjv1.ConditionProgressing:
					gotW.progressing = c.Reason
				}
			}
			if diff := cmp.Diff(tc.want, gotW, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("observe (-want +got):\n%s", diff)
			}
		})
	}
}

// TestObserveQueueNoHeartbeat: an idle QueueJob whose probes keep counting the same items
// gets no status write, however long it waits: with 1 000 idle QueueJobs a periodic
// lastProbeTime alone would be 2 000 writes a minute at a 30 s period, a third of the
// manager's whole API budget (it was all of it at client-go's default 20 requests a
// second). lastProbeTime moves only with what it dates.
func TestObserveQueueNoHeartbeat(t *testing.T) {
	start := metav1.NewTime(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	counts := func(ready, inFlight int64) *probeResult {
		return &probeResult{counts: &queue.Counts{Ready: ready, InFlight: inFlight}}
	}
	later := func(d time.Duration) metav1.Time { return metav1.NewTime(start.Add(d)) }
	cases := []struct {
		name   string
		status qjv1.QueueJobStatus
		probe  *probeResult
		now    metav1.Time
		want   *metav1.Time
	}{
		{name: "first probe dates the counts", probe: counts(0, 0), now: start, want: &start},
		{name: "same counts an hour later: no write",
			status: qjv1.QueueJobStatus{Queue: &qjv1.QueueStatus{LastProbeTime: &start}},
			probe:  counts(0, 0), now: later(time.Hour), want: &start},
		{name: "changed counts are dated",
			status: qjv1.QueueJobStatus{Queue: &qjv1.QueueStatus{LastProbeTime: &start}},
			probe:  counts(3, 0), now: later(time.Minute), want: ptr.To(later(time.Minute))},
		{name: "the first probe after the QueueJob finished is dated, so that stranded items can be ruled out",
			status: qjv1.QueueJobStatus{CompletionTime: ptr.To(later(time.Minute)), Queue: &qjv1.QueueStatus{LastProbeTime: &start}},
			probe:  counts(0, 0), now: later(2 * time.Minute), want: ptr.To(later(2 * time.Minute))},
		{name: "then no more",
			status: qjv1.QueueJobStatus{CompletionTime: ptr.To(later(time.Minute)), Queue: &qjv1.QueueStatus{LastProbeTime: ptr.To(later(2 * time.Minute))}},
			probe:  counts(0, 0), now: later(time.Hour), want: ptr.To(later(2 * time.Minute))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := *c.status.DeepCopy()
			qj := &qjv1.QueueJob{Status: c.status}
			observeQueue(&st, 1, observeInput{qj: qj, probe: c.probe, now: c.now})
			if st.Queue == nil {
				t.Fatal("no status.queue")
			}
			if !ptr.Equal(st.Queue.LastProbeTime, c.want) {
				t.Errorf("lastProbeTime = %v, want %v", st.Queue.LastProbeTime, c.want)
			}
		})
	}
}

// TestObserveRedelivered: the redelivered count of a probe goes into the status, and a
// change of it alone dates the counts.
func TestObserveRedelivered(t *testing.T) {
	start := metav1.NewTime(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	later := metav1.NewTime(start.Add(time.Minute))
	st := qjv1.QueueJobStatus{Queue: &qjv1.QueueStatus{InFlight: 1, LastProbeTime: &start}}
	qj := &qjv1.QueueJob{Status: *st.DeepCopy()}
	observeQueue(&st, 1, observeInput{qj: qj, probe: &probeResult{counts: &queue.Counts{InFlight: 1, Redelivered: 1}}, now: later})
	if st.Queue.Redelivered != 1 || !ptr.Equal(st.Queue.LastProbeTime, &later) {
		t.Errorf("status.queue = redelivered %d, lastProbeTime %v; want 1, %v", st.Queue.Redelivered, st.Queue.LastProbeTime, later)
	}
}

// TestObserveDeadLettered: the dead-letter count of every probe, the count of the first
// recorded once, and a plan that fails the QueueJob.
func TestObserveDeadLettered(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	probed := func(dead int64) *probeResult { return &probeResult{counts: &queue.Counts{DeadLettered: dead}} }
	fail := &wavePlan{fail: &progressProblem{qjv1.ReasonItemsDeadLettered, "3 items were dead-lettered"}}
	type want struct {
		deadLettered int64
		atStart      *int64
		state        qjv1.State
		failed       *metav1.Condition
		completion   *metav1.Time
	}
	cases := []struct {
		name   string
		status qjv1.QueueJobStatus
		probe  *probeResult
		plan   *wavePlan
		want   want
	}{
		{name: "the first probe records the count at the start", probe: probed(4),
			want: want{deadLettered: 4, atStart: ptr.To[int64](4), state: qjv1.StateWaiting}},
		{name: "later probes move the gauge, not the start",
			status: qjv1.QueueJobStatus{Queue: &qjv1.QueueStatus{DeadLettered: 4, DeadLetteredAtStart: ptr.To[int64](4)}},
			probe:  probed(7), want: want{deadLettered: 7, atStart: ptr.To[int64](4), state: qjv1.StateWaiting}},
		{name: "a status of an older operator, counts without a start: the next probe records it",
			status: qjv1.QueueJobStatus{Queue: &qjv1.QueueStatus{Ready: 1}},
			probe:  probed(2), want: want{deadLettered: 2, atStart: ptr.To[int64](2), state: qjv1.StateWaiting}},
		{name: "a failed probe records nothing",
			status: qjv1.QueueJobStatus{Queue: &qjv1.QueueStatus{DeadLettered: 4, DeadLetteredAtStart: ptr.To[int64](1)}},
			probe:  &probeResult{err: queue.Errorf(queue.ReasonConnectionFailed, "down")},
			want:   want{deadLettered: 4, atStart: ptr.To[int64](1), state: qjv1.StateWaiting}},
		{name: "a plan to fail: Failed with its reason and message, finished now",
			status: qjv1.QueueJobStatus{Queue: &qjv1.QueueStatus{DeadLettered: 0, DeadLetteredAtStart: ptr.To[int64](0)}},
			probe:  probed(3), plan: fail,
			want: want{deadLettered: 3, atStart: ptr.To[int64](0), state: qjv1.StateFailed, completion: &now,
				failed: &metav1.Condition{Type: qjv1.ConditionFailed, Status: metav1.ConditionTrue, Reason: qjv1.ReasonItemsDeadLettered,
					Message: "3 items were dead-lettered", ObservedGeneration: 2, LastTransitionTime: now}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			qj := &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Name: "q", Generation: 2}, Status: tc.status,
				Spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Key: "jobs"}}}}
			st := observe(observeInput{qj: qj, probe: tc.probe, plan: tc.plan, now: now})
			got := want{deadLettered: st.Queue.DeadLettered, atStart: st.Queue.DeadLetteredAtStart, state: st.State, completion: st.CompletionTime}
			if tc.want.failed != nil {
				got.failed = meta.FindStatusCondition(st.Conditions, qjv1.ConditionFailed)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("observe (-want +got):\n%s", diff)
			}
		})
	}
}

// The dead-letter baseline: the status's, else the one recorded on the first Job that has
// it (a lost status write), else this probe's count; and it only falls.
func TestDeadLetteredAtStart(t *testing.T) {
	annotated := func(wave int32, v string) batchv1.Job {
		return job(wave, func(j *batchv1.Job) {
			j.Annotations = map[string]string{qjv1.AnnotationDeadLetteredAtStart: v}
		})
	}
	cases := []struct {
		name   string
		status *qjv1.QueueStatus
		jobs   []batchv1.Job
		now    int64
		want   int64
	}{
		{name: "first probe: its count", now: 4, want: 4},
		{name: "the status's", status: &qjv1.QueueStatus{DeadLetteredAtStart: ptr.To[int64](2)}, jobs: []batchv1.Job{annotated(1, "1")}, now: 7, want: 2},
		{name: "status write lost: the first Job's", status: &qjv1.QueueStatus{}, jobs: []batchv1.Job{job(1), annotated(2, "3"), annotated(3, "5")}, now: 9, want: 3},
		{name: "a Job's annotation that does not parse is passed over", jobs: []batchv1.Job{annotated(1, "x"), annotated(2, "3")}, now: 9, want: 3},
		{name: "items taken out (qj requeue): it falls", status: &qjv1.QueueStatus{DeadLetteredAtStart: ptr.To[int64](3)}, now: 0, want: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := deadLetteredAtStart(tc.status, tc.jobs, queue.Counts{DeadLettered: tc.now}); got != tc.want {
				t.Errorf("deadLetteredAtStart = %d, want %d", got, tc.want)
			}
		})
	}
}
