package controllers

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// queueJob builds a valid QueueJob without a queue (the seed's "pi"); options change it.
func queueJob(ns, name string, opts ...func(*qjv1.QueueJob)) *qjv1.QueueJob {
	qj := &qjv1.QueueJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: qjv1.QueueJobSpec{JobTemplate: qjv1.JobTemplateSpec{Spec: batchv1.JobSpec{
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "pi"}},
				Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers: []corev1.Container{{
						Name:    "pi",
						Image:   "perl:5.34",
						Command: []string{"perl", "-Mbignum=bpi", "-wle", "print bpi(2000)"},
					}},
				},
			},
		}}},
	}
	for _, o := range opts {
		o(qj)
	}
	return qj
}

func withRedis(qj *qjv1.QueueJob) {
	qj.Spec.Queue = &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6379", Key: "job2"}}
}

func withRedisStream(qj *qjv1.QueueJob) {
	qj.Spec.Queue = &qjv1.QueueSource{RedisStream: &qjv1.RedisStreamQueue{Address: "redis:6379", Stream: "jobs", Group: "workers"}}
}

func withRabbitMQ(qj *qjv1.QueueJob) {
	qj.Spec.Queue = &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{URL: "amqp://guest@rabbitmq-service:5672", Queue: "job1"}}
}

func withNATS(qj *qjv1.QueueJob) {
	qj.Spec.Queue = &qjv1.QueueSource{NATS: &qjv1.NATSQueue{URL: "nats://nats:4222", Stream: "jobs", Consumer: "workers"}}
}

// ownedJobs lists the Jobs a QueueJob controls, fresh from the API server.
func ownedJobs(g Gomega, qj *qjv1.QueueJob) []batchv1.Job {
	var list batchv1.JobList
	g.Expect(k8s.List(suiteCtx, &list, client.InNamespace(qj.Namespace),
		client.MatchingLabels{qjv1.LabelQueueJob: qj.Name})).To(Succeed())
	var out []batchv1.Job
	for _, j := range list.Items {
		if metav1.IsControlledBy(&j, qj) {
			out = append(out, j)
		}
	}
	return out
}

// theJob waits for the QueueJob's only Job and returns it.
func theJob(qj *qjv1.QueueJob) *batchv1.Job {
	var job batchv1.Job
	Eventually(func(g Gomega) {
		jobs := ownedJobs(g, qj)
		g.Expect(jobs).To(HaveLen(1))
		job = jobs[0]
	}, timeout, interval).Should(Succeed())
	return &job
}

// finishJob plays the Job controller: it records the Job as finished, in the order the API
// server requires (SuccessCriteriaMet before Complete, FailureTarget before Failed).
func finishJob(job *batchv1.Job, ok bool, at time.Time, succeeded, failed int32, reason string) {
	Eventually(func(g Gomega) {
		cur := &batchv1.Job{}
		g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
		t := metav1.NewTime(at)
		if cur.Status.StartTime == nil { // immutable once set
			start := metav1.NewTime(at.Add(-10 * time.Second))
			cur.Status.StartTime = &start
		}
		cur.Status.Active = 0
		cur.Status.Ready = ptr.To[int32](0)
		cur.Status.Succeeded, cur.Status.Failed = succeeded, failed
		if ok {
			cur.Status.CompletionTime = &t
			cur.Status.Conditions = []batchv1.JobCondition{
				{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, Reason: reason, LastProbeTime: t, LastTransitionTime: t},
				{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, Reason: reason, LastProbeTime: t, LastTransitionTime: t},
			}
		} else {
			cur.Status.Conditions = []batchv1.JobCondition{
				{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: reason, Message: "Job has reached the specified backoff limit", LastProbeTime: t, LastTransitionTime: t},
				{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: reason, Message: "Job has reached the specified backoff limit", LastProbeTime: t, LastTransitionTime: t},
			}
		}
		g.Expect(k8s.Status().Update(suiteCtx, cur)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

// goneBy waits until get answers NotFound and returns the time at which that answer was
// in: the object was gone by then. An object that must outlive an expiry checks that
// this is no earlier than the expiry. A correct controller never fails the check, however
// slow the machine (a late poll only sees the deletion later); one that deletes too early
// fails it unless the early deletion was seen later than the expiry, i.e. unless the
// deletion was early by less than a poll interval plus a Get.
func goneBy(get func() error, desc string) time.Time {
	GinkgoHelper()
	var at time.Time
	Eventually(func() error {
		err := get()
		at = time.Now()
		return err
	}, timeout, interval).Should(Satisfy(apierrors.IsNotFound), desc)
	return at
}

// runJob plays the Job controller for a running Job: it records active pods.
func runJob(job *batchv1.Job, active int32) {
	Eventually(func(g Gomega) {
		cur := &batchv1.Job{}
		g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
		start := metav1.Now()
		cur.Status.StartTime = &start
		cur.Status.Active = active
		g.Expect(k8s.Status().Update(suiteCtx, cur)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

// jobPod creates a pod as the Job controller would and gives it a phase; terminal pods
// finished at finishedAt.
func jobPod(job *batchv1.Job, name string, phase corev1.PodPhase, finishedAt time.Time, finalizers ...string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:  job.Namespace,
			Name:       name,
			Labels:     job.Spec.Template.Labels,
			Finalizers: finalizers,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: *job.Spec.Template.Spec.DeepCopy(),
	}
	Expect(k8s.Create(suiteCtx, pod)).To(Succeed())
	pod.Status.Phase = phase
	if phase == corev1.PodSucceeded || phase == corev1.PodFailed {
		code := int32(0)
		if phase == corev1.PodFailed {
			code = 1
		}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: pod.Spec.Containers[0].Name, Image: pod.Spec.Containers[0].Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: code, StartedAt: metav1.NewTime(finishedAt.Add(-time.Second)), FinishedAt: metav1.NewTime(finishedAt),
			}},
		}}
	}
	Expect(k8s.Status().Update(suiteCtx, pod)).To(Succeed())
	return pod
}

// podsStopped plays the Job controller once the pods of a suspended Job have stopped: none
// active, ready or terminating, succeeded of them counted as succeeded.
func podsStopped(job *batchv1.Job, succeeded int32) {
	Eventually(func(g Gomega) {
		cur := &batchv1.Job{}
		g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
		cur.Status.Active, cur.Status.Ready, cur.Status.Terminating, cur.Status.Succeeded = 0, ptr.To[int32](0), ptr.To[int32](0), succeeded
		g.Expect(k8s.Status().Update(suiteCtx, cur)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}
