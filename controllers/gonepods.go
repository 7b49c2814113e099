package controllers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// The items a worker holds go back to the queue as soon as its pod is seen to end, not
// when their leases expire: every container of a wave gets its pod's UID
// (QUEUEJOB_POD_UID), a worker's session id ends in it (queue.NewSession), and a lease
// names its session. The manager remembers the UIDs of the wave pods it has seen end
// without succeeding (gonePods), and each probe's reaper returns the items whose holder
// names one of them (queue.GoneHolders). A pod has ended when the API server says so:
// its phase is Failed (its containers have all stopped, and none restarts), or it is
// gone. A watch's delete event alone does not prove a pod gone (the pod may merely no
// longer match the cache's label selector, or the event be a relist's guess): unless the
// pod's last state was terminal, the probe first reads it from the API server, and only
// a pod that is not there (or is another pod of that name) counts. A pod that succeeded
// holds nothing (its worker finished or gave back its items) and is not remembered; a
// pod whose container restarted in place keeps its leases: the new process has a new
// session, and the old session's items come back when their leases expire.
//
// The end of a running pod (deleted, evicted, OOM-killed, preempted) brings its
// QueueJob's next probe forward (probeStates.podEnded).

const (
	// goneTTL is how long a gone pod is remembered: longer than it takes a kubelet to
	// stop the containers of a pod deleted with --force (whose workers may lease items
	// until then), short enough that a pod force-deleted on a node cut off from the
	// cluster, which runs on, does not have the items it takes after that returned for
	// long (each such return costs the item an attempt, and another worker runs it too).
	goneTTL = 2 * time.Minute
	// maxGonePerQueueJob bounds the pods remembered per QueueJob; beyond it the oldest
	// are forgotten, and the items they may still hold come back when their leases
	// expire.
	maxGonePerQueueJob = 10000
)

// gonePods remembers, per QueueJob, the wave pods seen to end (by UID, with when), and
// the pods whose deletion was seen but not yet confirmed (suspects, by UID, with name).
type gonePods struct {
	mu        sync.Mutex
	m         map[types.NamespacedName]*goneSet
	lastSweep time.Time
}

// goneSet is what gonePods holds of one QueueJob.
type goneSet struct {
	at       map[types.UID]time.Time
	order    []types.UID // in the order they were added, for forgetting the oldest
	suspects map[types.UID]suspect
}

// suspect is a pod whose deletion was seen before it ended: its name, and when.
type suspect struct {
	name string
	at   time.Time
}

// set returns the QueueJob's set, made if missing; under the lock.
func (g *gonePods) set(key types.NamespacedName) *goneSet {
	if g.m == nil {
		g.m = map[types.NamespacedName]*goneSet{}
	}
	gs := g.m[key]
	if gs == nil {
		gs = &goneSet{at: map[types.UID]time.Time{}, suspects: map[types.UID]suspect{}}
		g.m[key] = gs
	}
	return gs
}

// add records that a pod of the QueueJob key ended at now; a pod already known keeps its
// time.
func (g *gonePods) add(key types.NamespacedName, uid types.UID, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.lastSweep) > goneTTL {
		g.sweep(now)
	}
	gs := g.set(key)
	delete(gs.suspects, uid)
	if _, ok := gs.at[uid]; ok {
		return
	}
	if len(gs.order) >= maxGonePerQueueJob {
		gs.forgetOldest()
	}
	gs.at[uid] = now
	gs.order = append(gs.order, uid)
}

// forgetOldest forgets the pod that ended first.
func (gs *goneSet) forgetOldest() {
	delete(gs.at, gs.order[0])
	gs.order[0] = ""
	if gs.order = gs.order[1:]; len(gs.order) == 0 {
		gs.order = nil // let the array go
	}
}

// suspect records that a pod's deletion was seen at now while it had not ended:
// confirmGone decides. Beyond maxGonePerQueueJob suspects, the pod's items come back when
// their leases expire.
func (g *gonePods) suspect(key types.NamespacedName, uid types.UID, name string, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if gs := g.set(key); len(gs.suspects) < maxGonePerQueueJob {
		gs.suspects[uid] = suspect{name, now}
	}
}

// sweep forgets the pods remembered for longer than goneTTL, of every QueueJob: also of
// QueueJobs that are gone, or no longer probed.
func (g *gonePods) sweep(now time.Time) {
	g.lastSweep = now
	for key, gs := range g.m {
		for len(gs.order) > 0 && now.Sub(gs.at[gs.order[0]]) > goneTTL {
			gs.forgetOldest()
		}
		for uid, sp := range gs.suspects {
			if now.Sub(sp.at) > goneTTL {
				delete(gs.suspects, uid) // never confirmed: its QueueJob is no longer probed
			}
		}
		if len(gs.order) == 0 && len(gs.suspects) == 0 {
			delete(g.m, key)
		}
	}
}

// holders says which sessions are of the QueueJob's gone pods, as of now; nil if it
// knows of none. It holds a copy: the caller may use it in another goroutine.
func (g *gonePods) holders(key types.NamespacedName, now time.Time) queue.GoneHolders {
	g.mu.Lock()
	defer g.mu.Unlock()
	gs := g.m[key]
	if gs == nil {
		return nil
	}
	uids := make(map[string]bool, len(gs.at))
	for uid, at := range gs.at {
		if now.Sub(at) <= goneTTL {
			uids[string(uid)] = true
		}
	}
	if len(uids) == 0 {
		return nil
	}
	return func(session string) bool {
		uid, ok := queue.SessionPod(session)
		return ok && uids[uid]
	}
}

// takeSuspects returns at most n of the QueueJob's suspects and forgets them.
func (g *gonePods) takeSuspects(key types.NamespacedName, n int) map[types.UID]suspect {
	g.mu.Lock()
	defer g.mu.Unlock()
	gs := g.m[key]
	if gs == nil || len(gs.suspects) == 0 {
		return nil
	}
	taken := map[types.UID]suspect{}
	for uid, sp := range gs.suspects {
		if len(taken) == n {
			break
		}
		taken[uid] = sp
		delete(gs.suspects, uid)
	}
	return taken
}

// forget forgets the QueueJob's pods: it is gone.
func (g *gonePods) forget(key types.NamespacedName) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.m, key)
}

// maxConfirms bounds the pods one probe reads from the API server (confirmGone); the
// rest wait for the next probe, which comes soon.
const maxConfirms = 50

// confirmGone reads the pods whose deletion the QueueJob's pod events reported while
// they had not ended, and records as gone those the API server no longer has (or has
// another pod by that name), or has as Failed. A pod still there and not ended (its label
// removed took it out of the cache's sight; a Job's finalizer keeps a deleted pod until
// its kubelet reports it terminal) is alive. It reports whether suspects are left: some
// could not be read, or were beyond maxConfirms.
func (r *QueueJobReconciler) confirmGone(ctx context.Context, key types.NamespacedName, now time.Time) (left bool) {
	suspects := r.gone.takeSuspects(key, maxConfirms)
	if len(suspects) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, r.probeTimeout())
	defer cancel()
	for uid, sp := range suspects {
		var pod corev1.Pod
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: sp.name}, &pod)
		switch {
		case apierrors.IsNotFound(err) || (err == nil && (pod.UID != uid || pod.Status.Phase == corev1.PodFailed)):
			r.gone.add(key, uid, now)
		case err != nil:
			logf.FromContext(ctx).V(1).Info("Cannot read a deleted pod; will look again", "pod", sp.name, "error", err.Error())
			r.gone.suspect(key, uid, sp.name, sp.at)
			left = true
		}
	}
	return left || r.gone.hasSuspects(key)
}

// hasSuspects reports whether the QueueJob has suspects.
func (g *gonePods) hasSuspects(key types.NamespacedName) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	gs := g.m[key]
	return gs != nil && len(gs.suspects) > 0
}

// podEnd is what a pod event says of a wave pod: whether it failed just now (failed:
// certain; a pod already Failed when the manager starts counts too), whether its deletion
// was seen before it ended (suspect: confirmGone decides), and whether it may have run
// until then (its QueueJob's next probe is then brought forward). A Failed pod seen again,
// or deleted, was recorded when it failed.
func podEnd(old, pod *corev1.Pod, deleted bool) (failed, suspect, ran bool) {
	switch {
	case deleted:
		return false, !podTerminal(pod), !podTerminal(pod)
	case pod.Status.Phase == corev1.PodFailed:
		return old == nil || old.Status.Phase != corev1.PodFailed, false, old != nil && old.Status.Phase != corev1.PodFailed
	default:
		return false, false, false
	}
}

// podEvents handles the events of wave pods: it records the pods that end (podEnd),
// brings forward the probe of a QueueJob whose running pod ended, and queues a reconcile
// of the pod's QueueJob for those events and the ones podWatchPredicate passes.
func (r *QueueJobReconciler) podEvents() handler.TypedEventHandler[client.Object, reconcile.Request] {
	pass := podWatchPredicate()
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	seen := func(old, obj client.Object, deleted, passed bool, q queue) {
		pod, ok := obj.(*corev1.Pod)
		name := obj.GetLabels()[qjv1.LabelQueueJob]
		if !ok || name == "" {
			return
		}
		key := types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}
		oldPod, _ := old.(*corev1.Pod)
		failed, suspect, ran := podEnd(oldPod, pod, deleted)
		switch {
		case failed:
			r.gone.add(key, pod.UID, r.Clock.Now())
		case suspect:
			r.gone.suspect(key, pod.UID, pod.Name, r.Clock.Now())
		}
		if ran {
			r.probes.podEnded(key)
		}
		if passed || ran {
			q.Add(reconcile.Request{NamespacedName: key})
		}
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, e crevent.CreateEvent, q queue) {
			seen(nil, e.Object, false, pass.Create(e), q)
		},
		UpdateFunc: func(_ context.Context, e crevent.UpdateEvent, q queue) {
			seen(e.ObjectOld, e.ObjectNew, false, pass.Update(e), q)
		},
		DeleteFunc: func(_ context.Context, e crevent.DeleteEvent, q queue) {
			seen(nil, e.Object, true, pass.Delete(e), q)
		},
		GenericFunc: func(_ context.Context, e crevent.GenericEvent, q queue) {
			seen(nil, e.Object, false, pass.Generic(e), q)
		},
	}
}
