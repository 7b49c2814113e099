package controllers

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	goredis "github.com/redis/go-redis/v9"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// Queues over TLS, with ACL users, and how often the manager reads a queue's Secrets.

func keyRef(name, key string) *corev1.SecretKeySelector {
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}

// redisAt points a QueueJob at a Redis list, probed every second.
func redisAt(addr, key string) func(*qjv1.QueueJob) {
	return func(q *qjv1.QueueJob) {
		withRedis(q)
		q.Spec.Queue.Redis.Address, q.Spec.Queue.Redis.Key = addr, key
		q.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
	}
}

func newCA() *servers.CA {
	ca, err := servers.NewCA("test CA")
	Expect(err).NotTo(HaveOccurred())
	return ca
}

// trusting is a client TLS configuration that trusts ca.
func trusting(ca *servers.CA) *tls.Config {
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(ca.PEM())).To(BeTrue())
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// redisProbes counts the probes a Redis server has answered: each sends two TYPE
// commands, and the tests send none.
func redisProbes(c *goredis.Client) int {
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

// showsNone asserts that none of the values appear in the QueueJob's status, the events of
// its namespace or the managers' log.
func showsNone(ns, name string, values ...string) {
	GinkgoHelper()
	cur := getQJ(ns, name)(Default)
	var evs eventsv1.EventList
	Expect(k8s.List(suiteCtx, &evs, client.InNamespace(ns))).To(Succeed())
	for what, blob := range map[string]any{"status": cur.Status, "events": evs.Items} {
		b, err := json.Marshal(blob)
		Expect(err).NotTo(HaveOccurred())
		for _, v := range values {
			Expect(string(b)).NotTo(ContainSubstring(v), "the %s show a secret", what)
		}
	}
	log := suiteLog.String()
	for _, v := range values {
		Expect(log).NotTo(ContainSubstring(v), "the log shows a secret")
	}
}

func reachableMessage(ns, name string) func(g Gomega) string {
	return func(g Gomega) string {
		c := condition(getQJ(ns, name)(g), qjv1.ConditionQueueReachable)
		g.Expect(c).NotTo(BeNil())
		return c.Message
	}
}

var _ = Describe("Queues over TLS", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("probes Redis over TLS as an ACL user with the CA from a Secret, and gives workers the settings but no secret", func() {
		const aclPassword = "Acl-user-Pa55word"
		ca := newCA()
		own, err := servers.StartRedisWith(servers.RedisOptions{TLS: ca, Password: "default-Pa55word",
			Users: []string{"worker on >" + aclPassword + " ~* +@all"}})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(own.Close)
		c := goredis.NewClient(&goredis.Options{Addr: own.Addr(), Username: "worker", Password: aclPassword, TLSConfig: trusting(ca), DisableIdentity: true})
		DeferCleanup(c.Close)
		Expect(c.RPush(suiteCtx, "tls", "a", "b").Err()).To(Succeed())
		secret(ns, "queue-ca", map[string]string{"ca.crt": string(ca.PEM())})
		secret(ns, "redis", map[string]string{"password": aclPassword})
		caRef, pwRef := keyRef("queue-ca", "ca.crt"), keyRef("redis", "password")
		qj := queueJob(ns, "tls", redisAt(own.Addr(), "tls"), func(q *qjv1.QueueJob) {
			r := q.Spec.Queue.Redis
			r.Username, r.PasswordSecretRef = "worker", pwRef
			r.TLS = &qjv1.TLSConfig{CASecretRef: caRef, ServerName: "localhost"}
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())

		Eventually(getQJ(ns, "tls"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed),
			HaveField("Status.Queue.Ready", BeEquivalentTo(2))))
		job := theJob(qj)
		env := envOf(job)
		Expect(env[redis.EnvUsername].Value).To(Equal("worker"))
		Expect(env[redis.EnvPassword].ValueFrom.SecretKeyRef).To(Equal(pwRef))
		Expect(env[redis.EnvTLS].Value).To(Equal("true"))
		Expect(env[redis.EnvTLSCA].ValueFrom.SecretKeyRef).To(Equal(caRef))
		Expect(env[redis.EnvTLSServerName].Value).To(Equal("localhost"))
		spec, err := json.Marshal(job.Spec)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(spec)).NotTo(SatisfyAny(ContainSubstring(aclPassword), ContainSubstring("BEGIN CERTIFICATE")),
			"the pod spec holds the password or the CA itself, not a secretKeyRef")
		showsNone(ns, "tls", aclPassword)
	})

	It("reports a missing CA Secret, a missing key and a CA that did not sign the certificate, without a secret, and recovers", func() {
		ca := newCA()
		own, err := servers.StartRedisWith(servers.RedisOptions{TLS: ca, Password: "Def4ult-Pa55word"})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(own.Close)
		secret(ns, "redis", map[string]string{"password": "Def4ult-Pa55word"})
		qj := queueJob(ns, "ca", redisAt(own.Addr(), "ca"), func(q *qjv1.QueueJob) {
			q.Spec.Queue.Redis.PasswordSecretRef = keyRef("redis", "password")
			q.Spec.Queue.Redis.TLS = &qjv1.TLSConfig{CASecretRef: keyRef("queue-ca", "ca.crt")}
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())

		By("the CA Secret missing")
		Eventually(getQJ(ns, "ca"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonSecretNotFound))
		Expect(reachableMessage(ns, "ca")(Default)).To(SatisfyAll(ContainSubstring("Secret "+ns+"/queue-ca does not exist"), ContainSubstring("create it"),
			ContainSubstring("fix spec.queue.redis.tls.caSecretRef")))
		Eventually(func(g Gomega) []eventsv1.Event { return eventsFor(g, qj, qjv1.EventQueueUnreachable) }, timeout, interval).ShouldNot(BeEmpty())

		By("the CA Secret without the key")
		s := secret(ns, "queue-ca", map[string]string{"ca.pem": string(ca.PEM())})
		Eventually(reachableMessage(ns, "ca"), timeout, interval).Should(SatisfyAll(ContainSubstring(`has no key "ca.crt"`),
			ContainSubstring("fix the key in spec.queue.redis.tls.caSecretRef")))

		By("a CA that did not sign the server's certificate")
		s.StringData = map[string]string{"ca.crt": string(newCA().PEM())}
		Expect(k8s.Update(suiteCtx, s)).To(Succeed())
		Eventually(getQJ(ns, "ca"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonTLSFailed))
		Expect(reachableMessage(ns, "ca")(Default)).To(SatisfyAll(ContainSubstring("not signed by a trusted CA"), ContainSubstring("spec.queue.redis.tls.caSecretRef")))
		Eventually(func() []string { return logLinesOf(ns) }, timeout, interval).
			Should(ContainElement(ContainSubstring(queue.ReasonTLSFailed)), "the probe failure was logged")
		Expect(ownedJobs(Default, qj)).To(BeEmpty())
		showsNone(ns, "ca", "Def4ult-Pa55word")

		By("the right CA")
		s = &corev1.Secret{}
		Expect(k8s.Get(suiteCtx, client.ObjectKey{Namespace: ns, Name: "queue-ca"}, s)).To(Succeed())
		s.StringData = map[string]string{"ca.crt": string(ca.PEM())}
		Expect(k8s.Update(suiteCtx, s)).To(Succeed())
		Eventually(getQJ(ns, "ca"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed))
		showsNone(ns, "ca", "Def4ult-Pa55word")
	})

	It("probes RabbitMQ over amqps and its management API over https with the CA, and refuses TLS settings for an amqp:// URL", func() {
		q := "tls-" + ns
		amqpPublish(amqpChannel(), q, "a", "b", "c")
		secret(ns, "rabbit", map[string]string{"url": rabbitSrv.TLSURL(), "mgmt": rabbitSrv.ManagementTLSURL(), "plain": rabbitSrv.URL()})
		secret(ns, "queue-ca", map[string]string{"ca.crt": string(suiteCA.PEM())})
		caRef := keyRef("queue-ca", "ca.crt")
		qj := queueJob(ns, "amqps", func(j *qjv1.QueueJob) {
			j.Spec.Queue = &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{Queue: q, URLSecretRef: keyRef("rabbit", "url"),
				ManagementURLSecretRef: keyRef("rabbit", "mgmt"), TLS: &qjv1.TLSConfig{CASecretRef: caRef}}}
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
		})
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		Eventually(getQJ(ns, "amqps"), timeout, interval).Should(SatisfyAll(
			cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed),
			HaveField("Status.Queue.Ready", BeEquivalentTo(3))))
		env := envOf(theJob(qj))
		Expect(env[rabbitmq.EnvTLSCA].ValueFrom.SecretKeyRef).To(Equal(caRef))
		Expect(env[rabbitmq.EnvBrokerURL].ValueFrom.SecretKeyRef).To(Equal(keyRef("rabbit", "url")))

		By("TLS settings with an amqp:// URL from a Secret, which admission cannot see")
		plain := queueJob(ns, "plain", func(j *qjv1.QueueJob) {
			j.Spec.Queue = &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{Queue: q, URLSecretRef: keyRef("rabbit", "plain"),
				TLS: &qjv1.TLSConfig{CASecretRef: caRef}}}
			j.Spec.ProbeIntervalSeconds = ptr.To[int32](1)
		})
		Expect(k8s.Create(suiteCtx, plain)).To(Succeed())
		Eventually(getQJ(ns, "plain"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionFalse, queue.ReasonTLSFailed))
		Expect(reachableMessage(ns, "plain")(Default)).To(SatisfyAll(
			ContainSubstring("spec.queue.rabbitmq.tls"), ContainSubstring("amqps://"), ContainSubstring("urlSecretRef")))
		Consistently(func(g Gomega) []batchv1.Job { return ownedJobs(g, plain) }, 2*time.Second, 300*time.Millisecond).Should(BeEmpty())
		showsNone(ns, "plain", "guest:guest")
	})
})

var _ = Describe("QueueJob admission of TLS settings", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	withRabbitMQTLS := func(url string) func(*qjv1.QueueJob) {
		return func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = url
			q.Spec.Queue.RabbitMQ.TLS = &qjv1.TLSConfig{CASecretRef: keyRef("rabbit-ca", "ca.crt")}
		}
	}

	DescribeTable("rejects invalid settings with a message that names the field",
		func(field, hint string, mutate func(*qjv1.QueueJob)) {
			err := k8s.Create(suiteCtx, queueJob(ns, "bad", mutate))
			Expect(err).To(HaveOccurred(), "the API server accepted an invalid QueueJob")
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
			Expect(err.Error()).To(ContainSubstring(field))
			Expect(strings.ToLower(err.Error())).To(ContainSubstring(strings.ToLower(hint)))
		},
		Entry("a Redis user name with a space", "spec.queue.redis.username", "whitespace", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.Redis.Username = "alice bob"
		}),
		Entry("a Redis user name with CRLF", "spec.queue.redis.username", "control characters", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.Redis.Username = "alice\r\nFLUSHALL"
		}),
		Entry("a Redis CA Secret without a key", "spec.queue.redis.tls.caSecretRef", "name the Secret and its key", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.Redis.TLS = &qjv1.TLSConfig{CASecretRef: keyRef("redis-ca", "")}
		}),
		Entry("a Redis server name with a port", "spec.queue.redis.tls.serverName", "without a port", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.Redis.TLS = &qjv1.TLSConfig{ServerName: "redis.example.com:6380"}
		}),
		Entry("RabbitMQ TLS settings with an amqp:// url", "spec.queue.rabbitmq.tls", "amqps://", withRabbitMQTLS("amqp://guest@rabbitmq:5672")),
		Entry("a RabbitMQ CA Secret without a name", "spec.queue.rabbitmq.tls.caSecretRef", "name the Secret", func(q *qjv1.QueueJob) {
			withRabbitMQTLS("amqps://guest@rabbitmq:5671")(q)
			q.Spec.Queue.RabbitMQ.TLS.CASecretRef.Name = ""
		}),
		Entry("a RabbitMQ server name with a scheme", "spec.queue.rabbitmq.tls.serverName", "without a port or scheme", func(q *qjv1.QueueJob) {
			withRabbitMQTLS("amqps://guest@rabbitmq:5671")(q)
			q.Spec.Queue.RabbitMQ.TLS.ServerName = "amqps://rabbitmq"
		}),
	)

	DescribeTable("accepts valid settings",
		func(mutate func(*qjv1.QueueJob)) {
			Expect(k8s.Create(suiteCtx, queueJob(ns, "good", mutate))).To(Succeed())
		},
		Entry("Redis over TLS with the system's roots, as an ACL user", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.Redis.Username = "worker-1"
			q.Spec.Queue.Redis.PasswordSecretRef = keyRef("redis", "password")
			q.Spec.Queue.Redis.TLS = &qjv1.TLSConfig{}
		}),
		Entry("Redis over TLS with a CA and an IP server name", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.Redis.TLS = &qjv1.TLSConfig{CASecretRef: keyRef("redis-ca", "ca.crt"), ServerName: "10.0.0.7"}
		}),
		Entry("RabbitMQ amqps with TLS settings", withRabbitMQTLS("amqps://guest@rabbitmq:5671/")),
		Entry("RabbitMQ URL from a Secret with TLS settings (checked at probe time)", func(q *qjv1.QueueJob) {
			withRabbitMQTLS("")(q)
			q.Spec.Queue.RabbitMQ.URLSecretRef = keyRef("rabbit", "url")
			q.Spec.Queue.RabbitMQ.TLS.ServerName = "rabbitmq.example.com"
		}),
	)
})
