package controllers

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// Transitions of the wave state machine (docs/wave-state-machine.md) whose decisions
// involve the API server: a Job gone from under the operator, an ended Job archived and
// deleted before the next wave starts.
var _ = Describe("The wave state machine", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("starts the next wave when a running wave's Job is deleted by hand", func() {
		c := redisClient(redisSrv.Addr())
		key := "byhand-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c").Err()).To(Succeed())
		qj := redisQJ(ns, "byhand", redisSrv.Addr(), key)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		first := theJob(qj)
		Expect(first.Name).To(Equal("byhand-1"))
		Eventually(getQJ(ns, "byhand"), timeout, interval).Should(HaveField("Status.Waves", BeEquivalentTo(1)))

		By("a user deleting the running wave's Job while its items are still ready")
		Expect(k8s.Delete(suiteCtx, first, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		Eventually(func(g Gomega) {
			jobs := ownedJobs(g, qj)
			g.Expect(jobs).To(HaveLen(1))
			g.Expect(jobs[0].Name).To(Equal("byhand-2"), "the next wave, not the deleted one again")
			g.Expect(jobs[0].Spec.Completions).To(HaveValue(BeEquivalentTo(3)))
		}, timeout, interval).Should(Succeed())
		Eventually(getQJ(ns, "byhand"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.Waves", BeEquivalentTo(2)),
			HaveField("Status.JobName", "byhand-2"),
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonWaveRunning)))
	})

	It("archives an ended wave whose queue refilled while its pods stopped, and starts the next wave instead of completing", func() {
		c := redisClient(redisSrv.Addr())
		key := "refill-" + ns
		Expect(c.RPush(suiteCtx, key, "a").Err()).To(Succeed())
		qj := redisQJ(ns, "refill", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.Mode = qjv1.ModeWorkerPool
			j.Spec.DrainGracePeriodSeconds = ptr.To[int32](2)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		first := theJob(qj)
		runJob(first, 1)
		Expect(rediswqWork(c, key)).To(BeTrue())

		By("the queue staying drained past the grace: the operator ends the wave")
		Eventually(func(g Gomega) map[string]string { return liveJob(g, first).Annotations }, timeout, interval).
			Should(HaveKey(qjv1.AnnotationWaveEnded))
		Eventually(getQJ(ns, "refill"), timeout, interval).Should(cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonWaveEnding))

		By("an item arriving while the ended wave's worker stops, then the Job controller counting it")
		Expect(c.RPush(suiteCtx, key, "b").Err()).To(Succeed())
		Eventually(getQJ(ns, "refill"), timeout, interval).Should(HaveField("Status.Queue.Ready", BeEquivalentTo(1)))
		podsStopped(first, 1)

		Eventually(func() error { return k8s.Get(suiteCtx, client.ObjectKeyFromObject(first), &batchv1.Job{}) }, timeout, interval).
			Should(Satisfy(apierrors.IsNotFound), "the ended Job is archived and deleted once its pods are counted")
		Eventually(func(g Gomega) []string {
			var names []string
			for _, j := range ownedJobs(g, qj) {
				names = append(names, j.Name)
			}
			return names
		}, timeout, interval).Should(ConsistOf("refill-2"))
		Eventually(getQJ(ns, "refill"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.Waves", BeEquivalentTo(2)),
			HaveField("Status.Succeeded", BeEquivalentTo(1)),
			cond(qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonNotFinished)))
		Expect(eventsFor(Default, qj, qjv1.EventCompleted)).To(BeEmpty())
		Expect(eventsFor(Default, qj, qjv1.EventWaveEnded)).To(HaveLen(1))
		Consistently(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventCompleted) }, 3*time.Second, 300*time.Millisecond).Should(BeEmpty())
	})
})
