package controllers

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	amqp "github.com/rabbitmq/amqp091-go"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// rabbitPoolQJ is a RabbitMQ WorkerPool whose drain grace (2s) is long over when a test
// looks, with the broker's URL in a Secret.
func rabbitPoolQJ(ns, name, q string, mutate ...func(*qjv1.QueueJob)) *qjv1.QueueJob {
	secret(ns, name+"-url", map[string]string{"url": rabbitSrv.URL(), "management": rabbitSrv.ManagementURL()})
	return queueJob(ns, name, append([]func(*qjv1.QueueJob){func(j *qjv1.QueueJob) {
		j.Spec.Queue = &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{Queue: q,
			URLSecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-url"}, Key: "url"}}}
		j.Spec.Mode = qjv1.ModeWorkerPool
		j.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](2)
		j.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
		j.Spec.DrainGracePeriodSeconds = ptr.To[int32](2)
		j.Spec.JobTemplate.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	}}, mutate...)...)
}

// holdAll takes every message of a queue without acknowledging it, as workers busy with
// their items do.
func holdAll(ch *amqp.Channel, q string, n int) []amqp.Delivery {
	var held []amqp.Delivery
	for range n {
		d, ok, err := ch.Get(q, false)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeTrue())
		held = append(held, d)
	}
	return held
}

// notEnded asserts, for window (longer than the drain grace), that the wave's Job runs on.
func notEnded(qj *qjv1.QueueJob, job *batchv1.Job, window time.Duration) {
	Consistently(func(g Gomega) {
		cur := &batchv1.Job{}
		g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
		g.Expect(cur.Annotations).NotTo(HaveKey(qjv1.AnnotationWaveEnded))
		g.Expect(cur.Spec.Suspend).To(Or(BeNil(), HaveValue(BeFalse())))
		g.Expect(getQJ(qj.Namespace, qj.Name)(g)).To(cond(qjv1.ConditionComplete, metav1.ConditionFalse, qjv1.ReasonNotFinished))
	}, window, 300*time.Millisecond).Should(Succeed(), "the wave was ended while workers held unacknowledged messages")
}

var _ = Describe("RabbitMQ worker pools", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("never ends a wave on its own without the management API, while workers hold every message", func() {
		q := "held-" + ns
		ch := amqpChannel()
		amqpPublish(ch, q, "a", "b", "c")
		qj := rabbitPoolQJ(ns, "held", q)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		runJob(job, 2)
		holdAll(ch, q, 3)
		Eventually(getQJ(ns, "held"), timeout, interval).Should(HaveField("Status.Queue.Ready", BeEquivalentTo(0)))
		notEnded(qj, job, 6*time.Second)
	})

	It("counts unacknowledged messages with the management API, and ends the wave only once they are acknowledged", func() {
		q := "mgmt-" + ns
		ch := amqpChannel()
		amqpPublish(ch, q, "a", "b", "c")
		qj := rabbitPoolQJ(ns, "mgmt", q, func(j *qjv1.QueueJob) {
			j.Spec.Queue.RabbitMQ.ManagementURLSecretRef = &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "mgmt-url"}, Key: "management"}
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		runJob(job, 2)
		held := holdAll(ch, q, 3)
		Eventually(getQJ(ns, "mgmt"), timeout, interval).Should(SatisfyAll(
			HaveField("Status.Queue.Ready", BeEquivalentTo(0)), HaveField("Status.Queue.InFlight", BeEquivalentTo(3))))
		// Longer than the grace and than the 10s a RabbitMQ queue must look drained: only
		// the count of unacknowledged messages holds the wave past it.
		notEnded(qj, job, 14*time.Second)

		By("the workers acknowledging every message: the drained wave ends after the grace")
		for _, d := range held {
			Expect(d.Ack(false)).To(Succeed())
		}
		Eventually(func(g Gomega) {
			cur := &batchv1.Job{}
			g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
			g.Expect(cur.Annotations).To(HaveKey(qjv1.AnnotationWaveEnded))
		}, timeout, interval).Should(Succeed())
	})

	It("never shows any part of the password of a malformed RabbitMQ URL", func() {
		const password = "Kx9v2Qw8/Lm3+Zp=="
		url := "amqp://app:" + password + "@" + rabbitSrv.Addr() + "/"
		secret(ns, "bad-url", map[string]string{"url": url})
		qj := queueJob(ns, "badurl", func(j *qjv1.QueueJob) {
			j.Spec.Queue = &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{Queue: "q",
				URLSecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "bad-url"}, Key: "url"}}}
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "badurl"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonConnectionFailed))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventQueueUnreachable) }, timeout, interval).ShouldNot(BeEmpty())
		Eventually(func() string { return suiteLog.String() }, timeout, interval).Should(ContainSubstring(`"name": "badurl"`))

		cur := getQJ(ns, "badurl")(Default)
		var events eventsv1.EventList
		Expect(k8s.List(suiteCtx, &events, client.InNamespace(ns))).To(Succeed())
		status, err := json.Marshal(cur.Status)
		Expect(err).NotTo(HaveOccurred())
		evs, err := json.Marshal(events.Items)
		Expect(err).NotTo(HaveOccurred())
		logs := logLinesOf(ns)
		for i := 0; i+4 <= len(password); i++ {
			for j := i + 4; j <= len(password); j++ {
				part := password[i:j]
				for where, text := range map[string]string{"status": string(status), "events": string(evs), "log": strings.Join(logs, "\n")} {
					Expect(text).NotTo(ContainSubstring(part), fmt.Sprintf("%q of the password is in the %s", part, where))
				}
			}
		}
	})
})
