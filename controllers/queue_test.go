package controllers

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// Queue-driven QueueJobs against real Redis and RabbitMQ. envtest runs no Job controller
// and no workers: the tests play both, taking items the way the Kubernetes docs' workers
// do (rediswq's lease and complete; amqp-consume's get and ack) and writing Job status.

const rabbitPassword = "guest" // the broker's default user; the URL lives in a Secret

func redisClient(addr string) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	DeferCleanup(c.Close)
	return c
}

// rediswqWork leases an item and completes it, as rediswq.py's lease() and complete() do.
func rediswqWork(c *goredis.Client, key string) bool {
	item, err := c.RPopLPush(suiteCtx, key, redis.ProcessingKey(key)).Result()
	if err == goredis.Nil {
		return false
	}
	Expect(err).NotTo(HaveOccurred())
	Expect(c.SetEx(suiteCtx, redis.LeaseKey(key, item), "worker-1", time.Minute).Err()).To(Succeed())
	Expect(c.LRem(suiteCtx, redis.ProcessingKey(key), 0, item).Err()).To(Succeed())
	Expect(c.Del(suiteCtx, redis.LeaseKey(key, item)).Err()).To(Succeed())
	return true
}

// rediswqLease takes an item into flight and leases it for ttl, as rediswq.py's lease()
// does; a worker that then dies leaves it there.
func rediswqLease(c *goredis.Client, key, worker string, ttl time.Duration) {
	item, err := c.RPopLPush(suiteCtx, key, redis.ProcessingKey(key)).Result()
	Expect(err).NotTo(HaveOccurred())
	Expect(c.SetEx(suiteCtx, redis.LeaseKey(key, item), worker, ttl).Err()).To(Succeed())
}

func amqpChannel() *amqp.Channel {
	conn, err := amqp.Dial(rabbitSrv.URL())
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(conn.Close)
	ch, err := conn.Channel()
	Expect(err).NotTo(HaveOccurred())
	Expect(ch.Confirm(false)).To(Succeed())
	return ch
}

func amqpPublish(ch *amqp.Channel, q string, items ...string) {
	_, err := ch.QueueDeclare(q, true, false, false, false, nil)
	Expect(err).NotTo(HaveOccurred())
	for _, it := range items {
		dc, err := ch.PublishWithDeferredConfirmWithContext(suiteCtx, "", q, false, false,
			amqp.Publishing{Body: []byte(it), DeliveryMode: amqp.Persistent})
		Expect(err).NotTo(HaveOccurred())
		Expect(dc.WaitContext(suiteCtx)).To(BeTrue())
	}
}

func secret(ns, name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: data}
	Expect(k8s.Create(suiteCtx, s)).To(Succeed())
	return s
}

func redisQJ(ns, name, addr, key string, opts ...func(*qjv1.QueueJob)) *qjv1.QueueJob {
	return queueJob(ns, name, append([]func(*qjv1.QueueJob){func(q *qjv1.QueueJob) {
		q.Spec.Queue = &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: addr, Key: key}}
		q.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
		q.Spec.JobTemplate.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	}}, opts...)...)
}

func cond(t string, s metav1.ConditionStatus, reason string) OmegaMatcher {
	return WithTransform(func(qj *qjv1.QueueJob) *metav1.Condition { return condition(qj, t) },
		And(Not(BeNil()), HaveField("Status", s), HaveField("Reason", reason)))
}

func envOf(job *batchv1.Job) map[string]corev1.EnvVar {
	out := map[string]corev1.EnvVar{}
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		out[e.Name] = e
	}
	return out
}

// sameJobs asserts, for a while, that the QueueJob's Jobs stay exactly these.
func sameJobs(qj *qjv1.QueueJob, want ...*batchv1.Job) {
	Consistently(func(g Gomega) {
		jobs := ownedJobs(g, qj)
		g.Expect(jobs).To(HaveLen(len(want)))
		for i := range jobs {
			g.Expect(jobs[i].UID).To(Equal(want[i].UID))
		}
	}, 3*time.Second, 300*time.Millisecond).Should(Succeed())
}

var _ = Describe("QueueJob with a queue", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("runs the seed's job-wq-1: eight RabbitMQ messages become one wave of 8 pods, 2 at a time", func() {
		q := "job1-" + ns
		ch := amqpChannel()
		amqpPublish(ch, q, "apple", "banana", "cherry", "date", "fig", "grape", "lemon", "melon")
		secret(ns, "rabbitmq-url", map[string]string{"url": rabbitSrv.URL()})
		ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "rabbitmq-url"}, Key: "url"}
		createdBefore := testutil.ToFloat64(jobsCreated.WithLabelValues("PerItem"))
		qj := queueJob(ns, "job-wq-1", func(j *qjv1.QueueJob) {
			j.Spec.Queue = &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{Queue: q, URLSecretRef: ref}}
			j.Spec.Mode = qjv1.ModePerItem
			j.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](2)
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
			j.Spec.JobTemplate.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())

		job := theJob(qj)
		Expect(job.Name).To(Equal("job-wq-1-1"))
		Expect(job.Spec.Completions).To(HaveValue(BeEquivalentTo(8)))
		Expect(job.Spec.Parallelism).To(HaveValue(BeEquivalentTo(2)))
		env := envOf(job)
		Expect(env[queue.EnvBackend].Value).To(Equal("rabbitmq"))
		Expect(env[queue.EnvMode].Value).To(Equal("PerItem"))
		Expect(env[queue.EnvItemsPerPod].Value).To(Equal("1"), "a PerItem worker takes itemsPerPod items, then exits")
		Expect(env[rabbitmq.EnvBrokerQueue].Value).To(Equal(q))
		Expect(env[rabbitmq.EnvBrokerURL].ValueFrom.SecretKeyRef).To(Equal(ref))
		spec, err := json.Marshal(job.Spec)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(spec)).NotTo(ContainSubstring("guest:"+rabbitPassword), "the broker's password must not be in the pod spec")

		Eventually(getQJ(ns, "job-wq-1"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed),
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonWaveRunning),
			HaveField("Status.Queue.Ready", BeEquivalentTo(8)),
			HaveField("Status.Waves", BeEquivalentTo(1))))
		Expect(testutil.ToFloat64(queueReady.WithLabelValues(ns, "job-wq-1"))).To(BeEquivalentTo(8))
		Expect(testutil.ToFloat64(jobsCreated.WithLabelValues("PerItem")) - createdBefore).To(BeEquivalentTo(1))
		By("starting no second wave while the first runs")
		sameJobs(qj, job)

		By("the workers each taking and acknowledging one message, then the Job completing")
		for range 8 {
			d, ok, err := ch.Get(q, false)
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(d.Ack(false)).To(Succeed())
		}
		finishJob(job, true, time.Now(), 8, 0, "CompletionsReached")
		Eventually(getQJ(ns, "job-wq-1"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionComplete, metav1.ConditionTrue, qjv1.ReasonQueueDrained),
			HaveField("Status.Succeeded", BeEquivalentTo(8)),
			HaveField("Status.Queue.Ready", BeEquivalentTo(0))))

		By("starting no wave for items that arrive after a refill Once QueueJob finished")
		amqpPublish(ch, q, "kiwi")
		sameJobs(qj, job)
	})

	It("runs the seed's job-wq-2: nine Redis items drained by a pool of 2 workers, Complete once drained", func() {
		c := redisClient(redisSrv.Addr())
		key := "job2-" + ns
		Expect(c.RPush(suiteCtx, key, "apple", "banana", "cherry", "date", "fig", "grape", "lemon", "melon", "orange").Err()).To(Succeed())
		qj := redisQJ(ns, "job-wq-2", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.Mode = qjv1.ModeWorkerPool
			j.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](2)
			// The workers here exit when the test says so; the operator must not end them first.
			j.Spec.DrainGracePeriodSeconds = ptr.To[int32](3600)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())

		job := theJob(qj)
		Expect(job.Spec.Completions).To(BeNil(), "a worker pool's Job leaves completions unset")
		Expect(job.Spec.Parallelism).To(HaveValue(BeEquivalentTo(2)))
		env := envOf(job)
		Expect(env[redis.EnvAddress].Value).To(Equal(redisSrv.Addr()))
		Expect(env[redis.EnvKey].Value).To(Equal(key))
		Expect(env[queue.EnvName].Value).To(Equal("job-wq-2"))
		Expect(env[queue.EnvMode].Value).To(Equal("WorkerPool"))
		Expect(env).NotTo(HaveKey(queue.EnvItemsPerPod))
		Eventually(getQJ(ns, "job-wq-2"), timeout, interval).Should(HaveField("Status.Queue.Ready", BeEquivalentTo(9)))

		By("the workers draining the list with the rediswq protocol")
		runJob(job, 2)
		for rediswqWork(c, key) {
		}
		Eventually(getQJ(ns, "job-wq-2"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.Queue.Ready", BeEquivalentTo(0)),
			HaveField("Status.Queue.InFlight", BeEquivalentTo(0)),
			cond(qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonNotFinished)), "not complete while the workers still run")

		By("the workers exiting once the queue is empty")
		finishJob(job, true, time.Now(), 2, 0, "CompletionsReached")
		Eventually(getQJ(ns, "job-wq-2"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionComplete, metav1.ConditionTrue, qjv1.ReasonQueueDrained),
			cond(qjv1.ConditionProgressing, metav1.ConditionFalse, qjv1.ReasonFinished),
			HaveField("Status.Succeeded", BeEquivalentTo(2))))
		sameJobs(qj, job)
	})

	It("creates no Job for an empty queue and starts once items arrive", func() {
		c := redisClient(redisSrv.Addr())
		key := "empty-" + ns
		qj := redisQJ(ns, "empty", redisSrv.Addr(), key)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "empty"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed),
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonWaitingForItems),
			cond(qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonNotFinished)))
		Consistently(func(g Gomega) []batchv1.Job { return ownedJobs(g, qj) }, 3*time.Second, 300*time.Millisecond).Should(BeEmpty())
		Expect(c.RPush(suiteCtx, key, "a").Err()).To(Succeed())
		Expect(theJob(qj).Spec.Completions).To(HaveValue(BeEquivalentTo(1)))
	})

	It("hears at once of items pushed into an empty Redis list, not at its next probe an hour later", func() {
		c := redisClient(redisSrv.Addr())
		key := "woken-" + ns
		// An hour between probes: within the test, only the watch can start the wave.
		qj := redisQJ(ns, "woken", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](3600)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "woken"), timeout, interval).Should(
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonWaitingForItems))
		// Once the server tracks the key, the watch reports it (a write before then went
		// unheard), which brings a probe forward; the QueueJob then waits for a write
		// again. Only then does one push test the watch, not that report.
		got := &qjv1.QueueJob{}
		Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(qj), got)).To(Succeed())
		Eventually(func() bool {
			waiting, writes := reconciler.probes.wakeState(client.ObjectKeyFromObject(qj), got.UID)
			return waiting && writes >= 1
		}, timeout, interval).Should(BeTrue(), "the watch reported the key and the QueueJob waits for a write")
		// This QueueJob's own count of writes heard, not the global queuejob_queue_wakes_total
		// that any other Redis QueueJob's watch in the process raises too.
		writes := reconciler.probes.writesHeard(client.ObjectKeyFromObject(qj), got.UID)
		Expect(c.RPush(suiteCtx, key, "a").Err()).To(Succeed())
		Eventually(func(g Gomega) []batchv1.Job { return ownedJobs(g, qj) }, timeout, interval).Should(HaveLen(1))
		Expect(reconciler.probes.writesHeard(client.ObjectKeyFromObject(qj), got.UID)).To(BeNumerically(">", writes),
			"the QueueJob's watch heard the push")
	})

	It("puts off the probes of an idle queue while its watch is up, and still hears a push at once", func() {
		c := redisClient(redisSrv.Addr())
		key := "idle-" + ns
		qj := redisQJ(ns, "idle", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](5)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "idle"), timeout, interval).Should(
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonWaitingForItems))
		got := &qjv1.QueueJob{}
		Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(qj), got)).To(Succeed())
		// 5 s, then 10, 20, ...: idle probes in a row put the next one off further.
		var dueAt time.Time
		Eventually(func() time.Duration {
			wait := reconciler.probes.untilDue(client.ObjectKeyFromObject(qj), got.UID, time.Now())
			dueAt = time.Now().Add(wait)
			return wait
		}, time.Minute, interval).Should(BeNumerically(">", 12*time.Second), "the next probe put off past twice the interval")
		Expect(c.RPush(suiteCtx, key, "a").Err()).To(Succeed())
		Eventually(func(g Gomega) []batchv1.Job { return ownedJobs(g, qj) }, timeout, interval).Should(HaveLen(1))
		Expect(time.Now()).To(BeTemporally("<", dueAt), "the wave started before the put-off probe was due: the watch heard the push")
	})

	It("starts a second wave for items that arrive after a wave under refill Continuous", func() {
		c := redisClient(redisSrv.Addr())
		key := "cont-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c").Err()).To(Succeed())
		qj := redisQJ(ns, "cont", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.Refill = qjv1.RefillContinuous
			j.Spec.ItemsPerPod = ptr.To[int32](2)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		first := theJob(qj)
		Expect(first.Spec.Completions).To(HaveValue(BeEquivalentTo(2)), "3 items at 2 per pod make 2 pods")
		for rediswqWork(c, key) {
		}
		finishJob(first, true, time.Now(), 2, 0, "CompletionsReached")
		Eventually(getQJ(ns, "cont"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonWaitingForItems),
			cond(qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonNotFinished)))

		Expect(c.RPush(suiteCtx, key, "d").Err()).To(Succeed())
		Eventually(func(g Gomega) {
			jobs := ownedJobs(g, qj)
			g.Expect(jobs).To(HaveLen(2))
			g.Expect(jobs[1].Name).To(Equal("cont-2"))
			g.Expect(jobs[1].Spec.Completions).To(HaveValue(BeEquivalentTo(1)))
		}, timeout, interval).Should(Succeed())
		Eventually(getQJ(ns, "cont"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.Waves", BeEquivalentTo(2)), HaveField("Status.JobName", "cont-2")))
	})

	It("ends a worker pool whose workers never exit once the queue stays drained", func() {
		c := redisClient(redisSrv.Addr())
		key := "stuck-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b").Err()).To(Succeed())
		qj := redisQJ(ns, "stuck", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.Mode = qjv1.ModeWorkerPool
			j.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](4)
			j.Spec.DrainGracePeriodSeconds = ptr.To[int32](2)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Expect(job.Spec.Parallelism).To(HaveValue(BeEquivalentTo(2)), "no more workers than items")
		runJob(job, 2)
		for rediswqWork(c, key) {
		}
		By("suspending the Job, so that the Job controller stops the workers, and keeping it until they are counted")
		Eventually(func(g Gomega) {
			cur := &batchv1.Job{}
			g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
			g.Expect(cur.Spec.Suspend).To(HaveValue(BeTrue()))
			g.Expect(cur.Annotations).To(HaveKey(qjv1.AnnotationWaveEnded))
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventWaveEnded) }, timeout, interval).Should(HaveLen(1))
		Eventually(getQJ(ns, "stuck"), timeout, interval).Should(cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonWaveEnding))
		Consistently(func(g Gomega) *qjv1.QueueJob {
			g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), &batchv1.Job{})).To(Succeed())
			return getQJ(ns, "stuck")(g)
		}, 3*time.Second, 300*time.Millisecond).Should(cond(qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonNotFinished))

		By("the Job controller stopping both workers, which exit 0 on SIGTERM, and counting them")
		podsStopped(job, 2)
		Eventually(func() error { return k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), &batchv1.Job{}) }, timeout, interval).
			Should(Satisfy(apierrors.IsNotFound), "the ended Job is deleted once its pods are counted")
		Eventually(getQJ(ns, "stuck"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionComplete, metav1.ConditionTrue, qjv1.ReasonWorkersStopped),
			HaveField("Status.Succeeded", BeEquivalentTo(2))))
		Expect(eventsFor(Default, qj, qjv1.EventWaveEnded)).To(HaveLen(1))
		Consistently(func(g Gomega) []batchv1.Job { return ownedJobs(g, qj) }, 3*time.Second, 300*time.Millisecond).Should(BeEmpty())
	})

	It("returns the items of a crashed worker once their lease expired", func() {
		c := redisClient(redisSrv.Addr())
		key := "crash-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c").Err()).To(Succeed())
		reclaimedBefore := testutil.ToFloat64(leasesReclaimed.WithLabelValues("redis"))
		qj := redisQJ(ns, "crash", redisSrv.Addr(), key, func(j *qjv1.QueueJob) { j.Spec.Mode = qjv1.ModeWorkerPool })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		runJob(theJob(qj), 1)

		By("a worker leasing an item for one second and dying")
		rediswqLease(c, key, "worker-dead", time.Second)

		Eventually(func(g Gomega) []string {
			v, err := c.LRange(suiteCtx, key, 0, -1).Result()
			g.Expect(err).NotTo(HaveOccurred())
			return v
		}, timeout, interval).Should(ConsistOf("a", "b", "c"))
		Expect(c.LLen(suiteCtx, redis.ProcessingKey(key)).Val()).To(BeZero())
		Eventually(getQJ(ns, "crash"), timeout, interval).Should(HaveField("Status.Queue.Reclaimed", BeEquivalentTo(1)))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventLeasesReclaimed) }, timeout, interval).Should(HaveLen(1))
		Expect(testutil.ToFloat64(leasesReclaimed.WithLabelValues("redis")) - reclaimedBefore).To(BeEquivalentTo(1))

		By("closing the QueueJob's connection and dropping its metrics when it is deleted")
		qjKey := client.ObjectKeyFromObject(qj)
		Expect(reconciler.probes.has(qjKey)).To(BeTrue())
		Expect(k8s.Delete(suiteCtx, qj)).To(Succeed())
		Eventually(func() bool { return reconciler.probes.has(qjKey) }, timeout, interval).Should(BeFalse())
		Expect(queueReady.DeleteLabelValues(ns, "crash")).To(BeFalse(), "the series was already deleted")
	})

	It("returns the items of a pod that ended at once, long before their lease expires, and keeps a live pod's", func() {
		c := redisClient(redisSrv.Addr())
		key := "gone-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c", "d", "e", "f").Err()).To(Succeed())
		qj := redisQJ(ns, "gone", redisSrv.Addr(), key, func(j *qjv1.QueueJob) {
			j.Spec.Mode = qjv1.ModeWorkerPool
			// Probes an hour apart: only a pod's end can bring the reap forward.
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](3600)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		env := job.Spec.Template.Spec.Containers[0].Env
		Expect(env).To(ContainElement(HaveField("ValueFrom.FieldRef.FieldPath", "metadata.uid")), "the workers learn their pod's UID")
		runJob(job, 5)
		var pods []*corev1.Pod
		for _, name := range []string{"deleted", "failed", "live", "relabelled", "finalized"} { // f, e, d, c and b
			var finalizers []string
			if name == "finalized" {
				finalizers = []string{"queuejob.io/test-hold"} // as the Job controller's
			}
			p := jobPod(job, name, corev1.PodRunning, time.Time{}, finalizers...)
			rediswqLease(c, key, "worker-0a0b0c@"+string(p.UID), time.Hour)
			pods = append(pods, p)
		}
		deleted, failed, live, relabelled, finalized := pods[0], pods[1], pods[2], pods[3], pods[4]
		waiting := func(g Gomega) []string {
			v, err := c.LRange(suiteCtx, key, 0, -1).Result()
			g.Expect(err).NotTo(HaveOccurred())
			return v
		}

		By("taking a running pod out of the cache's sight, by removing its label: its watch says deleted, the API server does not")
		patch := client.MergeFrom(relabelled.DeepCopy())
		delete(relabelled.Labels, qjv1.LabelQueueJob)
		Expect(k8s.Patch(suiteCtx, relabelled, patch)).To(Succeed())

		By("deleting a running pod that a finalizer keeps until its kubelet reports it terminal")
		Expect(k8s.Delete(suiteCtx, finalized, client.GracePeriodSeconds(0))).To(Succeed())

		By("deleting a running pod at once (kubectl delete --force)")
		Expect(k8s.Delete(suiteCtx, deleted, client.GracePeriodSeconds(0))).To(Succeed())
		Eventually(waiting, timeout, interval).Should(ConsistOf("a", "f"), "f, the item the deleted pod held, is back")

		By("a pod failing (OOM-killed, evicted)")
		failed.Status.Phase = corev1.PodFailed
		Expect(k8s.Status().Update(suiteCtx, failed)).To(Succeed())
		Eventually(waiting, timeout, interval).Should(ConsistOf("a", "f", "e"))

		By("keeping the items and leases of the live pod, the relabelled one and the deleted one still running, two reaps later")
		Expect(c.LRange(suiteCtx, redis.ProcessingKey(key), 0, -1).Val()).To(ConsistOf("b", "c", "d"))
		Expect(c.Get(suiteCtx, redis.LeaseKey(key, "d")).Val()).To(HaveSuffix(string(live.UID)))
		Expect(c.Get(suiteCtx, redis.LeaseKey(key, "c")).Val()).To(HaveSuffix(string(relabelled.UID)))
		Expect(c.Get(suiteCtx, redis.LeaseKey(key, "b")).Val()).To(HaveSuffix(string(finalized.UID)))

		By("the kubelet reporting the deleted pod Failed once its containers stopped")
		Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(finalized), finalized)).To(Succeed())
		finalized.Status.Phase = corev1.PodFailed
		Expect(k8s.Status().Update(suiteCtx, finalized)).To(Succeed())
		Eventually(waiting, timeout, interval).Should(ConsistOf("a", "f", "e", "b"))
		finalized.Finalizers = nil
		Expect(k8s.Update(suiteCtx, finalized)).To(Succeed())
		Eventually(getQJ(ns, "gone"), timeout, interval).Should(HaveField("Status.Queue.Reclaimed", BeEquivalentTo(3)))
	})

	It("creates and deletes nothing while Redis is down, and recovers when it is back", func() {
		own, err := servers.StartRedis("")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(own.Close)
		c := redisClient(own.Addr())
		key := "outage"
		Expect(c.RPush(suiteCtx, key, "a", "b").Err()).To(Succeed())
		qj := redisQJ(ns, "outage", own.Addr(), key)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Eventually(getQJ(ns, "outage"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed))

		own.Stop()
		Eventually(getQJ(ns, "outage"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonConnectionFailed))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventQueueUnreachable) }, timeout, interval).ShouldNot(BeEmpty())
		By("finishing the wave while the queue cannot be seen: no verdict, no new wave")
		finishJob(job, true, time.Now(), 2, 0, "CompletionsReached")
		sameJobs(qj, job)
		Expect(getQJ(ns, "outage")(Default)).To(cond(qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonNotFinished))

		By("bringing Redis back, empty")
		Expect(own.Start(func() error { return c.Ping(suiteCtx).Err() })).To(Succeed())
		Eventually(getQJ(ns, "outage"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed),
			cond(qjv1.ConditionComplete, metav1.ConditionTrue, qjv1.ReasonQueueDrained)))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventQueueReachable) }, timeout, interval).ShouldNot(BeEmpty())
	})

	It("probes at most once per interval while the queue keeps changing", func() {
		own, err := servers.StartRedis("")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(own.Close)
		c := redisClient(own.Addr())
		// Each probe sends two TYPE commands; the test sends none.
		probes := func() int {
			info, err := c.Info(suiteCtx, "commandstats").Result()
			Expect(err).NotTo(HaveOccurred())
			for _, line := range strings.Split(info, "\n") {
				if rest, ok := strings.CutPrefix(line, "cmdstat_type:calls="); ok {
					var n int
					_, err := fmt.Sscanf(rest, "%d", &n)
					Expect(err).NotTo(HaveOccurred())
					return n / 2
				}
			}
			return 0
		}
		Expect(c.RPush(suiteCtx, "churn", "seed").Err()).To(Succeed())
		Expect(k8s.Create(suiteCtx, redisQJ(ns, "churn", own.Addr(), "churn", func(j *qjv1.QueueJob) {
			j.Spec.Refill = qjv1.RefillContinuous
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](4)
		}))).To(Succeed())
		Eventually(getQJ(ns, "churn"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed))

		before, start := probes(), time.Now()
		// A busy queue: its depth changes between any two probes.
		for i := 0; time.Since(start) < 8*time.Second; i++ {
			Expect(c.RPush(suiteCtx, "churn", fmt.Sprint(i)).Err()).To(Succeed())
		}
		elapsed := time.Since(start)
		// One probe per 2s interval, plus the one due at the start and one of slack.
		// One probe per 4s interval, plus the one that may fall due at the very start. Without
		// the bound, the reconcile that each status write triggers probed again, and found new
		// counts to write: a busy queue was probed back to back.
		Expect(probes() - before).To(BeNumerically("<=", int(elapsed/(4*time.Second))+1))
	})

	It("makes no duplicate wave after a manager restart mid-wave", func() {
		c := redisClient(redisSrv.Addr())
		key := "restart-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c").Err()).To(Succeed())
		qj := redisQJ(ns, "restart", redisSrv.Addr(), key)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		Eventually(getQJ(ns, "restart"), timeout, interval).Should(HaveField("Status.Waves", BeEquivalentTo(1)))

		stopMgr()
		wipeStatus(ns, "restart")
		stopMgr = startManager()
		Eventually(getQJ(ns, "restart"), timeout, interval).Should(HaveField("Status.Waves", BeEquivalentTo(1)))
		sameJobs(qj, job)
	})

	It("makes no duplicate Job with a client throttled to 1 query per second", func() {
		By("replacing the manager with one whose client waits for every request")
		stopMgr()
		slow := rest.CopyConfig(cfg)
		slow.QPS, slow.Burst = 1, 1
		stopMgr, _ = startManagerWith(slow)
		DeferCleanup(restartManager)

		c := redisClient(redisSrv.Addr())
		key := "slow-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c", "d").Err()).To(Succeed())
		Expect(k8s.Create(suiteCtx, redisQJ(ns, "slow", redisSrv.Addr(), key))).To(Succeed())
		Expect(k8s.Create(suiteCtx, queueJob(ns, "plain"))).To(Succeed())
		for _, name := range []string{"slow", "plain"} {
			qj := getQJ(ns, name)(Default)
			job := theJob(qj)
			Consistently(func(g Gomega) {
				jobs := ownedJobs(g, qj)
				g.Expect(jobs).To(HaveLen(1))
				g.Expect(jobs[0].UID).To(Equal(job.UID))
			}, 5*time.Second, 500*time.Millisecond).Should(Succeed(), name)
		}
	})

	It("fails over to a second manager without a duplicate Job when the leader dies", func() {
		stopMgr()
		DeferCleanup(func() { stopMgr = startManager() })
		withLeaderElection := func(o *ctrl.Options) {
			o.LeaderElection = true
			o.LeaderElectionID = "queuejob-failover-test"
			o.LeaderElectionNamespace = ns
			o.LeaseDuration = ptr.To(4 * time.Second)
			o.RenewDeadline = ptr.To(3 * time.Second)
			o.RetryPeriod = ptr.To(500 * time.Millisecond)
			// A crash: the lease is not released, the standby waits for it to expire.
			o.LeaderElectionReleaseOnCancel = false
		}
		stopA, electedA := startManagerWith(cfg, withLeaderElection)
		Eventually(electedA, timeout).Should(BeClosed())
		stopB, electedB := startManagerWith(cfg, withLeaderElection)
		DeferCleanup(stopB)
		Consistently(electedB, 2*time.Second).ShouldNot(BeClosed(), "only one manager leads")

		c := redisClient(redisSrv.Addr())
		key := "failover-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b", "c").Err()).To(Succeed())
		qj := redisQJ(ns, "failover", redisSrv.Addr(), key)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)

		By("killing the leader")
		stopA()
		Eventually(electedB, timeout).Should(BeClosed())
		for rediswqWork(c, key) {
		}
		finishJob(job, true, time.Now(), 3, 0, "CompletionsReached")
		Eventually(getQJ(ns, "failover"), timeout, interval).Should(cond(qjv1.ConditionComplete, metav1.ConditionTrue, qjv1.ReasonQueueDrained))
		sameJobs(qj, job)
	})

	It("reports credentials problems without revealing them, and starts once they are fixed", func() {
		authed, err := servers.StartRedis("s3cret-pass")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(authed.Close)
		key := "auth"
		ac := goredis.NewClient(&goredis.Options{Addr: authed.Addr(), Password: "s3cret-pass", DisableIdentity: true})
		DeferCleanup(ac.Close)
		Expect(ac.RPush(suiteCtx, key, "a").Err()).To(Succeed())
		ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "password"}
		qj := redisQJ(ns, "auth", authed.Addr(), key, func(j *qjv1.QueueJob) { j.Spec.Queue.Redis.PasswordSecretRef = ref })
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())

		Eventually(getQJ(ns, "auth"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonSecretNotFound))
		Expect(reachableMessage(ns, "auth")(Default)).To(ContainSubstring("fix spec.queue.redis.passwordSecretRef"))
		s := secret(ns, "redis", map[string]string{"password": "wrong-pass-123"})
		Eventually(getQJ(ns, "auth"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonAuthFailed))
		Consistently(func(g Gomega) []batchv1.Job { return ownedJobs(g, qj) }, 2*time.Second, 300*time.Millisecond).Should(BeEmpty())
		By("never showing the wrong password while it is in place: not in the status, the events or the log")
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventQueueUnreachable) }, timeout, interval).ShouldNot(BeEmpty())
		Eventually(func() []string { return logLinesOf(ns) }, timeout, interval).
			Should(ContainElement(ContainSubstring(queue.ReasonAuthFailed)), "the probe failure was logged")
		noPassword := func() {
			cur := getQJ(ns, "auth")(Default)
			var events eventsv1.EventList
			Expect(k8s.List(suiteCtx, &events, client.InNamespace(ns))).To(Succeed())
			for _, blob := range []any{cur.Status, events.Items} {
				b, err := json.Marshal(blob)
				Expect(err).NotTo(HaveOccurred())
				Expect(string(b)).NotTo(SatisfyAny(ContainSubstring("s3cret-pass"), ContainSubstring("wrong-pass-123")))
			}
			Expect(suiteLog.String()).NotTo(SatisfyAny(ContainSubstring("s3cret-pass"), ContainSubstring("wrong-pass-123")))
		}
		noPassword()

		By("rotating the Secret to the right password")
		s.StringData = map[string]string{"password": "s3cret-pass"}
		Expect(k8s.Update(suiteCtx, s)).To(Succeed())
		job := theJob(qj)
		Expect(envOf(job)[redis.EnvPassword].ValueFrom.SecretKeyRef).To(Equal(ref))

		By("never showing a password in the status, the events, the log or the Job")
		noPassword()
		b, err := json.Marshal(job.Spec)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).NotTo(SatisfyAny(ContainSubstring("s3cret-pass"), ContainSubstring("wrong-pass-123")))
	})

	It("reports a key of the wrong type and a missing RabbitMQ queue", func() {
		c := redisClient(redisSrv.Addr())
		key := "string-" + ns
		Expect(c.Set(suiteCtx, key, "not a list", 0).Err()).To(Succeed())
		Expect(k8s.Create(suiteCtx, redisQJ(ns, "wrongtype", redisSrv.Addr(), key))).To(Succeed())
		Eventually(getQJ(ns, "wrongtype"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonWrongType))
		Expect(condition(getQJ(ns, "wrongtype")(Default), qjv1.ConditionQueueReachable).Message).To(ContainSubstring("spec.queue.redis.key"))

		By("a RabbitMQ URL with a wrong password: the broker refuses the login")
		secret(ns, "rabbitmq-wrong", map[string]string{"url": strings.Replace(rabbitSrv.URL(), "guest:guest@", "guest:not-the-password@", 1)})
		Expect(k8s.Create(suiteCtx, queueJob(ns, "nologin", func(j *qjv1.QueueJob) {
			j.Spec.Queue = &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{Queue: "no-such-queue",
				URLSecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "rabbitmq-wrong"}, Key: "url"}}}
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
		}))).To(Succeed())
		Eventually(getQJ(ns, "nologin"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonAuthFailed))

		By("the right credentials and a queue that does not exist")
		secret(ns, "rabbitmq-url", map[string]string{"url": rabbitSrv.URL()})
		Expect(k8s.Create(suiteCtx, queueJob(ns, "noqueue", func(j *qjv1.QueueJob) {
			j.Spec.Queue = &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{Queue: "no-such-queue",
				URLSecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "rabbitmq-url"}, Key: "url"}}}
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
		}))).To(Succeed())
		Eventually(getQJ(ns, "noqueue"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonQueueNotFound))
		Expect(condition(getQJ(ns, "noqueue")(Default), qjv1.ConditionQueueReachable).Message).To(ContainSubstring("spec.queue.rabbitmq.queue"))
	})
})
