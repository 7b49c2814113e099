// Package controllers holds the QueueJob reconciler.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/registry"
)

// jobOwnerKey indexes Jobs by the name of the QueueJob that controls them.
const jobOwnerKey = ".metadata.controller.queuejob"

// podFinishedKey indexes the finished, counted pods (those the pod TTL may delete) by the
// name of their QueueJob, so that cleanup reads those and not every pod of a large wave.
const podFinishedKey = ".status.finished.queuejob"

// QueueJobReconciler runs QueueJobs: it creates their Jobs, mirrors the Jobs' progress
// into the QueueJob's status and deletes finished pods and Jobs after their TTL.
type QueueJobReconciler struct {
	client.Client
	// APIReader reads from the API server, bypassing the cache; cleanup re-reads every
	// object from it before deleting it.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	// Queues maps spec.queue to its backend; registry.Default() if nil.
	Queues *backends.Registry
	// ProbeTimeout bounds one probe of a queue, lease reaping included; 10s if zero.
	ProbeTimeout time.Duration
	// MaxConcurrentReconciles is how many QueueJobs are reconciled at once; 4 if zero.
	// Probes run beside the reconciles (see probeQueue): a slow queue holds none up.
	MaxConcurrentReconciles int
	// CreateRetry is how long a Job create that only a person can fix waits before it is
	// tried again (unless the spec changes first); a minute if zero.
	CreateRetry time.Duration
	// SecretRefresh is how long the values of the Secrets a QueueJob references are reused
	// before they are read again from the API server; a minute if zero. They are read again
	// at once when the QueueJob changes and after a probe that failed to connect or log in,
	// so a rotated password takes effect within a probe or two.
	SecretRefresh time.Duration

	// NoQueueWatch turns off the watch of queues that can be watched (Redis, through
	// client-side caching's tracking): new items are then found by the probes alone.
	NoQueueWatch bool
	// AllowedAddresses is where the manager may connect to probe a queue
	// (--allowed-queue-addresses); the zero policy allows every address. A probe checks it
	// before it connects.
	AllowedAddresses backends.AddressPolicy

	pool     connPool
	gates    serverGates
	secrets  secretCache
	holds    createHolds
	podLooks podCreationLooks
	limiter  *cadenceLimiter

	watchMu        sync.Mutex
	watchers       map[string]backends.Watcher
	watchersClosed bool
	wakeQueue      workqueue.TypedRateLimitingInterface[reconcile.Request]
	// running is the controller's context once it has started: the probes run in it.
	running context.Context
}

// runContext is the context probes run in: the controller's, once it has started.
func (r *QueueJobReconciler) runContext() context.Context {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	if r.running == nil {
		return context.Background()
	}
	return r.running
}

func (r *QueueJobReconciler) createRetry() time.Duration {
	if r.CreateRetry == 0 {
		return defaultCreateRetry
	}
	return r.CreateRetry
}

func (r *QueueJobReconciler) secretRefresh() time.Duration {
	if r.SecretRefresh == 0 {
		return defaultSecretRefresh
	}
	return r.SecretRefresh
}

func (r *QueueJobReconciler) registry() *backends.Registry {
	if r.Queues == nil {
		return registry.Default()
	}
	return r.Queues
}

func (r *QueueJobReconciler) probeTimeout() time.Duration {
	if r.ProbeTimeout == 0 {
		return 10 * time.Second
	}
	return r.ProbeTimeout
}

// +kubebuilder:rbac:groups=batch.queuejob.io,resources=queuejobs,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=batch.queuejob.io,resources=queuejobs/status,verbs=patch
// +kubebuilder:rbac:groups=batch.queuejob.io,resources=queuejobs/finalizers,verbs=update
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=list

// scope gathers what one reconcile knows and decides.
type scope struct {
	// read is the QueueJob as read at the start; qj is the working copy whose status
	// this reconcile rewrites.
	read, qj *qjv1.QueueJob
	now      time.Time
	// jobs are the Jobs this QueueJob controls, sorted by wave; listed says they were read.
	jobs   []batchv1.Job
	listed bool
	// archive are the Jobs this reconcile records for deletion (their counts go into
	// status.archived; the next reconcile deletes them).
	archive []*batchv1.Job
	probe   *probeResult
	plan    *wavePlan
	// writesBefore is how many writes to the queue had been heard when the probe began.
	writesBefore uint64
	problem      *progressProblem
	events       []event
	// reclaimed is how many reclaimed leases this reconcile's status adds to
	// status.queue.reclaimed: those of its own probe and those whose status write failed.
	reclaimed int64
	// requeueAfter is the smallest positive wait any phase asked for.
	requeueAfter time.Duration
}

func (s *scope) requeue(d time.Duration) {
	if d > 0 && (s.requeueAfter == 0 || d < s.requeueAfter) {
		s.requeueAfter = d
	}
}

// event queues an event that reports a decision the status records: it is emitted once
// that status has been written (a decision whose status write fails is made again by the
// next reconcile, and reported then).
func (s *scope) event(eventType, reason, action, note string) {
	s.events = append(s.events, event{eventType, reason, action, note})
}

// announce emits at once an event that reports an action already taken (a Job created, a
// lease reclaimed, an object deleted): the action cannot be undone, so its event must not
// wait for a status write that may fail.
func (r *QueueJobReconciler) announce(s *scope, eventType, reason, action, note string) {
	r.emit(s, []event{{eventType, reason, action, note}})
}

// archivedAsRead reports whether the status as read already archives the Job: only such
// Jobs may be deleted.
func (s *scope) archivedAsRead(name string) bool {
	return s.read.Status.Archived != nil && slices.Contains(s.read.Status.Archived.Jobs, name)
}

func (s *scope) archived(name string) bool {
	return s.archivedAsRead(name) || slices.ContainsFunc(s.archive, func(j *batchv1.Job) bool { return j.Name == name })
}

// archiveJob records a Job for deletion.
func (s *scope) archiveJob(job *batchv1.Job) {
	if !s.archived(job.Name) {
		s.archive = append(s.archive, job)
	}
}

// current is the latest Job that is not archived, nil if none.
func (s *scope) current() *batchv1.Job {
	for i := len(s.jobs) - 1; i >= 0; i-- {
		if !s.archived(s.jobs[i].Name) {
			return &s.jobs[i]
		}
	}
	return nil
}

// waves is how many waves have been started, by the status and by the Jobs.
func (s *scope) waves() int32 {
	w := s.read.Status.Waves
	for i := range s.jobs {
		w = max(w, jobWave(&s.jobs[i]))
	}
	return w
}

// Reconcile brings one QueueJob a step closer to its spec: list its Jobs, create the Job
// it lacks, keep the running Job in line with the spec, observe, clean up; then write the
// status once, if it changed, and emit the events of what changed.
func (r *QueueJobReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, reterr error) {
	read := &qjv1.QueueJob{}
	if err := r.Get(ctx, req.NamespacedName, read); err != nil {
		if apierrors.IsNotFound(err) {
			r.forgetDeletedQueue(ctx, req.NamespacedName)
			r.podLooks.forget(req.NamespacedName)
			r.limiter.setCadence(req, 0)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !read.DeletionTimestamp.IsZero() {
		// The garbage collector deletes the Jobs (and so their pods) with it.
		r.forgetDeletedQueue(ctx, req.NamespacedName)
		r.podLooks.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	s := &scope{read: read, qj: read.DeepCopy(), now: r.Clock.Now()}

	defer func() {
		if !s.listed {
			return // without the Jobs, the status cannot be computed
		}
		// Observe even after a failed phase, so that the status says what went wrong.
		s.reclaimed = r.pool.pendingReclaimed(req.NamespacedName, read.UID)
		s.qj.Status = observe(observeInputFrom(s))
		if err := r.writeStatus(ctx, s); err != nil && reterr == nil {
			reterr = err
		}
		if reterr != nil {
			// Retried with backoff, but no later than the QueueJob's own cadence.
			r.limiter.setCadence(req, s.requeueAfter)
			res = ctrl.Result{}
		} else {
			r.limiter.setCadence(req, 0)
		}
	}()

	if err := r.listJobs(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	// Each later phase runs whatever the others did: each decides only from what it sees
	// (ensureWave plans nothing without a probe), and one failing phase, a refused pod
	// delete say, must not keep the others from their work.
	var errs []error
	for _, phase := range []func(context.Context, *scope) error{r.probeQueue, r.ensureWave, r.syncJob, r.checkPodCreation, r.cleanup} {
		errs = append(errs, phase(ctx, s))
	}
	if err := errors.Join(errs...); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: s.requeueAfter}, nil
}

// listJobs finds the Jobs this QueueJob controls.
func (r *QueueJobReconciler) listJobs(ctx context.Context, s *scope) error {
	var list batchv1.JobList
	if err := r.List(ctx, &list, client.InNamespace(s.qj.Namespace), client.MatchingFields{jobOwnerKey: s.qj.Name}); err != nil {
		return fmt.Errorf("listing Jobs: %w", err)
	}
	for i := range list.Items {
		if metav1.IsControlledBy(&list.Items[i], s.qj) {
			s.jobs = append(s.jobs, list.Items[i])
		}
	}
	slices.SortFunc(s.jobs, func(a, b batchv1.Job) int { return int(jobWave(&a) - jobWave(&b)) })
	s.listed = true
	return nil
}

// ensureWave creates the Job the QueueJob lacks: for a QueueJob without a queue its one
// Job, for a queue-driven one the next wave that planWave asks for. It decides nothing
// after a failed probe.
func (r *QueueJobReconciler) ensureWave(ctx context.Context, s *scope) error {
	if isFinished(&s.read.Status) {
		return nil
	}
	if s.qj.Spec.Queue == nil {
		if s.current() != nil {
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
	kind, err := r.registry().For(s.qj.Spec.Queue)
	if err != nil {
		return err
	}
	in := waveInput{spec: &s.qj.Spec, current: s.current(), waves: s.waves(), counts: *s.probe.counts, now: s.now,
		deadLetteredAtStart: deadLetteredAtStart(s.read.Status.Queue, s.jobs, *s.probe.counts),
		deadLetterQueue:     kind.DeadLetterQueueOf(s.qj.Spec.Queue), name: s.qj.Name}
	in.failedInARow, _ = failedInARow(&s.read.Status, s.jobs)
	if in.current != nil && waveEnded(in.current) {
		n, err := r.unfinishedPods(ctx, s, in.current)
		if err != nil {
			return err
		}
		in.endingPods = n
	}
	if q := s.read.Status.Queue; q != nil && q.DrainedSince != nil {
		in.drainedSince = &q.DrainedSince.Time
	}
	plan := planWave(in)
	s.plan = &plan
	s.requeue(plan.requeue)
	waiting := plan.create == nil && plan.waiting != nil && plan.waiting.reason == qjv1.ReasonWaitingForItems
	if r.pool.armWake(client.ObjectKeyFromObject(s.qj), s.qj.UID, waiting, s.writesBefore) {
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
	env := []corev1.EnvVar{
		{Name: queue.EnvBackend, Value: kind.Name},
		{Name: queue.EnvName, Value: s.qj.Name},
		{Name: queue.EnvMode, Value: string(s.qj.Spec.EffectiveMode())},
	}
	if s.qj.Spec.EffectiveMode() == qjv1.ModePerItem {
		// A worker takes this many items and exits: the wave's completions assume it.
		env = append(env, corev1.EnvVar{Name: queue.EnvItemsPerPod, Value: strconv.Itoa(int(s.qj.Spec.EffectiveItemsPerPod()))})
	}
	env = append(env, kind.WorkerEnv(s.qj.Spec.Queue)...)
	job := desiredJob(s.qj, s.waves()+1, *plan.create, env)
	if !in.counts.DeadLetteredUnknown {
		metav1.SetMetaDataAnnotation(&job.ObjectMeta, qjv1.AnnotationDeadLetteredAtStart, strconv.FormatInt(in.deadLetteredAtStart, 10))
	}
	return r.createJob(ctx, s, job)
}

// endWave ends a wave whose pods outlived the drained queue: it suspends the Job, so
// that the Job controller stops its pods, and marks it ended, so that nothing resumes it.
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
	if waveEnded(live) {
		*job = *live
		return nil
	}
	job = live
	want := job.DeepCopy()
	want.Spec.Suspend = ptr.To(true)
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
	r.announce(s, corev1.EventTypeNormal, qjv1.EventWaveEnded, "EndWave", fmt.Sprintf(
		"The queue was drained for %ds while Job %s still ran %d %s: suspended it to stop them; this is not a failure",
		s.qj.Spec.EffectiveDrainGracePeriodSeconds(), job.Name, job.Status.Active, what))
	for i := range s.jobs {
		if s.jobs[i].UID == want.UID {
			s.jobs[i] = *want
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
	if r.pool.goneWave(key, s.qj.UID) == w {
		return nil
	}
	job := &batchv1.Job{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: s.qj.Namespace, Name: name}, job)
	switch {
	case apierrors.IsNotFound(err):
		r.pool.markWaveGone(key, s.qj.UID, w)
		return nil
	case err != nil:
		return fmt.Errorf("reading Job %s of the latest wave: %w", name, err)
	case !metav1.IsControlledBy(job, s.qj):
		r.pool.markWaveGone(key, s.qj.UID, w)
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
			r.holdCreates(s, progressProblem{reason: qjv1.ReasonJobCreateError, message: msg})
			return nil
		}
		log.V(1).Info("Job already exists", "job", job.Name)
		s.jobs = append(s.jobs, *existing)
		return nil
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		// The spec yields a Job the API server refuses: a spec change (which queues a
		// reconcile) or a person changing the cluster fixes that, not a hot retry.
		r.holdCreates(s, progressProblem{reason: qjv1.ReasonJobCreateError,
			message: fmt.Sprintf("The API server refused Job %s: %v; fix spec.jobTemplate", job.Name, err)})
		return nil
	default:
		s.problem = &progressProblem{reason: qjv1.ReasonJobCreateError,
			message: fmt.Sprintf("Creating Job %s failed, retrying: %v", job.Name, err)}
		return fmt.Errorf("creating Job %s: %w", job.Name, err)
	}
}

// syncJob carries spec.suspend and the parallelism over to the running Job; the rest of
// the spec applies to the next wave. It changes a field only when the operator's own wish
// for it changed since it last set it (recorded in an annotation on the Job), never
// because the Job differs: a queueing controller such as Kueue suspends a Job until it is
// admitted, and may change its parallelism when it admits part of it. A WorkerPool's
// parallelism grows with its queue up to the template's but never shrinks on its own:
// fewer workers would mean killing some.
func (r *QueueJobReconciler) syncJob(ctx context.Context, s *scope) error {
	job := s.current()
	if job == nil || jobFinished(job) != nil || job.DeletionTimestamp != nil || waveEnded(job) {
		return nil
	}
	want := job.DeepCopy()
	suspend := strconv.FormatBool(s.qj.Spec.IsSuspended())
	if job.Annotations[qjv1.AnnotationSuspend] != suspend {
		want.Spec.Suspend = ptr.To(s.qj.Spec.IsSuspended())
		metav1.SetMetaDataAnnotation(&want.ObjectMeta, qjv1.AnnotationSuspend, suspend)
	}
	applied := appliedParallelism(job)
	if p := desiredParallelism(&s.qj.Spec, job, applied, s.probe); p != applied {
		want.Spec.Parallelism = ptr.To(p)
		metav1.SetMetaDataAnnotation(&want.ObjectMeta, qjv1.AnnotationParallelism, strconv.Itoa(int(p)))
	}
	if equality.Semantic.DeepEqual(job, want) {
		return nil
	}
	// With an optimistic lock: from a cache that has not seen the operator's own last
	// patch, an unlocked patch would set again what another controller changed since.
	err := r.Patch(ctx, want, client.MergeFromWithOptions(job, client.MergeFromWithOptimisticLock{}))
	switch {
	case apierrors.IsConflict(err):
		logf.FromContext(ctx).V(1).Info("The Job changed since the cache saw it; will look again", "job", job.Name)
		s.requeue(time.Second)
		return nil
	case err != nil:
		return client.IgnoreNotFound(fmt.Errorf("updating Job %s: %w", job.Name, err))
	}
	logf.FromContext(ctx).Info("Updated Job", "job", job.Name, "suspend", ptr.Deref(want.Spec.Suspend, false), "parallelism", ptr.Deref(want.Spec.Parallelism, 1))
	*job = *want
	return nil
}

// appliedParallelism is the parallelism the operator last set on the Job.
func appliedParallelism(job *batchv1.Job) int32 {
	if v, err := strconv.ParseInt(job.Annotations[qjv1.AnnotationParallelism], 10, 32); err == nil {
		return int32(v)
	}
	return ptr.Deref(job.Spec.Parallelism, 1)
}

// desiredParallelism is the parallelism the running Job should have now, given what the
// operator last set on it.
func desiredParallelism(spec *qjv1.QueueJobSpec, job *batchv1.Job, applied int32, probe *probeResult) int32 {
	limit := spec.EffectiveParallelism()
	switch {
	case spec.Queue == nil:
		return limit
	case job.Spec.Completions != nil: // PerItem: no more than its pods
		return min(limit, *job.Spec.Completions)
	case probe != nil && probe.counts != nil: // WorkerPool
		grown := workerPoolSizing(probe.counts.Ready, probe.counts.InFlight, limit).parallelism
		return min(limit, max(applied, grown))
	default:
		return min(limit, applied)
	}
}

func countOrUnset(p *int32) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// writeStatus writes the status if it changed, with an optimistic lock: a conflict means
// the cache is behind, and the watch event that will bring it up to date queues another
// reconcile, so it is not an error. Events are emitted only after the status they report
// has been written.
func (r *QueueJobReconciler) writeStatus(ctx context.Context, s *scope) error {
	if equality.Semantic.DeepEqual(s.read.Status, s.qj.Status) {
		r.emit(s, s.events)
		return nil
	}
	err := r.Status().Patch(ctx, s.qj, client.MergeFromWithOptions(s.read, client.MergeFromWithOptimisticLock{}))
	switch {
	case apierrors.IsConflict(err):
		logf.FromContext(ctx).V(1).Info("Status write conflicted; the cache is behind, will reconcile again")
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("writing status: %w", err)
	}
	r.pool.reclaimedWritten(client.ObjectKeyFromObject(s.qj), s.qj.UID, s.reclaimed)
	r.emit(s, append(s.events, transitions(&s.read.Status, &s.qj.Status)...))
	return nil
}

func (r *QueueJobReconciler) emit(s *scope, evs []event) {
	for _, e := range evs {
		r.Recorder.Eventf(s.qj, nil, e.eventType, e.reason, e.action, "%s", e.note)
	}
}

// SetupWithManager registers the reconciler: it watches QueueJobs, the Jobs they own and
// the pods of those Jobs once they finish (for the pod TTL).
func (r *QueueJobReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &batchv1.Job{}, jobOwnerKey, func(o client.Object) []string {
		ref := metav1.GetControllerOf(o)
		if ref == nil || ref.APIVersion != qjv1.GroupVersion.String() || ref.Kind != "QueueJob" {
			return nil
		}
		return []string{ref.Name}
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, podFinishedKey, func(o client.Object) []string {
		pod, ok := o.(*corev1.Pod)
		if !ok || pod.Labels[qjv1.LabelQueueJob] == "" {
			return nil
		}
		if _, finished := podFinishTime(pod); !finished {
			return nil
		}
		return []string{pod.Labels[qjv1.LabelQueueJob]}
	}); err != nil {
		return err
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	podToQueueJob := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		name := o.GetLabels()[qjv1.LabelQueueJob]
		if name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
	})
	finishedPod := predicate.NewPredicateFuncs(func(o client.Object) bool {
		pod, ok := o.(*corev1.Pod)
		return ok && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed)
	})
	r.limiter = newCadenceLimiter()
	workers := r.MaxConcurrentReconciles
	if workers == 0 {
		workers = 4
	}
	// Wakes from queue watches go straight into the controller's queue.
	wakes := source.Func(func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		r.watchMu.Lock()
		r.wakeQueue, r.running = q, ctx
		r.watchMu.Unlock()
		go func() {
			<-ctx.Done()
			r.closeWatchers()
		}()
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.TypedOptions[reconcile.Request]{MaxConcurrentReconciles: workers, RateLimiter: r.limiter}).
		For(&qjv1.QueueJob{}).
		Owns(&batchv1.Job{}).
		Watches(&corev1.Pod{}, podToQueueJob, builder.WithPredicates(finishedPod)).
		WatchesRawSource(wakes).
		Named("queuejob").
		Complete(r)
}
