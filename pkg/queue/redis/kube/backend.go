// Package kube is the Kubernetes side of the Redis backend: it maps a QueueJob's
// spec.queue.redis onto the wire package pkg/queue/redis (Options, the one mapping the
// controller and qj share), names the Secrets it references, the worker pods' variables
// (WorkerEnv) and the backend value pkg/queue/registry lists (Backend).
package kube

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// Fields of spec.queue.redis that messages name.
const (
	FieldAddress  = "spec.queue.redis.address"
	FieldPassword = "spec.queue.redis.passwordSecretRef"
	FieldTLS      = "spec.queue.redis.tls"
	FieldTLSCA    = FieldTLS + ".caSecretRef"
)

// Backend is the Redis list backend.
var Backend = backends.Backend{
	Name:       "redis",
	Selected:   func(s *qjv1.QueueSource) bool { return s.Redis != nil },
	SecretRefs: SecretRefs,
	Open: func(src backends.Source) (queue.Conn, error) {
		o, err := Options(src)
		if err != nil {
			return nil, err
		}
		return redis.NewShared(redis.ProbeClients, ClientID(src, *src.Spec.Redis), o), nil
	},
	Addresses: func(src backends.Source) ([]queue.Address, error) {
		return []queue.Address{{HostPort: src.Spec.Redis.Address, Field: FieldAddress}}, nil
	},
	TLS: func(src backends.Source) (bool, string) {
		if t := src.Spec.Redis.TLS; t != nil {
			return true, t.ServerName
		}
		return false, ""
	},
	NewWatcher: NewWatcher,
	DeadLetterQueue: func(s *qjv1.QueueSource) string {
		return fmt.Sprintf("Redis list %q", redis.FailedKey(s.Redis.Key))
	},
	WorkerEnv: WorkerEnv,
}

// ClientID names the Redis server, credentials, database and TLS settings of r, a source's
// connection (a stream's too, pkg/queue/redis/stream/kube): the probes of the sources of
// one ClientID share a client (redis.SharedClients). The key is not part of it.
func ClientID(src backends.Source, r qjv1.RedisQueue) string {
	conn := qjv1.RedisQueue{Address: r.Address, DB: r.DB, Username: r.Username, PasswordSecretRef: r.PasswordSecretRef, TLS: r.TLS}
	return backends.Source{Spec: &qjv1.QueueSource{Redis: &conn}, Secrets: src.Secrets}.Fingerprint()
}

// SecretRefs are the Secret keys spec.queue.redis references: its password and its TLS
// CA bundle.
func SecretRefs(s *qjv1.QueueSource) []backends.SecretRef {
	var refs []backends.SecretRef
	if s.Redis.PasswordSecretRef != nil {
		refs = append(refs, backends.RefOf(s.Redis.PasswordSecretRef, FieldPassword))
	}
	if s.Redis.TLS != nil && s.Redis.TLS.CASecretRef != nil {
		refs = append(refs, backends.RefOf(s.Redis.TLS.CASecretRef, FieldTLSCA))
	}
	return refs
}

// WorkerEnv is what a Redis worker pod needs (redis.OptionsFromEnv reads it back): the
// QUEUEJOB_REDIS_* variables, the password and the CA bundle as secretKeyRef.
func WorkerEnv(s *qjv1.QueueSource) []corev1.EnvVar {
	r := s.Redis
	env := []corev1.EnvVar{
		{Name: redis.EnvAddress, Value: r.Address},
		{Name: redis.EnvKey, Value: r.Key},
		{Name: redis.EnvDB, Value: strconv.Itoa(int(derefInt32(r.DB)))},
	}
	if r.Username != "" {
		env = append(env, corev1.EnvVar{Name: redis.EnvUsername, Value: r.Username})
	}
	if r.PasswordSecretRef != nil {
		env = append(env, corev1.EnvVar{Name: redis.EnvPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: r.PasswordSecretRef.DeepCopy()}})
	}
	if r.TLS != nil {
		env = append(env, corev1.EnvVar{Name: redis.EnvTLS, Value: "true"})
		env = append(env, backends.TLSEnv(redis.EnvTLSCA, redis.EnvTLSServerName, r.TLS)...)
	}
	return env
}

// Options are the connection options of a resolved Redis source: the one mapping of
// spec.queue.redis, which the controller's probe and qj share (qj layers its flags on
// top).
func Options(src backends.Source) (redis.Options, error) {
	r := src.Spec.Redis
	o := redis.Options{
		Address:  r.Address,
		DB:       int(derefInt32(r.DB)),
		Username: r.Username,
		Password: src.Secret(r.PasswordSecretRef),
		Key:      r.Key,
	}
	if r.TLS != nil {
		var err error
		if o.TLS, err = backends.TLSClientConfig(r.TLS, src, queue.HostOf(r.Address), FieldTLS); err != nil {
			return o, err
		}
	}
	return o, nil
}

func derefInt32(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}
