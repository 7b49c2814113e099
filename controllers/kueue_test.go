package controllers

import (
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// kueueJobOf is job naming a Kueue LocalQueue, elastic or not.
func kueueJobOf(job *batchv1.Job, elastic bool) *batchv1.Job {
	j := job.DeepCopy()
	j.Labels = map[string]string{kueueQueueNameLabel: "team-a"}
	if elastic {
		metav1.SetMetaDataAnnotation(&j.ObjectMeta, kueueElasticJobAnnotation, "true")
	}
	return j
}

func TestKueueJob(t *testing.T) {
	cases := []struct {
		name        string
		annotations map[string]string
		parallelism int32
		completions *int32
		want        map[string]string
	}{
		{name: "a Job of parallelism 3 and 1 completion is 1 pod: admitted whole", annotations: map[string]string{}, parallelism: 3,
			completions: ptr.To[int32](1), want: map[string]string{}},
		{name: "an elastic Job whose template sets a minimum: the minimum goes (it could not grow)",
			annotations: map[string]string{kueueElasticJobAnnotation: "true", kueueMinParallelismAnnotation: "1"}, parallelism: 4,
			want: map[string]string{kueueElasticJobAnnotation: "true"}},
		{name: "a wave of 4 pods: admitted in part, down to 1", annotations: map[string]string{}, parallelism: 4,
			want: map[string]string{kueueMinParallelismAnnotation: "1"}},
		{name: "a wave of 1 pod: admitted whole (Kueue refuses a minimum of 1 for it)", annotations: map[string]string{}, parallelism: 1,
			want: map[string]string{}},
		{name: "the template's minimum, below the wave's parallelism, stays", annotations: map[string]string{kueueMinParallelismAnnotation: "2"}, parallelism: 4,
			want: map[string]string{kueueMinParallelismAnnotation: "2"}},
		{name: "the template's minimum, not below this wave's parallelism, goes: the wave is admitted whole",
			annotations: map[string]string{kueueMinParallelismAnnotation: "3"}, parallelism: 3, want: map[string]string{}},
		{name: "an elastic Job: not admitted in part (it could not grow)", annotations: map[string]string{kueueElasticJobAnnotation: "true"}, parallelism: 4,
			want: map[string]string{kueueElasticJobAnnotation: "true"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := batchv1.JobSpec{Parallelism: ptr.To(tc.parallelism), Completions: tc.completions}
			kueueJob(tc.annotations, &spec)
			if !equality.Semantic.DeepEqual(tc.annotations, tc.want) {
				t.Errorf("annotations = %v, want %v", tc.annotations, tc.want)
			}
		})
	}
}

func TestKueueManaged(t *testing.T) {
	for _, tc := range []struct {
		job  *batchv1.Job
		want bool
	}{
		{nil, false},
		{&batchv1.Job{}, false},
		{kueueJobOf(&batchv1.Job{}, false), true},
		{&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{kueueQueueNameLabel: ""}}}, false},
	} {
		if got := kueueManaged(tc.job); got != tc.want {
			t.Errorf("kueueManaged(%v) = %t, want %t", tc.job, got, tc.want)
		}
	}
}

func TestKueueStopMark(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{"never stopped", map[string]string{qjv1.AnnotationSuspend: "false"}, ""},
		{"a stop under way", map[string]string{qjv1.AnnotationSuspend: "true", annotationStopped: stopPending}, stopPending},
		{"stopped through its Workloads", map[string]string{qjv1.AnnotationSuspend: "true", annotationStopped: stopWorkloads}, stopWorkloads},
		{"suspended by an operator from before the mark: by the operator itself", map[string]string{qjv1.AnnotationSuspend: "true"}, stopJob},
	} {
		job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Annotations: tc.annotations}}
		if got := kueueStopMark(job); got != tc.want {
			t.Errorf("%s: kueueStopMark = %q, want %q", tc.name, got, tc.want)
		}
	}
}
