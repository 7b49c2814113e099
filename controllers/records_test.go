package controllers

import (
	"errors"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

var queueJobsResource = schema.GroupResource{Group: qjv1.GroupVersion.Group, Resource: "queuejobs"}

// ofQueueJob is the QueueJob a status write is for, nil if it is for another one.
func ofQueueJob(obj client.Object, ns, name string) *qjv1.QueueJob {
	qj, ok := obj.(*qjv1.QueueJob)
	if !ok || qj.Namespace != ns || qj.Name != name {
		return nil
	}
	return qj
}

var _ = Describe("Records across failed status writes", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("records a probe's counts whose status write conflicted without waiting for the next probe", func() {
		var lost atomic.Int32
		stopMgr()
		stopMgr, _ = startManagerWith(cfg, withStatusFaults(func(obj client.Object) error {
			if qj := ofQueueJob(obj, ns, "counts"); qj != nil && qj.Status.Queue != nil && lost.CompareAndSwap(0, 1) {
				return apierrors.NewConflict(queueJobsResource, qj.Name, errors.New("injected by the test"))
			}
			return nil
		}))
		DeferCleanup(restartManager)

		c := redisClient(redisSrv.Addr())
		key := "counts-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b").Err()).To(Succeed())
		qj := redisQJ(ns, "counts", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](3600) // the next probe is an hour away
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(lost.Load, timeout, interval).Should(BeEquivalentTo(1), "the first status write with the counts was failed")
		Eventually(getQJ(ns, "counts"), timeout, interval).Should(HaveField("Status.Queue.Ready", BeEquivalentTo(2)))
	})

	It("reports every Job it created and every lease it reclaimed exactly once when status writes conflict", func() {
		var lostCreate, lostReclaim atomic.Int32
		stopMgr()
		stopMgr, _ = startManagerWith(cfg, withStatusFaults(func(obj client.Object) error {
			qj := ofQueueJob(obj, ns, "records")
			switch {
			case qj == nil:
				return nil
			case qj.Status.Waves >= 1 && lostCreate.CompareAndSwap(0, 1),
				qj.Status.Queue != nil && qj.Status.Queue.Reclaimed >= 1 && lostReclaim.CompareAndSwap(0, 1):
				return apierrors.NewConflict(queueJobsResource, qj.Name, errors.New("injected by the test"))
			}
			return nil
		}))
		DeferCleanup(restartManager)

		c := redisClient(redisSrv.Addr())
		key := "records-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c").Err()).To(Succeed())
		qj := redisQJ(ns, "records", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.Mode = qjv1.ModeWorkerPool
			j.Spec.DrainGracePeriodSeconds = ptr.To[int32](3600)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		runJob(job, 1)
		Eventually(getQJ(ns, "records"), timeout, interval).Should(HaveField("Status.Waves", BeEquivalentTo(1)))
		Expect(lostCreate.Load()).To(BeEquivalentTo(1), "the status write that recorded the new Job was failed")

		By("a worker leasing an item for one second and dying")
		rediswqLease(c, key, "worker-dead", time.Second)
		Eventually(func() int64 { return c.LLen(suiteCtx, key).Val() }, timeout, interval).Should(BeEquivalentTo(3))
		Eventually(lostReclaim.Load, timeout, interval).Should(BeEquivalentTo(1), "the status write that recorded the reclaim was failed")

		Eventually(getQJ(ns, "records"), timeout, interval).Should(HaveField("Status.Queue.Reclaimed", BeEquivalentTo(1)))
		for _, reason := range []string{qjv1.EventJobCreated, qjv1.EventLeasesReclaimed} {
			Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, reason) }, timeout, interval).Should(HaveLen(1), reason)
		}
		Consistently(func(g Gomega) {
			g.Expect(eventsFor(g, qj, qjv1.EventJobCreated)).To(HaveLen(1))
			g.Expect(eventsFor(g, qj, qjv1.EventLeasesReclaimed)).To(HaveLen(1))
			g.Expect(getQJ(ns, "records")(g).Status.Queue.Reclaimed).To(BeEquivalentTo(1))
		}, 3*time.Second, 300*time.Millisecond).Should(Succeed())
	})

	It("deletes no Job whose counts the API server has not stored", func() {
		var blocked atomic.Bool
		blocked.Store(true)
		var refused atomic.Int32
		stopMgr()
		stopMgr, _ = startManagerWith(cfg, withStatusFaults(func(obj client.Object) error {
			qj := ofQueueJob(obj, ns, "pi")
			if qj == nil || qj.Status.Archived == nil || len(qj.Status.Archived.Jobs) == 0 || !blocked.Load() {
				return nil
			}
			refused.Add(1)
			return apierrors.NewServiceUnavailable("injected by the test: the status write of the archive fails")
		}))
		DeferCleanup(restartManager)

		qj := queueJob(ns, "pi", func(q *qjv1.QueueJob) {
			q.Spec.Cleanup = &qjv1.CleanupPolicy{TTLSecondsAfterFinished: ptr.To[int32](1)}
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		finishJob(job, true, time.Now(), 1, 0, "CompletionsReached")
		Eventually(getQJ(ns, "pi"), timeout, interval).Should(cond(qjv1.ConditionComplete, metav1.ConditionTrue, "CompletionsReached"))

		By("failing every status write that archives the Job, past its 1s TTL")
		Eventually(refused.Load, timeout, interval).Should(BeNumerically(">=", 1))
		Consistently(func() error { return k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), &batchv1.Job{}) }, 5*time.Second, 250*time.Millisecond).
			Should(Succeed(), "the Job was deleted before its counts were stored")

		By("letting the archive through")
		blocked.Store(false)
		Eventually(func() error { return k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), &batchv1.Job{}) }, timeout, interval).
			Should(Satisfy(apierrors.IsNotFound))
		Expect(getQJ(ns, "pi")(Default)).To(SatisfyAll(
			HaveField("Status.Succeeded", BeEquivalentTo(1)),
			cond(qjv1.ConditionComplete, metav1.ConditionTrue, "CompletionsReached")))
	})
})
