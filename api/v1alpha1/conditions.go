package v1alpha1

// Condition types of a QueueJob. Every reconcile sets the managed ones with the
// QueueJob's observedGeneration.
const (
	// ConditionComplete is True once the QueueJob has finished successfully.
	ConditionComplete = "Complete"
	// ConditionFailed is True once the QueueJob has finished unsuccessfully.
	ConditionFailed = "Failed"
	// ConditionSuspended is True while spec.suspend holds the QueueJob's pods back.
	ConditionSuspended = "Suspended"
	// ConditionProgressing says whether the QueueJob is making progress toward
	// completion, and if not, why (a Job the API server refused, a finished QueueJob).
	ConditionProgressing = "Progressing"
	// ConditionQueueReachable says whether the last probe of spec.queue succeeded.
	// It is only set on QueueJobs that have a queue.
	ConditionQueueReachable = "QueueReachable"
	// ConditionUpToDate says whether the running wave's Job was built from the current
	// spec (jobTemplate but its parallelism, itemsPerPod). False means a change waits for
	// the next wave (a QueueJob without a queue refuses such changes once its Job exists).
	ConditionUpToDate = "UpToDate"
)

// Condition reasons. The terminal conditions carry the Job's own reason when it
// gives one (CompletionsReached, BackoffLimitExceeded, DeadlineExceeded, ...);
// these are used otherwise.
const (
	ReasonJobComplete     = "JobComplete"
	ReasonJobFailed       = "JobFailed"
	ReasonNotFinished     = "NotFinished"
	ReasonSuspended       = "Suspended"
	ReasonNotSuspended    = "NotSuspended"
	ReasonJobRunning      = "JobRunning"
	ReasonJobCreateFailed = "JobCreateFailed"
	ReasonFinished        = "Finished"

	// Queue-driven QueueJobs.
	ReasonQueueDrained          = "QueueDrained"
	ReasonWorkersStopped        = "WorkersStopped"
	ReasonWaitingForItems       = "WaitingForItems"
	ReasonWaveRunning           = "WaveRunning"
	ReasonWaveEnding            = "WaveEnding"
	ReasonProbed                = "Probed"
	ReasonProbeFailed           = "ProbeFailed"
	ReasonNextWave              = "NextWave"
	ReasonNotApplied            = "NotApplied"
	ReasonUpToDate              = "UpToDate"
	ReasonJobSuspendedByAnother = "JobSuspendedByAnother"
	// ReasonWaitingForKueue: the running wave's Job names a Kueue LocalQueue
	// (kueue.x-k8s.io/queue-name) and is suspended: Kueue has not admitted it yet, or
	// preempted it, and resumes it once it admits it.
	ReasonWaitingForKueue = "WaitingForKueue"
	// ReasonPodsNotCreated: the Job controller reports that it cannot create the running
	// Job's pods (Pod Security, a ResourceQuota, an admission webhook); the message is its
	// own.
	ReasonPodsNotCreated = "PodsNotCreated"
	// ReasonPodsCannotStart: every pod of the running Job has been blocked from starting
	// for a while, for a reason that waiting alone does not fix (an image that cannot be
	// pulled, a Secret that env refers to missing, a crash loop); the message names the
	// reason, the kubelet's words and the pods.
	ReasonPodsCannotStart = "PodsCannotStart"
	// ReasonItemsDeadLettered: the queue was drained, items were dead-lettered during
	// the run, and spec.deadLetterPolicy is Fail.
	ReasonItemsDeadLettered = "ItemsDeadLettered"
)

// Event reasons, emitted on transitions only.
const (
	EventJobCreated        = "JobCreated"
	EventJobCreateFailed   = "JobCreateFailed"
	EventPodsNotCreated    = "PodsNotCreated"
	EventPodsCannotStart   = "PodsCannotStart"
	EventCompleted         = "Completed"
	EventFailed            = "Failed"
	EventSuspended         = "Suspended"
	EventResumed           = "Resumed"
	EventCleanedUp         = "CleanedUp"
	EventQueueUnreachable  = "QueueUnreachable"
	EventQueueReachable    = "QueueReachable"
	EventLeasesReclaimed   = "LeasesReclaimed"
	EventWaveEnded         = "WaveEnded"
	EventWaveFailed        = "WaveFailed"
	EventSpecChangePending = "SpecChangePending"
	EventExpired           = "Expired"
	// EventItemsDeadLettered: the QueueJob finished with items dead-lettered during its
	// run (Failed or, with spec.deadLetterPolicy Complete, Complete).
	EventItemsDeadLettered = "ItemsDeadLettered"
)

// Well-known labels and annotations.
const (
	// LabelQueueJob is set on every Job and pod a QueueJob creates; its value is the
	// QueueJob's name.
	LabelQueueJob = "batch.queuejob.io/queuejob"
	// LabelWave is set on every Job and pod a QueueJob creates; its value is the wave
	// number (1 for a QueueJob without a queue).
	LabelWave = "batch.queuejob.io/wave"

	// AnnotationWaveEnded is set, with the time, on the Job of a wave that the operator
	// ends because its pods outlived the drained queue. The operator suspends that Job (the
	// Job controller stops its pods), waits until its pods have stopped and are counted,
	// then archives and deletes it; if another controller (Kueue) resumes the Job, it is
	// archived and deleted at once, and its pods with it.
	AnnotationWaveEnded = "batch.queuejob.io/wave-ended"

	// AnnotationSuspend and AnnotationParallelism record, on a Job, the suspend and
	// parallelism the operator last set on it. The operator changes those fields only when
	// its own wish changes (spec.suspend was flipped, spec.jobTemplate.spec.parallelism was
	// edited, a WorkerPool grew), so that another controller, such as Kueue, which
	// suspends a Job until it is admitted, may change them in between.
	AnnotationSuspend     = "batch.queuejob.io/suspend"
	AnnotationParallelism = "batch.queuejob.io/parallelism"

	// AnnotationTemplateHash is a hash of the spec (jobTemplate but its parallelism, and
	// itemsPerPod) a Job was built from: a different hash means a spec change waits for
	// the next wave.
	AnnotationTemplateHash = "batch.queuejob.io/template-hash"

	// AnnotationDeadLetteredAtStart records, on each wave's Job, status.queue's
	// deadLetteredAtStart as the wave was planned: the Job is created at once with it, so
	// the baseline survives a status write that is lost.
	AnnotationDeadLetteredAtStart = "batch.queuejob.io/dead-lettered-at-start"
)
