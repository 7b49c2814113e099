package controllers

import (
	"fmt"
	"slices"
	"strconv"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// progressProblem is a reason and message for a condition: why the QueueJob cannot make
// progress (a Job the API server refused), or why it finished or waits.
type progressProblem struct {
	reason, message string
}

// observeInput is everything observe needs.
type observeInput struct {
	// qj is the QueueJob as read.
	qj *qjv1.QueueJob
	// jobs are its Jobs sorted by wave; archive are the ones this reconcile archives.
	jobs    []batchv1.Job
	archive []*batchv1.Job
	problem *progressProblem
	// probe and plan are set for QueueJobs with a queue, when it was probed.
	probe *probeResult
	plan  *wavePlan
	// reclaimed is added to status.queue.reclaimed.
	reclaimed int64
	now       metav1.Time
}

func observeInputFrom(s *scope) observeInput {
	return observeInput{qj: s.read, jobs: s.jobs, archive: s.archive, problem: s.problem, probe: s.probe, plan: s.plan,
		reclaimed: s.reclaimed, now: metav1.NewTime(s.now)}
}

// observe computes the QueueJob's new status. It is pure: the same input gives the same
// status, which is what lets the reconciler skip the status write when nothing changed.
// Counts survive the deletion of pods and Jobs: the Job controller keeps counting deleted
// pods, and the counts of Jobs that cleanup deletes move to status.archived first. Each
// managed condition has its setter, as Cluster API's status code does.
func observe(in observeInput) qjv1.QueueJobStatus {
	qj := in.qj
	st := *qj.Status.DeepCopy()
	gen := qj.Generation
	st.ObservedGeneration = gen

	current := waveOf(archiveAndCount(&st, in), &qj.Spec)
	observeJobs(&st, in.jobs)
	if !isFinished(&st) {
		decideFinish(&st, gen, in)
	}
	if qj.Spec.Queue != nil {
		observeQueue(&st, gen, in)
		addReclaimed(&st, in.reclaimed)
	}

	done := isFinished(&st)
	suspended := qj.Spec.IsSuspended() && !done
	setFinishedConditions(&st, gen, done)
	setSuspendedCondition(&st, gen, suspended)
	setProgressingCondition(&st, gen, in, current, done, suspended)
	setUpToDateCondition(&st, gen, qj, current)
	summarize(&st, in, current, done, suspended)
	return st
}

// observeJobs records the latest Job's name and wave, and when the first Job started.
func observeJobs(st *qjv1.QueueJobStatus, jobs []batchv1.Job) {
	n := len(jobs)
	if n == 0 {
		return
	}
	st.JobName = jobs[n-1].Name
	if w := jobWave(&jobs[n-1]); w > st.Waves {
		st.Waves = w
	}
	if st.StartTime == nil && jobs[0].Status.StartTime != nil {
		st.StartTime = jobs[0].Status.StartTime.DeepCopy()
	}
}

// decideFinish finishes a QueueJob that has not finished yet, if its latest Job or its
// plan says so: a failed wave (unless refill Continuous retries it), the one Job of a
// QueueJob without a queue, a drained queue.
func decideFinish(st *qjv1.QueueJobStatus, gen int64, in observeInput) {
	qj := in.qj
	// The latest Job decides, even when this reconcile archives it.
	if latest := latestUnarchived(in); latest != nil {
		inARow, wave := failedInARow(st, in.jobs)
		if qj.Spec.Queue != nil {
			st.ConsecutiveFailedWaves, st.LastFinishedWave = inARow, wave
		}
		switch waveOf(latest, &qj.Spec).state {
		case waveFailed:
			if qj.Spec.Queue == nil || !retriesFailedWave(&qj.Spec, inARow) {
				// Under refill Continuous below the limit the next wave takes the items: the
				// QueueJob runs on.
				finish(st, gen, latest, jobFinished(latest))
			}
		case waveComplete:
			if qj.Spec.Queue == nil {
				finish(st, gen, latest, jobFinished(latest))
			}
		}
	}
	if in.plan != nil && in.plan.complete != nil {
		complete(st, gen, in.plan.complete, in.now)
	}
	if in.plan != nil && in.plan.fail != nil {
		failQueueJob(st, gen, in.plan.fail, in.now)
	}
}

// addReclaimed adds the reclaimed leases no status write has recorded yet.
func addReclaimed(st *qjv1.QueueJobStatus, reclaimed int64) {
	if reclaimed <= 0 {
		return
	}
	if st.Queue == nil {
		st.Queue = &qjv1.QueueStatus{}
	}
	st.Queue.Reclaimed += reclaimed
}

// setFinishedConditions sets Complete and Failed to False while the QueueJob has not
// finished; once it has, it keeps them as they are, but says which generation they were
// seen at.
func setFinishedConditions(st *qjv1.QueueJobStatus, gen int64, done bool) {
	if !done {
		set(st, gen, qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonNotFinished, "The QueueJob has not finished", nil)
		set(st, gen, qjv1.ConditionFailed, metav1.ConditionFalse, qjv1.ReasonNotFinished, "The QueueJob has not finished", nil)
		return
	}
	for _, t := range []string{qjv1.ConditionComplete, qjv1.ConditionFailed} {
		if c := meta.FindStatusCondition(st.Conditions, t); c != nil {
			c.ObservedGeneration = gen
		}
	}
}

// setSuspendedCondition says whether spec.suspend holds an unfinished QueueJob back.
func setSuspendedCondition(st *qjv1.QueueJobStatus, gen int64, suspended bool) {
	if suspended {
		set(st, gen, qjv1.ConditionSuspended, metav1.ConditionTrue, qjv1.ReasonSuspended,
			"spec.suspend is true: the QueueJob runs no pods until it is set to false", nil)
		return
	}
	set(st, gen, qjv1.ConditionSuspended, metav1.ConditionFalse, qjv1.ReasonNotSuspended, "spec.suspend is not set", nil)
}

// setProgressingCondition says whether the QueueJob makes progress, and if not, why. With
// none of its cases (no wave, no plan, no failed probe: a reconcile without a probe), the
// condition stays as it was.
func setProgressingCondition(st *qjv1.QueueJobStatus, gen int64, in observeInput, current wave, done, suspended bool) {
	progressing := func(s metav1.ConditionStatus, reason, msg string) {
		set(st, gen, qjv1.ConditionProgressing, s, reason, msg, nil)
	}
	job := current.job
	switch {
	case done:
		progressing(metav1.ConditionFalse, qjv1.ReasonFinished, "The QueueJob has finished")
	case in.problem != nil:
		progressing(metav1.ConditionFalse, in.problem.reason, in.problem.message)
	case suspended:
		progressing(metav1.ConditionFalse, qjv1.ReasonSuspended, "The QueueJob is suspended")
	case current.state == waveEnding && kueueManaged(job) && !ptr.Deref(job.Spec.Suspend, false):
		progressing(metav1.ConditionTrue, qjv1.ReasonWaveEnding, fmt.Sprintf(
			"Job %s's pods outlived the drained queue: its Kueue Workload is deactivated, for Kueue to suspend it and stop them; it is archived once they stopped", job.Name))
	case current.state == waveEnding:
		progressing(metav1.ConditionTrue, qjv1.ReasonWaveEnding, fmt.Sprintf(
			"Job %s is suspended to stop its pods, which outlived the drained queue: it is archived once they stopped", job.Name))
	case current.state == waveHeld && kueueManaged(job):
		progressing(metav1.ConditionTrue, qjv1.ReasonWaitingForKueue, fmt.Sprintf(
			"Job %s waits for Kueue to admit it to LocalQueue %s (or to admit it again after a preemption): its pods start once admitted; "+
				"\"kubectl get workloads -n %s\" shows why it waits", job.Name, job.Labels[kueueQueueNameLabel], job.Namespace))
	case current.state == waveHeld:
		progressing(metav1.ConditionTrue, qjv1.ReasonJobSuspendedByAnother, fmt.Sprintf(
			"Job %s is suspended by another controller (a queueing controller such as Kueue holds a Job until it is admitted): its pods start once it is resumed", job.Name))
	case current.state.runs() && in.qj.Spec.Queue == nil:
		progressing(metav1.ConditionTrue, qjv1.ReasonJobRunning, fmt.Sprintf("Job %s is running", job.Name))
	case current.state.runs():
		progressing(metav1.ConditionTrue, qjv1.ReasonWaveRunning, fmt.Sprintf("Job %s runs wave %d", job.Name, jobWave(job)))
	case in.plan != nil && in.plan.waiting != nil:
		progressing(metav1.ConditionTrue, in.plan.waiting.reason, in.plan.waiting.message)
	case in.probe != nil && in.probe.err != nil:
		progressing(metav1.ConditionFalse, qjv1.ReasonProbeFailed,
			"The queue cannot be probed, so no wave starts: see the QueueReachable condition")
	}
}

// summarize sets what kubectl get shows: the mode, the latest Job's completions, the
// duration of a finished QueueJob and the one-word state.
func summarize(st *qjv1.QueueJobStatus, in observeInput, current wave, done, suspended bool) {
	st.Mode = qjv1.ModeJob
	if in.qj.Spec.Queue != nil {
		st.Mode = string(in.qj.Spec.EffectiveMode())
	}
	if n := len(in.jobs); n > 0 {
		st.Completions = completionsOf(&in.jobs[n-1])
	}
	st.Duration = ""
	if done && st.StartTime != nil && st.CompletionTime != nil {
		st.Duration = duration.HumanDuration(st.CompletionTime.Sub(st.StartTime.Time))
	}
	switch {
	case meta.IsStatusConditionTrue(st.Conditions, qjv1.ConditionComplete):
		st.State = qjv1.StateComplete
	case meta.IsStatusConditionTrue(st.Conditions, qjv1.ConditionFailed):
		st.State = qjv1.StateFailed
	case suspended:
		st.State = qjv1.StateSuspended
	case current.state.jobRuns() && current.state != waveHeld:
		st.State = qjv1.StateRunning // an Ending wave too: its pods are stopping
	default:
		st.State = qjv1.StateWaiting
	}
}

// setUpToDateCondition says whether the running wave was built from the current spec: a
// change of the template (but its parallelism, which the running Job follows) or of
// itemsPerPod waits for the next wave.
func setUpToDateCondition(st *qjv1.QueueJobStatus, gen int64, qj *qjv1.QueueJob, current wave) {
	if current.state.runs() && builtFromOtherSpec(current.job, &qj.Spec) {
		if qj.Spec.Queue == nil {
			// Admission refuses such a change once the status names the Job; this is one
			// that came in before.
			set(st, gen, qjv1.ConditionUpToDate, metav1.ConditionFalse, qjv1.ReasonNotApplied, fmt.Sprintf(
				"spec.jobTemplate changed after Job %s was created from it: a QueueJob without a queue has no next wave, so the change has no effect; create a new QueueJob to run it",
				current.job.Name), nil)
			return
		}
		set(st, gen, qjv1.ConditionUpToDate, metav1.ConditionFalse, qjv1.ReasonNextWave, fmt.Sprintf(
			"The spec changed since Job %s started wave %d: the running wave keeps the spec it was built from; the next wave uses the new one",
			current.job.Name, jobWave(current.job)), nil)
		return
	}
	set(st, gen, qjv1.ConditionUpToDate, metav1.ConditionTrue, qjv1.ReasonUpToDate, "The running wave, if any, was built from the current spec", nil)
}

// builtFromOtherSpec reports whether a Job was built from another spec than this one (a
// Job without the hash is taken as built from this one).
func builtFromOtherSpec(job *batchv1.Job, spec *qjv1.QueueJobSpec) bool {
	h, ok := job.Annotations[qjv1.AnnotationTemplateHash]
	return ok && h != templateHash(spec)
}

// completionsOf shows a Job's progress as kubectl get jobs does.
func completionsOf(job *batchv1.Job) string {
	if job.Spec.Completions == nil {
		return fmt.Sprintf("%d/1 of %d", job.Status.Succeeded, ptr.Deref(job.Spec.Parallelism, 1))
	}
	return fmt.Sprintf("%d/%d", job.Status.Succeeded, *job.Spec.Completions)
}

// archiveAndCount moves the counts of the Jobs archived now into status.archived, drops
// the names of archived Jobs that are gone, and sets the pod counts: the archived ones
// plus those of the Jobs still here. It returns the current (latest unarchived) Job.
func archiveAndCount(st *qjv1.QueueJobStatus, in observeInput) *batchv1.Job {
	arch := st.Archived
	if arch == nil {
		arch = &qjv1.ArchivedJobs{}
	}
	for _, j := range in.archive {
		if !slices.Contains(arch.Jobs, j.Name) {
			arch.Succeeded += j.Status.Succeeded
			arch.Failed += j.Status.Failed
			arch.Jobs = append(arch.Jobs, j.Name)
		}
	}
	present := map[string]bool{}
	var current *batchv1.Job
	var active, succeeded, failed int32
	for i := range in.jobs {
		j := &in.jobs[i]
		present[j.Name] = true
		if slices.Contains(arch.Jobs, j.Name) {
			continue
		}
		active += j.Status.Active
		succeeded += j.Status.Succeeded
		failed += j.Status.Failed
		current = j
	}
	arch.Jobs = slices.DeleteFunc(arch.Jobs, func(name string) bool { return !present[name] })
	if len(arch.Jobs) == 0 {
		arch.Jobs = nil
	}
	if arch.Succeeded != 0 || arch.Failed != 0 || arch.Jobs != nil {
		st.Archived = arch
	}
	st.Active, st.Succeeded, st.Failed = active, arch.Succeeded+succeeded, arch.Failed+failed
	return current
}

// latestUnarchived is the latest Job that the status as read has not archived (Jobs this
// reconcile archives still count: their outcome must be seen before they go).
func latestUnarchived(in observeInput) *batchv1.Job {
	for i := len(in.jobs) - 1; i >= 0; i-- {
		if in.qj.Status.Archived == nil || !slices.Contains(in.qj.Status.Archived.Jobs, in.jobs[i].Name) {
			return &in.jobs[i]
		}
	}
	return nil
}

// observeQueue records what the probe counted and whether the queue was reachable.
func observeQueue(st *qjv1.QueueJobStatus, gen int64, in observeInput) {
	p := in.probe
	if p == nil {
		return
	}
	if p.err != nil {
		set(st, gen, qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonOf(p.err), p.err.Error(), nil)
		return
	}
	set(st, gen, qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed, "The last probe of the queue succeeded", nil)
	q := st.Queue
	if q == nil {
		q = &qjv1.QueueStatus{}
		st.Queue = q
	}
	changed := q.Ready != p.counts.Ready || q.InFlight != p.counts.InFlight || q.DeadLettered != p.counts.DeadLettered ||
		q.Redelivered != p.counts.Redelivered
	q.Ready, q.InFlight, q.DeadLettered = p.counts.Ready, p.counts.InFlight, p.counts.DeadLettered
	q.Redelivered = p.counts.Redelivered
	if !p.counts.DeadLetteredUnknown { // a count of 0 that is not one is no baseline
		q.DeadLetteredAtStart = ptr.To(deadLetteredAtStart(q, in.jobs, *p.counts))
	}
	// No heartbeat: an idle QueueJob costs the API server no writes (the
	// queuejob_queue_last_probe_timestamp_seconds metric tells when it was last
	// probed). The time moves with the counts, and once after the QueueJob finished,
	// which strandedItems needs to know that no item was left in flight.
	finishedSince := st.CompletionTime != nil && (q.LastProbeTime == nil || !q.LastProbeTime.After(st.CompletionTime.Time))
	if changed || q.LastProbeTime == nil || finishedSince {
		q.LastProbeTime = in.now.DeepCopy()
	}
	q.DrainedSince = nil
	if in.plan != nil && in.plan.drainedSince != nil {
		t := metav1.NewTime(*in.plan.drainedSince)
		q.DrainedSince = &t
	}
}

// complete finishes a queue-driven QueueJob successfully.
func complete(st *qjv1.QueueJobStatus, gen int64, why *progressProblem, now metav1.Time) {
	st.CompletionTime = now.DeepCopy()
	set(st, gen, qjv1.ConditionComplete, metav1.ConditionTrue, why.reason, why.message, &now)
	set(st, gen, qjv1.ConditionFailed, metav1.ConditionFalse, why.reason, "The QueueJob completed", &now)
}

// failQueueJob finishes a queue-driven QueueJob unsuccessfully.
func failQueueJob(st *qjv1.QueueJobStatus, gen int64, why *progressProblem, now metav1.Time) {
	st.CompletionTime = now.DeepCopy()
	set(st, gen, qjv1.ConditionFailed, metav1.ConditionTrue, why.reason, why.message, &now)
	set(st, gen, qjv1.ConditionComplete, metav1.ConditionFalse, why.reason, "The QueueJob failed", &now)
}

// deadLetteredAtStart is the dead-letter queue's count at the QueueJob's first probe:
// those items belong to earlier runs. It is the status's, else the one recorded on the
// first Job that has it (the status write that recorded it may have been lost), else this
// probe's count. It only falls: items taken out of the dead-letter queue (qj requeue)
// that come back are this run's.
func deadLetteredAtStart(q *qjv1.QueueStatus, jobs []batchv1.Job, counts queue.Counts) int64 {
	base := counts.DeadLettered
	switch {
	case q != nil && q.DeadLetteredAtStart != nil:
		base = *q.DeadLetteredAtStart
	default:
		for i := range jobs {
			if v, err := strconv.ParseInt(jobs[i].Annotations[qjv1.AnnotationDeadLetteredAtStart], 10, 64); err == nil {
				base = v
				break
			}
		}
	}
	return min(base, counts.DeadLettered)
}

// finish records the Job's terminal condition as the QueueJob's, with the Job's reason
// and the time the Job finished (which the TTL counts from).
func finish(st *qjv1.QueueJobStatus, gen int64, job *batchv1.Job, c *batchv1.JobCondition) {
	t := c.LastTransitionTime
	st.CompletionTime = t.DeepCopy()
	if c.Type == batchv1.JobComplete {
		reason := orDefault(c.Reason, qjv1.ReasonJobComplete)
		set(st, gen, qjv1.ConditionComplete, metav1.ConditionTrue, reason,
			fmt.Sprintf("Job %s completed: %d pods succeeded", job.Name, job.Status.Succeeded), &t)
		set(st, gen, qjv1.ConditionFailed, metav1.ConditionFalse, reason, "The QueueJob completed", &t)
		return
	}
	reason := orDefault(c.Reason, qjv1.ReasonJobFailed)
	msg := fmt.Sprintf("Job %s failed", job.Name)
	if c.Message != "" {
		msg += ": " + c.Message
	}
	set(st, gen, qjv1.ConditionFailed, metav1.ConditionTrue, reason, msg, &t)
	set(st, gen, qjv1.ConditionComplete, metav1.ConditionFalse, reason, "The QueueJob failed", &t)
}

// isFinished reports whether the status says Complete or Failed.
func isFinished(st *qjv1.QueueJobStatus) bool {
	return meta.IsStatusConditionTrue(st.Conditions, qjv1.ConditionComplete) ||
		meta.IsStatusConditionTrue(st.Conditions, qjv1.ConditionFailed)
}

func set(st *qjv1.QueueJobStatus, gen int64, t string, s metav1.ConditionStatus, reason, msg string, at *metav1.Time) {
	c := metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
	if at != nil {
		c.LastTransitionTime = *at
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// event is an event to emit once the status that it reports has been written.
type event struct {
	eventType, reason, action, note string
}

// transitions lists the events for what changed between two statuses. Events are only
// ever derived from transitions, so a repeated reconcile never repeats an event.
func transitions(old, cur *qjv1.QueueJobStatus) []event {
	var evs []event
	became := func(t string, s metav1.ConditionStatus) *metav1.Condition {
		c := meta.FindStatusCondition(cur.Conditions, t)
		if c == nil || c.Status != s {
			return nil
		}
		if o := meta.FindStatusCondition(old.Conditions, t); o != nil && o.Status == s && o.Reason == c.Reason {
			return nil
		}
		return c
	}
	if c := became(qjv1.ConditionComplete, metav1.ConditionTrue); c != nil {
		evs = append(evs, event{corev1.EventTypeNormal, qjv1.EventCompleted, "Complete", c.Message})
		if cur.Queue.DeadLetteredThisRun() > 0 {
			// spec.deadLetterPolicy Complete: the message says how many and where.
			evs = append(evs, event{corev1.EventTypeWarning, qjv1.EventItemsDeadLettered, "Complete", c.Message})
		}
	}
	if c := became(qjv1.ConditionFailed, metav1.ConditionTrue); c != nil {
		reason := qjv1.EventFailed
		if c.Reason == qjv1.ReasonItemsDeadLettered {
			reason = qjv1.EventItemsDeadLettered // one Warning for the one cause
		}
		evs = append(evs, event{corev1.EventTypeWarning, reason, "Fail", c.Reason + ": " + c.Message})
	}
	if c := became(qjv1.ConditionSuspended, metav1.ConditionTrue); c != nil {
		evs = append(evs, event{corev1.EventTypeNormal, qjv1.EventSuspended, "Suspend", c.Message})
	}
	if cur.ConsecutiveFailedWaves > old.ConsecutiveFailedWaves && !meta.IsStatusConditionTrue(cur.Conditions, qjv1.ConditionFailed) {
		evs = append(evs, event{corev1.EventTypeWarning, qjv1.EventWaveFailed, "FailWave", fmt.Sprintf(
			"Wave %d failed, %d in a row: its items stay in the queue for the next wave", cur.LastFinishedWave, cur.ConsecutiveFailedWaves)})
	}
	if c := became(qjv1.ConditionQueueReachable, metav1.ConditionFalse); c != nil {
		evs = append(evs, event{corev1.EventTypeWarning, qjv1.EventQueueUnreachable, "Probe", c.Reason + ": " + c.Message})
	}
	if meta.IsStatusConditionFalse(old.Conditions, qjv1.ConditionQueueReachable) &&
		meta.IsStatusConditionTrue(cur.Conditions, qjv1.ConditionQueueReachable) {
		evs = append(evs, event{corev1.EventTypeNormal, qjv1.EventQueueReachable, "Probe", "The queue is reachable again"})
	}
	if meta.IsStatusConditionTrue(old.Conditions, qjv1.ConditionSuspended) &&
		meta.IsStatusConditionFalse(cur.Conditions, qjv1.ConditionSuspended) && !isFinished(cur) {
		evs = append(evs, event{corev1.EventTypeNormal, qjv1.EventResumed, "Resume", "spec.suspend is false: the Job runs again"})
	}
	if c := became(qjv1.ConditionUpToDate, metav1.ConditionFalse); c != nil {
		evs = append(evs, event{corev1.EventTypeNormal, qjv1.EventSpecChangePending, "Update", c.Message})
	}
	if c := became(qjv1.ConditionProgressing, metav1.ConditionFalse); c != nil && c.Reason == qjv1.ReasonJobCreateFailed {
		evs = append(evs, event{corev1.EventTypeWarning, qjv1.EventJobCreateFailed, "CreateJob", c.Message})
	}
	if c := became(qjv1.ConditionProgressing, metav1.ConditionFalse); c != nil && c.Reason == qjv1.ReasonPodsNotCreated {
		evs = append(evs, event{corev1.EventTypeWarning, qjv1.EventPodsNotCreated, "CreatePods", c.Message})
	}
	if c := became(qjv1.ConditionProgressing, metav1.ConditionFalse); c != nil && c.Reason == qjv1.ReasonPodsCannotStart {
		evs = append(evs, event{corev1.EventTypeWarning, qjv1.EventPodsCannotStart, "StartPods", c.Message})
	}
	return evs
}
