package controllers

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

func TestJobName(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	cases := []struct {
		name     string
		queueJob string
		wave     int32
		want     string
	}{
		{name: "short name", queueJob: "pi", wave: 1, want: "pi-1"},
		{name: "later wave", queueJob: "job-wq-1", wave: 12, want: "job-wq-1-12"},
		{name: "exactly fits", queueJob: strings.Repeat("b", 61), wave: 1, want: strings.Repeat("b", 61) + "-1"},
		{name: "63 characters is cut and hashed", queueJob: long63, wave: 1, want: strings.Repeat("a", 52) + "-" + fnvHex(long63) + "-1"},
		{name: "cut never ends on a dash", queueJob: strings.Repeat("c", 51) + "-" + strings.Repeat("d", 11), wave: 3,
			want: strings.Repeat("c", 51) + "-" + fnvHex(strings.Repeat("c", 51)+"-"+strings.Repeat("d", 11)) + "-3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := jobName(tc.queueJob, tc.wave)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("jobName(%q, %d) (-want +got):\n%s", tc.queueJob, tc.wave, diff)
			}
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Errorf("jobName gave an invalid object name %q: %v", got, errs)
			}
			if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
				t.Errorf("jobName gave a name that is not a valid job-name label value %q: %v", got, errs)
			}
		})
	}
}

func TestJobNameKeepsLongNamesApart(t *testing.T) {
	a := strings.Repeat("x", 62) + "a"
	b := strings.Repeat("x", 62) + "b"
	if jobName(a, 1) == jobName(b, 1) {
		t.Fatalf("two QueueJobs that differ only past the cut got the same Job name %q", jobName(a, 1))
	}
}

func fnvHex(s string) string {
	// The expected hash, spelled out independently of jobName's own code path.
	var h uint32 = 2166136261
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	const digits = "0123456789abcdef"
	out := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		out[i] = digits[h&0xf]
		h >>= 4
	}
	return string(out)
}

func TestDesiredJob(t *testing.T) {
	base := func() *qjv1.QueueJob {
		return &qjv1.QueueJob{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pi"},
			Spec: qjv1.QueueJobSpec{
				BackoffLimit: ptr.To[int32](4),
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "pi"}},
					Spec: corev1.PodSpec{
						RestartPolicy: corev1.RestartPolicyNever,
						Containers:    []corev1.Container{{Name: "pi", Image: "perl"}},
					},
				},
			},
		}
	}
	cases := []struct {
		name   string
		mutate func(*qjv1.QueueJob)
		wave   int32
		size   jobSizing
		env    []corev1.EnvVar
		want   func(*batchv1.Job)
	}{
		{
			name: "plain Job from defaults", wave: 1,
			size: jobSizing{completions: ptr.To[int32](1), parallelism: 1},
			want: func(*batchv1.Job) {},
		},
		{
			name: "deadline and suspend carried over", wave: 1,
			mutate: func(q *qjv1.QueueJob) {
				q.Spec.ActiveDeadlineSeconds = ptr.To[int64](60)
				q.Spec.Suspend = ptr.To(true)
			},
			size: jobSizing{completions: ptr.To[int32](1), parallelism: 1},
			want: func(j *batchv1.Job) {
				j.Spec.ActiveDeadlineSeconds = ptr.To[int64](60)
				j.Spec.Suspend = ptr.To(true)
			},
		},
		{
			name: "worker pool wave leaves completions unset", wave: 3,
			size: jobSizing{parallelism: 2},
			want: func(j *batchv1.Job) {
				j.Name = "pi-3"
				j.Labels[qjv1.LabelWave] = "3"
				j.Spec.Template.Labels[qjv1.LabelWave] = "3"
				j.Spec.Completions = nil
				j.Spec.Parallelism = ptr.To[int32](2)
			},
		},
		{
			name: "queue env added to every container, the user's own value wins", wave: 1,
			mutate: func(q *qjv1.QueueJob) {
				q.Spec.Template.Spec.Containers = append(q.Spec.Template.Spec.Containers,
					corev1.Container{Name: "sidecar", Image: "s", Env: []corev1.EnvVar{{Name: "QUEUE", Value: "mine"}}})
			},
			size: jobSizing{completions: ptr.To[int32](1), parallelism: 1},
			env:  []corev1.EnvVar{{Name: "QUEUEJOB_NAME", Value: "pi"}, {Name: "QUEUE", Value: "job1"}},
			want: func(j *batchv1.Job) {
				j.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "QUEUEJOB_NAME", Value: "pi"}, {Name: "QUEUE", Value: "job1"}}
				j.Spec.Template.Spec.Containers = append(j.Spec.Template.Spec.Containers, corev1.Container{Name: "sidecar", Image: "s",
					Env: []corev1.EnvVar{{Name: "QUEUE", Value: "mine"}, {Name: "QUEUEJOB_NAME", Value: "pi"}}})
			},
		},
		{
			name: "queue env added to init containers and native sidecars too", wave: 1,
			mutate: func(q *qjv1.QueueJob) {
				q.Spec.Template.Spec.InitContainers = []corev1.Container{
					{Name: "fill", Image: "f"},
					{Name: "proxy", Image: "p", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)},
				}
			},
			size: jobSizing{completions: ptr.To[int32](1), parallelism: 1},
			env:  []corev1.EnvVar{{Name: "QUEUEJOB_NAME", Value: "pi"}},
			want: func(j *batchv1.Job) {
				env := []corev1.EnvVar{{Name: "QUEUEJOB_NAME", Value: "pi"}}
				j.Spec.Template.Spec.Containers[0].Env = env
				j.Spec.Template.Spec.InitContainers = []corev1.Container{
					{Name: "fill", Image: "f", Env: env},
					{Name: "proxy", Image: "p", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways), Env: env},
				}
			},
		},
		{
			name: "a user label with the operator's key is overridden", wave: 1,
			mutate: func(q *qjv1.QueueJob) { q.Spec.Template.Labels[qjv1.LabelQueueJob] = "someone-else" },
			size:   jobSizing{completions: ptr.To[int32](1), parallelism: 1},
			want:   func(*batchv1.Job) {},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			qj := base()
			if tc.mutate != nil {
				tc.mutate(qj)
			}
			before := qj.DeepCopy()
			want := &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pi-1",
					Labels: map[string]string{qjv1.LabelQueueJob: "pi", qjv1.LabelWave: "1"}},
				Spec: batchv1.JobSpec{
					Completions:  ptr.To[int32](1),
					Parallelism:  ptr.To[int32](1),
					BackoffLimit: ptr.To[int32](4),
					Suspend:      ptr.To(false),
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "pi", qjv1.LabelQueueJob: "pi", qjv1.LabelWave: "1"}},
						Spec:       *base().Spec.Template.Spec.DeepCopy(),
					},
				},
			}
			tc.want(want)
			got := desiredJob(qj, tc.wave, tc.size, tc.env)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("desiredJob (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, qj); diff != "" {
				t.Errorf("desiredJob changed the QueueJob (-before +after):\n%s", diff)
			}
		})
	}
}
