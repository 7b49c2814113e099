package queue

// Environment variables every worker pod gets; backends add their own.
const (
	EnvBackend = "QUEUEJOB_BACKEND"
	EnvName    = "QUEUEJOB_NAME"
)

// Environment variables of worker settings that the operator does not derive from the
// queue: a worker reads them if they are set (by the pod template, or by the operator
// once it injects them).
const (
	// EnvMode is the QueueJob's mode, PerItem or WorkerPool.
	EnvMode = "QUEUEJOB_MODE"
	// EnvItemsPerPod is how many items a PerItem pod takes.
	EnvItemsPerPod = "QUEUEJOB_ITEMS_PER_POD"
)
