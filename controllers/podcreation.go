package controllers

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// PodCreateGrace is how long a running Job may have no pod at all before the operator
// looks for the Job controller's report of why; then it looks again at this pace, and once
// a minute after the Job has had no pod for two minutes.
const PodCreateGrace = 10 * time.Second

// podLooks (a memo of podCreationLook) remembers, per QueueJob, the last look at the
// events of its podless Job and what that look found. Every status write and probe
// reconciles the QueueJob again, and each look is an uncached List of events: without it,
// a hundred QueueJobs under a full ResourceQuota would spend the manager's whole client
// budget on those Lists.
//
// podCreationLook is one look at the events of a Job, started (or resumed) at started.
type podCreationLook struct {
	job     types.UID
	started time.Time
	at      time.Time
	// problem is what the look found: the latest FailedCreate, nil if none.
	problem *progressProblem
}

// jobWithoutPods is the QueueJob's current Job if the Job controller creates its pods
// (wave.createsPods), it is not being deleted, and it has had no pod, running or finished;
// nil otherwise.
func jobWithoutPods(s *scope) *batchv1.Job {
	w := s.wave()
	if !w.createsPods() || w.job.DeletionTimestamp != nil {
		return nil
	}
	job := w.job
	st := job.Status
	if st.Active > 0 || st.Succeeded > 0 || st.Failed > 0 || ptr.Deref(st.Ready, 0) > 0 || ptr.Deref(st.Terminating, 0) > 0 {
		return nil
	}
	return job
}

// checkPodCreation finds out why a running Job has no pod. The Job controller reports a
// pod it cannot create (Pod Security refuses the template, a ResourceQuota is full, a
// webhook says no) only as a FailedCreate event on the Job; its status stays as if the
// pods were coming. So when the current Job, not suspended, has had no pod, running or
// finished, for PodCreateGrace since it was last started (status.startTime, which a
// resume resets), the latest such event since then becomes the Progressing condition
// (reason PodsNotCreated). It reads the events uncached (the manager does not watch
// events), at most once per PodCreateGrace, once a minute after two minutes, and keeps
// what it found in between. A Job that has had pods and then cannot replace them is not
// covered.
func (r *QueueJobReconciler) checkPodCreation(ctx context.Context, s *scope) error {
	if s.problem != nil {
		return nil
	}
	key := client.ObjectKeyFromObject(s.qj)
	job := jobWithoutPods(s)
	// The Job controller sets startTime when it starts the Job, and again when the Job is
	// resumed: the grace, and the events that count, start there. Its status update when
	// it starts the Job queues a reconcile.
	if job == nil || job.Status.StartTime == nil {
		r.podLooks.forget(key)
		return nil
	}
	started := job.Status.StartTime.Time
	age := s.now.Sub(started)
	if age < PodCreateGrace {
		s.requeue(PodCreateGrace - age)
		return nil
	}
	every := PodCreateGrace
	if age >= 2*time.Minute {
		every = time.Minute
	}
	look, looked := r.podLooks.load(key)
	looked = looked && look.job == job.UID && look.started.Equal(started)
	if since := s.now.Sub(look.at); looked && since >= 0 && since < every {
		s.requeue(every - since)
		if look.problem != nil {
			p := *look.problem // the store's own stays as it was found
			s.problem = &p
		}
		return nil
	}
	s.requeue(every)
	problem, err := r.failedCreate(ctx, job, started)
	if err != nil {
		// A failed look changes nothing (the condition does not flap), and counts as a
		// look: the next is no sooner than a look's pace, not at the reconcile's backoff.
		logf.FromContext(ctx).Info("Could not read the events of a Job without pods; will look again", "job", job.Name, "error", err.Error())
		problem = nil
		if looked {
			problem = look.problem
		}
	}
	r.podLooks.store(key, podCreationLook{job: job.UID, started: started, at: s.now, problem: problem})
	s.problem = problem
	return nil
}

// failedCreate reads the latest FailedCreate event of a Job since it was last started, and
// returns it as the problem it reports; nil if there is none.
func (r *QueueJobReconciler) failedCreate(ctx context.Context, job *batchv1.Job, started time.Time) (*progressProblem, error) {
	var evs corev1.EventList
	sel := fields.SelectorFromSet(fields.Set{"involvedObject.uid": string(job.UID), "reason": "FailedCreate"})
	if err := r.APIReader.List(ctx, &evs, client.InNamespace(job.Namespace), client.MatchingFieldsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("reading the events of Job %s: %w", job.Name, err)
	}
	var latest *corev1.Event
	for i := range evs.Items {
		e := &evs.Items[i]
		if eventTime(e).Before(started) {
			continue // from before the Job was last started (resumed)
		}
		if latest == nil || eventTime(e).After(eventTime(latest)) {
			latest = e
		}
	}
	if latest == nil {
		return nil, nil
	}
	return &progressProblem{reason: qjv1.ReasonPodsNotCreated, message: fmt.Sprintf(
		"The Job controller cannot create the pods of Job %s: %s (the Job creates them as soon as they are allowed; a change of spec.jobTemplate applies to the next Job only)", job.Name, latest.Message)}, nil
}

// eventTime is when an event last happened, whichever API wrote it.
func eventTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}
