package main

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
)

// PodPolicy is what the status writer does with a new pod of a namespace.
type PodPolicy int

const (
	// PodPending leaves the pod as the API server made it.
	PodPending PodPolicy = iota
	// PodRun marks it Running and Ready, as a kubelet would once its container started.
	PodRun
	// PodSucceed marks it Succeeded, its container terminated with exit code 0.
	PodSucceed
)

// StatusWriter plays the kubelet for pods that no node runs: it writes the status a
// kubelet would, by the policy of the pod's namespace, and remembers when each pod
// finished.
type StatusWriter struct {
	cs       kubernetes.Interface
	queue    workqueue.TypedRateLimitingInterface[types.NamespacedName]
	informer cache.SharedIndexInformer

	mu       sync.Mutex
	policy   map[string]PodPolicy    // by namespace
	finished map[types.UID]time.Time // the finishedAt the writer gave a pod it marked Succeeded
}

func startStatusWriter(ctx context.Context, cs kubernetes.Interface, workers int) *StatusWriter {
	f := informers.NewSharedInformerFactory(cs, 0)
	w := &StatusWriter{
		cs:       cs,
		queue:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName]()),
		informer: f.Core().V1().Pods().Informer(),
		policy:   map[string]PodPolicy{},
		finished: map[types.UID]time.Time{},
	}
	enqueue := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok && w.wants(p) {
			w.queue.Add(types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
		}
	}
	_, _ = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, n any) { enqueue(n) },
	})
	go w.informer.Run(ctx.Done())
	for range workers {
		go func() {
			for w.work(ctx) {
			}
		}()
	}
	go func() { <-ctx.Done(); w.queue.ShutDown() }()
	cache.WaitForCacheSync(ctx.Done(), w.informer.HasSynced)
	return w
}

// SetPolicy sets what happens to the pods of a namespace from now on.
func (w *StatusWriter) SetPolicy(ns string, p PodPolicy) {
	w.mu.Lock()
	w.policy[ns] = p
	w.mu.Unlock()
}

// Finished is when the writer marked the pod Succeeded.
func (w *StatusWriter) Finished(uid types.UID) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.finished[uid]
	return t, ok
}

func (w *StatusWriter) wants(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	w.mu.Lock()
	pol := w.policy[p.Namespace]
	w.mu.Unlock()
	switch pol {
	case PodRun:
		return p.Status.Phase == "" || p.Status.Phase == corev1.PodPending
	case PodSucceed:
		return p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
	}
	return false
}

func (w *StatusWriter) work(ctx context.Context) bool {
	key, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(key)
	if err := w.write(ctx, key); err != nil && !apierrors.IsNotFound(err) {
		w.queue.AddRateLimited(key)
		return true
	}
	w.queue.Forget(key)
	return true
}

func (w *StatusWriter) write(ctx context.Context, key types.NamespacedName) error {
	obj, ok, err := w.informer.GetStore().GetByKey(key.Namespace + "/" + key.Name)
	if err != nil || !ok {
		return err
	}
	pod := obj.(*corev1.Pod)
	if !w.wants(pod) {
		return nil
	}
	w.mu.Lock()
	pol := w.policy[pod.Namespace]
	w.mu.Unlock()
	pod = pod.DeepCopy()
	// In whole seconds, as the API server stores it: the TTLs count from these times.
	now := metav1.NewTime(time.Now()).Rfc3339Copy()
	pod.Status.StartTime = &now
	pod.Status.HostIP, pod.Status.PodIP = "192.0.2.10", "10.88.0.10"
	var statuses []corev1.ContainerStatus
	for _, c := range pod.Spec.Containers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: "sha256:0000", ContainerID: "containerd://" + string(pod.UID)}
		if pol == PodSucceed {
			cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}
		} else {
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: now}
			cs.Ready, cs.Started = true, ptr.To(true)
		}
		statuses = append(statuses, cs)
	}
	pod.Status.ContainerStatuses = statuses
	ready := corev1.ConditionTrue
	pod.Status.Phase = corev1.PodRunning
	if pol == PodSucceed {
		pod.Status.Phase, ready = corev1.PodSucceeded, corev1.ConditionFalse
	}
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: ready, LastTransitionTime: now},
	}
	if _, err := w.cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		return err
	}
	if pol == PodSucceed {
		w.mu.Lock()
		w.finished[pod.UID] = now.Time
		w.mu.Unlock()
	}
	return nil
}

// Count is how many pods of a namespace the writer has seen in phase.
func (w *StatusWriter) Count(ns string, phase corev1.PodPhase) int {
	objs, err := w.informer.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	if err != nil {
		return 0
	}
	n := 0
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && p.Status.Phase == phase {
			n++
		}
	}
	return n
}
