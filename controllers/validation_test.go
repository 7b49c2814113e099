package controllers

import (
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// These specs submit QueueJobs to the real API server and check what admission (the
// CRD's schema and CEL rules) says about them.
var _ = Describe("QueueJob admission", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	secretRef := func(name, key string) *corev1.SecretKeySelector {
		return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
	}

	DescribeTable("rejects an invalid QueueJob with a message that names the field",
		func(field, hint string, mutate func(*qjv1.QueueJob)) {
			qj := queueJob(ns, "bad", mutate)
			err := k8s.Create(suiteCtx, qj)
			Expect(err).To(HaveOccurred(), "the API server accepted an invalid QueueJob")
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
			Expect(err.Error()).To(ContainSubstring(field))
			Expect(strings.ToLower(err.Error())).To(ContainSubstring(strings.ToLower(hint)))
			Expect(err.Error()).NotTo(ContainSubstring("Pa55word"), "the error must not repeat a password")
		},
		Entry("unknown mode", "spec.mode", "supported values", func(q *qjv1.QueueJob) { withRedis(q); q.Spec.Mode = "Bogus" }),
		Entry("unknown refill", "spec.refill", "supported values", func(q *qjv1.QueueJob) { withRedis(q); q.Spec.Refill = "Sometimes" }),
		Entry("both backends", "spec.queue", "exactly one of redis, rabbitmq, nats or redisStream", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.RabbitMQ = &qjv1.RabbitMQQueue{URL: "amqp://rabbit:5672", Queue: "q"}
		}),
		Entry("neither backend", "spec.queue", "exactly one of redis, rabbitmq, nats or redisStream", func(q *qjv1.QueueJob) { q.Spec.Queue = &qjv1.QueueSource{} }),
		Entry("mode without a queue", "spec.mode", "remove spec.mode", func(q *qjv1.QueueJob) { q.Spec.Mode = qjv1.ModeWorkerPool }),
		Entry("consecutiveFailedWavesLimit under refill Once", "spec.consecutiveFailedWavesLimit", "set spec.refill to Continuous", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.ConsecutiveFailedWavesLimit = ptr.To[int32](2)
		}),
		Entry("consecutiveFailedWavesLimit 0", "spec.consecutiveFailedWavesLimit", "greater than or equal to 1", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Refill = qjv1.RefillContinuous
			q.Spec.ConsecutiveFailedWavesLimit = ptr.To[int32](0)
		}),
		Entry("itemsPerPod in WorkerPool mode", "spec.itemsPerPod", "remove spec.itemsPerPod", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Mode = qjv1.ModeWorkerPool
			q.Spec.ItemsPerPod = ptr.To[int32](2)
		}),
		Entry("itemsPerPod without a queue", "spec.itemsPerPod", "mode PerItem", func(q *qjv1.QueueJob) { q.Spec.ItemsPerPod = ptr.To[int32](2) }),
		Entry("itemsPerPod 0", "spec.itemsPerPod", "greater than or equal to 1", func(q *qjv1.QueueJob) { withRedis(q); q.Spec.ItemsPerPod = ptr.To[int32](0) }),
		Entry("completions with a queue", "spec.jobTemplate.spec.completions", "set by the operator", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](8)
		}),
		Entry("completions -1", "spec.jobTemplate.spec.completions", "1 or more", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](-1) }),
		Entry("completions 0 without a queue", "spec.jobTemplate.spec.completions", "1 or more", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](0) }),
		Entry("no container", "spec.jobTemplate.spec.template.spec.containers", "add the container", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Template.Spec.Containers = []corev1.Container{}
		}),
		Entry("no container, with a queue", "spec.jobTemplate.spec.template.spec.containers", "add the container", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.JobTemplate.Spec.Template.Spec.Containers = []corev1.Container{}
		}),
		Entry("refill without a queue", "spec.refill", "remove spec.refill", func(q *qjv1.QueueJob) { q.Spec.Refill = qjv1.RefillContinuous }),
		Entry("probe interval without a queue", "spec.probeIntervalSeconds", "remove spec.probeIntervalSeconds", func(q *qjv1.QueueJob) {
			q.Spec.ProbeIntervalSeconds = ptr.To[int32](5)
		}),
		Entry("probe interval 0", "spec.probeIntervalSeconds", "greater than or equal to 1", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.ProbeIntervalSeconds = ptr.To[int32](0)
		}),
		Entry("probe interval over an hour", "spec.probeIntervalSeconds", "less than or equal to 3600", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.ProbeIntervalSeconds = ptr.To[int32](3601)
		}),
		Entry("restartPolicy Always", "spec.jobTemplate.spec.template.spec.restartPolicy", "restartPolicy must be Never or OnFailure", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
		}),
		Entry("restartPolicy unset", "spec.jobTemplate.spec.template.spec.restartPolicy", "restartPolicy must be Never or OnFailure", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Template.Spec.RestartPolicy = ""
		}),
		Entry("negative Job TTL", "spec.cleanup.ttlSecondsAfterFinished", "greater than or equal to 0", func(q *qjv1.QueueJob) {
			q.Spec.Cleanup = &qjv1.CleanupPolicy{TTLSecondsAfterFinished: ptr.To[int32](-1)}
		}),
		Entry("negative pod TTL", "spec.cleanup.podTTLSecondsAfterFinished", "greater than or equal to 0", func(q *qjv1.QueueJob) {
			q.Spec.Cleanup = &qjv1.CleanupPolicy{PodTTLSecondsAfterFinished: ptr.To[int32](-1)}
		}),
		Entry("parallelism 0", "spec.jobTemplate.spec.parallelism", "set spec.suspend", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](0) }),
		Entry("parallelism -1", "spec.jobTemplate.spec.parallelism", "between 1 and 100000", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](-1) }),
		Entry("negative backoffLimit", "spec.jobTemplate.spec.backoffLimit", "0 or more", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.BackoffLimit = ptr.To[int32](-1) }),
		Entry("activeDeadlineSeconds 0", "spec.jobTemplate.spec.activeDeadlineSeconds", "1 or more", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.ActiveDeadlineSeconds = ptr.To[int64](0)
		}),
		Entry("empty Redis key", "spec.queue.redis.key", "must not be empty", func(q *qjv1.QueueJob) { withRedis(q); q.Spec.Queue.Redis.Key = "" }),
		Entry("Redis key with CRLF", "spec.queue.redis.key", "control characters", func(q *qjv1.QueueJob) { withRedis(q); q.Spec.Queue.Redis.Key = "job2\r\nFLUSHALL" }),
		Entry("Redis key with a glob", "spec.queue.redis.key", "glob characters", func(q *qjv1.QueueJob) { withRedis(q); q.Spec.Queue.Redis.Key = "job*" }),
		Entry("Redis address without a port", "spec.queue.redis.address", "host:port", func(q *qjv1.QueueJob) { withRedis(q); q.Spec.Queue.Redis.Address = "redis" }),
		Entry("Redis address as a URL", "spec.queue.redis.address", "host:port", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.Redis.Address = "redis://redis:6379"
		}),
		Entry("negative Redis db", "spec.queue.redis.db", "greater than or equal to 0", func(q *qjv1.QueueJob) { withRedis(q); q.Spec.Queue.Redis.DB = ptr.To[int32](-1) }),
		Entry("Redis password Secret without a name", "spec.queue.redis.passwordSecretRef", "name the Secret", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.Redis.PasswordSecretRef = secretRef("", "password")
		}),
		Entry("Redis list and stream", "spec.queue", "set exactly one of redis, rabbitmq", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.RedisStream = &qjv1.RedisStreamQueue{Address: "redis:6379", Stream: "s", Group: "g"}
		}),
		Entry("empty Redis stream", "spec.queue.redisStream.stream", "must not be empty", func(q *qjv1.QueueJob) { withRedisStream(q); q.Spec.Queue.RedisStream.Stream = "" }),
		Entry("Redis stream with CRLF", "spec.queue.redisStream.stream", "control characters", func(q *qjv1.QueueJob) {
			withRedisStream(q)
			q.Spec.Queue.RedisStream.Stream = "jobs\r\nFLUSHALL"
		}),
		Entry("Redis stream with a glob", "spec.queue.redisStream.stream", "glob characters", func(q *qjv1.QueueJob) { withRedisStream(q); q.Spec.Queue.RedisStream.Stream = "jobs*" }),
		Entry("empty Redis stream group", "spec.queue.redisStream.group", "must not be empty", func(q *qjv1.QueueJob) { withRedisStream(q); q.Spec.Queue.RedisStream.Group = "" }),
		Entry("Redis stream group with a space", "spec.queue.redisStream.group", "whitespace", func(q *qjv1.QueueJob) { withRedisStream(q); q.Spec.Queue.RedisStream.Group = "my workers" }),
		Entry("Redis stream address as a URL", "spec.queue.redisStream.address", "host:port", func(q *qjv1.QueueJob) {
			withRedisStream(q)
			q.Spec.Queue.RedisStream.Address = "redis://redis:6379"
		}),
		Entry("Redis stream leaseSeconds 0", "spec.queue.redisStream.leaseSeconds", "greater than or equal to 1", func(q *qjv1.QueueJob) {
			withRedisStream(q)
			q.Spec.Queue.RedisStream.LeaseSeconds = ptr.To[int32](0)
		}),
		Entry("Redis stream password Secret without a key", "spec.queue.redisStream.passwordSecretRef", "name the Secret", func(q *qjv1.QueueJob) {
			withRedisStream(q)
			q.Spec.Queue.RedisStream.PasswordSecretRef = secretRef("redis", "")
		}),
		Entry("Redis stream TLS server name with a port", "spec.queue.redisStream.tls.serverName", "without a port", func(q *qjv1.QueueJob) {
			withRedisStream(q)
			q.Spec.Queue.RedisStream.TLS = &qjv1.TLSConfig{ServerName: "redis:6379"}
		}),
		Entry("empty RabbitMQ queue", "spec.queue.rabbitmq.queue", "must not be empty", func(q *qjv1.QueueJob) { withRabbitMQ(q); q.Spec.Queue.RabbitMQ.Queue = "" }),
		// The rule sits on the rabbitmq object with fieldPath .url, so that the API server's
		// error names the field without quoting the URL, password and all.
		Entry("password inside the RabbitMQ URL", "spec.queue.rabbitmq.url", "urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "amqp://guest:Pa55word@rabbitmq-service:5672"
		}),
		// A password may hold any character, unescaped: the userinfo ends at the last @
		// before the host, whatever / ? # come before it.
		Entry("password with a / inside the RabbitMQ URL", "spec.queue.rabbitmq.url", "urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "amqp://guest:Pa55word/YmFy@rabbitmq-service:5672/"
		}),
		Entry("password with a ? inside the RabbitMQ URL", "spec.queue.rabbitmq.url", "urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "amqp://guest:Pa55word?x@rabbitmq-service:5672/"
		}),
		Entry("password with a # inside the RabbitMQ URL", "spec.queue.rabbitmq.url", "urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "amqp://guest:#Pa55word@rabbitmq-service/"
		}),
		Entry("password with an @ inside the RabbitMQ URL", "spec.queue.rabbitmq.url", "urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "amqps://guest:Pa55word@x@rabbitmq-service:5671/"
		}),
		Entry("password of digits and a / inside the RabbitMQ URL", "spec.queue.rabbitmq.url", "urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "amqp://:123456/Pa55word@rabbitmq-service/"
		}),
		// A user name may hold an @ (net/url and amqp091 split the userinfo at the last
		// one): any @ after a colon reads as the end of a password.
		Entry("password after a user with an @ inside the RabbitMQ URL", "spec.queue.rabbitmq.url", "urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "amqp://user@corp:s3cret@rabbitmq-service:5672/vh"
		}),
		Entry("password of few digits and a / inside the RabbitMQ URL", "spec.queue.rabbitmq.url", "urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "amqp://u:12345/x@rabbitmq-service/"
		}),
		// An @ after the host is refused too, as the probe and the workers refuse it: a
		// URL that splits early would put part of a password in the host.
		Entry("an @ after the RabbitMQ URL's port", "spec.queue.rabbitmq.url", "urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "amqp://rabbitmq-service:5672/vhost?x=a:b@c"
		}),
		Entry("an @ after the RabbitMQ management URL's port", "spec.queue.rabbitmq.managementURL", "managementURLSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.ManagementURL = "http://rabbitmq-service:15672/api?x=a:b@c"
		}),
		Entry("a user with a / inside the RabbitMQ management URL", "spec.queue.rabbitmq.managementURL", "managementURLSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.ManagementURL = "http://us/er:pw@rabbitmq-service:15672/"
		}),
		Entry("RabbitMQ URL of another scheme", "spec.queue.rabbitmq.url", "amqp://", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "http://rabbitmq-service:15672"
		}),
		Entry("RabbitMQ url and urlSecretRef both", "spec.queue.rabbitmq", "exactly one of url or urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URLSecretRef = secretRef("rabbit", "url")
		}),
		Entry("RabbitMQ without url or urlSecretRef", "spec.queue.rabbitmq", "exactly one of url or urlSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = ""
		}),
		Entry("credentials inside the RabbitMQ management URL", "spec.queue.rabbitmq.managementURL", "managementURLSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.ManagementURL = "http://guest:Pa55word@rabbitmq-service:15672"
		}),
		Entry("a password with a / inside the RabbitMQ management URL", "spec.queue.rabbitmq.managementURL", "managementURLSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.ManagementURL = "http://monitor:Pa55word/YmFy@rabbitmq-service:15672/"
		}),
		Entry("a password with a ? inside the RabbitMQ management URL", "spec.queue.rabbitmq.managementURL", "managementURLSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.ManagementURL = "https://monitor:Pa55word?x@rabbitmq-service:15671"
		}),
		Entry("a user inside the RabbitMQ management URL", "spec.queue.rabbitmq.managementURL", "managementURLSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.ManagementURL = "http://monitor@rabbitmq-service:15672"
		}),
		Entry("RabbitMQ management URL of another scheme", "spec.queue.rabbitmq.managementURL", "http://", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.ManagementURL = "amqp://rabbitmq-service:5672"
		}),
		Entry("RabbitMQ managementURL and managementURLSecretRef both", "spec.queue.rabbitmq", "at most one of managementURL or managementURLSecretRef", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.ManagementURL = "http://rabbitmq-service:15672"
			q.Spec.Queue.RabbitMQ.ManagementURLSecretRef = secretRef("rabbit", "management-url")
		}),
		Entry("a selector in the Job template", "spec.jobTemplate.spec.selector", "owned by the operator", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "pi"}}
		}),
		Entry("manualSelector in the Job template", "spec.jobTemplate.spec.manualSelector", "owned by the operator", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.ManualSelector = ptr.To(false)
		}),
		Entry("suspend in the Job template", "spec.jobTemplate.spec.suspend", "use spec.suspend", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Suspend = ptr.To(true)
		}),
		Entry("ttlSecondsAfterFinished in the Job template", "spec.jobTemplate.spec.ttlSecondsAfterFinished", "spec.cleanup.ttlSecondsAfterFinished", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.TTLSecondsAfterFinished = ptr.To[int32](100)
		}),
		Entry("an operator label on the Job template", "spec.jobTemplate.metadata.labels", "batch.queuejob.io/", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Labels = map[string]string{qjv1.LabelWave: "7"}
		}),
		Entry("a podFailurePolicy with restartPolicy OnFailure", "spec.jobTemplate.spec.podFailurePolicy", "restartPolicy Never", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
			q.Spec.JobTemplate.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
				Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{42}},
			}}}
		}),
		Entry("an operator annotation on the Job template", "spec.jobTemplate.metadata.annotations", "batch.queuejob.io/", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Annotations = map[string]string{qjv1.AnnotationWaveEnded: "2026-01-01T00:00:00Z"}
		}),
		Entry("an Indexed WorkerPool", "spec.jobTemplate.spec.completionMode", "use mode PerItem", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Mode = qjv1.ModeWorkerPool
			q.Spec.JobTemplate.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
		}),
		Entry("successPolicy without Indexed", "spec.jobTemplate.spec.successPolicy", "completionMode Indexed", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.SuccessPolicy = &batchv1.SuccessPolicy{Rules: []batchv1.SuccessPolicyRule{{SucceededCount: ptr.To[int32](1)}}}
		}),
		Entry("backoffLimitPerIndex in a WorkerPool", "spec.jobTemplate.spec.backoffLimitPerIndex", "completionMode Indexed", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Mode = qjv1.ModeWorkerPool
			q.Spec.JobTemplate.Spec.BackoffLimitPerIndex = ptr.To[int32](1)
		}),
		Entry("maxFailedIndexes without backoffLimitPerIndex", "spec.jobTemplate.spec.maxFailedIndexes", "needs backoffLimitPerIndex", func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
			q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](3)
			q.Spec.JobTemplate.Spec.MaxFailedIndexes = ptr.To[int32](1)
		}),
		Entry("a negative QueueJob TTL", "spec.ttlSecondsAfterFinished", "greater than or equal to 0", func(q *qjv1.QueueJob) {
			q.Spec.TTLSecondsAfterFinished = ptr.To[int32](-1)
		}),
		Entry("drain grace without a queue", "spec.drainGracePeriodSeconds", "set spec.queue", func(q *qjv1.QueueJob) {
			q.Spec.DrainGracePeriodSeconds = ptr.To[int32](5)
		}),
		Entry("a name too long for a label value", "metadata.name", "at most 63 characters", func(q *qjv1.QueueJob) { q.Name = strings.Repeat("a", 64) }),
		Entry("NATS and Redis both", "spec.queue", "exactly one of redis, rabbitmq, nats or redisStream", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.NATS = &qjv1.NATSQueue{URL: "nats://nats:4222", Stream: "jobs", Consumer: "workers"}
		}),
		Entry("a password inside the NATS URL", "spec.queue.nats.url", "passwordSecretRef", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.URL = "nats://user:Pa55word@nats:4222"
		}),
		Entry("a token inside a NATS server URL", "spec.queue.nats.servers", "tokenSecretRef", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.URL = ""
			q.Spec.Queue.NATS.Servers = []string{"nats://nats-0:4222", "nats://Pa55word@nats-1:4222"}
		}),
		Entry("NATS URL of another scheme", "spec.queue.nats.url", "nats://", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.URL = "http://nats:8222"
		}),
		Entry("NATS url and servers both", "spec.queue.nats", "exactly one of url or servers", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.Servers = []string{"nats://nats-0:4222"}
		}),
		Entry("NATS without url or servers", "spec.queue.nats", "exactly one of url or servers", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.URL = ""
		}),
		Entry("a NATS stream name with a dot", "spec.queue.nats.stream", "stream name", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.Stream = "jobs.high"
		}),
		Entry("an empty NATS consumer name", "spec.queue.nats.consumer", "consumer name", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.Consumer = ""
		}),
		Entry("NATS user without a password", "spec.queue.nats", "userSecretRef and passwordSecretRef together", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.UserSecretRef = secretRef("nats", "user")
		}),
		Entry("NATS token and creds both", "spec.queue.nats", "at most one kind of credentials", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.TokenSecretRef = secretRef("nats", "token")
			q.Spec.Queue.NATS.CredsSecretRef = secretRef("nats", "creds")
		}),
		Entry("NATS ackWaitSeconds 0", "spec.queue.nats.ackWaitSeconds", "greater than or equal to 1", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.AckWaitSeconds = ptr.To[int32](0)
		}),
	)

	DescribeTable("accepts a valid QueueJob",
		func(mutate func(*qjv1.QueueJob)) {
			Expect(k8s.Create(suiteCtx, queueJob(ns, "good", mutate))).To(Succeed())
		},
		Entry("pi, no queue", func(*qjv1.QueueJob) {}),
		Entry("Redis WorkerPool", func(q *qjv1.QueueJob) { withRedis(q); q.Spec.Mode = qjv1.ModeWorkerPool }),
		Entry("Redis on an IPv6 address with a password Secret", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Queue.Redis.Address = "[::1]:6379"
			q.Spec.Queue.Redis.PasswordSecretRef = secretRef("redis", "password")
		}),
		Entry("Redis stream WorkerPool with a password Secret, TLS and a lease", func(q *qjv1.QueueJob) {
			withRedisStream(q)
			q.Spec.Mode = qjv1.ModeWorkerPool
			q.Spec.Queue.RedisStream.PasswordSecretRef = secretRef("redis", "password")
			q.Spec.Queue.RedisStream.TLS = &qjv1.TLSConfig{CASecretRef: secretRef("ca", "ca.crt"), ServerName: "redis.example.com"}
			q.Spec.Queue.RedisStream.LeaseSeconds = ptr.To[int32](120)
		}),
		Entry("RabbitMQ PerItem with a user but no password in the URL", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.ItemsPerPod = ptr.To[int32](4)
			q.Spec.Refill = qjv1.RefillContinuous
		}),
		Entry("RabbitMQ URL with a user and no password, on an IPv6 address", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = "amqp://guest@[::1]:5672/"
		}),
		Entry("RabbitMQ URL from a Secret", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.URL = ""
			q.Spec.Queue.RabbitMQ.URLSecretRef = secretRef("rabbit", "url")
		}),
		Entry("RabbitMQ with a management URL", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Mode = qjv1.ModeWorkerPool
			q.Spec.Queue.RabbitMQ.ManagementURL = "https://rabbitmq-service:15671/"
		}),
		Entry("RabbitMQ with a management URL from a Secret", func(q *qjv1.QueueJob) {
			withRabbitMQ(q)
			q.Spec.Queue.RabbitMQ.ManagementURLSecretRef = secretRef("rabbit", "management-url")
		}),
		Entry("every Job feature through the Job template, with Kueue's label", func(q *qjv1.QueueJob) {
			withRedis(q)
			jt := &q.Spec.JobTemplate
			jt.Labels = map[string]string{"kueue.x-k8s.io/queue-name": "team-a", "cost-center": "42"}
			jt.Annotations = map[string]string{"example.com/owner": "data"}
			jt.Spec.Parallelism = ptr.To[int32](4)
			jt.Spec.BackoffLimit = ptr.To[int32](0)
			jt.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
			jt.Spec.BackoffLimitPerIndex = ptr.To[int32](1)
			jt.Spec.MaxFailedIndexes = ptr.To[int32](3)
			jt.Spec.PodReplacementPolicy = ptr.To(batchv1.Failed)
			jt.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
				Action:          batchv1.PodFailurePolicyActionIgnore,
				OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}},
			}}}
			jt.Spec.SuccessPolicy = &batchv1.SuccessPolicy{Rules: []batchv1.SuccessPolicyRule{{SucceededCount: ptr.To[int32](1)}}}
		}),
		Entry("a one-shot QueueJob that deletes itself", func(q *qjv1.QueueJob) { q.Spec.TTLSecondsAfterFinished = ptr.To[int32](0) }),
		Entry("a refill Continuous QueueJob that deletes itself once it failed", func(q *qjv1.QueueJob) {
			withRedis(q)
			q.Spec.Refill = qjv1.RefillContinuous
			q.Spec.TTLSecondsAfterFinished = ptr.To[int32](600)
		}),
		Entry("a plain Job of more than 100 000 completions, as a Job allows", func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](200000) }),
		Entry("a 63-character name", func(q *qjv1.QueueJob) { q.Name = strings.Repeat("a", 63) }),
		Entry("zero TTLs", func(q *qjv1.QueueJob) {
			q.Spec.Cleanup = &qjv1.CleanupPolicy{TTLSecondsAfterFinished: ptr.To[int32](0), PodTTLSecondsAfterFinished: ptr.To[int32](0)}
		}),
		Entry("NATS WorkerPool with a user and password from Secrets, over TLS", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Mode = qjv1.ModeWorkerPool
			q.Spec.Queue.NATS.URL = "tls://nats:4222"
			q.Spec.Queue.NATS.UserSecretRef = secretRef("nats", "user")
			q.Spec.Queue.NATS.PasswordSecretRef = secretRef("nats", "password")
			q.Spec.Queue.NATS.TLS = &qjv1.TLSConfig{CASecretRef: secretRef("nats", "ca.crt")}
			q.Spec.Queue.NATS.AckWaitSeconds = ptr.To[int32](120)
		}),
		Entry("NATS cluster servers with a .creds file", func(q *qjv1.QueueJob) {
			withNATS(q)
			q.Spec.Queue.NATS.URL = ""
			q.Spec.Queue.NATS.Servers = []string{"nats://nats-0.nats:4222", "nats://nats-1.nats:4222"}
			q.Spec.Queue.NATS.CredsSecretRef = secretRef("nats", "user.creds")
		}),
	)

	DescribeTable("rejects changes to immutable fields",
		func(field string, create, change func(*qjv1.QueueJob)) {
			qj := queueJob(ns, "imm", create, func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(true) })
			Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
			// The Job of a QueueJob without a queue exists once the status names it.
			Eventually(getQJ(ns, "imm"), timeout, interval).Should(HaveField("Status.ObservedGeneration", BeEquivalentTo(1)))
			Eventually(func(g Gomega) {
				cur := getQJ(ns, "imm")(g)
				change(cur)
				err := k8s.Update(suiteCtx, cur)
				g.Expect(apierrors.IsConflict(err)).To(BeFalse())
				g.Expect(err).To(HaveOccurred())
				g.Expect(err.Error()).To(ContainSubstring(field))
				g.Expect(err.Error()).To(ContainSubstring("create a new QueueJob"))
			}, timeout, interval).Should(Succeed())
		},
		Entry("queue address", "spec.queue", withRedis, func(q *qjv1.QueueJob) { q.Spec.Queue.Redis.Address = "other:6379" }),
		Entry("queue added", "spec.queue", func(*qjv1.QueueJob) {}, withRedis),
		Entry("queue removed", "spec.queue", withRedis, func(q *qjv1.QueueJob) { q.Spec.Queue = nil }),
		Entry("mode", "spec.mode", withRedis, func(q *qjv1.QueueJob) { q.Spec.Mode = qjv1.ModeWorkerPool }),
		Entry("the Job template's completions, without a queue", "spec.jobTemplate", func(*qjv1.QueueJob) {}, func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Completions = ptr.To[int32](5) }),
		Entry("the pod template, without a queue", "spec.jobTemplate", func(*qjv1.QueueJob) {}, func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Image = "perl:5.40"
		}),
		Entry("the backoffLimit, without a queue", "spec.jobTemplate", func(*qjv1.QueueJob) {}, func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.BackoffLimit = ptr.To[int32](1) }),
		Entry("the Job's labels, without a queue", "spec.jobTemplate", func(*qjv1.QueueJob) {}, func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Labels = map[string]string{"a": "b"} }),
		Entry("the podFailurePolicy, without a queue", "spec.jobTemplate", func(*qjv1.QueueJob) {}, func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
				Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{42}},
			}}}
		}),
	)

	DescribeTable("accepts changes that apply to the running Job or to the next wave",
		func(create, change func(*qjv1.QueueJob)) {
			qj := queueJob(ns, "mut", create, func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(true) })
			Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
			Eventually(func(g Gomega) {
				cur := getQJ(ns, "mut")(g)
				change(cur)
				g.Expect(k8s.Update(suiteCtx, cur)).To(Succeed())
			}, timeout, interval).Should(Succeed())
		},
		Entry("parallelism, without a queue", func(*qjv1.QueueJob) {}, func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](3) }),
		Entry("suspend, without a queue", func(*qjv1.QueueJob) {}, func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(false) }),
		Entry("the pod template, with a queue", withRedis, func(q *qjv1.QueueJob) {
			q.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Image = "perl:5.40"
		}),
		Entry("the Job's labels, with a queue", withRedis, func(q *qjv1.QueueJob) { q.Spec.JobTemplate.Labels = map[string]string{"a": "b"} }),
	)
})

var _ = Describe("The samples in config/samples", func() {
	It("are all accepted by the API server", func() {
		ns, jobsNS := newNamespace(), newNamespace()
		files, err := filepath.Glob(filepath.Join("..", "config", "samples", "batch_*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).To(HaveLen(5)) // the seed's three, the NATS one and the Redis stream one
		for _, f := range files {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			qj := &qjv1.QueueJob{}
			Expect(yaml.UnmarshalStrict(data, qj)).To(Succeed(), f)
			qj.Namespace = ns
			Expect(k8s.Create(suiteCtx, qj)).To(Succeed(), f)
			// The Job the operator builds from it must pass the Job API's own validation.
			size := jobSizing{completions: ptr.To[int32](8), parallelism: qj.Spec.EffectiveParallelism()}
			if qj.Spec.Queue == nil {
				size = plainSizing(&qj.Spec)
			} else if qj.Spec.EffectiveMode() == qjv1.ModeWorkerPool {
				size.completions = nil
			}
			job := desiredJob(qj, 1, size, []corev1.EnvVar{{Name: "QUEUEJOB_NAME", Value: qj.Name}})
			// In a namespace of its own: the manager may have created the real Job by now.
			job.Namespace = jobsNS
			Expect(k8s.Create(suiteCtx, job, client.DryRunAll)).To(Succeed(), "the Job of %s", f)
		}
	})
})
