package controllers

import (
	"context"
	"fmt"
	"strconv"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Kueue (kueue.x-k8s.io) admits each wave's Job as a Workload of its own: a Job whose
// jobTemplate names a LocalQueue (the label kueue.x-k8s.io/queue-name) waits suspended
// until Kueue admits it, and Kueue suspends it again to preempt it. Kueue resumes every
// admitted Job that is suspended, so under Kueue the operator never suspends a Job Kueue
// admits: to stop one (spec.suspend, or a wave that outlived its drained queue) it sets the
// Workload's spec.active to false, as Kueue asks of its users, and Kueue suspends the Job.
// Nor does it change an admitted Job's parallelism (Kueue would evict the Job, which no
// longer matches its Workload), unless the Job is an elastic one
// (kueue.x-k8s.io/elastic-job: "true", Kueue's ElasticJobsViaWorkloadSlices gate):
// a WorkerPool that needs more workers gets them with its next wave. docs/kueue.md.
const (
	kueueQueueNameLabel           = "kueue.x-k8s.io/queue-name"
	kueueJobUIDLabel              = "kueue.x-k8s.io/job-uid"
	kueueMinParallelismAnnotation = "kueue.x-k8s.io/job-min-parallelism"
	kueueElasticJobAnnotation     = "kueue.x-k8s.io/elastic-job"
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
// with the Job's UID) and reports how many it found: none where Kueue has not made one
// yet, or does not run. They are read from the API server, not a cache: the operator
// watches no Workloads, and runs where Kueue is not installed.
func (r *QueueJobReconciler) setWorkloadsActive(ctx context.Context, job *batchv1.Job, active bool) (int, error) {
	list, err := r.workloadsOf(ctx, job)
	if err != nil || len(list) == 0 {
		return 0, err
	}
	patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"spec":{"active":%t}}`, active))
	for i := range list {
		wl := &list[i]
		if got, found, _ := unstructured.NestedBool(wl.Object, "spec", "active"); got == active || !found && active {
			continue
		}
		if err := r.Patch(ctx, wl, patch); client.IgnoreNotFound(err) != nil {
			return 0, fmt.Errorf("setting spec.active of Kueue Workload %s to %t: %w", wl.GetName(), active, err)
		}
		logf.FromContext(ctx).Info("Set a Kueue Workload's spec.active", "workload", wl.GetName(), "job", job.Name, "active", active)
	}
	return len(list), nil
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

// stopKueueJob asks Kueue to stop a Job it manages: it deactivates the Job's Workloads,
// and Kueue suspends the Job. It reports whether it did; false: the Job has no Workload
// (yet), and the caller suspends the Job itself, which no one then resumes but Kueue
// admitting a Workload it makes later: the caller deactivates that one when it sees the
// Job run again.
func (r *QueueJobReconciler) stopKueueJob(ctx context.Context, job *batchv1.Job) (bool, error) {
	n, err := r.setWorkloadsActive(ctx, job, false)
	return n > 0, err
}

// keepKueueJobStopped stops again a Job under Kueue that the operator stopped (it ended
// its wave, or spec.suspend holds it) but that runs: Kueue made and admitted a Workload
// for it after the operator suspended it, or the operator's stop was cut short. Nothing
// is read for a Job that is suspended or not under Kueue.
func (r *QueueJobReconciler) keepKueueJobStopped(ctx context.Context, job *batchv1.Job) error {
	if !kueueManaged(job) || ptr.Deref(job.Spec.Suspend, false) {
		return nil
	}
	stopped, err := r.stopKueueJob(ctx, job)
	if err != nil || stopped {
		return err
	}
	// No Workload: no Kueue to fight over it.
	patch := client.MergeFrom(job.DeepCopy())
	job.Spec.Suspend = ptr.To(true)
	if err := r.Patch(ctx, job, patch); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("suspending Job %s: %w", job.Name, err))
	}
	return nil
}

// kueueJob makes a wave's Job, which names a LocalQueue, one that Kueue admits as it
// should: created suspended (Kueue's webhook would suspend it, but a webhook may be set
// to be ignored when down), and, unless the template says otherwise or asks for an
// elastic Job (which Kueue does not admit in part), admitted in part, down to 1 pod:
// a wave sized for more pods than the ClusterQueue's quota would never be admitted whole.
// A template's minimum that this wave's parallelism does not exceed is dropped (Kueue
// refuses it): such a wave is admitted whole.
func kueueJob(annotations map[string]string, spec *batchv1.JobSpec) {
	spec.Suspend = ptr.To(true)
	p := ptr.Deref(spec.Parallelism, 1)
	v, set := annotations[kueueMinParallelismAnnotation]
	switch {
	case set:
		if n, err := strconv.ParseInt(v, 10, 32); err == nil && int32(n) >= p {
			delete(annotations, kueueMinParallelismAnnotation)
		}
	case annotations[kueueElasticJobAnnotation] != "true" && p > 1:
		annotations[kueueMinParallelismAnnotation] = "1"
	}
}
