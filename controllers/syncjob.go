package controllers

import (
	"context"
	"fmt"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// syncJob carries spec.suspend and the parallelism over to the running Job (under Kueue:
// kueue.go); the rest of the spec applies to the next wave. It changes a field only when
// the operator's own wish for it changed since it last set it (recorded in an annotation
// on the Job), never because the Job differs: a queueing controller such as Kueue
// suspends a Job until it is admitted, and may change its parallelism when it admits part
// of it. A WorkerPool's parallelism grows with its queue up to the template's but never
// shrinks on its own: fewer workers would mean killing some.
func (r *QueueJobReconciler) syncJob(ctx context.Context, s *scope) error {
	w := s.wave()
	if !w.state.runs() || w.job.DeletionTimestamp != nil {
		return nil
	}
	job := w.job
	if kueueManaged(job) {
		if done, err := r.syncKueueSuspend(ctx, s, job); err != nil || !done {
			return err
		}
	}
	applied := appliedParallelism(job)
	p := desiredParallelism(&s.qj.Spec, job, applied, s.probe)
	rv := job.ResourceVersion
	ok, err := r.patchJob(ctx, s, job, func(want *batchv1.Job) {
		if suspend := strconv.FormatBool(s.qj.Spec.IsSuspended()); !kueueManaged(want) && want.Annotations[qjv1.AnnotationSuspend] != suspend {
			metav1.SetMetaDataAnnotation(&want.ObjectMeta, qjv1.AnnotationSuspend, suspend)
			want.Spec.Suspend = ptr.To(s.qj.Spec.IsSuspended())
		}
		if p != applied {
			want.Spec.Parallelism = ptr.To(p)
			metav1.SetMetaDataAnnotation(&want.ObjectMeta, qjv1.AnnotationParallelism, strconv.Itoa(int(p)))
		}
	})
	if ok && job.ResourceVersion != rv {
		logf.FromContext(ctx).Info("Updated Job", "job", job.Name, "suspend", ptr.Deref(job.Spec.Suspend, false),
			"specSuspend", s.qj.Spec.IsSuspended(), "parallelism", ptr.Deref(job.Spec.Parallelism, 1))
	}
	return err
}

// patchJob changes the Job as mutate says, if that changes it, in one write with an
// optimistic lock: from a cache that has not seen the operator's own last patch, an
// unlocked patch would set again what another controller changed since. It reports
// false, and asks for a reconcile a second later, on a conflict.
func (r *QueueJobReconciler) patchJob(ctx context.Context, s *scope, job *batchv1.Job, mutate func(want *batchv1.Job)) (bool, error) {
	want := job.DeepCopy()
	mutate(want)
	if equality.Semantic.DeepEqual(job, want) {
		return true, nil
	}
	err := r.Patch(ctx, want, client.MergeFromWithOptions(job, client.MergeFromWithOptimisticLock{}))
	switch {
	case apierrors.IsConflict(err):
		logf.FromContext(ctx).V(1).Info("The Job changed since the cache saw it; will look again", "job", job.Name)
		s.requeue(time.Second)
		return false, nil
	case err != nil:
		return false, client.IgnoreNotFound(fmt.Errorf("updating Job %s: %w", job.Name, err))
	}
	*job = *want
	return true, nil
}

// appliedParallelism is the parallelism the operator last set on the Job.
func appliedParallelism(job *batchv1.Job) int32 {
	if v, err := strconv.ParseInt(job.Annotations[qjv1.AnnotationParallelism], 10, 32); err == nil {
		return int32(v)
	}
	return ptr.Deref(job.Spec.Parallelism, 1)
}

// desiredParallelism is the parallelism the running Job should have now, given what the
// operator last set on it.
func desiredParallelism(spec *qjv1.QueueJobSpec, job *batchv1.Job, applied int32, probe *probeResult) int32 {
	limit := spec.EffectiveParallelism()
	switch {
	case kueueManaged(job) && !kueueElastic(job):
		return applied // Kueue would evict or requeue a Job whose parallelism changed: kueue.go
	case spec.Queue == nil:
		return limit
	case job.Spec.Completions != nil: // PerItem: no more than its pods
		return min(limit, *job.Spec.Completions)
	case probe != nil && probe.counts != nil: // WorkerPool
		grown := workerPoolSizing(probe.counts.Ready, probe.counts.InFlight, limit).parallelism
		return min(limit, max(applied, grown))
	default:
		return min(limit, applied)
	}
}
