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
)

// Condition reasons. The terminal conditions carry the Job's own reason when it
// gives one (CompletionsReached, BackoffLimitExceeded, DeadlineExceeded, ...);
// these are used otherwise.
const (
	ReasonJobComplete    = "JobComplete"
	ReasonJobFailed      = "JobFailed"
	ReasonNotFinished    = "NotFinished"
	ReasonSuspended      = "Suspended"
	ReasonNotSuspended   = "NotSuspended"
	ReasonJobRunning     = "JobRunning"
	ReasonJobCreateError = "JobCreateFailed"
	ReasonFinished       = "Finished"

	// Queue-driven QueueJobs.
	ReasonQueueDrained    = "QueueDrained"
	ReasonWorkersStopped  = "WorkersStopped"
	ReasonWaitingForItems = "WaitingForItems"
	ReasonWaveRunning     = "WaveRunning"
	ReasonWaveEnding      = "WaveEnding"
	ReasonProbed          = "Probed"
	ReasonProbeFailed     = "ProbeFailed"
)

// Event reasons, emitted on transitions only.
const (
	EventJobCreated       = "JobCreated"
	EventJobCreateFailed  = "JobCreateFailed"
	EventCompleted        = "Completed"
	EventFailed           = "Failed"
	EventSuspended        = "Suspended"
	EventResumed          = "Resumed"
	EventCleanedUp        = "CleanedUp"
	EventQueueUnreachable = "QueueUnreachable"
	EventQueueReachable   = "QueueReachable"
	EventLeasesReclaimed  = "LeasesReclaimed"
	EventWaveEnded        = "WaveEnded"
	EventWaveFailed       = "WaveFailed"
)

// Well-known labels and annotations.
const (
	// LabelQueueJob is set on every Job and pod a QueueJob creates; its value is the
	// QueueJob's name.
	LabelQueueJob = "batch.queuejob.io/queuejob"
	// LabelWave is set on every Job and pod a QueueJob creates; its value is the wave
	// number (1 for a QueueJob without a queue).
	LabelWave = "batch.queuejob.io/wave"

	// AnnotationWaveEnded is set, with the time, on the Job of a WorkerPool wave that the
	// operator ends because its workers outlived the drained queue. The operator suspends
	// that Job (the Job controller stops its pods), waits until its pods have stopped and
	// are counted, then archives and deletes it.
	AnnotationWaveEnded = "batch.queuejob.io/wave-ended"
)
