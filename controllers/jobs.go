package controllers

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"

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

// jobSizing is what a wave's Job runs: how many pods must succeed and how many run at
// once. Nil completions means unset (a worker pool).
type jobSizing struct {
	completions *int32
	parallelism int32
}

// desiredJob builds the Job of a wave from the QueueJob's spec. It sets everything but
// the owner reference, which needs the scheme. env is added to every container that does
// not set a variable of the same name itself.
func desiredJob(qj *qjv1.QueueJob, wave int32, size jobSizing, env []corev1.EnvVar) *batchv1.Job {
	wl := strconv.Itoa(int(wave))
	labels := map[string]string{qjv1.LabelQueueJob: qj.Name, qjv1.LabelWave: wl}

	tmpl := qj.Spec.Template.DeepCopy()
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	for k, v := range labels {
		tmpl.Labels[k] = v
	}
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

	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:      jobName(qj.Name, wave),
			Namespace: qj.Namespace,
			Labels:    labels,
		},
		Spec: batchv1.JobSpec{
			Completions:           size.completions,
			Parallelism:           ptr.To(size.parallelism),
			BackoffLimit:          qj.Spec.BackoffLimit,
			ActiveDeadlineSeconds: qj.Spec.ActiveDeadlineSeconds,
			Suspend:               ptr.To(qj.Spec.IsSuspended()),
			Template:              *tmpl,
		},
	}
}

// plainSizing is the sizing of a QueueJob without a queue: spec.completions pods, at
// most spec.parallelism at once, exactly as a Job would run them.
func plainSizing(spec *qjv1.QueueJobSpec) jobSizing {
	return jobSizing{
		completions: ptr.To(spec.EffectiveCompletions()),
		parallelism: spec.EffectiveParallelism(),
	}
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

// waveEnded reports whether the operator has ended the Job's wave.
func waveEnded(job *batchv1.Job) bool {
	_, ok := job.Annotations[qjv1.AnnotationWaveEnded]
	return ok
}

// jobWave reads the wave number from a Job's label; 0 if it has none.
func jobWave(job *batchv1.Job) int32 {
	w, err := strconv.ParseInt(job.Labels[qjv1.LabelWave], 10, 32)
	if err != nil {
		return 0
	}
	return int32(w)
}
