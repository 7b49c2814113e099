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
				Queue: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6379", Key: "k"}},
				JobTemplate: qjv1.JobTemplateSpec{Spec: batchv1.JobSpec{
					BackoffLimit: ptr.To[int32](4),
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "pi"}},
						Spec: corev1.PodSpec{
							RestartPolicy: corev1.RestartPolicyNever,
							Containers:    []corev1.Container{{Name: "pi", Image: "perl"}},
						},
					},
				}},
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
			name: "PerItem wave", wave: 1,
			size: jobSizing{completions: ptr.To[int32](1), parallelism: 1},
			want: func(*batchv1.Job) {},
		},
		{
			name: "a QueueJob without a queue: its one Job is named after it and keeps the template's completions", wave: 1,
			mutate: func(q *qjv1.QueueJob) {
				q.Spec.Queue = nil
				q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](7)
				q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](3)
			},
			size: jobSizing{completions: ptr.To[int32](7), parallelism: 3},
			want: func(j *batchv1.Job) {
				j.Name = "pi"
				j.Spec.Completions = ptr.To[int32](7)
				j.Spec.Parallelism = ptr.To[int32](3)
				j.Annotations[qjv1.AnnotationParallelism] = "3"
			},
		},
		{
			name: "a QueueJob without a queue that sets neither completions nor parallelism runs one pod, as a Job would", wave: 1,
			mutate: func(q *qjv1.QueueJob) { q.Spec.Queue = nil },
			size:   jobSizing{parallelism: 1},
			want: func(j *batchv1.Job) {
				j.Name = "pi"
				j.Spec.Completions = nil
				j.Spec.Parallelism = nil
			},
		},
		{
			name: "every Job field, the Job's labels and annotations pass through; suspend comes from spec.suspend", wave: 1,
			mutate: func(q *qjv1.QueueJob) {
				jt := &q.Spec.JobTemplate
				jt.Labels = map[string]string{"kueue.x-k8s.io/queue-name": "team-a"}
				jt.Annotations = map[string]string{"cost-center": "42"}
				jt.Spec.ActiveDeadlineSeconds = ptr.To[int64](60)
				jt.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
					Action:          batchv1.PodFailurePolicyActionIgnore,
					OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}},
				}}}
				jt.Spec.PodReplacementPolicy = ptr.To(batchv1.Failed)
				jt.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
				jt.Spec.BackoffLimitPerIndex = ptr.To[int32](2)
				jt.Spec.ManagedBy = ptr.To("kueue.x-k8s.io/multikueue")
				q.Spec.Suspend = ptr.To(true)
			},
			size: jobSizing{completions: ptr.To[int32](1), parallelism: 1},
			want: func(j *batchv1.Job) {
				j.Labels["kueue.x-k8s.io/queue-name"] = "team-a"
				j.Annotations["cost-center"] = "42"
				j.Annotations[qjv1.AnnotationSuspend] = "true"
				j.Spec.ActiveDeadlineSeconds = ptr.To[int64](60)
				j.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
					Action:          batchv1.PodFailurePolicyActionIgnore,
					OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}},
				}}}
				j.Spec.PodReplacementPolicy = ptr.To(batchv1.Failed)
				j.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
				j.Spec.BackoffLimitPerIndex = ptr.To[int32](2)
				j.Spec.ManagedBy = ptr.To("kueue.x-k8s.io/multikueue")
				j.Spec.Suspend = ptr.To(true)
			},
		},
		{
			name: "worker pool wave leaves completions unset and replaces a pod only once it has failed", wave: 3,
			size: jobSizing{parallelism: 2},
			want: func(j *batchv1.Job) {
				j.Name = "pi-3"
				j.Labels[qjv1.LabelWave] = "3"
				j.Spec.Template.Labels[qjv1.LabelWave] = "3"
				j.Spec.Completions = nil
				j.Spec.Parallelism = ptr.To[int32](2)
				j.Spec.PodReplacementPolicy = ptr.To(batchv1.Failed)
				j.Annotations[qjv1.AnnotationParallelism] = "2"
			},
		},
		{
			name: "worker pool wave keeps the user's podReplacementPolicy", wave: 1,
			mutate: func(q *qjv1.QueueJob) {
				q.Spec.JobTemplate.Spec.PodReplacementPolicy = ptr.To(batchv1.TerminatingOrFailed)
			},
			size: jobSizing{parallelism: 1},
			want: func(j *batchv1.Job) {
				j.Spec.Completions = nil
				j.Spec.PodReplacementPolicy = ptr.To(batchv1.TerminatingOrFailed)
			},
		},
		{
			name: "queue env added to every container, the user's own value wins", wave: 1,
			mutate: func(q *qjv1.QueueJob) {
				q.Spec.JobTemplate.Spec.Template.Spec.Containers = append(q.Spec.JobTemplate.Spec.Template.Spec.Containers,
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
				q.Spec.JobTemplate.Spec.Template.Spec.InitContainers = []corev1.Container{
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
			name: "a template annotation with the operator's prefix never reaches the Job", wave: 1,
			mutate: func(q *qjv1.QueueJob) {
				q.Spec.JobTemplate.Annotations = map[string]string{qjv1.AnnotationWaveEnded: "2026-01-01T00:00:00Z", "keep": "me"}
			},
			size: jobSizing{completions: ptr.To[int32](1), parallelism: 1},
			want: func(j *batchv1.Job) { j.Annotations["keep"] = "me" },
		},
		{
			name: "a user label with the operator's key is overridden", wave: 1,
			mutate: func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Template.Labels[qjv1.LabelQueueJob] = "someone-else" },
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
					Labels: map[string]string{qjv1.LabelQueueJob: "pi", qjv1.LabelWave: "1"},
					Annotations: map[string]string{qjv1.AnnotationSuspend: "false", qjv1.AnnotationParallelism: "1",
						qjv1.AnnotationTemplateHash: templateHash(&qj.Spec)}},
				Spec: batchv1.JobSpec{
					Completions:  ptr.To[int32](1),
					Parallelism:  ptr.To[int32](1),
					BackoffLimit: ptr.To[int32](4),
					Suspend:      ptr.To(false),
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "pi", qjv1.LabelQueueJob: "pi", qjv1.LabelWave: "1"}},
						Spec:       *base().Spec.JobTemplate.Spec.Template.Spec.DeepCopy(),
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

// TestTemplateHash: the hash that tells a running wave from the current spec changes with
// what only the next wave sees, not with the parallelism the running Job follows.
func TestTemplateHash(t *testing.T) {
	base := queueJob("ns", "q", withRedis)
	h := templateHash(&base.Spec)
	for name, tc := range map[string]struct {
		mutate  func(*qjv1.QueueJob)
		changes bool
	}{
		"parallelism":  {func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](9) }, false},
		"suspend":      {func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(true) }, false},
		"image":        {func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Image = "perl:6" }, true},
		"backoffLimit": {func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.BackoffLimit = ptr.To[int32](1) }, true},
		"Job labels":   {func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Labels = map[string]string{"a": "b"} }, true},
		"itemsPerPod":  {func(q *qjv1.QueueJob) { q.Spec.ItemsPerPod = ptr.To[int32](3) }, true},
	} {
		q := base.DeepCopy()
		tc.mutate(q)
		if got := templateHash(&q.Spec) != h; got != tc.changes {
			t.Errorf("%s: hash changed = %v, want %v", name, got, tc.changes)
		}
	}
}
