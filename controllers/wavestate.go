package controllers

import (
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// waveState is the state of a QueueJob's current wave, read from its Job: the states of
// the wave state machine (docs/wave-state-machine.md) that a Job shows. The QueueJob's
// own Waiting, Suspended, Complete and Failed come from its status and spec; a wave that
// is None, Complete or Failed leaves it Waiting unless that finishes it.
//
// One function, waveStateOf, decides it; the planner (planWave), observe, syncJob,
// checkPodCreation and the probe's wave mark ask it instead of testing the Job's fields
// themselves. It is read from the current Job where it is used, not once per reconcile:
// ensureWave changes the current Job (ends it, archives it, creates the next) before
// syncJob, checkPodCreation and observe look at it.
type waveState string

const (
	// waveNone: there is no current Job.
	waveNone waveState = "None"
	// waveRunning: the Job runs, not suspended.
	waveRunning waveState = "Running"
	// waveHeld: the Job runs, but another controller (Kueue) keeps it suspended:
	// spec.suspend is false.
	waveHeld waveState = "Held"
	// waveSuspended: the Job runs, suspended, and spec.suspend is true.
	waveSuspended waveState = "Suspended"
	// waveEnding: the operator ended the wave (it suspended the Job and annotated it
	// batch.queuejob.io/wave-ended); the Job has not finished, its pods are stopping.
	waveEnding waveState = "Ending"
	// waveEndedFinished ("Ended"): the operator ended the wave and the Job has finished
	// since, Complete or Failed: its pods have stopped, and its outcome is no verdict on
	// the QueueJob. (The annotation batch.queuejob.io/wave-ended and the event WaveEnded
	// mark the start of Ending, not this.)
	waveEndedFinished waveState = "Ended"
	// waveComplete: the Job completed.
	waveComplete waveState = "Complete"
	// waveFailed: the Job failed.
	waveFailed waveState = "Failed"
)

// waveStateOf is the state of the wave whose Job is job (nil: none) under a spec whose
// suspend is specSuspended.
func waveStateOf(job *batchv1.Job, specSuspended bool) waveState {
	if job == nil {
		return waveNone
	}
	c := jobFinished(job)
	switch {
	case endedByOperator(job) && c == nil:
		return waveEnding
	case endedByOperator(job):
		return waveEndedFinished
	case c != nil && c.Type == batchv1.JobComplete:
		return waveComplete
	case c != nil:
		return waveFailed
	case !ptr.Deref(job.Spec.Suspend, false):
		return waveRunning
	case specSuspended:
		return waveSuspended
	default:
		return waveHeld
	}
}

// wave is a QueueJob's current wave: its Job (nil if none) and the state it is in.
type wave struct {
	job   *batchv1.Job
	state waveState
}

// waveOf is the wave whose Job is job (nil: none), of a QueueJob with this spec.
func waveOf(job *batchv1.Job, spec *qjv1.QueueJobSpec) wave {
	return wave{job: job, state: waveStateOf(job, spec.IsSuspended())}
}

// runs reports whether the wave runs as it was started: Running, Held or Suspended, not
// ended by the operator. The operator keeps such a wave's Job in line with the spec, and
// the planner may end it.
func (st waveState) runs() bool {
	return st == waveRunning || st == waveHeld || st == waveSuspended
}

// endedByOperator reports whether the operator ended the wave: Ending, or its Job has
// finished since (waveEndedFinished).
func (st waveState) endedByOperator() bool {
	return st == waveEnding || st == waveEndedFinished
}

// jobRuns reports whether the wave's Job has not finished: it runs, or it is Ending.
func (st waveState) jobRuns() bool {
	return st.runs() || st == waveEnding
}

// createsPods reports whether the Job controller creates the pods of the wave's Job: a
// Running wave's, or an Ending one's that another controller resumed (the planner
// archives that Job at its next probe).
func (w wave) createsPods() bool {
	return w.state == waveRunning || w.state == waveEnding && !ptr.Deref(w.job.Spec.Suspend, false)
}
