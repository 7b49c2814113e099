package backends

// Watcher tells the controller soon after a queue is written to, so that a QueueJob
// waiting on an empty queue need not wait for its next probe. It is best-effort: the
// controller still probes every probeIntervalSeconds, and a wake may come with no new
// item (the controller then probes once more and finds none).
type Watcher interface {
	// Watch calls wake, from another goroutine, after writes to the queue of src, with
	// reported false; with reported true when a write may have gone unheard (the watch
	// started or restarted). stop ends it.
	Watch(src Source, wake func(reported bool)) (stop func(), err error)
	// Active reports whether the watch of src's queue is up now: writes to it are heard.
	// When an active watch fails, it wakes its QueueJobs with reported true, so that none
	// waits on a watch that is down.
	Active(src Source) bool
	// Close ends every watch.
	Close()
}
