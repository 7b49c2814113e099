package controllers

import (
	"strconv"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// The manager's network position: whoever may create a QueueJob chooses where the manager
// connects. What the peer sends never reaches the status, the events or the log, and the
// manager's --allowed-queue-addresses keeps it from connecting where it should not.

// startImpostor starts a server that is not a queue, stopped after the spec.
func startImpostor(start func() (*servers.Impostor, error)) *servers.Impostor {
	GinkgoHelper()
	i, err := start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(i.Close)
	return i
}

// rabbitFromSecret is a QueueJob of the RabbitMQ queue q at the AMQP URL url, with a
// management URL mgmt unless empty, both from a Secret.
func rabbitFromSecret(ns, name, url, mgmt, q string) *qjv1.QueueJob {
	GinkgoHelper()
	data := map[string]string{"url": url}
	if mgmt != "" {
		data["management"] = mgmt
	}
	secret(ns, name+"-urls", data)
	return queueJob(ns, name, func(j *qjv1.QueueJob) {
		j.Spec.Queue = &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{Queue: q, URLSecretRef: keyRef(name+"-urls", "url")}}
		if mgmt != "" {
			j.Spec.Queue.RabbitMQ.ManagementURLSecretRef = keyRef(name+"-urls", "management")
		}
		j.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
	})
}

// unreachableBecause waits until a QueueJob's queue is unreachable for reason, and the
// QueueUnreachable event that says so has been emitted.
func unreachableBecause(qj *qjv1.QueueJob, reason string) {
	GinkgoHelper()
	Eventually(getQJ(qj.Namespace, qj.Name), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, reason))
	Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventQueueUnreachable) }, timeout, interval).ShouldNot(BeEmpty())
}

var _ = Describe("The manager's network position", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("says in fixed words why a server that is not the queue cannot be probed, and repeats nothing it sent", func() {
		ssh := startImpostor(servers.SSHServer)
		errReply := startImpostor(func() (*servers.Impostor, error) { return servers.RedisErrorServer("-ERR Banner secret\r\n") })
		closer := startImpostor(func() (*servers.Impostor, error) { return servers.AMQPCloser(541, "INTERNAL_ERROR Banner secret") })
		web := startImpostor(func() (*servers.Impostor, error) {
			return servers.HTTPServer("HTTP/1.1 599 Banner secret\r\nContent-Length: 6\r\n\r\nBanner")
		})
		amqpPublish(amqpChannel(), "trust-mgmt", "a")
		qjs := map[*qjv1.QueueJob]string{
			redisQJ(ns, "ssh", ssh.Addr(), "k"):                                                          queue.ReasonConnectionFailed,
			redisQJ(ns, "err-reply", errReply.Addr(), "k"):                                               queue.ReasonConnectionFailed,
			rabbitFromSecret(ns, "closer", "amqp://guest:guest@"+closer.Addr()+"/", "", "q"):             queue.ReasonConnectionFailed,
			rabbitFromSecret(ns, "web", rabbitSrv.URL(), "http://guest:guest@"+web.Addr(), "trust-mgmt"): queue.ReasonConnectionFailed,
		}
		for qj := range qjs {
			Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		}
		for qj, reason := range qjs {
			By("probing " + qj.Name)
			unreachableBecause(qj, reason)
			Expect(reachableMessage(ns, qj.Name)(Default)).To(ContainSubstring("127.0.0.1:"), "the message names the address")
		}
		for qj := range qjs {
			showsNone(ns, qj.Name, "Banner", "SSH-2.0", " 599")
		}
	})

	It("refuses, before connecting, queue addresses that --allowed-queue-addresses does not allow", func() {
		elsewhere := startImpostor(servers.SSHServer)
		policy, err := backends.ParseAddressPolicy("127.0.0.1:" + strconv.Itoa(redisSrv.Port()) + "," + rabbitSrv.Addr())
		Expect(err).NotTo(HaveOccurred())
		stopMgr()
		stopMgr, _ = startManagerWithReconciler(cfg, []func(*QueueJobReconciler){func(r *QueueJobReconciler) {
			r.AllowedAddresses = policy
		}})
		DeferCleanup(restartManager)

		allowed := redisQJ(ns, "allowed", redisSrv.Addr(), "trust-allowed")
		refused := redisQJ(ns, "refused", elsewhere.Addr(), "k")
		mgmtRefused := rabbitFromSecret(ns, "mgmt-refused", rabbitSrv.URL(), "http://guest:guest@"+elsewhere.Addr(), "q")
		for _, qj := range []*qjv1.QueueJob{allowed, refused, mgmtRefused} {
			Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		}
		Eventually(getQJ(ns, "allowed"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed))
		unreachableBecause(refused, queue.ReasonAddressNotAllowed)
		Expect(reachableMessage(ns, "refused")(Default)).To(SatisfyAll(
			ContainSubstring(elsewhere.Addr()+" (spec.queue.redis.address)"), ContainSubstring("--allowed-queue-addresses")))
		unreachableBecause(mgmtRefused, queue.ReasonAddressNotAllowed)
		Expect(reachableMessage(ns, "mgmt-refused")(Default)).To(SatisfyAll(
			ContainSubstring(elsewhere.Addr()+" (the URL in the Secret of spec.queue.rabbitmq.managementURLSecretRef)"),
			ContainSubstring("--allowed-queue-addresses")))
		Expect(elsewhere.Accepted()).To(BeZero(), "the manager connected to an address it does not allow")
		Expect(ownedJobs(Default, refused)).To(BeEmpty())
	})
})
