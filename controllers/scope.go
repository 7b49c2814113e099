package controllers

import (
	"slices"
	"time"

	batchv1 "k8s.io/api/batch/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// scope gathers what one reconcile knows and decides.
type scope struct {
	// read is the QueueJob as read at the start; qj is the working copy whose status
	// this reconcile rewrites.
	read, qj *qjv1.QueueJob
	now      time.Time
	// jobs are the Jobs this QueueJob controls, sorted by wave; listed says they were read.
	jobs   []batchv1.Job
	listed bool
	// archive are the Jobs this reconcile records for deletion (their counts go into
	// status.archived; the next reconcile deletes them).
	archive []*batchv1.Job
	probe   *probeResult
	// probeTaken is set when probe is the result of a finished probe, taken from
	// probeStates: a status write that fails gives it back (writeStatus).
	probeTaken bool
	// probeGivenBack is set when the status write failed and gave probe back.
	probeGivenBack bool
	plan           *wavePlan
	// writesBefore is how many writes to the queue had been heard when the probe began.
	writesBefore uint64
	problem      *progressProblem
	events       []event
	// reclaimed is how many reclaimed leases this reconcile's status adds to
	// status.queue.reclaimed: those of its own probe and those whose status write failed.
	reclaimed int64
	// requeueAfter is the smallest positive wait any phase asked for.
	requeueAfter time.Duration
}

func (s *scope) requeue(d time.Duration) {
	if d > 0 && (s.requeueAfter == 0 || d < s.requeueAfter) {
		s.requeueAfter = d
	}
}

// event queues an event that reports a decision the status records: it is emitted once
// that status has been written (a decision whose status write fails is made again by the
// next reconcile, and reported then).
func (s *scope) event(eventType, reason, action, note string) {
	s.events = append(s.events, event{eventType, reason, action, note})
}

// archivedAsRead reports whether the status as read already archives the Job: only such
// Jobs may be deleted.
func (s *scope) archivedAsRead(name string) bool {
	return s.read.Status.Archived != nil && slices.Contains(s.read.Status.Archived.Jobs, name)
}

func (s *scope) archived(name string) bool {
	return s.archivedAsRead(name) || slices.ContainsFunc(s.archive, func(j *batchv1.Job) bool { return j.Name == name })
}

// archiveJob records a Job for deletion.
func (s *scope) archiveJob(job *batchv1.Job) {
	if !s.archived(job.Name) {
		s.archive = append(s.archive, job)
	}
}

// current is the latest Job that is not archived, nil if none.
func (s *scope) current() *batchv1.Job {
	for i := len(s.jobs) - 1; i >= 0; i-- {
		if !s.archived(s.jobs[i].Name) {
			return &s.jobs[i]
		}
	}
	return nil
}

// waves is how many waves have been started, by the status and by the Jobs.
func (s *scope) waves() int32 {
	w := s.read.Status.Waves
	for i := range s.jobs {
		w = max(w, jobWave(&s.jobs[i]))
	}
	return w
}

// wave is the current wave (see waveState), as the scope holds it now: the phases change
// the current Job (ensureWave ends, archives and creates them).
func (s *scope) wave() wave {
	return waveOf(s.current(), &s.qj.Spec)
}
