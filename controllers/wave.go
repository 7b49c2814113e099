package controllers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
)

// ensureWave creates the Job the QueueJob lacks: for a QueueJob without a queue its one
// Job, for a queue-driven one the next wave that planWave asks for. It decides nothing
// after a failed probe.
func (r *QueueJobReconciler) ensureWave(ctx context.Context, s *scope) error {
	if isFinished(&s.read.Status) {
		return nil
	}
	if s.qj.Spec.Queue == nil {
		// Under Kueue a suspended QueueJob's Job is created once it is resumed: Kueue
		// would admit and resume a Job created suspended (kueue.go).
		if s.current() != nil || s.qj.Spec.IsSuspended() && s.qj.Spec.JobTemplate.Labels[kueueQueueNameLabel] != "" {
			return nil
		}
		return r.createJob(ctx, s, desiredJob(s.qj, 1, plainSizing(&s.qj.Spec), nil))
	}
	if s.probe == nil || s.probe.counts == nil {
		return nil
	}
	// probeQueue has done it already; a no-op then, but no plan may rest on less.
	if err := r.seeLatestWave(ctx, s); err != nil {
		return err
	}
	backend, err := r.registry().For(s.qj.Spec.Queue)
	if err != nil {
		return err
	}
	in, err := r.waveInputOf(ctx, s, backend)
	if err != nil {
		return err
	}
	plan := planWave(in)
	s.plan = &plan
	s.requeue(plan.requeue)
	waiting := plan.create == nil && plan.waiting != nil && plan.waiting.reason == qjv1.ReasonWaitingForItems
	idle := waiting && idleQueue(in.counts, s.probe.watched)
	if r.probes.armWake(client.ObjectKeyFromObject(s.qj), s.qj.UID, s.qj.Generation, waiting, idle, s.writesBefore) {
		r.enqueue(client.ObjectKeyFromObject(s.qj), minWakeGap)
	}
	if plan.endWave {
		if err := r.endWave(ctx, s, s.current()); err != nil {
			return err
		}
	}
	if plan.archiveEnded {
		job := s.current()
		s.archiveJob(job)
		logf.FromContext(ctx).Info("Archived an ended wave whose pods have stopped", "job", job.Name,
			"succeeded", job.Status.Succeeded, "failed", job.Status.Failed)
	}
	if plan.create == nil {
		return nil
	}
	return r.createJob(ctx, s, nextWaveJob(s, backend, in, *plan.create))
}

// idleQueue reports whether a probe's counts leave nothing to do until a write: nothing
// ready, nothing in flight for a reaper to return (and the in-flight count known), and
// the queue's watch up, so that a write would be heard (see idleGap).
func idleQueue(c queue.Counts, watched bool) bool {
	return watched && c.Ready == 0 && c.InFlight == 0 && !c.InFlightUnknown
}

// waveInputOf gathers what planWave decides from: the scope's current wave and probe, the
// status as read, and, for an ended wave, its pods that have not stopped yet.
func (r *QueueJobReconciler) waveInputOf(ctx context.Context, s *scope, backend *backends.Backend) (waveInput, error) {
	current := s.wave()
	in := waveInput{spec: &s.qj.Spec, current: current.job, waves: s.waves(), counts: *s.probe.counts, now: s.now,
		deadLetteredAtStart: deadLetteredAtStart(s.read.Status.Queue, s.jobs, *s.probe.counts),
		deadLetterQueue:     backend.DeadLetterQueueOf(s.qj.Spec.Queue), name: s.qj.Name}
	in.failedInARow, _ = failedInARow(&s.read.Status, s.jobs)
	if current.state.endedByOperator() {
		if current.state == waveEnding {
			// Planning goes on if it fails: after kueueStopGrace the wave is archived.
			if err := r.keepKueueJobStopped(ctx, s, current.job); err != nil {
				logf.FromContext(ctx).Error(err, "Stopping an ended wave's Job through Kueue", "job", current.job.Name)
				s.requeue(time.Second)
			}
		}
		n, err := r.unfinishedPods(ctx, s, in.current)
		if err != nil {
			return in, err
		}
		in.endingPods = n
	}
	if q := s.read.Status.Queue; q != nil && q.DrainedSince != nil {
		in.drainedSince = &q.DrainedSince.Time
	}
	return in, nil
}

// nextWaveJob builds the Job of the next wave, sized as planned: its workers get the
// queue's coordinates, and the Job the dead-letter baseline the wave was planned with.
func nextWaveJob(s *scope, backend *backends.Backend, in waveInput, size jobSizing) *batchv1.Job {
	env := []corev1.EnvVar{
		{Name: queue.EnvBackend, Value: backend.Name},
		{Name: queue.EnvName, Value: s.qj.Name},
		{Name: queue.EnvMode, Value: string(s.qj.Spec.EffectiveMode())},
		// The pod's identity, for the workers' sessions: see gonepods.go.
		{Name: queue.EnvPodName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: queue.EnvPodUID, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.uid"}}},
	}
	if s.qj.Spec.EffectiveMode() == qjv1.ModePerItem {
		// A worker takes this many items and exits: the wave's completions assume it.
		env = append(env, corev1.EnvVar{Name: queue.EnvItemsPerPod, Value: strconv.Itoa(int(s.qj.Spec.EffectiveItemsPerPod()))})
	}
	env = append(env, backend.WorkerEnv(s.qj.Spec.Queue)...)
	job := desiredJob(s.qj, s.waves()+1, size, env)
	if !in.counts.DeadLetteredUnknown {
		metav1.SetMetaDataAnnotation(&job.ObjectMeta, qjv1.AnnotationDeadLetteredAtStart, strconv.FormatInt(in.deadLetteredAtStart, 10))
	}
	return job
}

// endWave ends a wave whose pods outlived the drained queue: it suspends the Job (under
// Kueue, it has Kueue suspend it: kueue.go), so that the Job controller stops its pods,
// and marks it ended, so that the operator does not resume it.
// The Job keeps counting its pods as they stop; it is archived, with its final counts,
// once none is left.
func (r *QueueJobReconciler) endWave(ctx context.Context, s *scope, job *batchv1.Job) error {
	// The cache may not show yet that an earlier reconcile ended it: read it live, so the
	// wave is ended, and reported, once.
	live := &batchv1.Job{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(job), live); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("reading Job %s: %w", job.Name, err))
	}
	if live.UID != job.UID {
		return nil
	}
	if endedByOperator(live) {
		*job = *live
		return nil
	}
	job = live
	want := job.DeepCopy()
	// Under Kueue, marked ended first, then stopped through Kueue (kueue.go): a Job
	// suspended while Kueue admits it, Kueue would resume; and a stop cut short is
	// redone for an Ending wave (waveInputOf).
	byKueue := kueueManaged(job)
	if !byKueue {
		want.Spec.Suspend = ptr.To(true)
	}
	metav1.SetMetaDataAnnotation(&want.ObjectMeta, qjv1.AnnotationWaveEnded, s.now.UTC().Format(time.RFC3339))
	if err := r.Patch(ctx, want, client.MergeFrom(job)); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("ending Job %s: %w", job.Name, err))
	}
	logf.FromContext(ctx).Info("Ended a wave whose pods outlived the drained queue", "job", job.Name, "active", job.Status.Active)
	what := "workers"
	if job.Spec.Completions != nil {
		what = fmt.Sprintf("pods waiting for items (%d of %d completions succeeded; another consumer may have taken the rest)",
			job.Status.Succeeded, *job.Spec.Completions)
	}
	how := "suspended it"
	if byKueue {
		how = "had Kueue suspend it (its Workloads deactivated)"
	}
	r.announce(s, corev1.EventTypeNormal, qjv1.EventWaveEnded, "EndWave", fmt.Sprintf(
		"The queue was drained for %ds while Job %s still ran %d %s: %s to stop them; this is not a failure",
		s.qj.Spec.EffectiveDrainGracePeriodSeconds(), job.Name, job.Status.Active, what, how))
	for i := range s.jobs {
		if s.jobs[i].UID != want.UID {
			continue
		}
		s.jobs[i] = *want
		if byKueue { // a stop cut short here is redone for the Ending wave (waveInputOf)
			_, err := r.stopKueueJob(ctx, s, &s.jobs[i], nil)
			_, err = kueueRetry(s, err)
			return err
		}
	}
	return nil
}

// unfinishedPods counts the pods of a Job, as cached, that have not finished: the Job's
// status.terminating is only kept by clusters with the JobPodReplacementPolicy feature.
func (r *QueueJobReconciler) unfinishedPods(ctx context.Context, s *scope, job *batchv1.Job) (int, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(job.Namespace), client.MatchingLabels{
		qjv1.LabelQueueJob: s.qj.Name, qjv1.LabelWave: strconv.Itoa(int(jobWave(job)))}); err != nil {
		return 0, fmt.Errorf("listing the pods of Job %s: %w", job.Name, err)
	}
	n := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if metav1.IsControlledBy(p, job) && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			n++
		}
	}
	return n, nil
}

// holdCreates reports a create that only a person can fix and tries it again after
// CreateRetry, or at once after a spec change.
func (r *QueueJobReconciler) holdCreates(s *scope, p progressProblem) {
	s.problem = &p
	r.holds.hold(s.qj.UID, s.qj.Generation, s.now.Add(r.createRetry()), p)
	s.requeue(r.createRetry())
}

// seeLatestWave makes sure the scope holds the Job of the highest wave that the status or
// the cache names, before a wave is planned from it. The QueueJob and Job informers are
// independent: a reconcile can read status.waves=2, written right after creating q-2,
// from a cache that does not have q-2 yet; planned from the finished q-1, it would start
// q-3 beside q-2. So a missing latest Job is read from the API server, and only a Job
// confirmed gone (deleted by cleanup or by hand) lets a wave be planned without it.
func (r *QueueJobReconciler) seeLatestWave(ctx context.Context, s *scope) error {
	w := s.waves()
	if w == 0 {
		return nil
	}
	name := jobName(s.qj.Name, w)
	if slices.ContainsFunc(s.jobs, func(j batchv1.Job) bool { return j.Name == name }) {
		return nil
	}
	key := client.ObjectKeyFromObject(s.qj)
	if r.probes.goneWave(key, s.qj.UID) == w {
		return nil
	}
	job := &batchv1.Job{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: s.qj.Namespace, Name: name}, job)
	switch {
	case apierrors.IsNotFound(err):
		r.probes.markWaveGone(key, s.qj.UID, w)
		return nil
	case err != nil:
		return fmt.Errorf("reading Job %s of the latest wave: %w", name, err)
	case !metav1.IsControlledBy(job, s.qj):
		r.probes.markWaveGone(key, s.qj.UID, w)
		return nil
	}
	logf.FromContext(ctx).V(1).Info("The cache lacks the latest wave's Job; read it from the API server", "job", name)
	s.jobs = append(s.jobs, *job) // the highest wave: the order by wave holds
	return nil
}

// unfinishedLive reports whether the QueueJob, read from the API server, is still the one
// this reconcile read, not deleted and not finished. The QueueJob and Job informers are
// independent: a reconcile can see a finished wave and new items from a cache that does
// not have the status that completed the QueueJob yet, and deterministic Job names keep
// only a duplicate wave from starting, not the next one. So a wave after the first is
// created only once this read confirms it: a read per wave, not per probe.
func (r *QueueJobReconciler) unfinishedLive(ctx context.Context, s *scope) (bool, error) {
	live := &qjv1.QueueJob{}
	err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(s.qj), live)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading the QueueJob before starting a wave: %w", err)
	case live.UID != s.qj.UID || !live.DeletionTimestamp.IsZero() || isFinished(&live.Status):
		logf.FromContext(ctx).V(1).Info("The cache lags behind the QueueJob, which has finished or gone; started no wave")
		return false, nil
	case live.Generation != s.qj.Generation:
		// The spec changed (suspended, say) since the cache saw it: its watch event brings
		// the reconcile that decides on the new spec.
		logf.FromContext(ctx).V(1).Info("The cache lags behind the QueueJob's spec; started no wave")
		return false, nil
	}
	return true, nil
}

// createJob creates a Job, treating AlreadyExists as success: the cache had not seen the
// Job yet, and the deterministic name kept a duplicate from being made.
func (r *QueueJobReconciler) createJob(ctx context.Context, s *scope, job *batchv1.Job) error {
	log := logf.FromContext(ctx)
	if err := controllerutil.SetControllerReference(s.qj, job, r.Scheme); err != nil {
		return err
	}
	if p, wait := r.holds.held(s.qj.UID, s.qj.Generation, s.now); p != nil {
		s.problem = p
		s.requeue(wait)
		return nil
	}
	if s.waves() > 0 {
		if unfinished, err := r.unfinishedLive(ctx, s); !unfinished || err != nil {
			return err
		}
	}
	err := r.Create(ctx, job)
	switch {
	case err == nil:
		r.holds.release(s.qj.UID)
		log.Info("Created Job", "job", job.Name, "wave", jobWave(job), "completions", job.Spec.Completions, "parallelism", job.Spec.Parallelism)
		note := fmt.Sprintf("Created Job %s", job.Name)
		mode := "None"
		if s.qj.Spec.Queue != nil {
			mode = string(s.qj.Spec.EffectiveMode())
			note = fmt.Sprintf("Created Job %s for wave %d (%s): completions %s, parallelism %d, %d items ready",
				job.Name, jobWave(job), mode, countOrUnset(job.Spec.Completions), *job.Spec.Parallelism, s.probe.counts.Ready)
		}
		jobsCreated.WithLabelValues(mode).Inc()
		r.announce(s, corev1.EventTypeNormal, qjv1.EventJobCreated, "CreateJob", note)
		s.jobs = append(s.jobs, *job)
		return nil
	case apierrors.IsAlreadyExists(err):
		existing := &batchv1.Job{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(job), existing); err != nil {
			return client.IgnoreNotFound(err)
		}
		if !metav1.IsControlledBy(existing, s.qj) {
			// That Job carries no label of ours, so nothing tells when it goes: look again
			// on a slow schedule.
			msg := fmt.Sprintf("Job %s already exists and does not belong to this QueueJob: delete that Job (a QueueJob without a queue names its Job like itself, so the Job it replaces must go first), or rename this QueueJob", job.Name)
			if owner := metav1.GetControllerOf(existing); owner != nil && owner.Kind == "QueueJob" && owner.APIVersion == qjv1.GroupVersion.String() {
				msg = fmt.Sprintf("Job %s already exists and belongs to QueueJob %s (a QueueJob without a queue names its Job like itself, one with a queue names its waves <name>-<wave>): rename one of the two QueueJobs", job.Name, owner.Name)
			}
			r.holdCreates(s, progressProblem{reason: qjv1.ReasonJobCreateFailed, message: msg})
			return nil
		}
		log.V(1).Info("Job already exists", "job", job.Name)
		s.jobs = append(s.jobs, *existing)
		return nil
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		// The spec yields a Job the API server refuses: a spec change (which queues a
		// reconcile) or a person changing the cluster fixes that, not a hot retry.
		r.holdCreates(s, progressProblem{reason: qjv1.ReasonJobCreateFailed,
			message: fmt.Sprintf("The API server refused Job %s: %v; fix spec.jobTemplate", job.Name, err)})
		return nil
	default:
		s.problem = &progressProblem{reason: qjv1.ReasonJobCreateFailed,
			message: fmt.Sprintf("Creating Job %s failed, retrying: %v", job.Name, err)}
		return fmt.Errorf("creating Job %s: %w", job.Name, err)
	}
}

func countOrUnset(p *int32) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
