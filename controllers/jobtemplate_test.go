package controllers

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// liveJob reads a Job from the API server.
func liveJob(g Gomega, job *batchv1.Job) *batchv1.Job {
	cur := &batchv1.Job{}
	g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
	return cur
}

// setJobSuspend plays another controller (Kueue) that suspends or resumes a Job.
func setJobSuspend(job *batchv1.Job, suspend bool) { setJobSuspendParallelism(job, suspend, nil) }

// setJobSuspendParallelism does what a queueing controller does to a Job: it sets its
// suspend, and its parallelism unless nil (admitting part of it).
func setJobSuspendParallelism(job *batchv1.Job, suspend bool, parallelism *int32) {
	Eventually(func(g Gomega) {
		cur := liveJob(g, job)
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Suspend = ptr.To(suspend)
		if parallelism != nil {
			cur.Spec.Parallelism = parallelism
		}
		g.Expect(k8s.Patch(suiteCtx, cur, patch)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

var _ = Describe("The Job template", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("names the Job of a QueueJob without a queue after the QueueJob, and passes every Job field, label and annotation through", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) {
			jt := &q.Spec.JobTemplate
			jt.Labels = map[string]string{"example.com/team": "a"}
			jt.Annotations = map[string]string{"example.com/cost-center": "42"}
			jt.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
				Action:          batchv1.PodFailurePolicyActionIgnore,
				OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}},
			}}}
			jt.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
			jt.Spec.Completions = ptr.To[int32](3)
			jt.Spec.BackoffLimitPerIndex = ptr.To[int32](1)
			jt.Spec.PodReplacementPolicy = ptr.To(batchv1.Failed)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Expect(job.Name).To(Equal("pi"), "kubectl logs job/pi must find it")
		Expect(job.Labels).To(HaveKeyWithValue("example.com/team", "a"))
		Expect(job.Annotations).To(HaveKeyWithValue("example.com/cost-center", "42"))
		Expect(job.Spec.PodFailurePolicy).NotTo(BeNil())
		Expect(job.Spec.CompletionMode).To(HaveValue(Equal(batchv1.IndexedCompletion)))
		Expect(job.Spec.BackoffLimitPerIndex).To(HaveValue(BeEquivalentTo(1)))
		Expect(job.Spec.Completions).To(HaveValue(BeEquivalentTo(3)))
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.JobName", "pi"),
			HaveField("Status.Mode", qjv1.ModeJob),
			HaveField("Status.State", qjv1.StateRunning),
			HaveField("Status.Completions", "0/3")))
	})

	It("never fights another controller over a Job's suspend: it changes it only when spec.suspend changes", func() {
		c := redisClient(redisSrv.Addr())
		key := "other-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c").Err()).To(Succeed())
		qj := redisQJ(ns, "kq", redisSrv.Addr(), key, func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](3)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)

		By("another controller suspending the Job until it admits it, and admitting part of it")
		setJobSuspendParallelism(job, true, ptr.To[int32](1))
		Eventually(getQJ(ns, "kq"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonJobSuspendedByAnother),
			HaveField("Status.State", qjv1.StateWaiting)))
		// Probes every second: this window spans several reconciles.
		Consistently(func(g Gomega) {
			cur := liveJob(g, job)
			g.Expect(cur.Spec.Suspend).To(HaveValue(BeTrue()), "the operator resumed a Job another controller suspended")
			g.Expect(cur.Spec.Parallelism).To(HaveValue(BeEquivalentTo(1)), "the operator undid another controller's parallelism")
		}, 4*time.Second, 250*time.Millisecond).Should(Succeed())

		By("the other controller admitting it")
		setJobSuspend(job, false)
		Eventually(getQJ(ns, "kq"), timeout, interval).Should(HaveField("Status.State", qjv1.StateRunning))
		Consistently(func(g Gomega) *bool { return liveJob(g, job).Spec.Suspend }, 3*time.Second, 250*time.Millisecond).Should(HaveValue(BeFalse()))

		By("the user suspending the QueueJob: that change is carried over")
		updateQJ(ns, "kq", func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(true) })
		Eventually(func(g Gomega) *bool { return liveJob(g, job).Spec.Suspend }, timeout, interval).Should(HaveValue(BeTrue()))
		Eventually(getQJ(ns, "kq"), timeout, interval).Should(HaveField("Status.State", qjv1.StateSuspended))

		By("another controller resuming it meanwhile is left alone, and the user resuming the QueueJob is carried over")
		setJobSuspend(job, false)
		Consistently(func(g Gomega) *bool { return liveJob(g, job).Spec.Suspend }, 3*time.Second, 250*time.Millisecond).Should(HaveValue(BeFalse()))
		setJobSuspend(job, true)
		updateQJ(ns, "kq", func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(false) })
		Eventually(func(g Gomega) *bool { return liveJob(g, job).Spec.Suspend }, timeout, interval).Should(HaveValue(BeFalse()))

		By("a change of the template's parallelism is carried over")
		updateQJ(ns, "kq", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](2) })
		Eventually(func(g Gomega) *int32 { return liveJob(g, job).Spec.Parallelism }, timeout, interval).Should(HaveValue(BeEquivalentTo(2)))
		Expect(ownedJobs(Default, qj)).To(HaveLen(1))
	})

	It("makes a wave that names a Kueue LocalQueue admissible in part, holds a running one's parallelism, and suspends and resumes a Job without a Workload itself", func() {
		c := redisClient(redisSrv.Addr())
		key := "kueue-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c").Err()).To(Succeed())
		qj := redisQJ(ns, "kq", redisSrv.Addr(), key, func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Labels = map[string]string{"kueue.x-k8s.io/queue-name": "team-a"}
			q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](3)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Expect(job.Spec.Suspend).To(HaveValue(BeFalse()), "Kueue's webhook suspends a Job Kueue manages; one it does not must run")
		Expect(job.Annotations).To(HaveKeyWithValue("kueue.x-k8s.io/job-min-parallelism", "1"))

		By("Kueue suspending it until admitted: Waiting, WaitingForKueue")
		setJobSuspend(job, true)
		Eventually(getQJ(ns, "kq"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonWaitingForKueue),
			HaveField("Status.State", qjv1.StateWaiting)))

		By("Kueue admitting 2 of its 3 pods; the template's parallelism then changes: held for the next wave")
		setJobSuspendParallelism(job, false, ptr.To[int32](2))
		Eventually(getQJ(ns, "kq"), timeout, interval).Should(HaveField("Status.State", qjv1.StateRunning))
		updateQJ(ns, "kq", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](1) })
		Eventually(getQJ(ns, "kq"), timeout, interval).Should(HaveField("Status.ObservedGeneration", BeNumerically(">=", 2)))
		Consistently(func(g Gomega) *int32 { return liveJob(g, job).Spec.Parallelism }, 3*time.Second, 250*time.Millisecond).Should(HaveValue(BeEquivalentTo(2)))

		By("the user suspending the QueueJob: no Workload to deactivate, so the operator suspends the Job, and again when it is resumed behind its back")
		updateQJ(ns, "kq", func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(true) })
		Eventually(func(g Gomega) *bool { return liveJob(g, job).Spec.Suspend }, timeout, interval).Should(HaveValue(BeTrue()))
		Eventually(func(g Gomega) map[string]string { return liveJob(g, job).Annotations }, timeout, interval).
			Should(HaveKeyWithValue("batch.queuejob.io/stopped", "job"))
		setJobSuspend(job, false)
		Eventually(func(g Gomega) *bool { return liveJob(g, job).Spec.Suspend }, timeout, interval).Should(HaveValue(BeTrue()))

		By("the user resuming it: no Workload, so the operator resumes the Job it stopped, and drops its mark")
		updateQJ(ns, "kq", func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(false) })
		Eventually(func(g Gomega) *bool { return liveJob(g, job).Spec.Suspend }, timeout, interval).Should(HaveValue(BeFalse()))
		Eventually(func(g Gomega) map[string]string { return liveJob(g, job).Annotations }, timeout, interval).
			ShouldNot(HaveKey("batch.queuejob.io/stopped"))
		Expect(ownedJobs(Default, qj)).To(HaveLen(1))
	})

	It("suspends a Job that has Kueue Workloads by deactivating them, never by suspending the Job, and activates only those it deactivated", func() {
		c := redisClient(redisSrv.Addr())
		key := "kueuewl-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b").Err()).To(Succeed())
		qj := redisQJ(ns, "kw", redisSrv.Addr(), key, func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Labels = map[string]string{"kueue.x-k8s.io/queue-name": "team-a"}
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		// As Kueue would: the Job's Workload (spec.active unset: true by default); and one
		// Kueue deactivated itself (a slice, say).
		mine := workload(ns, "job-kw-1-a", job.UID, nil)
		kueues := workload(ns, "job-kw-1-b", job.UID, ptr.To(false))

		By("spec.suspend: the active Workload deactivated and marked; the Job's suspend left to Kueue")
		updateQJ(ns, "kw", func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(true) })
		Eventually(func(g Gomega) map[string]any { return liveWorkload(g, mine) }, timeout, interval).Should(SatisfyAll(
			HaveKeyWithValue("active", false), HaveKeyWithValue("deactivated", "true")))
		Consistently(func(g Gomega) *bool { return liveJob(g, job).Spec.Suspend }, 3*time.Second, 250*time.Millisecond).Should(HaveValue(BeFalse()),
			"the operator suspended a Job that Kueue admits: Kueue would resume it")
		Expect(liveWorkload(Default, kueues)).To(HaveKeyWithValue("deactivated", ""), "a Workload already inactive is not marked")

		Expect(liveJob(Default, job).Annotations).To(HaveKeyWithValue("batch.queuejob.io/stopped", "workloads"), "marked: stopped through its Workloads")

		By("spec.suspend false: the one it deactivated active again, Kueue's left alone, the Job's mark gone")
		updateQJ(ns, "kw", func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(false) })
		Eventually(func(g Gomega) map[string]any { return liveWorkload(g, mine) }, timeout, interval).Should(SatisfyAll(
			HaveKeyWithValue("active", true), HaveKeyWithValue("deactivated", "")))
		Eventually(func(g Gomega) map[string]string { return liveJob(g, job).Annotations }, timeout, interval).
			ShouldNot(HaveKey("batch.queuejob.io/stopped"))
		Consistently(func(g Gomega) map[string]any { return liveWorkload(g, kueues) }, 2*time.Second, 250*time.Millisecond).Should(
			HaveKeyWithValue("active", false))
		Expect(liveJob(Default, job).Spec.Suspend).To(HaveValue(BeFalse()))

		By("a resume cut short (the Job still marked stopped, its Workload still deactivated): the next reconcile finishes it")
		// The Workload first: the Job's change is what brings a reconcile.
		Eventually(func(g Gomega) {
			wl := &unstructured.Unstructured{}
			wl.SetGroupVersionKind(mine.GroupVersionKind())
			g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(mine), wl)).To(Succeed())
			wlPatch := client.MergeFrom(wl.DeepCopy())
			g.Expect(unstructured.SetNestedField(wl.Object, false, "spec", "active")).To(Succeed())
			wl.SetAnnotations(map[string]string{"batch.queuejob.io/deactivated": "true"})
			g.Expect(k8s.Patch(suiteCtx, wl, wlPatch)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) {
			cur := liveJob(g, job)
			patch := client.MergeFrom(cur.DeepCopy())
			metav1.SetMetaDataAnnotation(&cur.ObjectMeta, "batch.queuejob.io/stopped", "workloads")
			g.Expect(k8s.Patch(suiteCtx, cur, patch)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) map[string]any { return liveWorkload(g, mine) }, timeout, interval).Should(
			HaveKeyWithValue("active", true))
		Eventually(func(g Gomega) map[string]string { return liveJob(g, job).Annotations }, timeout, interval).
			ShouldNot(HaveKey("batch.queuejob.io/stopped"))
	})

	It("creates the Job of a suspended QueueJob without a queue that names a Kueue LocalQueue only once it is resumed (Kueue would admit and resume it)", func() {
		qj := queueJob(ns, "pk", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Labels = map[string]string{"kueue.x-k8s.io/queue-name": "team-a"}
			q.Spec.Suspend = ptr.To(true)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "pk"), timeout, interval).Should(HaveField("Status.State", qjv1.StateSuspended))
		Consistently(func(g Gomega) []batchv1.Job { return ownedJobs(g, qj) }, 3*time.Second, 250*time.Millisecond).Should(BeEmpty())
		updateQJ(ns, "pk", func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(false) })
		job := theJob(qj)
		Expect(job.Spec.Suspend).To(HaveValue(BeFalse()))
	})

	It("reports a template change that waits for the next wave, and builds the next wave from it", func() {
		c := redisClient(redisSrv.Addr())
		key := "tmpl-" + ns
		Expect(c.RPush(suiteCtx, key, "a").Err()).To(Succeed())
		qj := redisQJ(ns, "tmpl", redisSrv.Addr(), key, func(q *qjv1.QueueJob) { q.Spec.Refill = qjv1.RefillContinuous })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		first := theJob(qj)
		Eventually(getQJ(ns, "tmpl"), timeout, interval).Should(cond(qjv1.ConditionUpToDate, metav1.ConditionTrue, qjv1.ReasonUpToDate))

		updateQJ(ns, "tmpl", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Image = "perl:5.40" })
		Eventually(getQJ(ns, "tmpl"), timeout, interval).Should(cond(qjv1.ConditionUpToDate, metav1.ConditionFalse, qjv1.ReasonNextWave))
		Expect(condition(getQJ(ns, "tmpl")(Default), qjv1.ConditionUpToDate).Message).To(ContainSubstring("tmpl-1"))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventSpecChangePending) }, timeout, interval).Should(HaveLen(1))
		Expect(liveJob(Default, first).Spec.Template.Spec.Containers[0].Image).To(Equal("perl:5.34"), "the running wave keeps its template")

		By("the wave finishing and items arriving: the next wave uses the new template")
		Expect(c.Del(suiteCtx, key).Err()).To(Succeed())
		finishJob(first, true, time.Now(), 1, 0, "CompletionsReached")
		Expect(c.RPush(suiteCtx, key, "b").Err()).To(Succeed())
		Eventually(func(g Gomega) string {
			jobs := ownedJobs(g, qj)
			g.Expect(jobs).To(HaveLen(2))
			return jobs[1].Spec.Template.Spec.Containers[0].Image
		}, timeout, interval).Should(Equal("perl:5.40"))
		Eventually(getQJ(ns, "tmpl"), timeout, interval).Should(cond(qjv1.ConditionUpToDate, metav1.ConditionTrue, qjv1.ReasonUpToDate))
	})

	It("says which QueueJob holds the name when a plain Job and a wave would share it", func() {
		Expect(k8s.Create(suiteCtx, queueJob(ns, "a-1"))).To(Succeed())
		Eventually(getQJ(ns, "a-1"), timeout, interval).Should(HaveField("Status.JobName", "a-1"))
		c := redisClient(redisSrv.Addr())
		key := "clash-" + ns
		Expect(c.RPush(suiteCtx, key, "x").Err()).To(Succeed())
		Expect(k8s.Create(suiteCtx, redisQJ(ns, "a", redisSrv.Addr(), key))).To(Succeed())
		Eventually(getQJ(ns, "a"), timeout, interval).Should(cond(qjv1.ConditionProgressing, metav1.ConditionFalse, qjv1.ReasonJobCreateFailed))
		Expect(condition(getQJ(ns, "a")(Default), qjv1.ConditionProgressing).Message).To(ContainSubstring("belongs to QueueJob a-1"))
	})

	It("lets a QueueJob whose Job was never created fix its template, and refuses template changes once the Job exists", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Name = "Not_A_DNS_Label" })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(cond(qjv1.ConditionProgressing, metav1.ConditionFalse, qjv1.ReasonJobCreateFailed))
		updateQJ(ns, "pi", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Name = "pi" })
		theJob(qj)
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(HaveField("Status.JobName", "pi"))
		Eventually(func(g Gomega) {
			cur := getQJ(ns, "pi")(g)
			cur.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Image = "perl:5.40"
			err := k8s.Update(suiteCtx, cur)
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring("spec.jobTemplate"))
		}, timeout, interval).Should(Succeed())
	})
})

var _ = Describe("A QueueJob's own TTL", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("deletes a finished QueueJob, in the foreground, once spec.ttlSecondsAfterFinished has passed", func() {
		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) { q.Spec.TTLSecondsAfterFinished = ptr.To[int32](4) })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Consistently(func(g Gomega) *metav1.Time { return getQJ(ns, "pi")(g).DeletionTimestamp }, 2*time.Second, 250*time.Millisecond).
			Should(BeNil(), "a running QueueJob is never deleted")
		finishedAt := time.Now().Truncate(time.Second) // the API server keeps whole seconds
		finishJob(job, true, finishedAt, 1, 0, "CompletionsReached")
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionComplete, metav1.ConditionTrue, "CompletionsReached"),
			HaveField("Status.CompletionTime.Time", BeTemporally("==", finishedAt))))
		// envtest runs no garbage collector: the QueueJob waits in the foreground deletion
		// for its Jobs, which a cluster would delete. Its deletionTimestamp is when the
		// API server took the delete, rounded down to the second: never before the
		// expiry (a whole second) if the delete came after it, however slow the machine.
		var deleted *metav1.Time
		Eventually(func(g Gomega) {
			cur := getQJ(ns, "pi")(g)
			g.Expect(cur.DeletionTimestamp).NotTo(BeNil())
			g.Expect(cur.Finalizers).To(ContainElement(metav1.FinalizerDeleteDependents))
			deleted = cur.DeletionTimestamp
		}, timeout, interval).Should(Succeed())
		Expect(deleted.Time).To(BeTemporally(">=", finishedAt.Add(4*time.Second)), "deleted before its TTL of 4s")
	})

	It("waits until a Failed QueueJob has returned its dead workers' items to the queue", func() {
		c := redisClient(redisSrv.Addr())
		key := "strand-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b").Err()).To(Succeed())
		qj := redisQJ(ns, "st", redisSrv.Addr(), key, func(q *qjv1.QueueJob) {
			q.Spec.Mode = qjv1.ModeWorkerPool
			q.Spec.TTLSecondsAfterFinished = ptr.To[int32](0)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		rediswqLease(c, key, "dead-worker", 2*time.Second)
		finishJob(job, false, time.Now(), 0, 1, "BackoffLimitExceeded")
		Eventually(func() int64 { return c.LLen(suiteCtx, redis.ProcessingKey(key)).Val() }, 2*timeout, time.Second).
			Should(BeZero(), "the dead worker's item stays in <key>:processing for good")
		Eventually(func(g Gomega) bool {
			cur := &qjv1.QueueJob{}
			err := k8s.Get(suiteCtx, client.ObjectKeyFromObject(qj), cur)
			return apierrors.IsNotFound(err) || cur.DeletionTimestamp != nil
		}, timeout, interval).Should(BeTrue(), "the QueueJob expires once its items are back")
		Expect(c.LLen(suiteCtx, key).Val()).To(BeEquivalentTo(2))
	})

	It("keeps a finished QueueJob without one", func() {
		qj := queueJob(ns, "pi")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		finishJob(theJob(qj), true, time.Now().Add(-time.Hour), 1, 0, "CompletionsReached")
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(cond(qjv1.ConditionComplete, metav1.ConditionTrue, "CompletionsReached"))
		Consistently(func(g Gomega) *metav1.Time { return getQJ(ns, "pi")(g).DeletionTimestamp }, 3*time.Second, 250*time.Millisecond).Should(BeNil())
	})
})

var _ = Describe("A PerItem wave whose items another consumer took", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("is ended once the queue stays empty for the grace period, is not a failure, and completes the QueueJob", func() {
		c := redisClient(redisSrv.Addr())
		key := "thief-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c").Err()).To(Succeed())
		qj := redisQJ(ns, "thief", redisSrv.Addr(), key, func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](3)
			q.Spec.DrainGracePeriodSeconds = ptr.To[int32](2)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Expect(job.Spec.Completions).To(HaveValue(BeEquivalentTo(3)))
		runJob(job, 3)

		By("one pod doing its item, and another consumer taking the other two")
		Expect(rediswqWork(c, key)).To(BeTrue())
		Expect(c.Del(suiteCtx, key).Err()).To(Succeed())

		Eventually(func(g Gomega) {
			cur := liveJob(g, job)
			g.Expect(cur.Spec.Suspend).To(HaveValue(BeTrue()))
			g.Expect(cur.Annotations).To(HaveKey(qjv1.AnnotationWaveEnded))
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventWaveEnded) }, timeout, interval).Should(
			ConsistOf(HaveField("Note", ContainSubstring("another consumer"))))

		By("the Job controller stopping the two waiting pods")
		podsStopped(job, 1)
		Eventually(getQJ(ns, "thief"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionComplete, metav1.ConditionTrue, qjv1.ReasonWorkersStopped),
			HaveField("Status.Succeeded", BeEquivalentTo(1)),
			HaveField("Status.State", qjv1.StateComplete)))
		Expect(eventsFor(Default, qj, qjv1.EventFailed)).To(BeEmpty())
	})
})

var _ = Describe("kubectl get qj", func() {
	It("reads like kubectl get jobs: STATUS, MODE, COMPLETIONS, WAVES, DURATION", func() {
		ns := newNamespace()
		qj := queueJob(ns, "pi")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		start := time.Now().Add(-95 * time.Second)
		Eventually(func(g Gomega) {
			cur := liveJob(g, theJob(qj))
			cur.Status.StartTime = &metav1.Time{Time: start}
			g.Expect(k8s.Status().Update(suiteCtx, cur)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		finishJob(theJob(qj), true, start.Add(65*time.Second), 1, 0, "CompletionsReached")
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(HaveField("Status.Duration", "65s"))

		path, err := exec.LookPath("kubectl")
		if err != nil {
			Fail("this spec needs kubectl on PATH (Debian's kubernetes-client, or a kubectl built from source): " + err.Error())
		}
		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(os.WriteFile(kubeconfig, testEnv.KubeConfig, 0o600)).To(Succeed())
		out, err := exec.CommandContext(suiteCtx, path, "--kubeconfig", kubeconfig, "get", "qj", "-n", ns).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		Expect(lines).To(HaveLen(2), string(out))
		Expect(strings.Fields(lines[0])).To(Equal([]string{"NAME", "STATUS", "MODE", "COMPLETIONS", "WAVES", "READY", "IN-FLIGHT", "DURATION", "AGE"}))
		Expect(strings.Fields(lines[1])[:5]).To(Equal([]string{"pi", "Complete", "Job", "1/1", "1"}))
		Expect(lines[1]).To(ContainSubstring("65s"))
	})
})

// workload makes a stand-in Kueue Workload (testdata/kueue) of the Job uid, with
// spec.active as given (nil: unset).
func workload(ns, name string, uid types.UID, active *bool) *unstructured.Unstructured {
	wl := &unstructured.Unstructured{}
	wl.SetGroupVersionKind(schema.GroupVersionKind{Group: "kueue.x-k8s.io", Version: "v1beta2", Kind: "Workload"})
	wl.SetNamespace(ns)
	wl.SetName(name)
	wl.SetLabels(map[string]string{"kueue.x-k8s.io/job-uid": string(uid)})
	if active != nil {
		Expect(unstructured.SetNestedField(wl.Object, *active, "spec", "active")).To(Succeed())
	}
	Expect(k8s.Create(suiteCtx, wl)).To(Succeed())
	return wl
}

// liveWorkload reads a Workload from the API server: its spec.active, and the operator's
// mark batch.queuejob.io/deactivated ("" if none).
func liveWorkload(g Gomega, wl *unstructured.Unstructured) map[string]any {
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(wl.GroupVersionKind())
	g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(wl), got)).To(Succeed())
	active, _, _ := unstructured.NestedBool(got.Object, "spec", "active")
	return map[string]any{"active": active, "deactivated": got.GetAnnotations()["batch.queuejob.io/deactivated"]}
}
