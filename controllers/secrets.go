package controllers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
)

// resolveCached is resolve, reusing the values read for the QueueJob within the last
// SecretRefresh: a probe every 2 s of each of many QueueJobs must not read their Secrets
// from the API server each time. They are read again at once when the QueueJob changes
// (its generation or UID), and after a probe that failed to connect or log in.
func (r *QueueJobReconciler) resolveCached(ctx context.Context, s *scope, backend *backends.Backend) (backends.Source, error) {
	key := client.ObjectKeyFromObject(s.qj)
	if values, ok := r.secrets.get(key, s.qj.UID, s.qj.Generation, s.now, r.secretRefresh()); ok {
		return backends.Source{Spec: s.qj.Spec.Queue, Secrets: values}, nil
	}
	src, err := r.resolve(ctx, s.qj, backend)
	if err != nil {
		r.secrets.forget(key)
		return src, err
	}
	r.secrets.put(key, s.qj.UID, s.qj.Generation, s.now, src.Secrets)
	logf.FromContext(ctx).V(1).Info("Read the queue's Secrets", "secrets", len(src.Secrets))
	return src, nil
}

// resolve reads the Secrets the queue references, fresh from the API server (the manager
// neither lists nor watches Secrets).
func (r *QueueJobReconciler) resolve(ctx context.Context, qj *qjv1.QueueJob, backend *backends.Backend) (backends.Source, error) {
	src := backends.Source{Spec: qj.Spec.Queue, Secrets: map[string]string{}}
	for _, ref := range backend.SecretRefs(qj.Spec.Queue) {
		field := ref.Field
		if field == "" {
			field = "spec.queue" // a backend that does not name the field
		}
		var sec corev1.Secret
		err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: qj.Namespace, Name: ref.Name}, &sec)
		if apierrors.IsNotFound(err) {
			return src, queue.Errorf(queue.ReasonSecretNotFound, "Secret %s/%s does not exist: create it, or fix %s", qj.Namespace, ref.Name, field)
		}
		if err != nil {
			return src, queue.Errorf(queue.ReasonSecretNotFound, "reading Secret %s/%s (%s): %v", qj.Namespace, ref.Name, field, err)
		}
		v, ok := sec.Data[ref.Key]
		if !ok {
			return src, queue.Errorf(queue.ReasonSecretNotFound, "Secret %s/%s has no key %q: add it, or fix the key in %s", qj.Namespace, ref.Name, ref.Key, field)
		}
		src.Secrets[ref.ID()] = string(v)
	}
	return src, nil
}

// secretCache keeps the values of the Secrets each QueueJob references, as last read.
type secretCache struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]resolvedSecrets
}

type resolvedSecrets struct {
	uid        types.UID
	generation int64
	readAt     time.Time
	values     map[string]string
}

// get returns the values read for this QueueJob (UID and generation) less than maxAge
// before now.
func (c *secretCache) get(key types.NamespacedName, uid types.UID, generation int64, now time.Time, maxAge time.Duration) (map[string]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || e.uid != uid || e.generation != generation || now.Sub(e.readAt) >= maxAge || now.Before(e.readAt) {
		return nil, false
	}
	return e.values, true
}

// put records the values read for a QueueJob at now.
func (c *secretCache) put(key types.NamespacedName, uid types.UID, generation int64, now time.Time, values map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[types.NamespacedName]resolvedSecrets{}
	}
	c.entries[key] = resolvedSecrets{uid: uid, generation: generation, readAt: now, values: values}
}

// forget drops the values of a QueueJob's Secrets: the next probe reads them again.
func (c *secretCache) forget(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, key)
}
