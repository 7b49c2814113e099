// Package backends is the Kubernetes side that every queue backend shares: a Backend
// (what the controller and qj know of one: how a QueueJob's spec.queue selects it, the
// Secrets it references, how it opens a connection, what worker pods need), the Source
// it opens (the spec with the values of its Secrets), the Registry the controller looks
// backends up in, the Watcher of queue writes, the manager's AddressPolicy and the TLS
// settings of a spec.
//
// Each backend defines its Backend in its own kube package (pkg/queue/redis/kube,
// pkg/queue/rabbitmq/kube), on top of its Kubernetes-free wire package
// (pkg/queue/redis, ...); pkg/queue/registry lists them. Optional capabilities of a
// connection (the lease reaper) are interfaces of pkg/queue. See docs/backends.md.
package backends

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// Source is a queue's coordinates with the values of the Secrets they reference.
type Source struct {
	Spec *qjv1.QueueSource
	// Secrets maps SecretRef.ID() ("<secret name>/<key>") to the value.
	Secrets map[string]string
}

// Secret returns the value a SecretKeySelector of the spec references.
func (s Source) Secret(ref *corev1.SecretKeySelector) string {
	if ref == nil {
		return ""
	}
	return s.Secrets[RefOf(ref, "").ID()]
}

// SecretRef is a key of a Secret a queue's spec references, and the field that references
// it, so that the controller and qj name the same field in their messages.
type SecretRef struct {
	// Name is the Secret's name, Key the key in it.
	Name, Key string
	// Field is the field's path in the QueueJob, spec.queue.redis.passwordSecretRef say.
	Field string
}

// RefOf is the SecretRef of a SecretKeySelector of the spec at field.
func RefOf(ref *corev1.SecretKeySelector, field string) SecretRef {
	return SecretRef{Name: ref.Name, Key: ref.Key, Field: field}
}

// ID names the Secret key in Source.Secrets.
func (r SecretRef) ID() string { return r.Name + "/" + r.Key }

// Fingerprint identifies the resolved source, credentials included (hashed): a change of
// either (a rotated Secret, say) means a new connection.
func (s Source) Fingerprint() string {
	h := sha256.New()
	spec, _ := json.Marshal(s.Spec)
	h.Write(spec)
	keys := make([]string, 0, len(s.Secrets))
	for k := range s.Secrets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "\x00%s\x00%s", k, s.Secrets[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Backend is one queue backend.
type Backend struct {
	// Name is the backend's name, as in QUEUEJOB_BACKEND.
	Name string
	// Selected reports whether a QueueSource uses this backend.
	Selected func(*qjv1.QueueSource) bool
	// SecretRefs lists the Secret keys the source references, each with its field.
	SecretRefs func(*qjv1.QueueSource) []SecretRef
	// Open returns a connection to the queue of a resolved source. It may connect lazily.
	Open func(Source) (queue.Conn, error)
	// Addresses lists where a connection of a resolved source connects, for the manager's
	// AddressPolicy; without it, a policy that restricts addresses refuses every source.
	Addresses func(Source) ([]queue.Address, error)
	// TLS reports whether a resolved source has TLS settings (spec.queue.<backend>.tls),
	// and the server name they verify (empty: the address's host); a RabbitMQ amqps://
	// URL without them counts as off. The controller's per-server gates of
	// probes tell TLS settings apart by it; without it, each QueueJob gets a gate of its
	// own, shared with no other.
	TLS func(Source) (on bool, serverName string)
	// NewWatcher, if set, returns a Watcher of this backend's queues: the controller then
	// hears of new items before the next probe. Nil: the probes alone find them.
	NewWatcher func(logr.Logger) Watcher
	// WorkerEnv is what a worker pod needs to find the queue: QUEUEJOB_* variables,
	// with credentials only as secretKeyRef.
	WorkerEnv func(*qjv1.QueueSource) []corev1.EnvVar
	// DeadLetterQueue names, for messages, where workers dead-letter the source's
	// items (the list or queue Probe counts in Counts.DeadLettered).
	DeadLetterQueue func(*qjv1.QueueSource) string
}

// DeadLetterQueueOf names where workers dead-letter the source's items; a backend that
// does not say is described generically.
func (b *Backend) DeadLetterQueueOf(src *qjv1.QueueSource) string {
	if b.DeadLetterQueue == nil {
		return "the queue's dead-letter queue"
	}
	return b.DeadLetterQueue(src)
}

// Registry maps queue sources to their backends.
type Registry struct{ backends []Backend }

// NewRegistry returns a registry of the given backends (pkg/queue/registry.Default has
// every backend this project ships).
func NewRegistry(backends ...Backend) *Registry { return &Registry{backends: backends} }

// For returns the backend a QueueSource selects.
func (r *Registry) For(src *qjv1.QueueSource) (*Backend, error) {
	for i := range r.backends {
		if r.backends[i].Selected(src) {
			return &r.backends[i], nil
		}
	}
	return nil, fmt.Errorf("spec.queue selects no known backend")
}
