package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// ttlRemaining is how long until finishedAt+ttl; zero or less means the TTL has expired.
func ttlRemaining(finishedAt time.Time, ttlSeconds int32, now time.Time) time.Duration {
	return finishedAt.Add(time.Duration(ttlSeconds) * time.Second).Sub(now)
}

// podFinishTime is when a terminal pod finished: the latest time one of its containers
// terminated, else the last transition of its Ready condition (which turns False when
// the pod stops), else its creation. ok is false for pods that have not finished or are
// still counted by the Job controller.
func podFinishTime(pod *corev1.Pod) (t time.Time, ok bool) {
	if !podTerminal(pod) {
		return time.Time{}, false
	}
	// The Job controller keeps this finalizer on a pod until it has counted it: deleting
	// the pod before then would lose the count.
	if controllerutil.ContainsFinalizer(pod, batchv1.JobTrackingFinalizer) || pod.DeletionTimestamp != nil {
		return time.Time{}, false
	}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, cs := range list {
			if term := cs.State.Terminated; term != nil && term.FinishedAt.After(t) {
				t = term.FinishedAt.Time
			}
		}
	}
	if !t.IsZero() {
		return t, true
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && !c.LastTransitionTime.IsZero() {
			return c.LastTransitionTime.Time, true
		}
	}
	return pod.CreationTimestamp.Time, true
}

// cleanup deletes what has expired, in two steps for Jobs: a Job is first archived (its
// pod counts move to status.archived in this reconcile's status write), and only a Job
// that the status as read from the API server already archives is deleted. A crash
// between the two writes can therefore never lose a Job's counts, nor make a QueueJob
// forget that it finished and run again.
//
// What expires: finished pods after spec.cleanup.podTTLSecondsAfterFinished; finished
// Jobs after spec.cleanup.ttlSecondsAfterFinished, counted from the QueueJob's finish (or,
// under refill Continuous, from each wave's own finish); finished waves beyond the history
// limits; and the running wave of a WorkerPool whose workers outlived the drained queue.
func (r *QueueJobReconciler) cleanup(ctx context.Context, s *scope) error {
	// Each step runs whatever the others do: a webhook refusing pod deletes must not stop
	// Jobs from expiring.
	errs := []error{r.deleteArchivedJobs(ctx, s)}
	if p := s.qj.Spec.Cleanup; p != nil && p.PodTTLSecondsAfterFinished != nil {
		errs = append(errs, r.cleanupPods(ctx, s, *p.PodTTLSecondsAfterFinished))
	}
	if p := s.qj.Spec.Cleanup; p != nil && p.TTLSecondsAfterFinished != nil {
		archiveExpired(s, *p.TTLSecondsAfterFinished)
	}
	if s.qj.Spec.Queue != nil {
		archiveBeyondHistory(s)
	}
	if s.qj.Spec.TTLSecondsAfterFinished != nil {
		errs = append(errs, r.expireQueueJob(ctx, s))
	}
	return errors.Join(errs...)
}

// expireQueueJob deletes the QueueJob itself once spec.ttlSecondsAfterFinished has passed
// since it finished, as the TTL-after-finished controller deletes a Job: the QueueJob is
// read again from the API server, so that a TTL just raised or a QueueJob that runs again
// is not deleted, and deleted in the foreground with a precondition on what was read, so
// that the garbage collector removes its Jobs and pods first.
func (r *QueueJobReconciler) expireQueueJob(ctx context.Context, s *scope) error {
	if !expired(s.read, s.now, s.requeue) {
		return nil
	}
	live := &qjv1.QueueJob{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(s.read), live); err != nil {
		return client.IgnoreNotFound(err)
	}
	if live.UID != s.read.UID || !live.DeletionTimestamp.IsZero() || !expired(live, s.now, s.requeue) {
		return nil
	}
	err := r.Delete(ctx, live, client.PropagationPolicy(metav1.DeletePropagationForeground),
		client.Preconditions{UID: &live.UID, ResourceVersion: &live.ResourceVersion})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		s.requeue(time.Second) // changed since it was read: look again
		return nil
	case err != nil:
		return fmt.Errorf("deleting the expired QueueJob: %w", err)
	}
	logf.FromContext(ctx).Info("Deleted the QueueJob: spec.ttlSecondsAfterFinished has passed since it finished", "ttlSecondsAfterFinished", *live.Spec.TTLSecondsAfterFinished)
	r.announce(s, corev1.EventTypeNormal, qjv1.EventExpired, "Delete", fmt.Sprintf(
		"Deleted the QueueJob with its Jobs and pods %ds after it finished (spec.ttlSecondsAfterFinished)", *live.Spec.TTLSecondsAfterFinished))
	return nil
}

// expired reports whether a QueueJob's own TTL has passed; if it has not yet, it asks to
// be called again then.
func expired(qj *qjv1.QueueJob, now time.Time, requeue func(time.Duration)) bool {
	ttl := qj.Spec.TTLSecondsAfterFinished
	if ttl == nil || !isFinished(&qj.Status) || qj.Status.CompletionTime == nil {
		return false
	}
	// A Failed QueueJob whose dead workers still hold items keeps reaping them: deleting
	// it would leave them in flight for good. It expires once they are back.
	if qj.Spec.Queue != nil && strandedItems(&qj.Status) {
		return false
	}
	if left := ttlRemaining(qj.Status.CompletionTime.Time, *ttl, now); left > 0 {
		requeue(left)
		return false
	}
	return true
}

// archiveExpired archives the finished Jobs whose TTL has expired and asks to be called
// again when the next one expires.
func archiveExpired(s *scope, ttl int32) {
	continuous := s.qj.Spec.Queue != nil && s.qj.Spec.EffectiveRefill() == qjv1.RefillContinuous
	for i := range s.jobs {
		job := &s.jobs[i]
		c := jobFinished(job)
		if c == nil || s.archived(job.Name) {
			continue
		}
		var finishedAt time.Time
		switch {
		case continuous:
			finishedAt = c.LastTransitionTime.Time
		case isFinished(&s.read.Status) && s.read.Status.CompletionTime != nil:
			finishedAt = s.read.Status.CompletionTime.Time
		default:
			continue // the QueueJob has not finished (as far as the API server knows)
		}
		if left := ttlRemaining(finishedAt, ttl, s.now); left > 0 {
			s.requeue(left)
			continue
		}
		s.archiveJob(job)
	}
}

// archiveBeyondHistory archives the oldest finished waves beyond the history limits. The
// latest wave always stays: its outcome decides the QueueJob's.
func archiveBeyondHistory(s *scope) {
	keep := map[batchv1.JobConditionType]int32{
		batchv1.JobComplete: s.qj.Spec.EffectiveSuccessfulWavesHistoryLimit(),
		batchv1.JobFailed:   s.qj.Spec.EffectiveFailedWavesHistoryLimit(),
	}
	for i := len(s.jobs) - 2; i >= 0; i-- {
		job := &s.jobs[i]
		c := jobFinished(job)
		if c == nil || s.archived(job.Name) {
			continue
		}
		if keep[c.Type] > 0 {
			keep[c.Type]--
			continue
		}
		s.archiveJob(job)
	}
}

// deleteArchivedJobs deletes the Jobs that the status as read archives.
func (r *QueueJobReconciler) deleteArchivedJobs(ctx context.Context, s *scope) error {
	var names []string
	for i := range s.jobs {
		if !s.archivedAsRead(s.jobs[i].Name) || s.jobs[i].DeletionTimestamp != nil {
			continue
		}
		gone, err := r.deleteJob(ctx, s, &s.jobs[i])
		if err != nil {
			return err
		}
		if gone {
			names = append(names, s.jobs[i].Name)
		}
	}
	if len(names) > 0 {
		objectsCleanedUp.WithLabelValues("job").Add(float64(len(names)))
		r.announce(s, corev1.EventTypeNormal, qjv1.EventCleanedUp, "DeleteJobs",
			fmt.Sprintf("Deleted Jobs %v and their pods; their pod counts stay in the status", names))
		logf.FromContext(ctx).Info("Deleted archived Jobs", "jobs", names)
	}
	return nil
}

func (r *QueueJobReconciler) cleanupPods(ctx context.Context, s *scope, ttl int32) error {
	owned := make(map[types.UID]bool, len(s.jobs))
	for i := range s.jobs {
		owned[s.jobs[i].UID] = true
	}
	// Only the finished, counted pods, through an index, and without copying them: cleanup
	// only reads them (deletePod reads each again from the API server).
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(s.qj.Namespace),
		client.MatchingFields{podFinishedKey: s.qj.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing finished pods: %w", err)
	}
	deleted := 0
	for i := range pods.Items {
		pod := &pods.Items[i]
		if ref := metav1.GetControllerOf(pod); ref == nil || !owned[ref.UID] {
			continue
		}
		finishedAt, ok := podFinishTime(pod)
		if !ok {
			continue
		}
		if left := ttlRemaining(finishedAt, ttl, s.now); left > 0 {
			s.requeue(left)
			continue
		}
		gone, err := r.deletePod(ctx, pod)
		if err != nil {
			return err
		}
		if gone {
			deleted++
		}
	}
	if deleted > 0 {
		objectsCleanedUp.WithLabelValues("pod").Add(float64(deleted))
		r.announce(s, corev1.EventTypeNormal, qjv1.EventCleanedUp, "DeletePods",
			fmt.Sprintf("Deleted %d finished pods whose TTL of %ds expired", deleted, ttl))
	}
	return nil
}

// deletePod re-reads the pod from the API server, checks it is still finished and
// uncounted, and deletes exactly that pod (UID precondition).
func (r *QueueJobReconciler) deletePod(ctx context.Context, cached *corev1.Pod) (bool, error) {
	var pod corev1.Pod
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(cached), &pod); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	if pod.UID != cached.UID {
		return false, nil
	}
	if _, ok := podFinishTime(&pod); !ok {
		return false, nil
	}
	err := r.Delete(ctx, &pod, client.Preconditions{UID: &pod.UID})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("deleting pod %s: %w", pod.Name, err)
	}
	logf.FromContext(ctx).V(1).Info("Deleted finished pod", "pod", pod.Name)
	return true, nil
}

// deleteJob re-reads the Job from the API server, checks it is still this QueueJob's, and
// deletes exactly that Job (UID precondition); its pods go with it.
func (r *QueueJobReconciler) deleteJob(ctx context.Context, s *scope, cached *batchv1.Job) (bool, error) {
	var job batchv1.Job
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(cached), &job); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	if job.UID != cached.UID || !metav1.IsControlledBy(&job, s.qj) {
		return false, nil
	}
	err := r.Delete(ctx, &job, client.Preconditions{UID: &job.UID}, client.PropagationPolicy(metav1.DeletePropagationBackground))
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("deleting Job %s: %w", job.Name, err)
	}
	return true, nil
}
