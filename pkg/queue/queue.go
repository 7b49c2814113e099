// Package queue holds the queue backends of QueueJobs, the operator's side of the queues.
// Each backend is a Kind in one file (redis.go, rabbitmq.go) that maps a QueueJob's
// spec.queue onto its protocol, which lives in pkg/queue/protocol, the one place that knows
// key names, scripts and how to count (the workers use it without Kubernetes). The
// controller probes through the Backend interface; optional capabilities (the lease
// reaper) are separate interfaces.
//
// Adding a backend takes its protocol in pkg/queue/protocol, one file here that defines a
// Kind, one line in DefaultRegistry and its field in the API's QueueSource.
package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// Backend is a connection to one queue. Implementations are safe for use by one
// goroutine at a time; the controller serialises the reconciles of a QueueJob.
type Backend interface {
	// Probe counts the queue's items. Errors are *Error with a reason.
	Probe(ctx context.Context) (Counts, error)
	// Close releases the connection.
	Close() error
}

// Reaper is implemented by backends whose protocol leases items to workers: Reap returns
// to the queue items whose lease expired, so that a crashed worker loses none. An item is
// only reclaimed once it has been seen without a lease on two calls at least grace apart,
// which leaves a worker time to write the lease of an item it has just taken.
type Reaper interface {
	Reap(ctx context.Context, now time.Time, grace time.Duration) (reclaimed int, err error)
}

// Source is a queue's coordinates with the values of the Secrets they reference.
type Source struct {
	Spec *qjv1.QueueSource
	// Secrets maps "<secret name>/<key>" to the value.
	Secrets map[string]string
}

// Secret returns the value a SecretKeySelector of the spec references.
func (s Source) Secret(ref *corev1.SecretKeySelector) string {
	if ref == nil {
		return ""
	}
	return s.Secrets[SecretID(ref)]
}

// SecretID names a Secret key in Source.Secrets.
func SecretID(ref *corev1.SecretKeySelector) string { return ref.Name + "/" + ref.Key }

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

// Kind is one queue backend.
type Kind struct {
	// Name is the backend's name, as in QUEUEJOB_BACKEND.
	Name string
	// Selected reports whether a QueueSource uses this backend.
	Selected func(*qjv1.QueueSource) bool
	// SecretRefs lists the Secret keys the source references.
	SecretRefs func(*qjv1.QueueSource) []*corev1.SecretKeySelector
	// Open returns a Backend for a resolved source. It may connect lazily.
	Open func(Source) (Backend, error)
	// Addresses lists where a Backend of a resolved source connects, for the manager's
	// AddressPolicy; without it, a policy that restricts addresses refuses every source.
	Addresses func(Source) ([]Address, error)
	// NewWatcher, if set, returns a Watcher of this kind's queues: the controller then
	// hears of new items before the next probe. Nil: the probes alone find them.
	NewWatcher func(logr.Logger) Watcher
	// WorkerEnv is what a worker pod needs to find the queue: QUEUEJOB_* variables,
	// with credentials only as secretKeyRef.
	WorkerEnv func(*qjv1.QueueSource) []corev1.EnvVar
	// DeadLetterQueue names, for messages, where workers dead-letter the source's
	// items (the list or queue Probe counts in Counts.DeadLettered).
	DeadLetterQueue func(*qjv1.QueueSource) string
}

// DeadLetterQueueOf names where workers dead-letter the source's items; a kind that
// does not say is described generically.
func (k *Kind) DeadLetterQueueOf(src *qjv1.QueueSource) string {
	if k.DeadLetterQueue == nil {
		return "the queue's dead-letter queue"
	}
	return k.DeadLetterQueue(src)
}

// Registry maps queue sources to their backend kinds.
type Registry struct{ kinds []Kind }

// NewRegistry returns a registry of the given kinds.
func NewRegistry(kinds ...Kind) *Registry { return &Registry{kinds: kinds} }

// DefaultRegistry has every backend this project ships.
func DefaultRegistry() *Registry {
	return NewRegistry(
		RedisKind,
		RabbitMQKind,
	)
}

// For returns the kind a QueueSource selects.
func (r *Registry) For(src *qjv1.QueueSource) (*Kind, error) {
	for i := range r.kinds {
		if r.kinds[i].Selected(src) {
			return &r.kinds[i], nil
		}
	}
	return nil, fmt.Errorf("spec.queue selects no known backend")
}
