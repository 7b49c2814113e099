package controllers

import (
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// progressProblem is why the QueueJob cannot make progress (a Job the API server refused),
// found by an earlier phase and reported in the Progressing condition.
type progressProblem struct {
	reason, message string
}

// observeInput is everything observe needs: the QueueJob as read, its Jobs sorted by
// wave (the last is the current one), and what the earlier phases found.
type observeInput struct {
	qj      *qjv1.QueueJob
	jobs    []batchv1.Job
	problem *progressProblem
}

// observe computes the QueueJob's new status from its Jobs. It is pure: the same input
// gives the same status, which is what lets the reconciler skip the status write when
// nothing changed. Counts and terminal conditions survive the deletion of the Jobs.
func observe(in observeInput) qjv1.QueueJobStatus {
	qj := in.qj
	st := *qj.Status.DeepCopy()
	gen := qj.Generation
	st.ObservedGeneration = gen

	var current *batchv1.Job
	if n := len(in.jobs); n > 0 {
		current = &in.jobs[n-1]
		var active, succeeded, failed int32
		for i := range in.jobs {
			active += in.jobs[i].Status.Active
			succeeded += in.jobs[i].Status.Succeeded
			failed += in.jobs[i].Status.Failed
		}
		st.Active, st.Succeeded, st.Failed = active, succeeded, failed
		st.JobName = current.Name
		if w := jobWave(current); w > st.Waves {
			st.Waves = w
		}
		if st.StartTime == nil && in.jobs[0].Status.StartTime != nil {
			st.StartTime = in.jobs[0].Status.StartTime.DeepCopy()
		}
		if !isFinished(&st) {
			if c := jobFinished(current); c != nil {
				finish(&st, gen, current, c)
			}
		}
	}

	done := isFinished(&st)
	if !done {
		set(&st, gen, qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonNotFinished, "The QueueJob has not finished", nil)
		set(&st, gen, qjv1.ConditionFailed, metav1.ConditionFalse, qjv1.ReasonNotFinished, "The QueueJob has not finished", nil)
	} else {
		// Keep the terminal conditions as they are, but say which generation they were seen at.
		for _, t := range []string{qjv1.ConditionComplete, qjv1.ConditionFailed} {
			if c := meta.FindStatusCondition(st.Conditions, t); c != nil {
				c.ObservedGeneration = gen
			}
		}
		st.Active = 0
	}

	suspended := qj.Spec.IsSuspended() && !done
	if suspended {
		set(&st, gen, qjv1.ConditionSuspended, metav1.ConditionTrue, qjv1.ReasonSuspended,
			"spec.suspend is true: the Job runs no pods until it is set to false", nil)
	} else {
		set(&st, gen, qjv1.ConditionSuspended, metav1.ConditionFalse, qjv1.ReasonNotSuspended, "spec.suspend is not set", nil)
	}

	switch {
	case done:
		set(&st, gen, qjv1.ConditionProgressing, metav1.ConditionFalse, qjv1.ReasonFinished, "The QueueJob has finished", nil)
	case in.problem != nil:
		set(&st, gen, qjv1.ConditionProgressing, metav1.ConditionFalse, in.problem.reason, in.problem.message, nil)
	case suspended:
		set(&st, gen, qjv1.ConditionProgressing, metav1.ConditionFalse, qjv1.ReasonSuspended, "The QueueJob is suspended", nil)
	case current != nil:
		set(&st, gen, qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonJobRunning,
			fmt.Sprintf("Job %s is running", current.Name), nil)
	}
	return st
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
	}
	if c := became(qjv1.ConditionFailed, metav1.ConditionTrue); c != nil {
		evs = append(evs, event{corev1.EventTypeWarning, qjv1.EventFailed, "Fail", c.Reason + ": " + c.Message})
	}
	if c := became(qjv1.ConditionSuspended, metav1.ConditionTrue); c != nil {
		evs = append(evs, event{corev1.EventTypeNormal, qjv1.EventSuspended, "Suspend", c.Message})
	}
	if meta.IsStatusConditionTrue(old.Conditions, qjv1.ConditionSuspended) &&
		meta.IsStatusConditionFalse(cur.Conditions, qjv1.ConditionSuspended) && !isFinished(cur) {
		evs = append(evs, event{corev1.EventTypeNormal, qjv1.EventResumed, "Resume", "spec.suspend is false: the Job runs again"})
	}
	if c := became(qjv1.ConditionProgressing, metav1.ConditionFalse); c != nil && c.Reason == qjv1.ReasonJobCreateError {
		evs = append(evs, event{corev1.EventTypeWarning, qjv1.EventJobCreateFailed, "CreateJob", c.Message})
	}
	return evs
}
