package controllers

import (
	"encoding/json"
	"errors"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/queuetest"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
	"github.com/queuejob/queuejob-operator/pkg/worker"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// streamQJ is a QueueJob on the Redis stream name (group "workers") at addr, probed every
// second.
func streamQJ(ns, name, addr, key string, opts ...func(*qjv1.QueueJob)) *qjv1.QueueJob {
	return queueJob(ns, name, append([]func(*qjv1.QueueJob){func(q *qjv1.QueueJob) {
		q.Spec.Queue = &qjv1.QueueSource{RedisStream: &qjv1.RedisStreamQueue{Address: addr, Stream: key, Group: "workers"}}
		q.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
		q.Spec.JobTemplate.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	}}, opts...)...)
}

// queueCounts is a QueueJob's status.queue counts: ready, in flight, dead-lettered.
func queueCounts(ns, name string) func(g Gomega) [3]int64 {
	return func(g Gomega) [3]int64 {
		q := getQJ(ns, name)(g).Status.Queue
		g.Expect(q).NotTo(BeNil())
		return [3]int64{q.Ready, q.InFlight, q.DeadLettered}
	}
}

var _ = Describe("QueueJob on a Redis stream", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("probes the stream's ready, in-flight and dead-lettered entries into status, and gives its workers the stream and the lease", func() {
		key := "stream-" + ns
		o := stream.Options{Address: redisSrv.Addr(), Stream: key, Group: "workers"}
		Expect(queuetest.AdminEnqueue(suiteCtx, stream.NewAdmin(o, 10*time.Second), queue.EnqueueOptions{},
			[]byte("a"), []byte("b"), []byte("c"))).To(Succeed())
		qj := streamQJ(ns, "counts", redisSrv.Addr(), key, func(q *qjv1.QueueJob) { q.Spec.Queue.RedisStream.LeaseSeconds = ptr.To[int32](40) })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(queueCounts(ns, "counts"), timeout, interval).Should(Equal([3]int64{3, 0, 0}))

		By("a worker holding one entry and dead-lettering another")
		w, err := worker.New(suiteCtx, worker.Options{Backend: worker.BackendRedisStream, RedisStream: o, MaxAttempts: 1})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(w.Close)
		held, err := w.Lease(suiteCtx)
		Expect(err).NotTo(HaveOccurred())
		failed, err := w.Lease(suiteCtx)
		Expect(err).NotTo(HaveOccurred())
		Expect(failed.Fail(suiteCtx, errors.New("on purpose"))).To(Succeed())
		Eventually(queueCounts(ns, "counts"), timeout, interval).Should(Equal([3]int64{1, 1, 1}))
		Expect(held.Complete(suiteCtx)).To(Succeed())
		Eventually(queueCounts(ns, "counts"), timeout, interval).Should(Equal([3]int64{1, 0, 1}))

		job := theJob(qj)
		env := envOf(job)
		Expect(env[queue.EnvBackend].Value).To(Equal(worker.BackendRedisStream))
		Expect(env[stream.EnvStream].Value).To(Equal(key))
		Expect(env[stream.EnvGroup].Value).To(Equal("workers"))
		Expect(env[worker.EnvLeaseSeconds].Value).To(Equal("40"))
	})

	It("reports a refused password as QueueReachable=False with AuthFailed, and shows it nowhere", func() {
		authed, err := servers.StartRedis("s3cret-stream-pass")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(authed.Close)
		ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "password"}
		secret(ns, "redis", map[string]string{"password": "wrong-stream-pass"})
		qj := streamQJ(ns, "auth", authed.Addr(), "s", func(j *qjv1.QueueJob) { j.Spec.Queue.RedisStream.PasswordSecretRef = ref })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "auth"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonAuthFailed))
		Expect(reachableMessage(ns, "auth")(Default)).To(ContainSubstring("spec.queue.redisStream.passwordSecretRef"))
		b, err := json.Marshal(getQJ(ns, "auth")(Default).Status)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).NotTo(SatisfyAny(ContainSubstring("s3cret-stream-pass"), ContainSubstring("wrong-stream-pass")))
		Expect(suiteLog.String()).NotTo(SatisfyAny(ContainSubstring("s3cret-stream-pass"), ContainSubstring("wrong-stream-pass")))
	})
})
