// Package kube is the Kubernetes side of the Redis Streams backend: it maps a QueueJob's
// spec.queue.redisStream onto the wire package pkg/queue/redis/stream (Options, the one
// mapping the controller and qj share), names the Secrets it references, the worker
// pods' variables (WorkerEnv) and the backend value pkg/queue/registry lists (Backend).
// Its write watch is the list backend's (pkg/queue/redis/kube), on the stream's key.
package kube

import (
	"fmt"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	rediskube "github.com/queuejob/queuejob-operator/pkg/queue/redis/kube"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
	"github.com/queuejob/queuejob-operator/pkg/worker"
)

// Fields of spec.queue.redisStream that messages name.
const (
	FieldAddress  = "spec.queue.redisStream.address"
	FieldPassword = "spec.queue.redisStream.passwordSecretRef"
	FieldTLS      = "spec.queue.redisStream.tls"
	FieldTLSCA    = FieldTLS + ".caSecretRef"
)

// DefaultLeaseSeconds is spec.queue.redisStream.leaseSeconds when it is not set (the API
// server defaults it; objects read from elsewhere may lack it).
const DefaultLeaseSeconds = 30

// Backend is the Redis Streams backend.
var Backend = backends.Backend{
	Name:       worker.BackendRedisStream,
	Selected:   func(s *qjv1.QueueSource) bool { return s.RedisStream != nil },
	SecretRefs: SecretRefs,
	Open: func(src backends.Source) (queue.Conn, error) {
		o, err := Options(src)
		if err != nil {
			return nil, err
		}
		r := src.Spec.RedisStream
		id := rediskube.ClientID(src, qjv1.RedisQueue{Address: r.Address, DB: r.DB, Username: r.Username, PasswordSecretRef: r.PasswordSecretRef, TLS: r.TLS})
		return stream.NewShared(redis.ProbeClients, id, o), nil
	},
	Addresses: func(src backends.Source) ([]queue.Address, error) {
		return []queue.Address{{HostPort: src.Spec.RedisStream.Address, Field: FieldAddress}}, nil
	},
	TLS: func(src backends.Source) (bool, string) {
		if t := src.Spec.RedisStream.TLS; t != nil {
			return true, t.ServerName
		}
		return false, ""
	},
	NewWatcher: func(log logr.Logger) backends.Watcher { return rediskube.NewWatcherOf(log, locate, stream.Wording) },
	DeadLetterQueue: func(s *qjv1.QueueSource) string {
		return fmt.Sprintf("Redis stream %q", stream.FailedKey(s.RedisStream.Stream))
	},
	WorkerEnv: WorkerEnv,
}

// locate is the watch's view of a source: the server, with the stream as the key.
func locate(src backends.Source) (redis.Options, string, error) {
	o, err := Options(src)
	if err != nil {
		return redis.Options{}, "", err
	}
	spec := src.Spec.DeepCopy()
	spec.RedisStream.Stream, spec.RedisStream.Group, spec.RedisStream.DB, spec.RedisStream.LeaseSeconds = "", "", nil, nil
	return o.Server(), backends.Source{Spec: spec, Secrets: src.Secrets}.Fingerprint(), nil
}

// SecretRefs are the Secret keys spec.queue.redisStream references: its password and its
// TLS CA bundle.
func SecretRefs(s *qjv1.QueueSource) []backends.SecretRef {
	var refs []backends.SecretRef
	if s.RedisStream.PasswordSecretRef != nil {
		refs = append(refs, backends.RefOf(s.RedisStream.PasswordSecretRef, FieldPassword))
	}
	if s.RedisStream.TLS != nil && s.RedisStream.TLS.CASecretRef != nil {
		refs = append(refs, backends.RefOf(s.RedisStream.TLS.CASecretRef, FieldTLSCA))
	}
	return refs
}

// WorkerEnv is what a Redis Streams worker pod needs (stream.OptionsFromEnv and
// worker.OptionsFromEnv read it back): the QUEUEJOB_REDIS_STREAM_* variables, the
// password and the CA bundle as secretKeyRef, and the lease twice: as
// QUEUEJOB_LEASE_SECONDS, the worker's own lease (which a template or --lease may
// change), and as QUEUEJOB_REDIS_STREAM_LEASE_SECONDS, the lease the reaper goes by, so
// that workers renew within it whatever their own. A variable the pod template sets
// itself wins (as for every variable the operator adds).
func WorkerEnv(s *qjv1.QueueSource) []corev1.EnvVar {
	r := s.RedisStream
	env := []corev1.EnvVar{
		{Name: stream.EnvAddress, Value: r.Address},
		{Name: stream.EnvStream, Value: r.Stream},
		{Name: stream.EnvGroup, Value: r.Group},
		{Name: stream.EnvDB, Value: strconv.Itoa(int(deref(r.DB, 0)))},
		{Name: worker.EnvLeaseSeconds, Value: strconv.Itoa(int(leaseSeconds(r)))},
		{Name: stream.EnvLeaseSeconds, Value: strconv.Itoa(int(leaseSeconds(r)))},
	}
	if r.Username != "" {
		env = append(env, corev1.EnvVar{Name: stream.EnvUsername, Value: r.Username})
	}
	if r.PasswordSecretRef != nil {
		env = append(env, corev1.EnvVar{Name: stream.EnvPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: r.PasswordSecretRef.DeepCopy()}})
	}
	if r.TLS != nil {
		env = append(env, corev1.EnvVar{Name: stream.EnvTLS, Value: "true"})
		env = append(env, backends.TLSEnv(stream.EnvTLSCA, stream.EnvTLSServerName, r.TLS)...)
	}
	return env
}

// Options are the connection options of a resolved Redis Streams source: the one mapping
// of spec.queue.redisStream, which the controller's probe and reaper and qj share (qj
// layers its flags on top).
func Options(src backends.Source) (stream.Options, error) {
	r := src.Spec.RedisStream
	o := stream.Options{
		Address:  r.Address,
		DB:       int(deref(r.DB, 0)),
		Username: r.Username,
		Password: src.Secret(r.PasswordSecretRef),
		Stream:   r.Stream,
		Group:    r.Group,
		LeaseTTL: time.Duration(leaseSeconds(r)) * time.Second,
	}
	if r.TLS != nil {
		var err error
		if o.TLS, err = backends.TLSClientConfig(r.TLS, src, queue.HostOf(r.Address), FieldTLS); err != nil {
			return o, err
		}
	}
	return o, nil
}

func leaseSeconds(r *qjv1.RedisStreamQueue) int32 { return deref(r.LeaseSeconds, DefaultLeaseSeconds) }

func deref(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}
