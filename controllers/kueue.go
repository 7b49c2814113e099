package controllers

import (
	"context"
	"fmt"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// Kueue (kueue.x-k8s.io) admits each wave's Job as a Workload of its own: a Job whose
// jobTemplate names a LocalQueue (the label kueue.x-k8s.io/queue-name) is suspended by
// Kueue's webhook until Kueue admits it, and suspended again to preempt it. Kueue resumes
// every admitted Job that is suspended, so the operator never suspends a Job that has a
// Workload: to stop one (spec.suspend, or a wave that outlived its drained queue) it sets
// the Workload's spec.active to false, as Kueue asks of its users, and Kueue suspends the
// Job; spec.suspend false activates the Workloads it deactivated, and Kueue resumes the Job
// once it readmits it. A Job without a Workload (Kueue does not manage it, or not yet) is
// suspended and resumed by the operator itself. Nor does the operator change the
// parallelism of a running Job under Kueue (Kueue would evict it: it no longer matches its
// Workload), unless the Job is elastic (kueue.x-k8s.io/elastic-job: "true", Kueue's
// ElasticJobsViaWorkloadSlices gate). docs/kueue.md.
const (
	kueueQueueNameLabel           = "kueue.x-k8s.io/queue-name"
	kueueJobUIDLabel              = "kueue.x-k8s.io/job-uid"
	kueueMinParallelismAnnotation = "kueue.x-k8s.io/job-min-parallelism"
	kueueElasticJobAnnotation     = "kueue.x-k8s.io/elastic-job"
	// annotationDeactivated marks a Workload the operator deactivated: it activates no
	// other (Kueue deactivates Workloads too, for good reasons of its own).
	annotationDeactivated = "batch.queuejob.io/deactivated"
	// annotationStopped marks a wave's Job under Kueue that spec.suspend has the operator
	// stop, and how far it went (syncKueueSuspend): stopPending, then stopWorkloads or
	// stopJob; removed once it runs again.
	annotationStopped = "batch.queuejob.io/stopped"
	stopPending       = "pending"
	stopWorkloads     = "workloads"
	stopJob           = "job"
	stopHeld          = "held"
	// kueueStopGrace is how long an ended wave's Job under Kueue may run on after the
	// operator deactivated its Workload, before the operator archives and deletes it
	// (Kueue does not run, say): deleting a Job is no fight with Kueue.
	kueueStopGrace = 2 * time.Minute
)

// kueueWorkloadVersions are the versions of kueue.x-k8s.io Workloads asked for, newest
// first: v1beta2 from Kueue 0.15, v1beta1 before.
var kueueWorkloadVersions = []string{"v1beta2", "v1beta1"}

// +kubebuilder:rbac:groups=kueue.x-k8s.io,resources=workloads,verbs=list;patch

// kueueManaged reports whether Kueue admits the Job: it names a LocalQueue.
func kueueManaged(job *batchv1.Job) bool {
	return job != nil && job.Labels[kueueQueueNameLabel] != ""
}

// kueueElastic reports whether the Job asks Kueue to let its parallelism change while it
// runs (a new workload slice is admitted for it).
func kueueElastic(job *batchv1.Job) bool {
	return job.Annotations[kueueElasticJobAnnotation] == "true"
}

// setWorkloadsActive sets spec.active of the Kueue Workloads of job (Kueue labels them
// with the Job's UID) and reports how many it has: none where Kueue has not made one yet,
// does not manage the Job, or does not run. It activates only Workloads that it
// deactivated itself. They are read from the API server, not a cache: the operator
// watches no Workloads, and runs where Kueue is not installed.
func (r *QueueJobReconciler) setWorkloadsActive(ctx context.Context, job *batchv1.Job, active bool) (int, error) {
	list, err := r.workloadsOf(ctx, job)
	if err != nil {
		return 0, err
	}
	mark := `"true"`
	if active {
		mark = "null"
	}
	n := 0
	for i := range list {
		wl := &list[i]
		if workloadFinished(wl) { // a replaced slice of an elastic Job, say
			continue
		}
		got, found, _ := unstructured.NestedBool(wl.Object, "spec", "active")
		isActive := !found || got // Kueue's default
		ours := wl.GetAnnotations()[annotationDeactivated] == "true"
		if isActive == active || active && !ours { // as wished; or Kueue's deactivation, Kueue's to undo
			n++
			continue
		}
		// With the resourceVersion read: a Workload Kueue deactivated meanwhile is not
		// marked as the operator's (a conflict: the next reconcile reads it again).
		patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil,
			`{"metadata":{"resourceVersion":%q,"annotations":{%q:%s}},"spec":{"active":%t}}`,
			wl.GetResourceVersion(), annotationDeactivated, mark, active))
		err := r.Patch(ctx, wl, patch)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("setting spec.active of Kueue Workload %s to %t: %w", wl.GetName(), active, err)
		}
		n++
		logf.FromContext(ctx).Info("Set a Kueue Workload's spec.active", "workload", wl.GetName(), "job", job.Name, "active", active)
	}
	return n, nil
}

// workloadFinished reports whether Kueue marked the Workload Finished.
func workloadFinished(wl *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(wl.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Finished" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// workloadsOf lists the Kueue Workloads of job; none where Kueue's API is not served.
func (r *QueueJobReconciler) workloadsOf(ctx context.Context, job *batchv1.Job) ([]unstructured.Unstructured, error) {
	for _, v := range kueueWorkloadVersions {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(schema.GroupVersionKind{Group: "kueue.x-k8s.io", Version: v, Kind: "WorkloadList"})
		err := r.APIReader.List(ctx, list, client.InNamespace(job.Namespace), client.MatchingLabels{kueueJobUIDLabel: string(job.UID)})
		switch {
		case meta.IsNoMatchError(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("listing the Kueue Workloads of Job %s: %w", job.Name, err)
		}
		return list.Items, nil
	}
	return nil, nil
}

// syncKueueSuspend carries spec.suspend over to a running wave's Job under Kueue, in an
// order that a failed write or a crash at any point does not strand. The Job's
// annotation batch.queuejob.io/stopped says how far stopping it went: "pending" (written
// first: the operator wants it stopped), then "workloads" (its Workloads deactivated),
// "job" (it had none: the operator suspended the Job itself, in the same write as the
// mark) or "held" (none, and Kueue's webhook had suspended it). Each reconcile finishes
// what is left: a pending stop, or one a resume undid in part, is done again; a Job
// stopped that runs is stopped again (Kueue admitted a Workload made since); and on a
// resume the Workloads the operator deactivated are activated, a Job it suspended itself
// resumed (with the mark removed in the same write), and the mark removed last. It reports false when a write met a conflict (a reconcile a second later goes on).
func (r *QueueJobReconciler) syncKueueSuspend(ctx context.Context, s *scope, job *batchv1.Job) (bool, error) {
	wish, mark := s.qj.Spec.IsSuspended(), kueueStopMark(job)
	resuming := job.Annotations[qjv1.AnnotationSuspend] != "true" // or never stopped
	switch {
	case wish && (mark == "" || mark == stopPending || resuming):
		if ok, err := r.annotateJob(ctx, s, job, map[string]any{qjv1.AnnotationSuspend: "true", annotationStopped: stopPending}); !ok {
			return false, err
		}
		return r.recordStop(ctx, s, job)
	case wish:
		if ptr.Deref(job.Spec.Suspend, false) {
			return true, nil
		}
		return r.recordStop(ctx, s, job) // it runs again: Kueue admitted a Workload made since
	case mark != "":
		// The mark stays (an inferred one written) until the resume is done.
		if ok, err := r.annotateJob(ctx, s, job, map[string]any{qjv1.AnnotationSuspend: "false", annotationStopped: mark}); !ok {
			return false, err
		}
		n, err := r.setWorkloadsActive(ctx, job, true)
		if err != nil {
			return kueueRetry(s, err)
		}
		if n == 0 && mark == stopJob && ptr.Deref(job.Spec.Suspend, false) {
			return r.setJobSuspend(ctx, s, job, false, map[string]any{annotationStopped: nil})
		}
		return r.annotateJob(ctx, s, job, map[string]any{annotationStopped: nil})
	}
	return true, nil
}

// kueueStopMark is the Job's batch.queuejob.io/stopped; a Job that an earlier operator
// suspended before the mark existed counts as suspended by the operator itself.
func kueueStopMark(job *batchv1.Job) string {
	if m := job.Annotations[annotationStopped]; m != "" {
		return m
	}
	if job.Annotations[qjv1.AnnotationSuspend] == "true" {
		return stopJob
	}
	return ""
}

// recordStop stops the Job through Kueue (stopKueueJob) and records how in its mark (a
// Job it suspends itself, in the same write).
func (r *QueueJobReconciler) recordStop(ctx context.Context, s *scope, job *batchv1.Job) (bool, error) {
	how, err := r.stopKueueJob(ctx, s, job, map[string]any{annotationStopped: stopJob})
	if err != nil || how == "" {
		return kueueRetry(s, err)
	}
	return r.annotateJob(ctx, s, job, map[string]any{annotationStopped: how})
}

// kueueRetry turns a conflict (Kueue changed the Workload or the Job since it was read)
// into a reconcile a second later; other errors it returns.
func kueueRetry(s *scope, err error) (bool, error) {
	if err == nil || apierrors.IsConflict(err) {
		s.requeue(time.Second)
		return false, nil
	}
	return false, err
}

// annotateJob sets (nil: removes) annotations of the Job; see patchJob.
func (r *QueueJobReconciler) annotateJob(ctx context.Context, s *scope, job *batchv1.Job, set map[string]any) (bool, error) {
	return r.patchJob(ctx, s, job, func(want *batchv1.Job) { setAnnotations(want, set) })
}

// setJobSuspend sets the Job's own spec.suspend (only for a Job without a Workload) and
// the annotations given, in one write; see patchJob.
func (r *QueueJobReconciler) setJobSuspend(ctx context.Context, s *scope, job *batchv1.Job, suspend bool, set map[string]any) (bool, error) {
	return r.patchJob(ctx, s, job, func(want *batchv1.Job) {
		want.Spec.Suspend = ptr.To(suspend)
		setAnnotations(want, set)
	})
}

// setAnnotations sets (nil: removes) the annotations of the Job.
func setAnnotations(job *batchv1.Job, set map[string]any) {
	for k, v := range set {
		if v == nil {
			delete(job.Annotations, k)
		} else {
			metav1.SetMetaDataAnnotation(&job.ObjectMeta, k, v.(string))
		}
	}
}

// stopKueueJob asks Kueue to stop a Job it manages: it deactivates the Job's Workloads,
// and Kueue suspends the Job ("workloads"). A running Job without a Workload (Kueue does
// not manage it, or not yet) it suspends itself, with the annotations mark in the same
// write ("job"; "" on a conflict). A suspended one without a Workload is "held": Kueue's
// webhook suspended it; should Kueue make and admit a Workload for it later, the Job's
// resumption brings a reconcile that deactivates it.
func (r *QueueJobReconciler) stopKueueJob(ctx context.Context, s *scope, job *batchv1.Job, mark map[string]any) (string, error) {
	n, err := r.setWorkloadsActive(ctx, job, false)
	switch {
	case err != nil:
		return "", err
	case n > 0:
		return stopWorkloads, nil
	case ptr.Deref(job.Spec.Suspend, false):
		return stopHeld, nil
	}
	if ok, err := r.setJobSuspend(ctx, s, job, true, mark); !ok {
		return "", err
	}
	return stopJob, nil
}

// keepKueueJobStopped stops again an ended wave's Job under Kueue that runs: Kueue made
// and admitted a Workload for it after the operator suspended it, or the operator's stop
// was cut short (then a reconcile a second later tries again). Nothing is read for a Job
// that is suspended or not under Kueue.
func (r *QueueJobReconciler) keepKueueJobStopped(ctx context.Context, s *scope, job *batchv1.Job) error {
	if !kueueManaged(job) || ptr.Deref(job.Spec.Suspend, false) {
		return nil
	}
	_, err := r.stopKueueJob(ctx, s, job, nil)
	_, err = kueueRetry(s, err)
	return err
}

// kueueJob makes a wave's Job, which names a LocalQueue, one that Kueue admits as it
// should: unless the template says otherwise, admitted in part, down to 1 pod (a wave
// sized for more pods than the ClusterQueue's quota would never be admitted whole). A
// template's minimum that this wave's pod count does not exceed is dropped (Kueue refuses
// it: the wave is admitted whole), and so is one of an elastic Job, which grows (Kueue
// refuses a change of parallelism of a running Job admitted in part).
func kueueJob(annotations map[string]string, spec *batchv1.JobSpec) {
	pods := ptr.Deref(spec.Parallelism, 1) // Kueue's count: at most the completions
	if spec.Completions != nil {
		pods = min(pods, *spec.Completions)
	}
	v, set := annotations[kueueMinParallelismAnnotation]
	n, err := strconv.ParseInt(v, 10, 32)
	switch {
	case annotations[kueueElasticJobAnnotation] == "true":
		delete(annotations, kueueMinParallelismAnnotation)
	case set && err == nil && int32(n) >= pods:
		delete(annotations, kueueMinParallelismAnnotation)
	case !set && pods > 1:
		annotations[kueueMinParallelismAnnotation] = "1"
	}
}
