package controllers

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// maxJobNameLength is the longest Job name that still fits the job-name label the Job
// controller puts on its pods (a label value holds at most 63 characters).
const maxJobNameLength = 63

// jobName is the deterministic name of a QueueJob's Job for a wave. Deterministic names
// are what make a stale cache harmless: a second create of the same wave fails with
// AlreadyExists instead of starting a duplicate Job. Names that would be too long are
// cut and made unique again with a hash of the full QueueJob name.
func jobName(queueJob string, wave int32) string {
	suffix := "-" + strconv.Itoa(int(wave))
	if len(queueJob)+len(suffix) <= maxJobNameLength {
		return queueJob + suffix
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(queueJob))
	hash := fmt.Sprintf("-%08x", h.Sum32())
	prefix := queueJob[:maxJobNameLength-len(hash)-len(suffix)]
	// A DNS name part must end in an alphanumeric character.
	for len(prefix) > 0 && (prefix[len(prefix)-1] == '-' || prefix[len(prefix)-1] == '.') {
		prefix = prefix[:len(prefix)-1]
	}
	return prefix + hash + suffix
}

// plainJobName is the name of the one Job of a QueueJob without a queue: the QueueJob's
// own, so that kubectl logs job/<name> and kubectl describe job/<name> find it, as they
// would find the Job the QueueJob replaced.
func plainJobName(qj *qjv1.QueueJob) string { return qj.Name }

// waveJobName is the name of the Job of a wave.
func waveJobName(qj *qjv1.QueueJob, wave int32) string {
	if qj.Spec.Queue == nil {
		return plainJobName(qj)
	}
	return jobName(qj.Name, wave)
}

// jobSizing is what a wave's Job runs: how many pods must succeed and how many run at
// once. Nil completions means what the template says (a QueueJob without a queue) or
// unset (a worker pool).
type jobSizing struct {
	completions *int32
	parallelism int32
}

// desiredJob builds the Job of a wave from spec.jobTemplate. It sets everything but the
// owner reference, which needs the scheme. env is added to every container that does not
// set a variable of the same name itself.
func desiredJob(qj *qjv1.QueueJob, wave int32, size jobSizing, env []corev1.EnvVar) *batchv1.Job {
	ours := map[string]string{qjv1.LabelQueueJob: qj.Name, qjv1.LabelWave: strconv.Itoa(int(wave))}
	jt := qj.Spec.JobTemplate.DeepCopy()
	spec := jt.Spec

	labels := jt.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, ours)
	annotations := map[string]string{}
	for k, v := range jt.Annotations {
		// The operator's annotations say what it did to a Job (batch.queuejob.io/wave-ended
		// ends a wave): a template never sets them. Admission refuses them too.
		if !strings.HasPrefix(k, qjv1.GroupVersion.Group+"/") {
			annotations[k] = v
		}
	}
	suspend := qj.Spec.IsSuspended()
	annotations[qjv1.AnnotationSuspend] = strconv.FormatBool(suspend)
	annotations[qjv1.AnnotationParallelism] = strconv.Itoa(int(size.parallelism))
	annotations[qjv1.AnnotationTemplateHash] = templateHash(&qj.Spec)

	tmpl := &spec.Template
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	maps.Copy(tmpl.Labels, ours)
	// Every container gets the queue's coordinates: init containers (which may fill or
	// check the queue) and native sidecars (init containers that keep running) too.
	for _, list := range [][]corev1.Container{tmpl.Spec.InitContainers, tmpl.Spec.Containers} {
		for i := range list {
			c := &list[i]
			for _, e := range env {
				if !slices.ContainsFunc(c.Env, func(have corev1.EnvVar) bool { return have.Name == e.Name }) {
					c.Env = append(c.Env, *e.DeepCopy())
				}
			}
		}
	}

	if qj.Spec.Queue != nil {
		spec.Completions = size.completions
		spec.Parallelism = ptr.To(size.parallelism)
		if size.completions == nil && spec.PodReplacementPolicy == nil {
			// A worker pool has no completions to bound it: a replacement started while
			// the old pod still terminates would be a second worker in one slot.
			spec.PodReplacementPolicy = ptr.To(batchv1.Failed)
		}
	}
	// Without a queue the template's completions and parallelism pass through as they
	// are: a Job that sets neither runs one pod to completion, and one that sets only
	// parallelism is a work-queue Job.
	spec.Suspend = ptr.To(suspend)
	if labels[kueueQueueNameLabel] != "" && qj.Spec.Queue != nil {
		kueueJob(annotations, &spec) // a Job without a queue passes through as it is
	}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:        waveJobName(qj, wave),
			Namespace:   qj.Namespace,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: spec,
	}
}

// templateHash identifies the part of the spec a wave's Job is built from once and for
// all: the jobTemplate but its parallelism (which the running Job follows), and
// itemsPerPod.
func templateHash(spec *qjv1.QueueJobSpec) string {
	jt := spec.JobTemplate.DeepCopy()
	jt.Spec.Parallelism = nil
	b, _ := json.Marshal(struct {
		T *qjv1.JobTemplateSpec `json:"t"`
		I *int32                `json:"i,omitempty"`
	}{jt, spec.ItemsPerPod})
	h := fnv.New64a()
	_, _ = h.Write(b)
	return fmt.Sprintf("%016x", h.Sum64())
}

// plainSizing is the sizing of a QueueJob without a queue: the template's own.
func plainSizing(spec *qjv1.QueueJobSpec) jobSizing {
	return jobSizing{completions: spec.JobTemplate.Spec.Completions, parallelism: spec.EffectiveParallelism()}
}

// jobFinished returns the Job's terminal condition (Complete or Failed with status
// True), or nil while it runs.
func jobFinished(job *batchv1.Job) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		c := &job.Status.Conditions[i]
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == "True" {
			return c
		}
	}
	return nil
}

// endedByOperator reports whether the operator has ended the Job's wave (endWave).
func endedByOperator(job *batchv1.Job) bool {
	_, ok := job.Annotations[qjv1.AnnotationWaveEnded]
	return ok
}

// endedAt is when the operator ended the Job's wave (the zero time if it cannot tell).
func endedAt(job *batchv1.Job) time.Time {
	at, _ := time.Parse(time.RFC3339, job.Annotations[qjv1.AnnotationWaveEnded])
	return at
}

// endedBefore reports whether the operator ended the Job's wave before t (a time it
// cannot read counts as long ago).
func endedBefore(job *batchv1.Job, t time.Time) bool {
	return endedByOperator(job) && endedAt(job).Before(t)
}

// jobWave reads the wave number from a Job's label; 0 if it has none.
func jobWave(job *batchv1.Job) int32 {
	w, err := strconv.ParseInt(job.Labels[qjv1.LabelWave], 10, 32)
	if err != nil {
		return 0
	}
	return int32(w)
}
