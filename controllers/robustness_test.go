package controllers

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// silentListener accepts TCP connections and never answers: a black-holed broker.
func silentListener() string {
	addr, stop, err := servers.Silent()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(stop)
	return addr
}

// refusePodDeletes makes the API server refuse every pod delete in a namespace, as an
// admission webhook of a cluster's own might; it returns once the refusal is in force.
func refusePodDeletes(ns string) {
	policy := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "refuse-pod-deletes-" + ns},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Delete},
					Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				},
			}}},
			Validations: []admissionv1.Validation{{Expression: "false", Message: "pod deletes are refused here (test)"}},
		},
	}
	Expect(k8s.Create(suiteCtx, policy)).To(Succeed())
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy.Name,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources: &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}},
		},
	}
	Expect(k8s.Create(suiteCtx, binding)).To(Succeed())
	DeferCleanup(func() {
		Expect(k8s.Delete(suiteCtx, binding)).To(Succeed())
		Expect(k8s.Delete(suiteCtx, policy)).To(Succeed())
	})
	probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "delete-probe"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	Expect(k8s.Create(suiteCtx, probe)).To(Succeed())
	Eventually(func() error { return k8s.Delete(suiteCtx, probe, client.DryRunAll) }, timeout, interval).
		Should(MatchError(ContainSubstring("pod deletes are refused here")))
}

var _ = Describe("Robustness", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("creates its Job once a foreign Job that held the name is deleted", func() {
		foreign := queueJob(ns, "foreign")
		foreignJob := desiredJob(foreign, 1, jobSizing{completions: ptr.To[int32](1), parallelism: 1}, nil)
		delete(foreignJob.Labels, qjv1.LabelQueueJob) // not ours: the manager does not even cache it
		Expect(k8s.Create(suiteCtx, foreignJob)).To(Succeed())

		Expect(k8s.Create(suiteCtx, foreign)).To(Succeed())
		Eventually(getQJ(ns, "foreign"), timeout, interval).Should(cond(qjv1.ConditionProgressing, metav1.ConditionFalse, qjv1.ReasonJobCreateFailed))
		Expect(condition(getQJ(ns, "foreign")(Default), qjv1.ConditionProgressing).Message).To(ContainSubstring("does not belong to this QueueJob"))

		By("deleting the foreign Job, which sends the manager no event")
		Expect(k8s.Delete(suiteCtx, foreignJob, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		Eventually(func(g Gomega) []batchv1.Job { return ownedJobs(g, foreign) }, timeout, interval).Should(HaveLen(1))
		Eventually(getQJ(ns, "foreign"), timeout, interval).Should(cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonJobRunning))
	})

	It("keeps probing at its interval while a phase keeps failing", func() {
		refusePodDeletes(ns)
		c := redisClient(redisSrv.Addr())
		key := "refused-" + ns
		Expect(c.RPush(suiteCtx, key, "a").Err()).To(Succeed())
		qj := redisQJ(ns, "refused", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.Refill = qjv1.RefillContinuous
			j.Spec.Cleanup = &qjv1.CleanupPolicy{PodTTLSecondsAfterFinished: ptr.To[int32](0)}
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		pod := jobPod(job, "done", corev1.PodSucceeded, time.Now().Add(-time.Hour))

		By("letting the refused pod delete fail every reconcile for 45s: the backoff of failed reconciles would pass 40s")
		Consistently(func() error { return k8s.Get(suiteCtx, client.ObjectKeyFromObject(pod), &corev1.Pod{}) }, 45*time.Second, time.Second).Should(Succeed())

		By("seeing every change of the queue within a few probe intervals")
		// 20s is 20 probe intervals, room for a loaded machine, and half the 40s that the
		// backoff of the failed reconciles has reached: uncapped, it would miss the second
		// push at the latest.
		for i := int64(2); i <= 4; i++ {
			Expect(c.RPush(suiteCtx, key, "more").Err()).To(Succeed())
			Eventually(getQJ(ns, "refused"), 20*time.Second, interval).Should(HaveField("Status.Queue.Ready", i))
		}
	})

	It("reconciles other QueueJobs while 50 QueueJobs' probes of one black-holed server wait, and bounds what they cost", func() {
		By("waiting until the manager reconciles: a plain QueueJob gets its Job")
		warmUp := queueJob(ns, "warm-up")
		Expect(k8s.Create(suiteCtx, warmUp)).To(Succeed())
		theJob(warmUp)

		c := redisClient(redisSrv.Addr())
		key := "healthy-" + ns
		Expect(c.RPush(suiteCtx, key, "a").Err()).To(Succeed())
		By("creating 50 QueueJobs on a server that accepts connections and never answers, then a healthy one")
		hole, stop, accepted, err := servers.SilentCounting()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(stop)
		var holes []*qjv1.QueueJob
		for i := range 50 {
			qj := redisQJ(ns, fmt.Sprintf("hole-%02d", i), hole, "k")
			Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
			holes = append(holes, qj)
		}
		healthy := redisQJ(ns, "healthy", redisSrv.Addr(), key)
		Expect(k8s.Create(suiteCtx, healthy)).To(Succeed())
		// With the probes in the reconciles, 4 workers waiting out 5s for each of 50
		// probes held the healthy one back a minute.
		Eventually(func(g Gomega) []batchv1.Job { return ownedJobs(g, healthy) }, 12*time.Second, interval).Should(HaveLen(1),
			"the healthy QueueJob waited behind the probes of a black-holed server")

		By("seeing every black-holed QueueJob report its queue unreachable")
		for _, qj := range holes {
			Eventually(getQJ(ns, qj.Name), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonConnectionFailed))
		}
		By("counting the connections to the server and the status writes of those QueueJobs over 30s")
		versions := func() (v []string) {
			for _, qj := range holes {
				v = append(v, getQJ(ns, qj.Name)(Default).ResourceVersion)
			}
			return v
		}
		before, conns := versions(), accepted()
		time.Sleep(30 * time.Second) // the window the costs are counted over, not a synchronisation
		after, tries := versions(), accepted()-conns
		writes := 0
		for i := range before {
			if before[i] != after[i] {
				writes++
			}
		}
		By(fmt.Sprintf("counted %d connections to the server and %d QueueJobs' status writes in 30s", tries, writes))
		// Each QueueJob on its own would try the server at least every minute (its
		// backoff): 25 connections in 30s. One probe at a time tries it, at most 30s apart.
		Expect(tries).To(BeNumerically("<=", 6), "connections to the black-holed server in 30s")
		// A QueueJob whose probe was the one trying, or was turned away, says so: a few
		// such changes, not one per probe.
		Expect(writes).To(BeNumerically("<=", 10), "black-holed QueueJobs whose status was written in 30s")
	})

	It("bounds a probe by ProbeTimeout whatever the backend's own timeout", func() {
		r := &QueueJobReconciler{Client: k8s, APIReader: k8s, Scheme: scheme, ProbeTimeout: time.Second}
		qj := redisQJ(ns, "bounded", silentListener(), "k")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		s := &scope{read: qj, qj: qj.DeepCopy(), now: time.Now()}
		backend, err := r.registry().For(qj.Spec.Queue)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { r.forgetQueue(client.ObjectKeyFromObject(qj)) })
		start := time.Now()
		err = probeOnceOf(GinkgoT(), r, s, backend).err
		Expect(err).To(HaveOccurred())
		Expect(queue.ReasonOf(err)).To(Equal(queue.ReasonConnectionFailed))
		// The Redis backend's own timeout is 5s; the controller's bound cuts it to 1s.
		Expect(time.Since(start)).To(BeNumerically("<", 4*time.Second))
	})

	It("releases the connection and gauges of a QueueJob once it has finished", func() {
		c := redisClient(redisSrv.Addr())
		key := "release-" + ns
		Expect(c.RPush(suiteCtx, key, "a").Err()).To(Succeed())
		qj := redisQJ(ns, "release", redisSrv.Addr(), key)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		qjKey := client.ObjectKeyFromObject(qj)
		Expect(reconciler.probes.has(qjKey)).To(BeTrue())
		for rediswqWork(c, key) {
		}
		finishJob(job, true, time.Now(), 1, 0, "CompletionsReached")
		Eventually(getQJ(ns, "release"), timeout, interval).Should(cond(qjv1.ConditionComplete, metav1.ConditionTrue, qjv1.ReasonQueueDrained))
		Eventually(func() bool { return reconciler.probes.has(qjKey) }, timeout, interval).Should(BeFalse(), "the finished QueueJob keeps its connection")
		Expect(queueReady.DeleteLabelValues(ns, "release")).To(BeFalse(), "the finished QueueJob keeps its gauge")
	})

	It("keeps returning the items of a failed QueueJob's dead workers to the queue", func() {
		c := redisClient(redisSrv.Addr())
		key := "failed-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b").Err()).To(Succeed())
		qj := redisQJ(ns, "failed", redisSrv.Addr(), key, func(j *qjv1.QueueJob) { j.Spec.Mode = qjv1.ModeWorkerPool })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		runJob(job, 1)

		By("a worker leasing an item for 2s, then its Job failing")
		rediswqLease(c, key, "worker-dead", 2*time.Second)
		Eventually(getQJ(ns, "failed"), timeout, interval).Should(HaveField("Status.Queue.InFlight", BeEquivalentTo(1)))
		finishJob(job, false, time.Now(), 0, 7, "BackoffLimitExceeded")
		Eventually(getQJ(ns, "failed"), timeout, interval).Should(cond(qjv1.ConditionFailed, metav1.ConditionTrue, "BackoffLimitExceeded"))

		Eventually(func() []string { return c.LRange(suiteCtx, key, 0, -1).Val() }, timeout, interval).Should(ConsistOf("a", "b"))
		Expect(c.LLen(suiteCtx, redis.ProcessingKey(key)).Val()).To(BeZero())
		Eventually(getQJ(ns, "failed"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.Queue.InFlight", BeEquivalentTo(0)),
			HaveField("Status.Queue.Reclaimed", BeEquivalentTo(1))))
		Eventually(func() bool { return reconciler.probes.has(client.ObjectKeyFromObject(qj)) }, timeout, interval).Should(BeFalse())
	})

	It("logs the items still in flight when a QueueJob is deleted", func() {
		c := redisClient(redisSrv.Addr())
		key := "deleted-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b").Err()).To(Succeed())
		qj := redisQJ(ns, "deleted", redisSrv.Addr(), key, func(j *qjv1.QueueJob) { j.Spec.Mode = qjv1.ModeWorkerPool })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		theJob(qj)
		rediswqLease(c, key, "worker-1", time.Minute)
		Eventually(getQJ(ns, "deleted"), timeout, interval).Should(HaveField("Status.Queue.InFlight", BeEquivalentTo(1)))

		Expect(k8s.Delete(suiteCtx, qj)).To(Succeed())
		Eventually(func() error { return k8s.Get(suiteCtx, client.ObjectKeyFromObject(qj), &qjv1.QueueJob{}) }, timeout, interval).Should(Satisfy(apierrors.IsNotFound))
		Eventually(func() []string { return logLinesOf(ns) }, timeout, interval).Should(ContainElement(
			SatisfyAll(ContainSubstring("deleted with items in flight"), ContainSubstring(`"inFlight": 1`))))
	})
})

var _ = Describe("A refill Continuous QueueJob with failing waves", func() {
	It("starts the next wave after a failed one, resets on success, and fails at the limit", func() {
		ns := newNamespace()
		c := redisClient(redisSrv.Addr())
		key := "flaky-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b").Err()).To(Succeed())
		qj := redisQJ(ns, "flaky", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.Refill = qjv1.RefillContinuous
			j.Spec.ConsecutiveFailedWavesLimit = ptr.To[int32](2)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		// wave finishes wave n once it exists (the items stay ready: nobody takes them).
		wave := func(n int32, ok bool) {
			var job batchv1.Job
			Eventually(func(g Gomega) {
				g.Expect(k8s.Get(suiteCtx, client.ObjectKey{Namespace: ns, Name: jobName("flaky", n)}, &job)).To(Succeed())
			}, timeout, interval).Should(Succeed())
			if ok {
				finishJob(&job, true, time.Now(), 2, 0, "CompletionsReached")
			} else {
				finishJob(&job, false, time.Now(), 0, 7, "BackoffLimitExceeded")
			}
			Eventually(getQJ(ns, "flaky"), timeout, interval).Should(HaveField("Status.LastFinishedWave", n))
		}
		wave(1, false)
		Expect(getQJ(ns, "flaky")(Default)).To(SatisfyAll(
			HaveField("Status.ConsecutiveFailedWaves", BeEquivalentTo(1)),
			cond(qjv1.ConditionFailed, metav1.ConditionFalse, qjv1.ReasonNotFinished)))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventWaveFailed) }, timeout, interval).Should(HaveLen(1))
		wave(2, true)
		Expect(getQJ(ns, "flaky")(Default)).To(HaveField("Status.ConsecutiveFailedWaves", BeEquivalentTo(0)))
		wave(3, false)
		wave(4, false)
		Eventually(getQJ(ns, "flaky"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.ConsecutiveFailedWaves", BeEquivalentTo(2)),
			cond(qjv1.ConditionFailed, metav1.ConditionTrue, "BackoffLimitExceeded")))
		Consistently(func(g Gomega) error {
			return k8s.Get(suiteCtx, client.ObjectKey{Namespace: ns, Name: jobName("flaky", 5)}, &batchv1.Job{})
		}, 3*time.Second, 300*time.Millisecond).Should(Satisfy(apierrors.IsNotFound), "a fifth wave started after the limit")
	})
})
