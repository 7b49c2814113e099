package controllers

import (
	"fmt"
	"math"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// perItemSizing sizes a PerItem wave: one pod per itemsPerPod ready items, at most
// MaxWaveCompletions pods (a deeper queue takes several waves), at most parallelism at
// once. The arithmetic is in int64, so no queue depth can overflow it.
func perItemSizing(ready int64, itemsPerPod, parallelism int32) jobSizing {
	per := max(int64(itemsPerPod), 1)
	completions := min(ready/per+min(ready%per, 1), qjv1.MaxWaveCompletions)
	completions = max(completions, 1)
	c := int32(completions)
	return jobSizing{completions: &c, parallelism: min(max(parallelism, 1), c)}
}

// workerPoolSizing sizes a WorkerPool wave: no completions (the workers decide when the
// queue is empty), and no more workers than there are items.
func workerPoolSizing(ready, inFlight int64, parallelism int32) jobSizing {
	ready, inFlight = max(ready, 0), max(inFlight, 0)
	items := ready + inFlight
	if items < ready { // saturate instead of wrapping
		items = math.MaxInt64
	}
	return jobSizing{parallelism: int32(max(min(int64(parallelism), items), 1))}
}

// waveInput is what planWave decides from.
type waveInput struct {
	spec *qjv1.QueueJobSpec
	// current is the latest Job that cleanup has not archived, nil if none.
	current *batchv1.Job
	// waves is how many waves have been started.
	waves        int32
	counts       queue.Counts
	drainedSince *time.Time
	// endingPods counts the pods of an ended wave's Job that have not finished.
	endingPods int
	// failedInARow is how many waves have failed in a row, the current one included.
	failedInARow int32
	// deadLetteredAtStart is how many items the dead-letter queue held at the QueueJob's
	// first probe (items of earlier runs); counts.DeadLettered beyond it were
	// dead-lettered during this run.
	deadLetteredAtStart int64
	// deadLetterQueue names the dead-letter list or queue, and name the QueueJob, for
	// messages.
	deadLetterQueue, name string
	now                   time.Time
}

// wavePlan is what the QueueJob should do next. At most one of create, endWave, complete
// and fail is the main action; waiting explains why there is none.
type wavePlan struct {
	// create is the sizing of a new wave to start.
	create *jobSizing
	// endWave asks for the running wave's Job to be ended: suspended, so that the Job
	// controller stops its pods, and marked as ended.
	endWave bool
	// archiveEnded asks for the ended wave's Job, whose pods have all stopped and been
	// counted, to be archived (and then deleted).
	archiveEnded bool
	// complete finishes the QueueJob successfully, with this reason and message.
	complete *progressProblem
	// fail finishes the QueueJob unsuccessfully, with this reason and message.
	fail *progressProblem
	// drainedSince is when the queue was first seen drained while the wave's pods ran.
	drainedSince *time.Time
	// waiting says why no wave runs.
	waiting *progressProblem
	// requeue asks to look again after this long (the end of a drain grace period).
	requeue time.Duration
}

// planWave decides, from a successful probe, what a queue-driven QueueJob does next. It is
// only called for QueueJobs that have not finished.
func planWave(in waveInput) wavePlan {
	spec, c := in.spec, in.counts
	switch st := waveOf(in.current, spec).state; {
	case st.endedByOperator():
		return planEnding(in)
	case st.runs():
		return planRunning(in)
	case st == waveFailed && !retriesFailedWave(spec, in.failedInARow):
		return wavePlan{} // the failed wave fails the QueueJob
	}
	switch {
	case c.Ready > 0 && spec.IsSuspended():
		return wavePlan{waiting: &progressProblem{qjv1.ReasonSuspended, "The QueueJob is suspended: no new wave starts"}}
	case c.Ready > 0 && spec.EffectiveMode() == qjv1.ModeWorkerPool:
		size := workerPoolSizing(c.Ready, c.InFlight, spec.EffectiveParallelism())
		return wavePlan{create: &size}
	case c.Ready > 0:
		size := perItemSizing(c.Ready, spec.EffectiveItemsPerPod(), spec.EffectiveParallelism())
		return wavePlan{create: &size}
	case c.InFlight > 0:
		return wavePlan{waiting: &progressProblem{qjv1.ReasonWaitingForItems, fmt.Sprintf(
			"%d items are in flight and no wave runs: waiting for them to finish or for their leases to expire", c.InFlight)}}
	case in.waves > 0 && spec.EffectiveRefill() == qjv1.RefillOnce:
		return finishDrained(in, wavePlan{}, progressProblem{qjv1.ReasonQueueDrained, fmt.Sprintf(
			"The queue is drained: no ready and no in-flight items after %d waves", in.waves)})
	default:
		return wavePlan{waiting: &progressProblem{qjv1.ReasonWaitingForItems, "The queue is empty: waiting for items"}}
	}
}

// retriesFailedWave reports whether a failed wave, the failedInARow-th in a row, leaves the
// QueueJob running: under refill Continuous, until the limit of consecutive failed waves.
func retriesFailedWave(spec *qjv1.QueueJobSpec, failedInARow int32) bool {
	return spec.EffectiveRefill() == qjv1.RefillContinuous && failedInARow < spec.EffectiveConsecutiveFailedWavesLimit()
}

// failedInARow is how many waves have failed in a row, and the latest wave that count
// covers: the status's count, carried on over every Job of a later wave that has finished
// (in wave order). Every such Job counts, not only the latest: the reconcile that sees a
// wave fail may start the next one at once, and if its status write is lost (a conflict, a
// crash), the failed wave is no longer the latest. A wave the operator ended is no
// failure, and no success either.
func failedInARow(st *qjv1.QueueJobStatus, jobs []batchv1.Job) (count, wave int32) {
	count, wave = st.ConsecutiveFailedWaves, st.LastFinishedWave
	for i := range jobs {
		j := &jobs[i]
		w := jobWave(j)
		if w <= wave {
			continue
		}
		switch waveStateOf(j, false) { // a finished wave's state does not depend on spec.suspend
		case waveFailed:
			count++
		case waveComplete:
			count = 0
		default:
			continue
		}
		wave = w
	}
	return count, wave
}

// planRunning handles a running wave. A wave ends early once its queue has been drained
// for the grace period while its pods still run: workers that never decide to exit (a
// WorkerPool), or pods left waiting for items that another consumer took (a PerItem wave,
// whose completions came from a snapshot of the queue). It never does so where in-flight
// items cannot be counted (RabbitMQ without its management API): a queue whose every
// message is held, unacknowledged, by a pod looks drained, and ending that wave would lose
// the messages.
func planRunning(in waveInput) wavePlan {
	c := in.counts
	// A wave that spec.suspend holds is paused, not stuck: the user resumes it.
	if c.Ready > 0 || c.InFlight > 0 || c.InFlightUnknown || in.spec.IsSuspended() {
		return wavePlan{}
	}
	since := in.now
	if in.drainedSince != nil {
		since = *in.drainedSince
	}
	// A backend whose counts may be stale must look drained for at least that long.
	grace := max(time.Duration(in.spec.EffectiveDrainGracePeriodSeconds())*time.Second, c.Lag)
	if left := since.Add(grace).Sub(in.now); left > 0 {
		return wavePlan{drainedSince: &since, requeue: left}
	}
	return wavePlan{endWave: true}
}

// planEnding handles a wave the operator has ended: once the Job controller has stopped
// its pods and counted them, the Job is archived with its final counts, and a refill Once
// QueueJob is complete. A Job that finished on its own meanwhile, even Failed (its stopped
// pods may count as failures), ended the same way: the operator stopped it.
func planEnding(in waveInput) wavePlan {
	job := in.current
	// Another controller may resume the suspended Job (Kueue resumes an admitted Job that
	// is suspended). Then waiting for its pods to stop would wait for ever: the Job is
	// archived with the counts it has, and deleting it stops its pods. Under Kueue, Kueue
	// stops the Job once its Workload is inactive (kueue.go): it has kueueStopGrace to.
	current := waveOf(job, in.spec)
	forKueue := current.createsPods() && kueueManaged(job) && !endedBefore(job, in.now.Add(-kueueStopGrace))
	resumed := current.createsPods() && !forKueue
	if current.state == waveEnding && !resumed && (job.Status.Active > 0 || ptr.Deref(job.Status.Terminating, 0) > 0 || in.endingPods > 0) {
		if forKueue { // look again when Kueue's time is up
			return wavePlan{requeue: endedAt(job).Add(kueueStopGrace).Sub(in.now) + time.Second}
		}
		return wavePlan{}
	}
	plan := wavePlan{archiveEnded: true}
	// Items may have come, or been taken, since the wave was ended: only a queue still
	// drained completes the QueueJob now; otherwise planning goes on without the wave.
	c := in.counts
	if in.spec.EffectiveRefill() == qjv1.RefillOnce && c.Ready == 0 && c.InFlight == 0 && !c.InFlightUnknown {
		return finishDrained(in, plan, progressProblem{qjv1.ReasonWorkersStopped, fmt.Sprintf(
			"The queue was drained for %ds while pods of Job %s still ran: the operator stopped them (%d succeeded, %d failed)",
			in.spec.EffectiveDrainGracePeriodSeconds(), job.Name, job.Status.Succeeded, job.Status.Failed)})
	}
	return plan
}

// finishDrained finishes a refill Once QueueJob whose queue is drained: Complete for why,
// unless items were dead-lettered during its run. Then spec.deadLetterPolicy Fail (the
// default) fails it, as one failed index fails an Indexed Job with backoffLimitPerIndex,
// so that waiting for Complete does not succeed; Complete completes it, saying how many.
func finishDrained(in waveInput, plan wavePlan, why progressProblem) wavePlan {
	n := deadLetteredThisRun(in.counts.DeadLettered, in.deadLetteredAtStart)
	switch {
	case in.counts.DeadLetteredUnknown:
		why.message += fmt.Sprintf("; %s could not be read (grant the queue's "+
			"user read access to it): items dead-lettered during this run are not counted", in.deadLetterQueue)
		plan.complete = &why
	case n == 0:
		plan.complete = &why
	case in.spec.EffectiveDeadLetterPolicy() == qjv1.DeadLetterPolicyComplete:
		why.message += fmt.Sprintf("; %d items were dead-lettered to %s during this run (spec.deadLetterPolicy is Complete): "+
			"requeue them with \"qj requeue %s\"", n, in.deadLetterQueue, in.name)
		plan.complete = &why
	default:
		plan.fail = &progressProblem{qjv1.ReasonItemsDeadLettered, fmt.Sprintf("%s, but %d items were dead-lettered to %s "+
			"during this run: requeue them with \"qj requeue %s\" and run them with a new QueueJob, or set "+
			"spec.deadLetterPolicy: Complete to let a run with dead-lettered items complete", why.message, n, in.deadLetterQueue, in.name)}
	}
	return plan
}

// deadLetteredThisRun is how many items were dead-lettered during a QueueJob's run: the
// dead-letter queue's count beyond its count at the first probe (never below 0: items
// requeued from it lower the count).
func deadLetteredThisRun(now, atStart int64) int64 { return max(now-atStart, 0) }
