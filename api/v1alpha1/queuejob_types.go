package v1alpha1

import (
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Mode says how a QueueJob turns queue items into pods.
// +kubebuilder:validation:Enum=PerItem;WorkerPool
type Mode string

const (
	// ModePerItem runs one pod per spec.itemsPerPod items: each wave Job's
	// completions are sized from the queue depth (the Kubernetes docs' "coarse
	// parallel processing").
	ModePerItem Mode = "PerItem"
	// ModeWorkerPool runs up to spec.jobTemplate.spec.parallelism workers that
	// drain the queue;
	// completions are unset and the QueueJob completes when the queue is empty
	// and nothing is in flight (the Kubernetes docs' "fine parallel
	// processing").
	ModeWorkerPool Mode = "WorkerPool"
)

// State sums up a QueueJob's conditions for kubectl get.
type State string

const (
	StateWaiting   State = "Waiting"
	StateRunning   State = "Running"
	StateSuspended State = "Suspended"
	StateComplete  State = "Complete"
	StateFailed    State = "Failed"
)

// ModeJob is the status.mode of a QueueJob without a queue: it runs one plain Job.
const ModeJob = "Job"

// Refill says what a QueueJob does once its queue has been drained.
// +kubebuilder:validation:Enum=Once;Continuous
type Refill string

const (
	// RefillOnce finishes the QueueJob when its queue is drained.
	RefillOnce Refill = "Once"
	// RefillContinuous keeps probing the queue and starts a new wave when items
	// arrive.
	RefillContinuous Refill = "Continuous"
)

// DeadLetterPolicy says how a QueueJob whose queue was drained finishes when items
// were dead-lettered during its run.
// +kubebuilder:validation:Enum=Fail;Complete
type DeadLetterPolicy string

const (
	// DeadLetterPolicyFail makes the QueueJob end Failed (reason ItemsDeadLettered).
	DeadLetterPolicyFail DeadLetterPolicy = "Fail"
	// DeadLetterPolicyComplete makes the QueueJob end Complete; the Complete
	// condition's message counts the dead-lettered items.
	DeadLetterPolicyComplete DeadLetterPolicy = "Complete"
)

// Defaults of fields that only apply to some QueueJobs. They are applied by
// the controller, not by the API server, so that admission can tell a field
// the user set on the wrong kind of QueueJob from a default.
const (
	DefaultMode                 = ModePerItem
	DefaultItemsPerPod          = int32(1)
	DefaultRefill               = RefillOnce
	DefaultProbeIntervalSeconds = int32(2)

	DefaultDrainGracePeriodSeconds     = int32(30)
	DefaultSuccessfulWavesHistoryLimit = int32(3)
	DefaultFailedWavesHistoryLimit     = int32(1)
	DefaultConsecutiveFailedWavesLimit = int32(3)
	// MaxWaveCompletions bounds the pods of one PerItem wave; a deeper queue is
	// drained in several waves.
	MaxWaveCompletions = int64(100000)
)

// QueueJobSpec is the desired state of a QueueJob.
//
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || has(self.queue)",fieldPath=".mode",message="spec.mode applies only to a QueueJob with spec.queue: remove spec.mode or set spec.queue"
// +kubebuilder:validation:XValidation:rule="!has(self.itemsPerPod) || (has(self.queue) && (!has(self.mode) || self.mode == 'PerItem'))",fieldPath=".itemsPerPod",message="spec.itemsPerPod applies only to mode PerItem with spec.queue: remove spec.itemsPerPod"
// +kubebuilder:validation:XValidation:rule="!has(self.jobTemplate.spec.completions) || !has(self.queue)",fieldPath=".jobTemplate.spec.completions",message="spec.jobTemplate.spec.completions is set by the operator for a QueueJob with spec.queue (PerItem: from the queue depth; WorkerPool: unset): remove it"
// +kubebuilder:validation:XValidation:rule="!has(self.queue) || !has(self.jobTemplate.spec.completionMode) || self.jobTemplate.spec.completionMode == 'NonIndexed' || (has(self.mode) && self.mode == 'PerItem') || !has(self.mode)",fieldPath=".jobTemplate.spec.completionMode",message="spec.jobTemplate.spec.completionMode Indexed needs completions, and a WorkerPool wave has none: remove completionMode or use mode PerItem"
// +kubebuilder:validation:XValidation:rule="!has(self.refill) || has(self.queue)",fieldPath=".refill",message="spec.refill applies only to a QueueJob with spec.queue: remove spec.refill or set spec.queue"
// +kubebuilder:validation:XValidation:rule="!has(self.probeIntervalSeconds) || has(self.queue)",fieldPath=".probeIntervalSeconds",message="spec.probeIntervalSeconds applies only to a QueueJob with spec.queue: remove spec.probeIntervalSeconds or set spec.queue"
// +kubebuilder:validation:XValidation:rule="!has(self.drainGracePeriodSeconds) || has(self.queue)",fieldPath=".drainGracePeriodSeconds",message="spec.drainGracePeriodSeconds applies only to a QueueJob with spec.queue: remove it or set spec.queue"
// +kubebuilder:validation:XValidation:rule="!has(self.successfulWavesHistoryLimit) || has(self.queue)",fieldPath=".successfulWavesHistoryLimit",message="spec.successfulWavesHistoryLimit applies only to a QueueJob with spec.queue: remove it or set spec.queue"
// +kubebuilder:validation:XValidation:rule="!has(self.consecutiveFailedWavesLimit) || (has(self.queue) && has(self.refill) && self.refill == 'Continuous')",fieldPath=".consecutiveFailedWavesLimit",message="spec.consecutiveFailedWavesLimit applies only with spec.refill Continuous (a refill Once QueueJob fails with its first failed wave): remove it or set spec.refill to Continuous"
// +kubebuilder:validation:XValidation:rule="!has(self.failedWavesHistoryLimit) || has(self.queue)",fieldPath=".failedWavesHistoryLimit",message="spec.failedWavesHistoryLimit applies only to a QueueJob with spec.queue: remove it or set spec.queue"
// +kubebuilder:validation:XValidation:rule="has(self.queue) == has(oldSelf.queue)",fieldPath=".queue",message="spec.queue cannot be added or removed after creation: create a new QueueJob instead"
// +kubebuilder:validation:XValidation:rule="(has(self.mode) ? self.mode : 'PerItem') == (has(oldSelf.mode) ? oldSelf.mode : 'PerItem')",fieldPath=".mode",message="spec.mode is immutable: create a new QueueJob to change it"
type QueueJobSpec struct {
	// queue is where the work items wait. Without it the QueueJob runs one
	// plain Job, named after the QueueJob, from spec.jobTemplate, and cleans up
	// after it. Immutable.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.queue is immutable: create a new QueueJob to use another queue"
	// +optional
	Queue *QueueSource `json:"queue,omitempty"`

	// mode says how queue items become pods: PerItem (each pod takes
	// spec.itemsPerPod items; each wave's completions are sized from the queue
	// depth) or WorkerPool (up to spec.jobTemplate.spec.parallelism workers
	// drain the queue; completions stay unset). Only with spec.queue; defaults
	// to PerItem. Immutable.
	// +optional
	Mode Mode `json:"mode,omitempty"`

	// itemsPerPod is how many queue items one pod of a PerItem QueueJob takes: a
	// wave runs ceil(ready items / itemsPerPod) pods. Only with spec.queue and
	// mode PerItem; defaults to 1. A change applies to the next wave.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	ItemsPerPod *int32 `json:"itemsPerPod,omitempty"`

	// jobTemplate is the Job each wave runs, as in a CronJob's
	// spec.jobTemplate: move a Job's metadata.labels, metadata.annotations and
	// spec here. Every Job field passes through (podFailurePolicy,
	// successPolicy, backoffLimitPerIndex, podReplacementPolicy, ...) but those
	// the operator owns: the selector, suspend (use spec.suspend),
	// ttlSecondsAfterFinished (use spec.cleanup, which keeps the counts) and,
	// with spec.queue, completions. spec.parallelism is the most pods that run
	// at once; a change applies to the running Job. Other changes apply to the
	// next wave, and are reported until it starts; a QueueJob without a queue
	// has no next wave, so it refuses them. The operator adds the labels
	// batch.queuejob.io/queuejob and batch.queuejob.io/wave to the Job and its
	// pods, the queue's coordinates (QUEUEJOB_* variables) to every container,
	// init containers and sidecars included, and, to a WorkerPool Job that does
	// not set it, podReplacementPolicy Failed, so that no two pods hold one
	// worker's slot.
	// +required
	JobTemplate JobTemplateSpec `json:"jobTemplate"`

	// suspend stops the QueueJob's pods (the running Job is suspended, its
	// active pods are deleted) until it is set back to false. The operator
	// changes a Job's suspend only when this field changes, so a queueing
	// controller such as Kueue may suspend and resume the Job in between.
	// Defaults to false.
	// +optional
	Suspend *bool `json:"suspend,omitempty"`

	// refill says what happens once the queue is drained: Once finishes the
	// QueueJob, Continuous keeps probing and starts a new wave when items
	// arrive. Only with spec.queue; defaults to Once.
	// +optional
	Refill Refill `json:"refill,omitempty"`

	// probeIntervalSeconds is how often the queue is probed. Only with
	// spec.queue; defaults to 2. A Redis list found empty is also probed as
	// soon as it is written to, unless the manager runs with
	// --watch-queues=false.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +optional
	ProbeIntervalSeconds *int32 `json:"probeIntervalSeconds,omitempty"`

	// drainGracePeriodSeconds is how long a wave's pods may keep running once
	// the queue has no ready and no in-flight items. Then the operator ends the
	// wave itself: it suspends the Job, so that its pods stop, deletes it once
	// they are counted, and says so in a condition and an event. An ended wave
	// is not a failure. In a WorkerPool these are workers that never decide to
	// exit; in a PerItem wave, pods left waiting for items that another
	// consumer took. It does not apply to a RabbitMQ queue without
	// managementURL or managementURLSecretRef: its in-flight messages cannot be
	// counted, so no wave ends on its own. Only with spec.queue; defaults to 30.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	// +optional
	DrainGracePeriodSeconds *int32 `json:"drainGracePeriodSeconds,omitempty"`

	// successfulWavesHistoryLimit is how many completed wave Jobs to keep; older
	// ones are deleted. Only with spec.queue; defaults to 3.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	SuccessfulWavesHistoryLimit *int32 `json:"successfulWavesHistoryLimit,omitempty"`

	// failedWavesHistoryLimit is how many failed wave Jobs to keep; older ones
	// are deleted. Only with spec.queue; defaults to 1.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	FailedWavesHistoryLimit *int32 `json:"failedWavesHistoryLimit,omitempty"`

	// consecutiveFailedWavesLimit is how many waves in a row may fail before a
	// refill Continuous QueueJob gives up and becomes Failed. Until then a failed
	// wave is reported (a WaveFailed event) and the next wave starts when items
	// are ready: the items of a failed wave stay in the queue. A successful wave
	// resets the count. Only with refill Continuous (a refill Once QueueJob fails
	// with its first failed wave); defaults to 3.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	ConsecutiveFailedWavesLimit *int32 `json:"consecutiveFailedWavesLimit,omitempty"`

	// deadLetterPolicy says how the QueueJob finishes once its queue is drained
	// (refill Once) if workers dead-lettered items during its run (into Redis's
	// <key>:failed or RabbitMQ's <queue>.failed; items there before its first
	// probe do not count). Fail ends it Failed with reason ItemsDeadLettered, as
	// one failed index fails an Indexed Job with backoffLimitPerIndex, so that
	// kubectl wait --for=condition=Complete does not succeed. Complete ends it
	// Complete with reason QueueDrained, and the Complete condition's message
	// says how many items were dead-lettered. Either way a Warning event
	// ItemsDeadLettered is emitted. A run with no item dead-lettered is not
	// affected. Defaults to Fail.
	// +kubebuilder:default=Fail
	// +optional
	DeadLetterPolicy DeadLetterPolicy `json:"deadLetterPolicy,omitempty"`

	// cleanup says when finished Jobs and pods are deleted while the QueueJob
	// and its counts stay. Without it nothing is deleted.
	// +optional
	Cleanup *CleanupPolicy `json:"cleanup,omitempty"`

	// ttlSecondsAfterFinished deletes the QueueJob itself, with its Jobs and
	// pods, this many seconds after it finished (Complete or Failed; a refill
	// Continuous QueueJob only finishes when it fails), as a Job's
	// ttlSecondsAfterFinished does. Its status goes with it. A Failed QueueJob
	// whose dead workers still hold items waits until it has returned them to
	// the queue. Without it the QueueJob stays.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`
}

// JobTemplateSpec describes the Job of a wave, as a CronJob's jobTemplate does.
type JobTemplateSpec struct {
	// metadata holds the labels and annotations of every Job the QueueJob
	// creates (Kueue's kueue.x-k8s.io/queue-name, cost labels, ...). Labels
	// and annotations under batch.queuejob.io/ are the operator's.
	// +kubebuilder:validation:XValidation:rule=`!has(self.labels) || !self.labels.exists(k, k.startsWith('batch.queuejob.io/'))`,message="spec.jobTemplate.metadata.labels must not use the prefix batch.queuejob.io/: the operator sets those labels"
	// +kubebuilder:validation:XValidation:rule=`!has(self.annotations) || !self.annotations.exists(k, k.startsWith('batch.queuejob.io/'))`,message="spec.jobTemplate.metadata.annotations must not use the prefix batch.queuejob.io/: the operator sets those annotations"
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the Job's spec, as in a Job. The operator owns selector,
	// manualSelector, suspend, ttlSecondsAfterFinished and, with spec.queue,
	// completions.
	// +kubebuilder:validation:XValidation:rule="!has(self.parallelism) || (self.parallelism >= 1 && self.parallelism <= 100000)",fieldPath=".parallelism",message="spec.jobTemplate.spec.parallelism must be between 1 and 100000 (to stop the pods, set spec.suspend)"
	// +kubebuilder:validation:XValidation:rule="!has(self.completions) || self.completions >= 1",fieldPath=".completions",message="spec.jobTemplate.spec.completions must be 1 or more (a Job of 0 completions runs no pod): set how many pods must succeed, or remove it for one"
	// +kubebuilder:validation:XValidation:rule="!has(self.successPolicy) || (has(self.completionMode) && self.completionMode == 'Indexed')",fieldPath=".successPolicy",message="spec.jobTemplate.spec.successPolicy needs completionMode Indexed, as in a Job (and so mode PerItem or no queue)"
	// +kubebuilder:validation:XValidation:rule="!has(self.backoffLimitPerIndex) || (has(self.completionMode) && self.completionMode == 'Indexed')",fieldPath=".backoffLimitPerIndex",message="spec.jobTemplate.spec.backoffLimitPerIndex needs completionMode Indexed, as in a Job (and so mode PerItem or no queue)"
	// +kubebuilder:validation:XValidation:rule="!has(self.maxFailedIndexes) || has(self.backoffLimitPerIndex)",fieldPath=".maxFailedIndexes",message="spec.jobTemplate.spec.maxFailedIndexes needs backoffLimitPerIndex, as in a Job"
	// +kubebuilder:validation:XValidation:rule="!has(self.backoffLimit) || self.backoffLimit >= 0",fieldPath=".backoffLimit",message="spec.jobTemplate.spec.backoffLimit must be 0 or more"
	// +kubebuilder:validation:XValidation:rule="!has(self.activeDeadlineSeconds) || self.activeDeadlineSeconds >= 1",fieldPath=".activeDeadlineSeconds",message="spec.jobTemplate.spec.activeDeadlineSeconds must be 1 or more"
	// +kubebuilder:validation:XValidation:rule="!has(self.podFailurePolicy) || (has(self.template.spec) && has(self.template.spec.restartPolicy) && self.template.spec.restartPolicy == 'Never')",fieldPath=".podFailurePolicy",message="spec.jobTemplate.spec.podFailurePolicy needs spec.jobTemplate.spec.template.spec.restartPolicy Never, as in a Job"
	// +kubebuilder:validation:XValidation:rule="!has(self.selector)",fieldPath=".selector",message="spec.jobTemplate.spec.selector is owned by the operator (the Job controller generates it): remove it"
	// +kubebuilder:validation:XValidation:rule="!has(self.manualSelector)",fieldPath=".manualSelector",message="spec.jobTemplate.spec.manualSelector is owned by the operator: remove it"
	// +kubebuilder:validation:XValidation:rule="!has(self.suspend)",fieldPath=".suspend",message="spec.jobTemplate.spec.suspend is owned by the operator: use spec.suspend of the QueueJob"
	// +kubebuilder:validation:XValidation:rule="!has(self.ttlSecondsAfterFinished)",fieldPath=".ttlSecondsAfterFinished",message="spec.jobTemplate.spec.ttlSecondsAfterFinished is owned by the operator (a Job deleted behind its back takes its counts along): use spec.cleanup.ttlSecondsAfterFinished, or spec.ttlSecondsAfterFinished to delete the QueueJob too"
	// +kubebuilder:validation:XValidation:rule="!has(self.template.spec) || (has(self.template.spec.containers) && size(self.template.spec.containers) > 0)",fieldPath=".template.spec.containers",message="spec.jobTemplate.spec.template.spec.containers must list at least one container: add the container that does the work"
	// +kubebuilder:validation:XValidation:rule="has(self.template.spec) && has(self.template.spec.restartPolicy) && self.template.spec.restartPolicy in ['Never', 'OnFailure']",fieldPath=".template.spec.restartPolicy",message="spec.jobTemplate.spec.template.spec.restartPolicy must be Never or OnFailure: a QueueJob's pods run to completion"
	// +required
	Spec batchv1.JobSpec `json:"spec"`
}

// QueueSource names the queue a QueueJob drains. Exactly one backend is set.
// +kubebuilder:validation:XValidation:rule="(has(self.redis) ? 1 : 0) + (has(self.rabbitmq) ? 1 : 0) + (has(self.nats) ? 1 : 0) + (has(self.redisStream) ? 1 : 0) == 1",message="spec.queue: set exactly one of redis, rabbitmq, nats or redisStream"
type QueueSource struct {
	// redis is a Redis list, read with the protocol of the Kubernetes docs'
	// rediswq.py.
	// +optional
	Redis *RedisQueue `json:"redis,omitempty"`

	// rabbitmq is a RabbitMQ queue.
	// +optional
	RabbitMQ *RabbitMQQueue `json:"rabbitmq,omitempty"`

	// nats is a NATS JetStream stream, drained through a durable pull consumer.
	// +optional
	NATS *NATSQueue `json:"nats,omitempty"`
	// redisStream is a Redis stream read by a consumer group (Redis 7.0 or later).
	// +optional
	RedisStream *RedisStreamQueue `json:"redisStream,omitempty"`
}

// RedisQueue is a Redis list of work items. Items being worked on are kept
// in <key>:processing with a lease key per item, as in the Kubernetes docs'
// rediswq.py.
type RedisQueue struct {
	// address is the Redis server's host:port, e.g. redis:6379.
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:XValidation:rule=`self.matches('^(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):[0-9]{1,5}$')`,message="spec.queue.redis.address must be host:port, e.g. redis:6379"
	// +required
	Address string `json:"address"`

	// key is the name of the Redis list that holds the items.
	// +kubebuilder:validation:MaxLength=200
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="spec.queue.redis.key must not be empty: set the name of the Redis list"
	// +kubebuilder:validation:XValidation:rule=`!self.matches('[\\s\\x00-\\x1f\\x7f*?\\[\\]]')`,message="spec.queue.redis.key must not contain whitespace, control characters or the glob characters * ? [ ]"
	// +required
	Key string `json:"key"`

	// db is the Redis database number.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	// +optional
	DB *int32 `json:"db,omitempty"`

	// passwordSecretRef selects the key of a Secret in the QueueJob's namespace
	// that holds the Redis password. The controller reads it at probe time;
	// workers get it through a secretKeyRef, never as a literal.
	// +kubebuilder:validation:XValidation:rule="size(self.name) > 0 && size(self.key) > 0",message="spec.queue.redis.passwordSecretRef needs both name and key: name the Secret and its key that holds the password"
	// +optional
	PasswordSecretRef *corev1.SecretKeySelector `json:"passwordSecretRef,omitempty"`

	// username is the Redis ACL user (Redis 6 and later) to log in as, with the
	// password of passwordSecretRef (AUTH <username> <password>). Without it
	// the password is that of the default user. A user name is not a secret:
	// it is written into the worker pods' environment as it is.
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="spec.queue.redis.username must not be empty: set the ACL user name or remove the field to log in as the default user"
	// +kubebuilder:validation:XValidation:rule=`!self.matches('[\\s\\x00-\\x1f\\x7f]')`,message="spec.queue.redis.username must not contain whitespace or control characters: set the ACL user name"
	// +optional
	Username string `json:"username,omitempty"`

	// tls makes the controller and the workers connect to Redis over TLS
	// (address is then the server's TLS port), verifying the server's
	// certificate against caSecretRef's CA, or the system's roots without it.
	// An empty tls: {} turns TLS on with the system's roots.
	// +kubebuilder:validation:XValidation:rule="!has(self.caSecretRef) || (size(self.caSecretRef.name) > 0 && size(self.caSecretRef.key) > 0)",fieldPath=".caSecretRef",message="spec.queue.redis.tls.caSecretRef needs both name and key: name the Secret and its key that holds the PEM CA bundle"
	// +kubebuilder:validation:XValidation:rule=`!has(self.serverName) || self.serverName.matches('^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]+)$')`,fieldPath=".serverName",message="spec.queue.redis.tls.serverName must be a host name (e.g. redis.example.com) or an IP address, without a port or scheme"
	// +optional
	TLS *TLSConfig `json:"tls,omitempty"`
}

// TLSConfig says how to verify a queue server's TLS certificate. The
// connection is always verified: there is no setting to skip it.
type TLSConfig struct {
	// caSecretRef selects the key of a Secret in the QueueJob's namespace that
	// holds the PEM-encoded CA certificates (one or more) that the server's
	// certificate must chain to. Without it the system's root CAs are used.
	// The controller reads it at probe time; workers get it through a
	// secretKeyRef.
	// +optional
	CASecretRef *corev1.SecretKeySelector `json:"caSecretRef,omitempty"`

	// serverName is the name the server's certificate must be valid for, and
	// the TLS SNI name sent to it. Defaults to the host of the server's
	// address or URL; set it when that host is not in the certificate (an IP
	// address or a Service name that the certificate does not list, say).
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ServerName string `json:"serverName,omitempty"`
}

// RabbitMQQueue is a RabbitMQ queue of work items. The broker is given by
// exactly one of url and urlSecretRef; its management API, which counts the
// messages workers hold, by at most one of managementURL and
// managementURLSecretRef.
// +kubebuilder:validation:XValidation:rule="has(self.url) != has(self.urlSecretRef)",message="spec.queue.rabbitmq: set exactly one of url or urlSecretRef"
// +kubebuilder:validation:XValidation:rule=`!has(self.url) || !self.url.matches('^amqps?://(?s:.*):(?s:.*)@')`,fieldPath=".url",message="spec.queue.rabbitmq.url must not contain a password (an @ anywhere after a colon reads as user:password@, whatever characters the password holds; write an @ of a vhost or query as %40): store the whole URL in a Secret and reference it with spec.queue.rabbitmq.urlSecretRef"
// +kubebuilder:validation:XValidation:rule="!has(self.managementURL) || !has(self.managementURLSecretRef)",message="spec.queue.rabbitmq: set at most one of managementURL or managementURLSecretRef"
// +kubebuilder:validation:XValidation:rule="!has(self.managementURL) || self.managementURL.startsWith('http://') || self.managementURL.startsWith('https://')",fieldPath=".managementURL",message="spec.queue.rabbitmq.managementURL must start with http:// or https://"
// +kubebuilder:validation:XValidation:rule=`!has(self.managementURL) || !self.managementURL.matches('^https?://([^/?#]*@|(?s:.*):(?s:.*)@)')`,fieldPath=".managementURL",message="spec.queue.rabbitmq.managementURL must not contain a user or password (an @ anywhere after a colon reads as user:password@): store the whole URL in a Secret and reference it with spec.queue.rabbitmq.managementURLSecretRef"
// +kubebuilder:validation:XValidation:rule="!has(self.tls) || !has(self.url) || self.url.startsWith('amqps://')",fieldPath=".tls",message="spec.queue.rabbitmq.tls applies only to an amqps:// URL: make spec.queue.rabbitmq.url amqps:// (the broker's TLS port) or remove spec.queue.rabbitmq.tls"
type RabbitMQQueue struct {
	// queue is the name of the RabbitMQ queue.
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="spec.queue.rabbitmq.queue must not be empty: set the name of the RabbitMQ queue"
	// +required
	Queue string `json:"queue"`

	// url is the broker's AMQP URL without a password, e.g.
	// amqp://guest@rabbitmq:5672/. A URL with a password belongs in a Secret:
	// use urlSecretRef.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('amqp://') || self.startsWith('amqps://')",message="spec.queue.rabbitmq.url must start with amqp:// or amqps://"
	// +optional
	URL string `json:"url,omitempty"`

	// urlSecretRef selects the key of a Secret in the QueueJob's namespace that
	// holds the broker's AMQP URL, password included.
	// +kubebuilder:validation:XValidation:rule="size(self.name) > 0 && size(self.key) > 0",message="spec.queue.rabbitmq.urlSecretRef needs both name and key: name the Secret and its key that holds the URL"
	// +optional
	URLSecretRef *corev1.SecretKeySelector `json:"urlSecretRef,omitempty"`

	// managementURL is the base URL of the broker's management API (the
	// rabbitmq_management plugin), http or https, without a user or password,
	// e.g. http://rabbitmq:15672. The operator logs in with the user and
	// password of the AMQP URL; other credentials belong in a Secret: use
	// managementURLSecretRef. The management API counts the messages workers
	// have taken and not yet acknowledged. Without managementURL or
	// managementURLSecretRef those cannot be counted, so a RabbitMQ WorkerPool
	// never ends a wave on its own (drainGracePeriodSeconds does not apply).
	// The plugin updates its counts every collect_statistics_interval (5s by
	// default): drainGracePeriodSeconds should exceed it.
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	ManagementURL string `json:"managementURL,omitempty"`

	// managementURLSecretRef selects the key of a Secret in the QueueJob's
	// namespace that holds the base URL of the broker's management API with
	// its user and password, e.g. http://monitor:secret@rabbitmq:15672. The
	// management API counts the messages workers have taken and not yet
	// acknowledged. Without managementURL or managementURLSecretRef those
	// cannot be counted, so a RabbitMQ WorkerPool never ends a wave on its own
	// (drainGracePeriodSeconds does not apply). The plugin updates its counts
	// every collect_statistics_interval (5s by default):
	// drainGracePeriodSeconds should exceed it.
	// +kubebuilder:validation:XValidation:rule="size(self.name) > 0 && size(self.key) > 0",message="spec.queue.rabbitmq.managementURLSecretRef needs both name and key: name the Secret and its key that holds the management URL"
	// +optional
	ManagementURLSecretRef *corev1.SecretKeySelector `json:"managementURLSecretRef,omitempty"`

	// tls says how the controller and the workers verify the broker's TLS
	// certificate. TLS itself is chosen by the URL: tls applies only to an
	// amqps:// URL (a url is checked at admission, a URL from urlSecretRef at
	// probe time). Without tls an amqps:// URL is verified against the system's
	// root CAs and the URL's host. The CA also verifies an https management
	// URL, and serverName applies to it too when it names the AMQP URL's host.
	// +kubebuilder:validation:XValidation:rule="!has(self.caSecretRef) || (size(self.caSecretRef.name) > 0 && size(self.caSecretRef.key) > 0)",fieldPath=".caSecretRef",message="spec.queue.rabbitmq.tls.caSecretRef needs both name and key: name the Secret and its key that holds the PEM CA bundle"
	// +kubebuilder:validation:XValidation:rule=`!has(self.serverName) || self.serverName.matches('^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]+)$')`,fieldPath=".serverName",message="spec.queue.rabbitmq.tls.serverName must be a host name (e.g. rabbitmq.example.com) or an IP address, without a port or scheme"
	// +optional
	TLS *TLSConfig `json:"tls,omitempty"`
}

// NATSQueue is a NATS JetStream stream of work items, taken through a durable
// pull consumer with explicit acks. The user creates the stream (nats stream add,
// or qj enqueue --declare); the workers, and qj enqueue, create the consumer if
// it is missing. The server is given by exactly one of url and servers;
// credentials only by Secret references, of at most one kind.
// +kubebuilder:validation:XValidation:rule="has(self.url) != has(self.servers)",message="spec.queue.nats: set exactly one of url or servers"
// +kubebuilder:validation:XValidation:rule="has(self.userSecretRef) == has(self.passwordSecretRef)",message="spec.queue.nats: set userSecretRef and passwordSecretRef together (the Secret keys of the user name and its password)"
// +kubebuilder:validation:XValidation:rule="(has(self.userSecretRef) ? 1 : 0) + (has(self.tokenSecretRef) ? 1 : 0) + (has(self.credsSecretRef) ? 1 : 0) + (has(self.nkeySeedSecretRef) ? 1 : 0) <= 1",message="spec.queue.nats: set at most one kind of credentials: userSecretRef with passwordSecretRef, tokenSecretRef, credsSecretRef or nkeySeedSecretRef"
// The rules on credentials in URLs sit on the object with a fieldPath, so that the API
// server's error does not repeat the value, password and all.
// +kubebuilder:validation:XValidation:rule="!has(self.url) || !self.url.contains('@')",fieldPath=".url",message="spec.queue.nats.url must not contain credentials (user:password@ or token@): store them in a Secret and reference them with spec.queue.nats.userSecretRef and passwordSecretRef, or tokenSecretRef"
// +kubebuilder:validation:XValidation:rule="!has(self.servers) || self.servers.all(s, !s.contains('@'))",fieldPath=".servers",message="spec.queue.nats.servers must not contain credentials (user:password@ or token@): store them in a Secret and reference them with spec.queue.nats.userSecretRef and passwordSecretRef, or tokenSecretRef"
type NATSQueue struct {
	// url is the NATS server's URL, nats://host:port (or tls://host:port),
	// without credentials: a user, password or token belongs in a Secret (see
	// userSecretRef, passwordSecretRef and tokenSecretRef).
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('nats://') || self.startsWith('tls://')",message="spec.queue.nats.url must start with nats:// or tls://, e.g. nats://nats:4222"
	// +optional
	URL string `json:"url,omitempty"`

	// servers are the URLs of the servers of a NATS cluster, each as url
	// says; the client connects to the first that answers.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.all(s, s.startsWith('nats://') || s.startsWith('tls://'))",message="spec.queue.nats.servers must each start with nats:// or tls://, e.g. nats://nats-0.nats:4222"
	// +listType=atomic
	// +optional
	Servers []string `json:"servers,omitempty"`

	// stream is the JetStream stream that holds the items. It must have
	// work-queue retention (an acknowledged item is deleted): another stream
	// is QueueReachable=False with WrongType, as its acknowledged messages
	// would be counted and delivered again.
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule=`self.matches('^[^\\s.*>/\\\\]+$')`,message="spec.queue.nats.stream must be a JetStream stream name: not empty, without whitespace , . * > / or a backslash"
	// +required
	Stream string `json:"stream"`

	// consumer is the name of the stream's durable pull consumer the workers
	// share. Workers and qj enqueue create it if it is missing (explicit
	// acks, AckWait ackWaitSeconds, unlimited deliveries: workers dead-letter
	// after their own maxAttempts). An existing consumer keeps its AckWait; it
	// must be a pull consumer with explicit acks, unlimited deliveries
	// (MaxDeliver -1), deliver policy all and no filter that leaves out one of
	// the stream's subjects, else QueueReachable=False with WrongType (a
	// message past MaxDeliver would be neither ready nor in flight).
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule=`self.matches('^[^\\s.*>/\\\\]+$')`,message="spec.queue.nats.consumer must be a JetStream consumer name: not empty, without whitespace , . * > / or a backslash"
	// +required
	Consumer string `json:"consumer"`

	// userSecretRef and passwordSecretRef select the keys of Secrets in the
	// QueueJob's namespace that hold the user name and its password.
	// +kubebuilder:validation:XValidation:rule="size(self.name) > 0 && size(self.key) > 0",message="spec.queue.nats.userSecretRef needs both name and key: name the Secret and its key that holds the user name"
	// +optional
	UserSecretRef *corev1.SecretKeySelector `json:"userSecretRef,omitempty"`
	// +kubebuilder:validation:XValidation:rule="size(self.name) > 0 && size(self.key) > 0",message="spec.queue.nats.passwordSecretRef needs both name and key: name the Secret and its key that holds the password"
	// +optional
	PasswordSecretRef *corev1.SecretKeySelector `json:"passwordSecretRef,omitempty"`

	// tokenSecretRef selects the key of a Secret that holds the token the
	// server requires (authorization { token: ... }).
	// +kubebuilder:validation:XValidation:rule="size(self.name) > 0 && size(self.key) > 0",message="spec.queue.nats.tokenSecretRef needs both name and key: name the Secret and its key that holds the token"
	// +optional
	TokenSecretRef *corev1.SecretKeySelector `json:"tokenSecretRef,omitempty"`

	// credsSecretRef selects the key of a Secret that holds a .creds file (a
	// user JWT and its NKey seed, as nsc generate creds writes it).
	// +kubebuilder:validation:XValidation:rule="size(self.name) > 0 && size(self.key) > 0",message="spec.queue.nats.credsSecretRef needs both name and key: name the Secret and its key that holds the .creds file"
	// +optional
	CredsSecretRef *corev1.SecretKeySelector `json:"credsSecretRef,omitempty"`

	// nkeySeedSecretRef selects the key of a Secret that holds a user's NKey
	// seed (SU...), for a server that lists the user's public NKey.
	// +kubebuilder:validation:XValidation:rule="size(self.name) > 0 && size(self.key) > 0",message="spec.queue.nats.nkeySeedSecretRef needs both name and key: name the Secret and its key that holds the NKey seed"
	// +optional
	NKeySeedSecretRef *corev1.SecretKeySelector `json:"nkeySeedSecretRef,omitempty"`

	// tls makes the controller and the workers connect over TLS, verifying the
	// server's certificate against caSecretRef's CA, or the system's roots
	// without it. A tls:// URL turns TLS on by itself. Without serverName each
	// server is verified against its own URL's host.
	// +kubebuilder:validation:XValidation:rule="!has(self.caSecretRef) || (size(self.caSecretRef.name) > 0 && size(self.caSecretRef.key) > 0)",fieldPath=".caSecretRef",message="spec.queue.nats.tls.caSecretRef needs both name and key: name the Secret and its key that holds the PEM CA bundle"
	// +kubebuilder:validation:XValidation:rule=`!has(self.serverName) || self.serverName.matches('^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]+)$')`,fieldPath=".serverName",message="spec.queue.nats.tls.serverName must be a host name (e.g. nats.example.com) or an IP address, without a port or scheme"
	// +optional
	TLS *TLSConfig `json:"tls,omitempty"`

	// ackWaitSeconds is the lease: how long a worker may hold an item without
	// renewing it (AckProgress, every third of it) before the server delivers
	// it again. It is the AckWait of the consumer the workers create; an
	// existing consumer keeps its own AckWait, which then applies.
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	// +optional
	AckWaitSeconds *int32 `json:"ackWaitSeconds,omitempty"`
}

// CleanupPolicy says when finished Jobs and pods are deleted, like a Job's
// ttlSecondsAfterFinished but also for single pods.
type CleanupPolicy struct {
	// ttlSecondsAfterFinished deletes the QueueJob's finished Jobs, and with
	// them their pods, this many seconds after the QueueJob finished. The
	// QueueJob and its status (counts, conditions) stay.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`

	// podTTLSecondsAfterFinished deletes each finished pod (Succeeded or Failed)
	// this many seconds after it finished, while its Job and the QueueJob's
	// counts stay. Running pods are never deleted.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=2147483647
	// +optional
	PodTTLSecondsAfterFinished *int32 `json:"podTTLSecondsAfterFinished,omitempty"`
}

// QueueJobStatus is the observed state of a QueueJob.
type QueueJobStatus struct {
	// observedGeneration is the spec generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// state sums up the conditions in one word, for kubectl get: Waiting (no
	// wave runs: the queue is empty, a Job cannot be created, or another
	// controller such as Kueue holds the Job suspended), Running, Suspended
	// (spec.suspend), Complete or Failed. Programs should read conditions.
	// +kubebuilder:validation:Enum=Waiting;Running;Suspended;Complete;Failed
	// +optional
	State State `json:"state,omitempty"`

	// mode is the effective mode: PerItem or WorkerPool, or Job for a QueueJob
	// without a queue.
	// +optional
	Mode string `json:"mode,omitempty"`

	// completions is the current wave's succeeded pods out of its
	// completions, as kubectl get jobs shows them: "3/5", or "3/1 of 4" for a
	// WorkerPool wave, whose completions are unset.
	// +optional
	Completions string `json:"completions,omitempty"`

	// duration is how long the QueueJob ran, from startTime to
	// completionTime; set once it finished.
	// +optional
	Duration string `json:"duration,omitempty"`

	// conditions: Complete, Failed, Suspended, Progressing, UpToDate and, with
	// a queue, QueueReachable.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// startTime is when the QueueJob's first Job started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the QueueJob finished, successfully or not.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// active is the number of pods running now.
	// +optional
	Active int32 `json:"active"`

	// succeeded is the number of pods that succeeded, over all the QueueJob's
	// Jobs. It keeps counting pods and Jobs that cleanup deleted.
	// +optional
	Succeeded int32 `json:"succeeded"`

	// failed is the number of pods that failed, over all the QueueJob's Jobs. It
	// keeps counting pods and Jobs that cleanup deleted.
	// +optional
	Failed int32 `json:"failed"`

	// waves is the number of Jobs the QueueJob has started.
	// +optional
	Waves int32 `json:"waves,omitempty"`

	// consecutiveFailedWaves is how many waves have failed in a row, up to
	// lastFinishedWave; a successful wave resets it.
	// +optional
	ConsecutiveFailedWaves int32 `json:"consecutiveFailedWaves,omitempty"`

	// lastFinishedWave is the latest wave whose outcome consecutiveFailedWaves
	// counts.
	// +optional
	LastFinishedWave int32 `json:"lastFinishedWave,omitempty"`

	// jobName is the name of the QueueJob's current (latest) Job.
	// +optional
	JobName string `json:"jobName,omitempty"`

	// queue is what the last probe of spec.queue counted.
	// +optional
	Queue *QueueStatus `json:"queue,omitempty"`

	// archived holds the pod counts of Jobs that cleanup has deleted or is about
	// to delete, so that succeeded and failed keep counting them. A Job is only
	// deleted once it is recorded here.
	// +optional
	Archived *ArchivedJobs `json:"archived,omitempty"`
}

// ArchivedJobs are the counts of deleted Jobs.
type ArchivedJobs struct {
	// succeeded is the number of succeeded pods of the archived Jobs.
	// +optional
	Succeeded int32 `json:"succeeded"`

	// failed is the number of failed pods of the archived Jobs.
	// +optional
	Failed int32 `json:"failed"`

	// jobs names the archived Jobs that may still exist; a name is dropped once
	// its Job is gone.
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +optional
	Jobs []string `json:"jobs,omitempty"`
}

// QueueStatus is what a probe of the queue counted.
type QueueStatus struct {
	// ready is the number of items waiting in the queue.
	// +optional
	Ready int64 `json:"ready"`

	// inFlight is the number of items taken by a worker and not yet finished.
	// +optional
	InFlight int64 `json:"inFlight"`

	// deadLettered is the number of items in the queue's dead-letter list or
	// queue (Redis: <key>:failed; RabbitMQ: <queue>.failed) at the last probe,
	// items of earlier runs included.
	// +optional
	DeadLettered int64 `json:"deadLettered"`

	// redelivered is the number of items delivered more than once (a worker
	// crashed or lost its lease) and not acknowledged since, where the queue
	// counts them (NATS: the consumer's num_redelivered; on the consumers the
	// backend accepts, each such item is in flight).
	// +optional
	Redelivered int64 `json:"redelivered,omitempty"`

	// deadLetteredAtStart is deadLettered at the QueueJob's first successful
	// probe, recorded once: those items belong to earlier runs. The items
	// dead-lettered during this run are deadLettered - deadLetteredAtStart
	// (at least 0; requeueing items lowers it).
	// +optional
	DeadLetteredAtStart *int64 `json:"deadLetteredAtStart,omitempty"`

	// lastProbeTime is when a successful probe last changed the counts (or first
	// counted them, or first counted them after the QueueJob finished). It is not
	// a heartbeat, so that idle QueueJobs cost the API server no writes: the
	// queuejob_queue_last_probe_timestamp_seconds metric tells when the queue was
	// last probed.
	// +optional
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`

	// reclaimed is how many items whose worker was gone (their lease expired)
	// the operator returned to the queue.
	// +optional
	Reclaimed int64 `json:"reclaimed,omitempty"`

	// drainedSince is when the queue was first seen with no ready and no
	// in-flight items while the running wave's pods still ran.
	// +optional
	DrainedSince *metav1.Time `json:"drainedSince,omitempty"`
}

// QueueJob runs a Kubernetes Job for the items of a work queue: it sizes the
// Job from the queue depth, completes when the queue is drained, and deletes
// finished pods and Jobs after a TTL.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=qj,categories=all
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.state`,description="Waiting, Running, Suspended, Complete or Failed"
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.status.mode`,description="PerItem, WorkerPool, or Job for a QueueJob without a queue"
// +kubebuilder:printcolumn:name="Completions",type=string,JSONPath=`.status.completions`,description="Succeeded pods of the current wave out of its completions"
// +kubebuilder:printcolumn:name="Waves",type=integer,JSONPath=`.status.waves`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.queue.ready`,description="Items waiting in the queue"
// +kubebuilder:printcolumn:name="In-Flight",type=integer,JSONPath=`.status.queue.inFlight`,description="Items taken by a worker and not yet finished"
// +kubebuilder:printcolumn:name="Duration",type=string,JSONPath=`.status.duration`,description="From the first Job's start to the QueueJob's end"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Active",type=integer,JSONPath=`.status.active`,priority=1
// +kubebuilder:printcolumn:name="Succeeded",type=integer,JSONPath=`.status.succeeded`,priority=1
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.failed`,priority=1,description="Failed pods over all waves; a QueueJob may complete with some"
// +kubebuilder:printcolumn:name="Job",type=string,JSONPath=`.status.jobName`,priority=1
// +kubebuilder:printcolumn:name="Dead-Lettered",type=integer,JSONPath=`.status.queue.deadLettered`,priority=1,description="Items in the dead-letter list or queue at the last probe, earlier runs' included"
// +kubebuilder:validation:XValidation:rule=`has(self.spec.queue) || !has(oldSelf.status) || !has(oldSelf.status.jobName) || ((has(self.spec.jobTemplate.metadata) == has(oldSelf.spec.jobTemplate.metadata) && (!has(self.spec.jobTemplate.metadata) || self.spec.jobTemplate.metadata == oldSelf.spec.jobTemplate.metadata)) && self.spec.jobTemplate.spec.template == oldSelf.spec.jobTemplate.spec.template && (has(self.spec.jobTemplate.spec.completions) == has(oldSelf.spec.jobTemplate.spec.completions) && (!has(self.spec.jobTemplate.spec.completions) || self.spec.jobTemplate.spec.completions == oldSelf.spec.jobTemplate.spec.completions)) && (has(self.spec.jobTemplate.spec.activeDeadlineSeconds) == has(oldSelf.spec.jobTemplate.spec.activeDeadlineSeconds) && (!has(self.spec.jobTemplate.spec.activeDeadlineSeconds) || self.spec.jobTemplate.spec.activeDeadlineSeconds == oldSelf.spec.jobTemplate.spec.activeDeadlineSeconds)) && (has(self.spec.jobTemplate.spec.podFailurePolicy) == has(oldSelf.spec.jobTemplate.spec.podFailurePolicy) && (!has(self.spec.jobTemplate.spec.podFailurePolicy) || self.spec.jobTemplate.spec.podFailurePolicy == oldSelf.spec.jobTemplate.spec.podFailurePolicy)) && (has(self.spec.jobTemplate.spec.successPolicy) == has(oldSelf.spec.jobTemplate.spec.successPolicy) && (!has(self.spec.jobTemplate.spec.successPolicy) || self.spec.jobTemplate.spec.successPolicy == oldSelf.spec.jobTemplate.spec.successPolicy)) && (has(self.spec.jobTemplate.spec.backoffLimit) == has(oldSelf.spec.jobTemplate.spec.backoffLimit) && (!has(self.spec.jobTemplate.spec.backoffLimit) || self.spec.jobTemplate.spec.backoffLimit == oldSelf.spec.jobTemplate.spec.backoffLimit)) && (has(self.spec.jobTemplate.spec.backoffLimitPerIndex) == has(oldSelf.spec.jobTemplate.spec.backoffLimitPerIndex) && (!has(self.spec.jobTemplate.spec.backoffLimitPerIndex) || self.spec.jobTemplate.spec.backoffLimitPerIndex == oldSelf.spec.jobTemplate.spec.backoffLimitPerIndex)) && (has(self.spec.jobTemplate.spec.maxFailedIndexes) == has(oldSelf.spec.jobTemplate.spec.maxFailedIndexes) && (!has(self.spec.jobTemplate.spec.maxFailedIndexes) || self.spec.jobTemplate.spec.maxFailedIndexes == oldSelf.spec.jobTemplate.spec.maxFailedIndexes)) && (has(self.spec.jobTemplate.spec.completionMode) == has(oldSelf.spec.jobTemplate.spec.completionMode) && (!has(self.spec.jobTemplate.spec.completionMode) || self.spec.jobTemplate.spec.completionMode == oldSelf.spec.jobTemplate.spec.completionMode)) && (has(self.spec.jobTemplate.spec.podReplacementPolicy) == has(oldSelf.spec.jobTemplate.spec.podReplacementPolicy) && (!has(self.spec.jobTemplate.spec.podReplacementPolicy) || self.spec.jobTemplate.spec.podReplacementPolicy == oldSelf.spec.jobTemplate.spec.podReplacementPolicy)) && (has(self.spec.jobTemplate.spec.managedBy) == has(oldSelf.spec.jobTemplate.spec.managedBy) && (!has(self.spec.jobTemplate.spec.managedBy) || self.spec.jobTemplate.spec.managedBy == oldSelf.spec.jobTemplate.spec.managedBy)) && (has(self.spec.jobTemplate.spec.scheduling) == has(oldSelf.spec.jobTemplate.spec.scheduling) && (!has(self.spec.jobTemplate.spec.scheduling) || self.spec.jobTemplate.spec.scheduling == oldSelf.spec.jobTemplate.spec.scheduling)))`,fieldPath=".spec.jobTemplate",message="spec.jobTemplate of a QueueJob without spec.queue cannot change once its Job exists, but for spec.jobTemplate.spec.parallelism, as a Job's template cannot: create a new QueueJob to change it"
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name must be at most 63 characters: it is the value of the batch.queuejob.io/queuejob label on the QueueJob's Jobs and pods"
type QueueJob struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the QueueJob.
	// +required
	Spec QueueJobSpec `json:"spec"`

	// status is the observed state of the QueueJob.
	// +optional
	Status QueueJobStatus `json:"status,omitempty"`
}

// QueueJobList is a list of QueueJobs.
// +kubebuilder:object:root=true
type QueueJobList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []QueueJob `json:"items"`
}

func init() {
	SchemeBuilder.Register(&QueueJob{}, &QueueJobList{})
}

// RedisStreamQueue is a Redis stream of work items, one entry each (the field
// "item" holds the item), read by the workers as one consumer group. Items being
// worked on are the group's pending entries; dead-lettered items go to the
// stream <stream>:failed. Workers and qj enqueue create the group if missing.
type RedisStreamQueue struct {
	// address is the Redis server's host:port, e.g. redis:6379.
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:XValidation:rule=`self.matches('^(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):[0-9]{1,5}$')`,message="spec.queue.redisStream.address must be host:port, e.g. redis:6379"
	// +required
	Address string `json:"address"`

	// stream is the key of the Redis stream that holds the items.
	// +kubebuilder:validation:MaxLength=200
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="spec.queue.redisStream.stream must not be empty: set the key of the Redis stream"
	// +kubebuilder:validation:XValidation:rule=`!self.matches('[\\s\\x00-\\x1f\\x7f*?\\[\\]]')`,message="spec.queue.redisStream.stream must not contain whitespace, control characters or the glob characters * ? [ ]"
	// +required
	Stream string `json:"stream"`

	// group is the consumer group of the workers. No other consumer group may
	// read the stream: a completed item is deleted from it.
	// +kubebuilder:validation:MaxLength=200
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="spec.queue.redisStream.group must not be empty: set the name of the consumer group"
	// +kubebuilder:validation:XValidation:rule=`!self.matches('[\\s\\x00-\\x1f\\x7f*?\\[\\]]')`,message="spec.queue.redisStream.group must not contain whitespace, control characters or the glob characters * ? [ ]"
	// +required
	Group string `json:"group"`

	// db is the Redis database number.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	// +optional
	DB *int32 `json:"db,omitempty"`

	// passwordSecretRef selects the key of a Secret in the QueueJob's namespace
	// that holds the Redis password. The controller reads it at probe time;
	// workers get it through a secretKeyRef, never as a literal.
	// +kubebuilder:validation:XValidation:rule="size(self.name) > 0 && size(self.key) > 0",message="spec.queue.redisStream.passwordSecretRef needs both name and key: name the Secret and its key that holds the password"
	// +optional
	PasswordSecretRef *corev1.SecretKeySelector `json:"passwordSecretRef,omitempty"`

	// username is the Redis ACL user to log in as, with the password of
	// passwordSecretRef. Without it the password is that of the default user.
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="spec.queue.redisStream.username must not be empty: set the ACL user name or remove the field to log in as the default user"
	// +kubebuilder:validation:XValidation:rule=`!self.matches('[\\s\\x00-\\x1f\\x7f]')`,message="spec.queue.redisStream.username must not contain whitespace or control characters: set the ACL user name"
	// +optional
	Username string `json:"username,omitempty"`

	// tls makes the controller and the workers connect to Redis over TLS, as
	// spec.queue.redis.tls does.
	// +kubebuilder:validation:XValidation:rule="!has(self.caSecretRef) || (size(self.caSecretRef.name) > 0 && size(self.caSecretRef.key) > 0)",fieldPath=".caSecretRef",message="spec.queue.redisStream.tls.caSecretRef needs both name and key: name the Secret and its key that holds the PEM CA bundle"
	// +kubebuilder:validation:XValidation:rule=`!has(self.serverName) || self.serverName.matches('^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]+)$')`,fieldPath=".serverName",message="spec.queue.redisStream.tls.serverName must be a host name (e.g. redis.example.com) or an IP address, without a port or scheme"
	// +optional
	TLS *TLSConfig `json:"tls,omitempty"`

	// leaseSeconds is how long an entry may stay pending without its worker
	// renewing it (workers renew every third of it) before the operator's
	// reaper returns it to the stream. The operator passes it to the workers as
	// QUEUEJOB_LEASE_SECONDS and QUEUEJOB_REDIS_STREAM_LEASE_SECONDS: a worker
	// whose own lease is longer (a template's QUEUEJOB_LEASE_SECONDS, say) still
	// renews within this one.
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	// +optional
	LeaseSeconds *int32 `json:"leaseSeconds,omitempty"`
}
