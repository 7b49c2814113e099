package controllers

import (
	"fmt"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	goredis "github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// rediswqDeadLetter takes an item and dead-letters it, as pkg/worker does once its
// attempts are spent: out of <key>:processing, into <key>:failed, atomically.
func rediswqDeadLetter(c *goredis.Client, key string) {
	item, err := c.RPopLPush(suiteCtx, key, redis.ProcessingKey(key)).Result()
	Expect(err).NotTo(HaveOccurred())
	_, err = c.TxPipelined(suiteCtx, func(p goredis.Pipeliner) error {
		p.LRem(suiteCtx, redis.ProcessingKey(key), 1, item)
		p.LPush(suiteCtx, redis.FailedKey(key), item)
		return nil
	})
	Expect(err).NotTo(HaveOccurred())
}

var _ = Describe("QueueJob whose items were dead-lettered", func() {
	var ns, key string
	var c *goredis.Client
	BeforeEach(func() {
		ns = newNamespace()
		key = "dl-" + ns
		c = redisClient(redisSrv.Addr())
	})

	// run creates the QueueJob over three items, waits for its first probe, plays the
	// workers (dead-lettering dead of the items, completing the others) and the Job
	// controller (the wave's three pods succeed: a worker that dead-letters exits 0).
	run := func(name string, dead int, policy qjv1.DeadLetterPolicy, earlier int64) *qjv1.QueueJob {
		Expect(c.RPush(suiteCtx, key, "a", "b", "c").Err()).To(Succeed())
		qj := redisQJ(ns, name, redisSrv.Addr(), key, func(q *qjv1.QueueJob) { q.Spec.DeadLetterPolicy = policy })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Expect(job.Annotations).To(HaveKeyWithValue(qjv1.AnnotationDeadLetteredAtStart, strconv.FormatInt(earlier, 10)),
			"the wave's Job carries the baseline, which a lost status write would lose")
		Eventually(getQJ(ns, name), timeout, interval).Should(SatisfyAll(
			HaveField("Status.Queue.Ready", BeEquivalentTo(3)),
			HaveField("Status.Queue.DeadLetteredAtStart", HaveValue(Equal(earlier)))))
		runJob(job, 1)
		for range dead {
			rediswqDeadLetter(c, key)
		}
		for rediswqWork(c, key) {
		}
		finishJob(job, true, time.Now(), 3, 0, "CompletionsReached")
		return qj
	}
	warnings := func(qj *qjv1.QueueJob) func(g Gomega) []eventsv1.Event {
		return func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventItemsDeadLettered) }
	}
	message := func(t string) func(qj *qjv1.QueueJob) string {
		return func(qj *qjv1.QueueJob) string {
			if c := condition(qj, t); c != nil {
				return c.Message
			}
			return ""
		}
	}

	It("fails by default with reason ItemsDeadLettered and one Warning event, so that waiting for Complete fails", func() {
		qj := run("dl-default", 2, "", 0)
		Eventually(getQJ(ns, "dl-default"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionFailed, metav1.ConditionTrue, qjv1.ReasonItemsDeadLettered),
			cond(qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonItemsDeadLettered),
			HaveField("Status.State", qjv1.StateFailed),
			HaveField("Status.Queue.DeadLettered", BeEquivalentTo(2)),
			WithTransform(message(qjv1.ConditionFailed), SatisfyAll(
				ContainSubstring("2 items were dead-lettered"), ContainSubstring(fmt.Sprintf("%q", redis.FailedKey(key))),
				ContainSubstring("qj requeue dl-default"), ContainSubstring("spec.deadLetterPolicy: Complete")))))
		Expect(getQJ(ns, "dl-default")(Default).Spec.DeadLetterPolicy).To(Equal(qjv1.DeadLetterPolicyFail), "the API server's default")
		Eventually(warnings(qj), timeout, interval).Should(ConsistOf(HaveField("Type", corev1.EventTypeWarning)))
		Consistently(func(g Gomega) int { return len(warnings(qj)(g)) + len(eventsFor(g, qj, qjv1.EventFailed)) },
			3*time.Second, 300*time.Millisecond).Should(Equal(1), "one Warning event, not repeated by later probes")
	})

	It("completes under policy Complete, counting the dead-lettered items in the Complete condition", func() {
		qj := run("dl-complete", 1, qjv1.DeadLetterPolicyComplete, 0)
		Eventually(getQJ(ns, "dl-complete"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionComplete, metav1.ConditionTrue, qjv1.ReasonQueueDrained),
			cond(qjv1.ConditionFailed, metav1.ConditionFalse, qjv1.ReasonQueueDrained),
			WithTransform(message(qjv1.ConditionComplete),
				ContainSubstring(fmt.Sprintf("1 items were dead-lettered to Redis list %q", redis.FailedKey(key))))))
		Eventually(warnings(qj), timeout, interval).Should(ConsistOf(HaveField("Type", corev1.EventTypeWarning)))
	})

	It("does not count items dead-lettered before the QueueJob was created", func() {
		Expect(c.RPush(suiteCtx, redis.FailedKey(key), "old-1", "old-2").Err()).To(Succeed())
		qj := run("dl-earlier", 0, "", 2)
		Eventually(getQJ(ns, "dl-earlier"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionComplete, metav1.ConditionTrue, qjv1.ReasonQueueDrained),
			HaveField("Status.Queue.DeadLettered", BeEquivalentTo(2)),
			WithTransform(message(qjv1.ConditionComplete), Not(ContainSubstring("dead-lettered")))))
		Expect(warnings(qj)(Default)).To(BeEmpty())
	})
})
