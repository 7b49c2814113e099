package controllers

import (
	"encoding/json"
	"io"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// natsQJ is a QueueJob on stream of srv, with the user and password from the Secret
// name (keys user and password).
func natsQJ(ns, name string, srv *servers.NATS, stream string) *qjv1.QueueJob {
	ref := func(key string) *corev1.SecretKeySelector {
		return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
	}
	return queueJob(ns, name, func(j *qjv1.QueueJob) {
		j.Spec.Queue = &qjv1.QueueSource{NATS: &qjv1.NATSQueue{URL: srv.URL(), Stream: stream, Consumer: "workers",
			UserSecretRef: ref("user"), PasswordSecretRef: ref("password")}}
		j.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
		j.Spec.JobTemplate.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	})
}

// natsEnqueue creates stream on srv (as qj enqueue --declare does) and enqueues items.
func natsEnqueue(o nats.Options, items ...string) {
	a := nats.NewAdmin(o, 10*time.Second)
	defer func() { _ = a.Close() }()
	Expect(a.Open(suiteCtx)).To(Succeed())
	Expect(a.Declare(suiteCtx)).To(Succeed())
	i := 0
	n, _, err := a.Enqueue(suiteCtx, func() (string, error) {
		if i == len(items) {
			return "", io.EOF
		}
		i++
		return items[i-1], nil
	}, func(int64) {}, queue.EnqueueOptions{})
	Expect(err).NotTo(HaveOccurred())
	Expect(n).To(BeEquivalentTo(len(items)))
}

var _ = Describe("NATS JetStream queues", func() {
	var ns string
	var srv *servers.NATS
	BeforeEach(func() {
		ns = newNamespace()
		var err error
		srv, err = servers.StartNATSWith(servers.NATSOptions{User: "queuejob", Password: "n4ts-" + servers.RandomString(12)})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(srv.Close)
	})

	It("probes the consumer's pending and unacknowledged messages into the status", func() {
		stream := "jobs"
		o := nats.Options{Servers: []string{srv.URL()}, Stream: stream, Consumer: "workers", User: srv.User(), Password: srv.Password()}
		natsEnqueue(o, "a", "b", "c")
		secret(ns, "counts", map[string]string{"user": srv.User(), "password": srv.Password()})
		qj := natsQJ(ns, "counts", srv, stream)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "counts"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed),
			HaveField("Status.Queue.Ready", BeEquivalentTo(3)), HaveField("Status.Queue.InFlight", BeEquivalentTo(0))))

		By("a worker taking one: 2 ready, 1 in flight")
		c, err := nats.NewConsumer(suiteCtx, o, queue.ConsumerOptions{LeaseTTL: time.Minute})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(c.Close)
		l, err := c.Take(suiteCtx, 5*time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(l).NotTo(BeNil())
		Eventually(getQJ(ns, "counts"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.Queue.Ready", BeEquivalentTo(2)), HaveField("Status.Queue.InFlight", BeEquivalentTo(1))))
	})

	It("hears at once of items published to an empty stream, not at its next probe an hour later", func() {
		stream := "woken"
		o := nats.Options{Servers: []string{srv.URL()}, Stream: stream, Consumer: "workers", User: srv.User(), Password: srv.Password()}
		natsEnqueue(o)
		secret(ns, "woken", map[string]string{"user": srv.User(), "password": srv.Password()})
		qj := natsQJ(ns, "woken", srv, stream)
		qj.Spec.ProbeIntervalSeconds = ptr.To[int32](3600)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "woken"), timeout, interval).Should(
			cond(qjv1.ConditionProgressing, metav1.ConditionTrue, qjv1.ReasonWaitingForItems))
		// The watch reports its start (a publish before then went unheard) and the QueueJob
		// then waits for a write: only then does one publish test the watch.
		got := &qjv1.QueueJob{}
		Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(qj), got)).To(Succeed())
		Eventually(func() bool {
			waiting, writes := reconciler.probes.wakeState(client.ObjectKeyFromObject(qj), got.UID)
			return waiting && writes >= 1
		}, timeout, interval).Should(BeTrue(), "the watch reported the stream and the QueueJob waits for a write")
		// This QueueJob's own count of writes heard, not the global queuejob_queue_wakes_total
		// that any other NATS QueueJob's watch in the process raises too.
		writes := reconciler.probes.writesHeard(client.ObjectKeyFromObject(qj), got.UID)
		Expect(srv.Publisher(GinkgoTB()).Publish(stream, []byte("a"))).To(Succeed())
		Eventually(func(g Gomega) []batchv1.Job { return ownedJobs(g, qj) }, timeout, interval).Should(HaveLen(1))
		Expect(reconciler.probes.writesHeard(client.ObjectKeyFromObject(qj), got.UID)).To(BeNumerically(">", writes),
			"the QueueJob's watch heard the publish")
	})

	It("reports a wrong password as AuthFailed without revealing it", func() {
		stream := "auth"
		o := nats.Options{Servers: []string{srv.URL()}, Stream: stream, Consumer: "workers", User: srv.User(), Password: srv.Password()}
		natsEnqueue(o, "a")
		wrong := "wrong-n4ts-" + servers.RandomString(8)
		secret(ns, "auth", map[string]string{"user": srv.User(), "password": wrong})
		qj := natsQJ(ns, "auth", srv, stream)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "auth"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonAuthFailed))
		Expect(reachableMessage(ns, "auth")(Default)).To(ContainSubstring("passwordSecretRef"))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventQueueUnreachable) }, timeout, interval).ShouldNot(BeEmpty())
		Eventually(func() []string { return logLinesOf(ns) }, timeout, interval).
			Should(ContainElement(ContainSubstring(queue.ReasonAuthFailed)), "the probe failure was logged")
		cur := getQJ(ns, "auth")(Default)
		var events eventsv1.EventList
		Expect(k8s.List(suiteCtx, &events, client.InNamespace(ns))).To(Succeed())
		for _, blob := range []any{cur.Status, events.Items} {
			b, err := json.Marshal(blob)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(b)).NotTo(SatisfyAny(ContainSubstring(wrong), ContainSubstring(srv.Password())))
		}
		Expect(suiteLog.String()).NotTo(SatisfyAny(ContainSubstring(wrong), ContainSubstring(srv.Password())))
	})
})
