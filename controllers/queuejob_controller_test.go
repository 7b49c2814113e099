package controllers

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// events lists the events about a QueueJob with the given reason.
func eventsFor(g Gomega, qj *qjv1.QueueJob, reason string) []eventsv1.Event {
	var list eventsv1.EventList
	g.Expect(k8s.List(suiteCtx, &list, client.InNamespace(qj.Namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == qj.Name && e.Regarding.Kind == "QueueJob" && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func condition(qj *qjv1.QueueJob, t string) *metav1.Condition {
	return meta.FindStatusCondition(qj.Status.Conditions, t)
}

var _ = Describe("QueueJob without a queue", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("creates one Job with the QueueJob's spec, labels and owner, and says so once", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](4)
			q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](2)
			q.Spec.JobTemplate.Spec.BackoffLimit = ptr.To[int32](4)
			q.Spec.JobTemplate.Spec.ActiveDeadlineSeconds = ptr.To[int64](600)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())

		job := theJob(qj)
		Expect(job.Name).To(Equal("pi"))
		Expect(job.Spec.Completions).To(HaveValue(BeEquivalentTo(4)))
		Expect(job.Spec.Parallelism).To(HaveValue(BeEquivalentTo(2)))
		Expect(job.Spec.BackoffLimit).To(HaveValue(BeEquivalentTo(4)))
		Expect(job.Spec.ActiveDeadlineSeconds).To(HaveValue(BeEquivalentTo(600)))
		Expect(job.Spec.Suspend).To(Or(BeNil(), HaveValue(BeFalse())))
		Expect(job.Labels).To(HaveKeyWithValue(qjv1.LabelQueueJob, "pi"))
		Expect(job.Spec.Template.Labels).To(SatisfyAll(
			HaveKeyWithValue(qjv1.LabelQueueJob, "pi"),
			HaveKeyWithValue(qjv1.LabelWave, "1"),
			HaveKeyWithValue("app", "pi")))
		Expect(job.Spec.Template.Spec.RestartPolicy).To(Equal(corev1.RestartPolicyNever))
		Expect(job.Spec.Template.Spec.Containers[0].Command).To(ContainElement("print bpi(2000)"))
		Expect(metav1.GetControllerOf(job)).To(SatisfyAll(
			HaveField("Kind", "QueueJob"), HaveField("Name", "pi"), HaveField("UID", qj.UID),
			HaveField("BlockOwnerDeletion", HaveValue(BeTrue()))))

		Eventually(getQJ(ns, "pi"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.JobName", "pi"),
			HaveField("Status.Waves", BeEquivalentTo(1)),
			HaveField("Status.ObservedGeneration", BeEquivalentTo(1)),
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonJobRunning),
			cond(qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonNotFinished),
			cond(qjv1.ConditionFailed, metav1.ConditionFalse, qjv1.ReasonNotFinished),
			cond(qjv1.ConditionSuspended, metav1.ConditionFalse, qjv1.ReasonNotSuspended)))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventJobCreated) }, timeout, interval).Should(HaveLen(1))

		By("mirroring the running Job's active pods")
		runJob(job, 2)
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(HaveField("Status.Active", BeEquivalentTo(2)))
		Expect(ownedJobs(Default, qj)).To(HaveLen(1))
	})

	It("becomes Complete with the Job's reason and keeps one Completed event", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](3) })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		at := time.Now().Add(-time.Minute).Truncate(time.Second)
		finishJob(job, true, at, 3, 1, "CompletionsReached")

		Eventually(getQJ(ns, "pi"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionComplete, metav1.ConditionTrue, "CompletionsReached"),
			cond(qjv1.ConditionFailed, metav1.ConditionFalse, "CompletionsReached"),
			cond(qjv1.ConditionProgressing, metav1.ConditionFalse, qjv1.ReasonFinished),
			HaveField("Status.Succeeded", BeEquivalentTo(3)),
			HaveField("Status.Failed", BeEquivalentTo(1)),
			HaveField("Status.Active", BeEquivalentTo(0)),
			HaveField("Status.StartTime", Not(BeNil())),
			HaveField("Status.CompletionTime.Time", BeTemporally("==", at))))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventCompleted) }, timeout, interval).Should(HaveLen(1))
		Consistently(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventCompleted) }, 3*time.Second, 500*time.Millisecond).Should(HaveLen(1))
	})

	It("becomes Failed with the Job's reason and message", func() {
		qj := queueJob(ns, "pi")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		finishJob(job, false, time.Now(), 0, 7, "BackoffLimitExceeded")

		Eventually(getQJ(ns, "pi"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionFailed, metav1.ConditionTrue, "BackoffLimitExceeded"),
			cond(qjv1.ConditionComplete, metav1.ConditionFalse, "BackoffLimitExceeded"),
			HaveField("Status.Failed", BeEquivalentTo(7)),
			HaveField("Status.CompletionTime", Not(BeNil()))))
		Expect(condition(getQJ(ns, "pi")(Default), qjv1.ConditionFailed).Message).To(ContainSubstring("backoff limit"))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventFailed) }, timeout, interval).Should(
			ContainElement(HaveField("Type", corev1.EventTypeWarning)))
	})

	It("suspends and resumes the Job both ways", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(true) })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Expect(job.Spec.Suspend).To(HaveValue(BeTrue()), "a suspended QueueJob creates its Job suspended")
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionSuspended, metav1.ConditionTrue, qjv1.ReasonSuspended),
			cond(qjv1.ConditionProgressing, metav1.ConditionFalse, qjv1.ReasonSuspended)))

		setSuspend := func(v bool) { updateQJ(ns, "pi", func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(v) }) }
		jobSuspend := func(g Gomega) bool {
			cur := &batchv1.Job{}
			g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
			return ptr.Deref(cur.Spec.Suspend, false)
		}

		setSuspend(false)
		Eventually(jobSuspend, timeout, interval).Should(BeFalse())
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionSuspended, metav1.ConditionFalse, qjv1.ReasonNotSuspended),
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonJobRunning)))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventResumed) }, timeout, interval).Should(HaveLen(1))

		setSuspend(true)
		Eventually(jobSuspend, timeout, interval).Should(BeTrue())
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(cond(qjv1.ConditionSuspended, metav1.ConditionTrue, qjv1.ReasonSuspended))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventSuspended) }, timeout, interval).Should(HaveLen(2))
		Expect(ownedJobs(Default, qj)).To(HaveLen(1))
	})

	It("carries a parallelism change over to the running Job", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](10) })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Expect(job.Spec.Parallelism).To(HaveValue(BeEquivalentTo(1)))
		updateQJ(ns, "pi", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](5) })
		Eventually(func(g Gomega) *int32 {
			cur := &batchv1.Job{}
			g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
			return cur.Spec.Parallelism
		}, timeout, interval).Should(HaveValue(BeEquivalentTo(5)))
	})

	It("deletes finished pods after their TTL and leaves running, recent and uncounted ones", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](5)
			q.Spec.Cleanup = &qjv1.CleanupPolicy{PodTTLSecondsAfterFinished: ptr.To[int32](6)}
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		long := time.Now().Add(-2 * time.Hour)
		oldOK := jobPod(job, "old-succeeded", corev1.PodSucceeded, long)
		oldBad := jobPod(job, "old-failed", corev1.PodFailed, long)
		// The API server keeps whole seconds: the pod's FinishedAt is exactly recentAt.
		recentAt := time.Now().Truncate(time.Second)
		recent := jobPod(job, "recent-succeeded", corev1.PodSucceeded, recentAt)
		running := jobPod(job, "running", corev1.PodRunning, time.Time{})
		counting := jobPod(job, "old-still-counted", corev1.PodSucceeded, long, batchv1.JobTrackingFinalizer)

		gone := func(p *corev1.Pod) func() error {
			return func() error { return k8s.Get(suiteCtx, client.ObjectKeyFromObject(p), &corev1.Pod{}) }
		}
		Eventually(gone(oldOK), timeout, interval).Should(Satisfy(apierrors.IsNotFound))
		Eventually(gone(oldBad), timeout, interval).Should(Satisfy(apierrors.IsNotFound))
		Expect(gone(running)()).To(Succeed())
		By("deleting the recent pod once its TTL expired, and never the running one")
		Expect(goneBy(gone(recent), "the recent pod, once its TTL expired")).
			To(BeTemporally(">=", recentAt.Add(6*time.Second)), "deleted before its TTL of 6s")
		Expect(gone(running)()).To(Succeed())
		Expect(gone(counting)()).To(Succeed(), "a pod the Job controller has not counted yet must stay")
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventCleanedUp) }, timeout, interval).ShouldNot(BeEmpty())

		By("deleting the last pod once the Job controller has counted it")
		Eventually(func(g Gomega) {
			cur := &corev1.Pod{}
			g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(counting), cur)).To(Succeed())
			cur.Finalizers = nil
			g.Expect(k8s.Update(suiteCtx, cur)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		Eventually(gone(counting), timeout, interval).Should(Satisfy(apierrors.IsNotFound))
		Expect(gone(running)()).To(Succeed())
	})

	It("deletes the finished Job after its TTL and keeps the final status", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](2)
			q.Spec.Cleanup = &qjv1.CleanupPolicy{TTLSecondsAfterFinished: ptr.To[int32](0)}
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		finishJob(job, true, time.Now(), 2, 0, "CompletionsReached")

		Eventually(func(g Gomega) []batchv1.Job { return ownedJobs(g, qj) }, timeout, interval).Should(BeEmpty())
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventCleanedUp) }, timeout, interval).Should(HaveLen(1))
		Consistently(func(g Gomega) {
			g.Expect(ownedJobs(g, qj)).To(BeEmpty(), "a finished QueueJob must not run its Job again")
			g.Expect(getQJ(ns, "pi")(g)).To(SatisfyAll(
				cond(qjv1.ConditionComplete, metav1.ConditionTrue, "CompletionsReached"),
				HaveField("Status.Succeeded", BeEquivalentTo(2)),
				HaveField("Status.JobName", "pi")))
		}, 3*time.Second, 500*time.Millisecond).Should(Succeed())

		By("not running it again after a manager restart")
		restartManager()
		Consistently(func(g Gomega) []batchv1.Job { return ownedJobs(g, qj) }, 3*time.Second, 500*time.Millisecond).Should(BeEmpty())
	})

	It("finishes a cleanup cut short between the archive write and the delete, counting once", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](3)
			q.Spec.Cleanup = &qjv1.CleanupPolicy{TTLSecondsAfterFinished: ptr.To[int32](3600)}
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		finishJob(job, true, time.Now(), 3, 1, "CompletionsReached")
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(HaveField("Status.Succeeded", BeEquivalentTo(3)))

		By("stopping the manager with the Job archived in the status but not yet deleted")
		stopMgr()
		Eventually(func(g Gomega) {
			cur := getQJ(ns, "pi")(g)
			cur.Status.Archived = &qjv1.ArchivedJobs{Succeeded: 3, Failed: 1, Jobs: []string{job.Name}}
			g.Expect(k8s.Status().Update(suiteCtx, cur)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		stopMgr = startManager()

		Eventually(func() error { return k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), &batchv1.Job{}) }, timeout, interval).
			Should(Satisfy(apierrors.IsNotFound))
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.Archived.Jobs", BeEmpty()),
			HaveField("Status.Succeeded", BeEquivalentTo(3)),
			HaveField("Status.Failed", BeEquivalentTo(1))))
		Consistently(getQJ(ns, "pi"), 2*time.Second, 500*time.Millisecond).Should(SatisfyAll(
			HaveField("Status.Succeeded", BeEquivalentTo(3)), HaveField("Status.Failed", BeEquivalentTo(1))))
	})

	It("counts the Job TTL from when the QueueJob finished", func() {
		mk := func(name string) *batchv1.Job {
			qj := queueJob(ns, name, func(q *qjv1.QueueJob) {
				q.Spec.Cleanup = &qjv1.CleanupPolicy{TTLSecondsAfterFinished: ptr.To[int32](8)}
			})
			Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
			return theJob(qj)
		}
		getJob := func(job *batchv1.Job) func() error {
			return func() error { return k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), &batchv1.Job{}) }
		}
		fresh := mk("fresh")
		expired := mk("expired")
		finishJob(expired, true, time.Now().Add(-2*time.Hour), 1, 0, "CompletionsReached")
		Eventually(getJob(expired), timeout, interval).Should(Satisfy(apierrors.IsNotFound))

		By("finishing the fresh Job 3s after its creation: a TTL counted from the creation would delete it 3s early")
		time.Sleep(time.Until(fresh.CreationTimestamp.Add(3 * time.Second)))
		finishedAt := time.Now().Truncate(time.Second) // the API server keeps whole seconds
		finishJob(fresh, true, finishedAt, 1, 0, "CompletionsReached")
		Eventually(getQJ(ns, "fresh"), timeout, interval).Should(HaveField("Status.CompletionTime.Time", BeTemporally("==", finishedAt)))
		Expect(goneBy(getJob(fresh), "the fresh Job, once its TTL expired")).
			To(BeTemporally(">=", finishedAt.Add(8*time.Second)), "deleted before its TTL of 8s")
	})

	It("makes no second Job when the manager restarts after losing its status write", func() {
		qj := queueJob(ns, "pi")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(HaveField("Status.JobName", "pi"))

		By("stopping the manager and wiping the status, as a crash between create and status write would leave it")
		stopMgr()
		wipeStatus(ns, "pi")
		stopMgr = startManager()

		Eventually(getQJ(ns, "pi"), timeout, interval).Should(HaveField("Status.JobName", "pi"))
		Consistently(func(g Gomega) {
			jobs := ownedJobs(g, qj)
			g.Expect(jobs).To(HaveLen(1))
			g.Expect(jobs[0].UID).To(Equal(job.UID))
		}, 3*time.Second, 500*time.Millisecond).Should(Succeed())
	})

	It("writes no status when nothing changed", func() {
		qj := queueJob(ns, "pi")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		finishJob(theJob(qj), true, time.Now(), 1, 0, "CompletionsReached")
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(cond(qjv1.ConditionComplete, metav1.ConditionTrue, "CompletionsReached"))

		By("touching the QueueJob, which triggers a reconcile that has nothing to write")
		cur := getQJ(ns, "pi")(Default)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Annotations = map[string]string{"touched": "yes"}
		Expect(k8s.Patch(suiteCtx, cur, patch)).To(Succeed())
		rv := cur.ResourceVersion
		Consistently(func(g Gomega) string { return getQJ(ns, "pi")(g).ResourceVersion }, 3*time.Second, 500*time.Millisecond).Should(Equal(rv))
	})

	It("reports a Job the API server refuses and creates it once the spec is fixed", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Name = "Not_A_DNS_Label" })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(cond(qjv1.ConditionProgressing, metav1.ConditionFalse, qjv1.ReasonJobCreateFailed))
		Expect(condition(getQJ(ns, "pi")(Default), qjv1.ConditionProgressing).Message).To(ContainSubstring("fix spec.jobTemplate"))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventJobCreateFailed) }, timeout, interval).Should(HaveLen(1))
		Consistently(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventJobCreateFailed) }, 2*time.Second, 500*time.Millisecond).Should(HaveLen(1))

		updateQJ(ns, "pi", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Name = "pi" })
		Expect(theJob(qj).Spec.Template.Spec.Containers[0].Name).To(Equal("pi"))
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonJobRunning))
	})

	It("recreates a running Job that a user deleted by hand", func() {
		qj := queueJob(ns, "pi")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Expect(k8s.Delete(suiteCtx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		Eventually(func(g Gomega) {
			jobs := ownedJobs(g, qj)
			g.Expect(jobs).To(HaveLen(1))
			g.Expect(jobs[0].UID).NotTo(Equal(job.UID))
		}, timeout, interval).Should(Succeed())
	})
})
