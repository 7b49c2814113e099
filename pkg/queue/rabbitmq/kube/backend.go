// Package kube is the Kubernetes side of the RabbitMQ backend: it maps a QueueJob's
// spec.queue.rabbitmq onto the wire package pkg/queue/rabbitmq (Options, the one mapping
// the controller and qj share), names the Secrets it references, the worker pods'
// variables (WorkerEnv) and the backend value pkg/queue/registry lists (Backend).
package kube

import (
	"crypto/tls"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
)

// Fields of spec.queue.rabbitmq that messages name.
const (
	FieldURL              = "spec.queue.rabbitmq.url"
	FieldURLSecret        = "spec.queue.rabbitmq.urlSecretRef"
	FieldManagementURL    = "spec.queue.rabbitmq.managementURL"
	FieldManagementSecret = "spec.queue.rabbitmq.managementURLSecretRef"
	FieldTLS              = "spec.queue.rabbitmq.tls"
	FieldTLSCA            = FieldTLS + ".caSecretRef"
)

// Backend is the RabbitMQ queue backend.
var Backend = backends.Backend{
	Name:     "rabbitmq",
	Selected: func(s *qjv1.QueueSource) bool { return s.RabbitMQ != nil },
	DeadLetterQueue: func(s *qjv1.QueueSource) string {
		return fmt.Sprintf("RabbitMQ queue %q", rabbitmq.FailedQueue(s.RabbitMQ.Queue))
	},
	SecretRefs: SecretRefs,
	Open: func(src backends.Source) (queue.Conn, error) {
		o, err := Options(src)
		if err != nil {
			return nil, err
		}
		return rabbitmq.New(o), nil
	},
	Addresses: Addresses,
	TLS: func(src backends.Source) (bool, string) {
		if t := src.Spec.RabbitMQ.TLS; t != nil {
			return true, t.ServerName
		}
		return false, ""
	},
	WorkerEnv: WorkerEnv,
}

// SecretRefs are the Secret keys spec.queue.rabbitmq references: the AMQP URL, the
// management URL and the TLS CA bundle.
func SecretRefs(s *qjv1.QueueSource) []backends.SecretRef {
	r := s.RabbitMQ
	var refs []backends.SecretRef
	add := func(ref *corev1.SecretKeySelector, field string) {
		if ref != nil {
			refs = append(refs, backends.RefOf(ref, field))
		}
	}
	add(r.URLSecretRef, FieldURLSecret)
	add(r.ManagementURLSecretRef, FieldManagementSecret)
	if r.TLS != nil {
		add(r.TLS.CASecretRef, FieldTLSCA)
	}
	return refs
}

// WorkerEnv is what a RabbitMQ worker pod needs (rabbitmq.OptionsFromEnv reads it back):
// the URL (as a secretKeyRef if it is in a Secret) and the queue, under the
// QUEUEJOB_RABBITMQ_* names and job-wq-1's BROKER_URL and QUEUE.
func WorkerEnv(s *qjv1.QueueSource) []corev1.EnvVar {
	r := s.RabbitMQ
	url := corev1.EnvVar{Name: rabbitmq.EnvURL, Value: r.URL}
	if r.URLSecretRef != nil {
		url = corev1.EnvVar{Name: rabbitmq.EnvURL, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: r.URLSecretRef.DeepCopy()}}
	}
	broker := *url.DeepCopy()
	broker.Name = rabbitmq.EnvBrokerURL
	env := []corev1.EnvVar{
		url,
		{Name: rabbitmq.EnvQueue, Value: r.Queue},
		broker,
		{Name: rabbitmq.EnvBrokerQueue, Value: r.Queue},
	}
	if r.TLS != nil {
		env = append(env, backends.TLSEnv(rabbitmq.EnvTLSCA, rabbitmq.EnvTLSServerName, r.TLS)...)
	}
	return env
}

// Options are the connection options of a resolved RabbitMQ source: the one mapping of
// spec.queue.rabbitmq, which the controller's probe and qj share (qj layers its flags on
// top).
func Options(src backends.Source) (rabbitmq.Options, error) {
	r := src.Spec.RabbitMQ
	url, mgmt := urls(src)
	var tlsConfig *tls.Config
	if r.TLS != nil {
		// The server name defaults to the URL's host, which only rabbitmq.New parses.
		var err error
		if tlsConfig, err = backends.TLSClientConfig(r.TLS, src, "", FieldTLS); err != nil {
			return rabbitmq.Options{}, err
		}
	}
	return rabbitmq.Options{URL: url, Queue: r.Queue, ManagementURL: mgmt, TLS: tlsConfig}, nil
}

// urls are the AMQP URL and the management URL of a resolved source (from the spec or
// its Secrets); the management URL is empty if there is none.
func urls(src backends.Source) (amqpURL, managementURL string) {
	r := src.Spec.RabbitMQ
	amqpURL, managementURL = r.URL, r.ManagementURL
	if r.URLSecretRef != nil {
		amqpURL = src.Secret(r.URLSecretRef)
	}
	if r.ManagementURLSecretRef != nil {
		managementURL = src.Secret(r.ManagementURLSecretRef)
	}
	return amqpURL, managementURL
}

// Addresses are where a probe of a resolved source connects: the AMQP URL's host and
// port, and the management URL's.
func Addresses(src backends.Source) ([]queue.Address, error) {
	r := src.Spec.RabbitMQ
	amqpURL, managementURL := urls(src)
	amqpAddr, mgmtAddr, err := rabbitmq.Addresses(amqpURL, managementURL)
	if err != nil {
		return nil, err
	}
	urlField, mgmtField := FieldURL, FieldManagementURL
	if r.URLSecretRef != nil {
		urlField = "the URL in the Secret of " + FieldURLSecret
	}
	if r.ManagementURLSecretRef != nil {
		mgmtField = "the URL in the Secret of " + FieldManagementSecret
	}
	addrs := []queue.Address{{HostPort: amqpAddr, Field: urlField}}
	if mgmtAddr != "" {
		addrs = append(addrs, queue.Address{HostPort: mgmtAddr, Field: mgmtField})
	}
	return addrs, nil
}
