package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

var scaledJobGVK = schema.GroupVersionKind{Group: "keda.sh", Version: "v1alpha1", Kind: "ScaledJob"}

func newClient(cp *ControlPlane) (client.Client, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := qjv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return client.New(cp.Config, client.Options{Scheme: s})
}

func createNamespace(ctx context.Context, c client.Client, name string) error {
	err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// podTemplate is a worker pod as a user would write it: one container, an image, a
// command, a few variables and resources. Nothing runs it.
func podTemplate() corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		Containers: []corev1.Container{{
			Name:    "worker",
			Image:   "ghcr.io/queuejob/queuejob-worker:0.1.0",
			Command: []string{"queuejob-worker", "--", "sh", "-c", "echo $ITEM"},
			Env:     []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}, {Name: "MODE", Value: "bench"}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: mustQty("10m"), corev1.ResourceMemory: mustQty("16Mi")},
			},
		}},
	}}
}

// queueJob is a PerItem QueueJob on a Redis list; interval 0 keeps the default probe
// interval.
func queueJob(ns, name, redisAddr, key string, interval int32) *qjv1.QueueJob {
	return queueJobOn(ns, name, redisList(redisAddr)(key), interval)
}

// redisList is the source of a Redis list of a server, by key.
func redisList(addr string) func(key string) qjv1.QueueSource {
	return func(key string) qjv1.QueueSource {
		return qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: addr, Key: key}}
	}
}

// queueJobOn is a PerItem QueueJob on the queue src; interval 0 keeps the default probe
// interval.
func queueJobOn(ns, name string, src qjv1.QueueSource, interval int32) *qjv1.QueueJob {
	qj := &qjv1.QueueJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: qjv1.QueueJobSpec{
			Queue:       &src,
			Mode:        qjv1.ModePerItem,
			JobTemplate: qjv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: podTemplate()}},
		},
	}
	if interval > 0 {
		qj.Spec.ProbeIntervalSeconds = ptr.To(interval)
	}
	return qj
}

// scaledJob is KEDA's ScaledJob with a Redis list trigger at its defaults (pollingInterval
// 30 s) or with interval s.
func scaledJob(ns, name, redisAddr, key string, interval int32) *unstructured.Unstructured {
	tmpl, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ptr.To(podTemplate()))
	if err != nil {
		panic(err)
	}
	delete(tmpl, "metadata")
	spec := map[string]any{
		"jobTargetRef": map[string]any{"template": tmpl},
		"triggers": []any{map[string]any{
			"type": "redis",
			"metadata": map[string]any{
				"address":    redisAddr,
				"listName":   key,
				"listLength": "1",
			},
		}},
	}
	if interval > 0 {
		spec["pollingInterval"] = int64(interval)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(scaledJobGVK)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// createAll creates objects with a few creators at once.
func createAll(ctx context.Context, c client.Client, objs []client.Object) error {
	const creators = 16
	ch := make(chan client.Object)
	errs := make(chan error, creators)
	var wg sync.WaitGroup
	for range creators {
		wg.Go(func() {
			for o := range ch {
				if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
					errs <- fmt.Errorf("create %s: %w", o.GetName(), err)
					return
				}
			}
		})
	}
	var err error
send:
	for _, o := range objs {
		select {
		case ch <- o:
		case err = <-errs:
			break send
		}
	}
	close(ch)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// JobWatch records when this process first saw each Job of a namespace, by the object
// that owns it, when it first saw it Complete, and when its deletion began.
type JobWatch struct {
	mu       sync.Mutex
	created  map[string]time.Time // by owner name
	complete map[string]time.Time // by Job name
	deleted  map[string]time.Time // by Job name
	owner    map[string]string    // Job name → owner name
}

func watchJobs(ctx context.Context, cs kubernetes.Interface, ns string) *JobWatch {
	w := &JobWatch{created: map[string]time.Time{}, complete: map[string]time.Time{}, deleted: map[string]time.Time{}, owner: map[string]string{}}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := f.Batch().V1().Jobs().Informer()
	see := func(obj any) {
		now := time.Now()
		j, ok := obj.(*batchv1.Job)
		if !ok {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(j.OwnerReferences) > 0 {
			o := j.OwnerReferences[0].Name
			w.owner[j.Name] = o
			if _, seen := w.created[o]; !seen {
				w.created[o] = now
			}
		}
		for _, c := range j.Status.Conditions {
			if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
				if _, seen := w.complete[j.Name]; !seen {
					w.complete[j.Name] = now
				}
			}
		}
		if j.DeletionTimestamp != nil {
			if _, seen := w.deleted[j.Name]; !seen {
				w.deleted[j.Name] = now
			}
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    see,
		UpdateFunc: func(_, n any) { see(n) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if j, ok := obj.(*batchv1.Job); ok {
				w.mu.Lock()
				if _, seen := w.deleted[j.Name]; !seen {
					w.deleted[j.Name] = time.Now()
				}
				w.mu.Unlock()
			}
		},
	})
	go inf.Run(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)
	return w
}

// Created is when the first Job of owner was seen.
func (w *JobWatch) Created(owner string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.created[owner]
	return t, ok
}

// CompleteDeleted are the Jobs seen both finishing and being deleted.
func (w *JobWatch) CompleteDeleted() (complete, deleted map[string]time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	complete, deleted = map[string]time.Time{}, map[string]time.Time{}
	for k, v := range w.complete {
		complete[k] = v
	}
	for k, v := range w.deleted {
		deleted[k] = v
	}
	return complete, deleted
}

// PodWatch records when each pod of a namespace began to be deleted.
type PodWatch struct {
	mu      sync.Mutex
	deleted map[string]time.Time // by UID
	jobOf   map[string]string    // pod UID → its Job's name
}

func watchPods(ctx context.Context, cs kubernetes.Interface, ns string) *PodWatch {
	w := &PodWatch{deleted: map[string]time.Time{}, jobOf: map[string]string{}}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Pods().Informer()
	see := func(obj any, gone bool) {
		now := time.Now()
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		uid := string(p.UID)
		w.jobOf[uid] = p.Labels[batchv1.JobNameLabel]
		if (gone || p.DeletionTimestamp != nil) && w.deleted[uid].IsZero() {
			w.deleted[uid] = now
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { see(o, false) },
		UpdateFunc: func(_, n any) { see(n, false) },
		DeleteFunc: func(o any) { see(o, true) },
	})
	go inf.Run(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)
	return w
}

// Deleted is when each pod's deletion was first seen, by UID, and each pod's Job.
func (w *PodWatch) Deleted() (map[string]time.Time, map[string]string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d, j := map[string]time.Time{}, map[string]string{}
	for k, v := range w.deleted {
		d[k] = v
	}
	for k, v := range w.jobOf {
		j[k] = v
	}
	return d, j
}

func mustQty(s string) resource.Quantity { return resource.MustParse(s) }
