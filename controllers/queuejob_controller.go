// Package controllers holds the QueueJob reconciler.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
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
	// PodStartGrace is how long every pod of a running Job must be blocked from starting
	// (an image that cannot be pulled, a missing Secret, a crash loop) before the
	// Progressing condition says so, and how long they must have started since before it
	// stops saying so; 20s if zero.
	PodStartGrace time.Duration

	// NoQueueWatch turns off the watch of queues that can be watched (a backend whose
	// Backend has NewWatcher: Redis lists and streams, through client-side caching's
	// tracking; NATS, through a subscription to the stream's subjects): new items are
	// then found by the probes alone.
	NoQueueWatch bool
	// AllowedAddresses is where the manager may connect to probe a queue
	// (--allowed-queue-addresses); the zero policy allows every address. A probe checks it
	// before it connects.
	AllowedAddresses backends.AddressPolicy

	probes    probeStates
	gates     serverGates
	forgets   limiter
	secrets   secretCache
	holds     createHolds
	podLooks  memo[podCreationLook]
	podStarts memo[podStartWatch]
	gone      gonePods
	limiter   *cadenceLimiter

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

// announce emits at once an event that reports an action already taken (a Job created, a
// lease reclaimed, an object deleted): the action cannot be undone, so its event must not
// wait for a status write that may fail.
func (r *QueueJobReconciler) announce(s *scope, eventType, reason, action, note string) {
	r.emit(s, []event{{eventType, reason, action, note}})
}

// Reconcile brings one QueueJob a step closer to its spec: list its Jobs, probe its
// queue, create the Job it lacks, keep the running Job in line with the spec, clean up,
// observe; then write the status once, if it changed, and emit the events of what changed.
//
// Its phases, in order, each in the file named for it:
//
//	listJobs          queuejob_controller.go  the Jobs the QueueJob controls
//	probeQueue        probe.go                count the queue, reap leases (in the background);
//	                  probestate.go           what the probes carry between reconciles
//	                  secrets.go              the Secrets a probe's connection needs
//	                  servergates.go          the per-server gates of probes
//	ensureWave        wave.go                 plan the wave (planWave, planner.go) and act on the plan
//	syncJob           syncjob.go              carry spec.suspend and the parallelism to the running Job
//	checkPodCreation  podcreation.go          why a running Job has no pod
//	checkPodStart     podstart.go             why a running Job's pods do not start
//	cleanup           cleanup.go              archive and delete what has expired
//	observe           status.go               the new status, one setter per condition
//	writeStatus       queuejob_controller.go  one status write, then the events
//
// The scope (scope.go) carries what one reconcile knows between them; the wave state
// (wavestate.go) says what the current wave is doing. The manager's cache (cache.go)
// holds only the QueueJobs' own Jobs and pods, trimmed, and metrics.go the metrics the
// phases update.
func (r *QueueJobReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, reterr error) {
	read := &qjv1.QueueJob{}
	if err := r.Get(ctx, req.NamespacedName, read); err != nil {
		if apierrors.IsNotFound(err) {
			r.forgetDeletedQueue(ctx, req.NamespacedName)
			r.podLooks.forget(req.NamespacedName)
			r.podStarts.forget(req.NamespacedName)
			r.gone.forget(req.NamespacedName)
			r.limiter.setCadence(req, 0)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !read.DeletionTimestamp.IsZero() {
		// The garbage collector deletes the Jobs (and so their pods) with it.
		r.forgetDeletedQueue(ctx, req.NamespacedName)
		r.podLooks.forget(req.NamespacedName)
		r.podStarts.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	s := &scope{read: read, qj: read.DeepCopy(), now: r.Clock.Now()}

	defer func() {
		if !s.listed {
			return // without the Jobs, the status cannot be computed
		}
		// Observe even after a failed phase, so that the status says what went wrong.
		s.reclaimed = r.probes.pendingReclaimed(req.NamespacedName, read.UID)
		s.qj.Status = observe(observeInputFrom(s))
		if err := r.writeStatus(ctx, s); err != nil && reterr == nil {
			reterr = err
		}
		if s.probeGivenBack && (res.RequeueAfter == 0 || res.RequeueAfter > time.Second) {
			res.RequeueAfter = time.Second // the counts the write lost, written again soon
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
	for _, phase := range []func(context.Context, *scope) error{r.probeQueue, r.ensureWave, r.syncJob, r.checkPodCreation, r.checkPodStart, r.cleanup} {
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
		if s.probeTaken {
			// The probe's counts were not recorded: the next reconcile takes them again
			// (or probes at once, if they were measured against another wave), instead
			// of leaving status.queue as it was until the next probe.
			r.probes.giveBack(client.ObjectKeyFromObject(s.qj), s.qj.UID, s.probe)
			s.probeGivenBack = true
		}
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("writing status: %w", err)
	}
	r.probes.reclaimedWritten(client.ObjectKeyFromObject(s.qj), s.qj.UID, s.reclaimed)
	r.emit(s, append(s.events, transitions(&s.read.Status, &s.qj.Status)...))
	return nil
}

func (r *QueueJobReconciler) emit(s *scope, evs []event) {
	for _, e := range evs {
		r.Recorder.Eventf(s.qj, nil, e.eventType, e.reason, e.action, "%s", e.note)
	}
}

// SetupWithManager registers the reconciler: it watches QueueJobs, the Jobs they own and
// the pods of those Jobs once they finish (for the pod TTL) or when what blocks them from
// starting comes, changes or goes (podStartBlock).
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
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, podUnfinishedKey, func(o client.Object) []string {
		pod, ok := o.(*corev1.Pod)
		ref := metav1.GetControllerOf(o)
		if !ok || ref == nil || !podUnfinished(pod) {
			return nil
		}
		return []string{string(ref.UID)}
	}); err != nil {
		return err
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
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
		Watches(&corev1.Pod{}, r.podEvents()).
		WatchesRawSource(wakes).
		Named("queuejob").
		Complete(r)
}

// podWatchPredicate passes the pod events a QueueJob acts on: a pod that has finished
// (the pod TTL), and a pod whose block from starting (podStartBlock) came, changed or went.
func podWatchPredicate() predicate.Funcs {
	finished := func(o client.Object) bool {
		pod, ok := o.(*corev1.Pod)
		return ok && podTerminal(pod)
	}
	blocked := func(o client.Object) string {
		if pod, ok := o.(*corev1.Pod); ok {
			return podStartBlockReason(pod)
		}
		return ""
	}
	return predicate.Funcs{
		CreateFunc: func(e crevent.CreateEvent) bool { return finished(e.Object) || blocked(e.Object) != "" },
		UpdateFunc: func(e crevent.UpdateEvent) bool {
			return finished(e.ObjectNew) || blocked(e.ObjectOld) != blocked(e.ObjectNew)
		},
		DeleteFunc:  func(e crevent.DeleteEvent) bool { return finished(e.Object) },
		GenericFunc: func(e crevent.GenericEvent) bool { return finished(e.Object) },
	}
}
