package controllers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// The items a worker holds go back to the queue as soon as its pod is seen to end, not
// when their leases expire: every container of a wave gets its pod's UID
// (QUEUEJOB_POD_UID), a worker's session id ends in it (queue.NewSession), and a lease
// names its session. The manager remembers the UIDs of the wave pods it has seen end
// (gonePods), and each probe's reaper returns the items whose holder names one of them
// (queue.GoneHolders). A pod has ended when the API server says so, never when it is
// merely missing from the cache: its deletion was seen, or its phase is Succeeded or
// Failed (its containers have all stopped, and none restarts). A pod whose container
// restarted in place keeps its leases: the new process has a new session, and the old
// session's items come back when their leases expire.
//
// The end of a pod that did not succeed (deleted while it ran, evicted, OOM-killed,
// preempted) makes its QueueJob's probe due at once; a pod that succeeded holds nothing
// (its worker finished or gave back its items), and is reaped at the next probe.

const (
	// goneTTL is how long a gone pod is remembered: longer than it takes a kubelet to
	// stop the containers of a pod deleted with --force (whose workers may lease items
	// until then).
	goneTTL = 10 * time.Minute
	// maxGonePerQueueJob bounds the pods remembered per QueueJob; beyond it the oldest
	// are forgotten, and the items they may still hold come back when their leases
	// expire.
	maxGonePerQueueJob = 10000
)

// gonePods remembers, per QueueJob, the wave pods seen to end, by UID, with when.
type gonePods struct {
	mu        sync.Mutex
	m         map[types.NamespacedName]map[types.UID]time.Time
	lastSweep time.Time
}

// add records that a pod of the QueueJob key ended at now.
func (g *gonePods) add(key types.NamespacedName, uid types.UID, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.lastSweep) > goneTTL {
		g.sweep(now)
	}
	if g.m == nil {
		g.m = map[types.NamespacedName]map[types.UID]time.Time{}
	}
	pods := g.m[key]
	if pods == nil {
		pods = map[types.UID]time.Time{}
		g.m[key] = pods
	}
	if _, ok := pods[uid]; !ok && len(pods) >= maxGonePerQueueJob {
		forgetOldest(pods)
	}
	pods[uid] = now
}

// sweep forgets the pods remembered for longer than goneTTL, of every QueueJob: also of
// QueueJobs that are gone, or no longer probed.
func (g *gonePods) sweep(now time.Time) {
	g.lastSweep = now
	for key, pods := range g.m {
		for uid, at := range pods {
			if now.Sub(at) > goneTTL {
				delete(pods, uid)
			}
		}
		if len(pods) == 0 {
			delete(g.m, key)
		}
	}
}

// forgetOldest forgets the pod seen to end first.
func forgetOldest(pods map[types.UID]time.Time) {
	var oldest types.UID
	var at time.Time
	for uid, t := range pods {
		if oldest == "" || t.Before(at) {
			oldest, at = uid, t
		}
	}
	delete(pods, oldest)
}

// holders says which sessions are of the QueueJob's gone pods, as of now; nil if it
// knows of none. It holds a copy: the caller may use it in another goroutine.
func (g *gonePods) holders(key types.NamespacedName, now time.Time) queue.GoneHolders {
	g.mu.Lock()
	defer g.mu.Unlock()
	uids := make(map[string]bool, len(g.m[key]))
	for uid, at := range g.m[key] {
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

// forget forgets the QueueJob's pods: it is gone.
func (g *gonePods) forget(key types.NamespacedName) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.m, key)
}

// podEnd is what a pod event says of a wave pod's end: whether it has ended, and whether
// it ended without succeeding just now (its QueueJob's probe is then due at once).
func podEnd(old, pod *corev1.Pod, deleted bool) (ended, abrupt bool) {
	switch {
	case deleted:
		return true, !podTerminal(pod)
	case pod.Status.Phase == corev1.PodFailed:
		return true, old != nil && old.Status.Phase != corev1.PodFailed
	default:
		return pod.Status.Phase == corev1.PodSucceeded, false
	}
}

// podTerminal reports whether a pod's phase is Succeeded or Failed.
func podTerminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// podEvents handles the events of wave pods: it records the pods that end (podEnd), makes
// the probe of a QueueJob whose pod ended abruptly due at once, and queues a reconcile of
// the pod's QueueJob for those events and the ones podWatchPredicate passes.
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
		ended, abrupt := podEnd(oldPod, pod, deleted)
		if ended {
			r.gone.add(key, pod.UID, r.Clock.Now())
		}
		if abrupt {
			r.probes.makeDue(key)
		}
		if passed || abrupt {
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
