package queue

import (
	"crypto/tls"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// RabbitMQKind is the RabbitMQ queue backend.
var RabbitMQKind = Kind{
	Name:     "rabbitmq",
	Selected: func(s *qjv1.QueueSource) bool { return s.RabbitMQ != nil },
	DeadLetterQueue: func(s *qjv1.QueueSource) string {
		return fmt.Sprintf("RabbitMQ queue %q", FailedQueue(s.RabbitMQ.Queue))
	},
	SecretRefs: func(s *qjv1.QueueSource) []*corev1.SecretKeySelector {
		var refs []*corev1.SecretKeySelector
		all := []*corev1.SecretKeySelector{s.RabbitMQ.URLSecretRef, s.RabbitMQ.ManagementURLSecretRef}
		if s.RabbitMQ.TLS != nil {
			all = append(all, s.RabbitMQ.TLS.CASecretRef)
		}
		for _, ref := range all {
			if ref != nil {
				refs = append(refs, ref)
			}
		}
		return refs
	},
	Open: func(src Source) (Backend, error) {
		r := src.Spec.RabbitMQ
		url := r.URL
		if r.URLSecretRef != nil {
			url = src.Secret(r.URLSecretRef)
		}
		mgmt := r.ManagementURL
		if r.ManagementURLSecretRef != nil {
			mgmt = src.Secret(r.ManagementURLSecretRef)
		}
		var tlsConfig *tls.Config
		if r.TLS != nil {
			// The server name defaults to the URL's host, which only NewRabbitMQ parses.
			var err error
			if tlsConfig, err = TLSClientConfig(r.TLS, src, "", "spec.queue.rabbitmq.tls"); err != nil {
				return nil, err
			}
		}
		return NewRabbitMQ(RabbitMQOptions{URL: url, Queue: r.Queue, ManagementURL: mgmt, TLS: tlsConfig}), nil
	},
	WorkerEnv: func(s *qjv1.QueueSource) []corev1.EnvVar {
		r := s.RabbitMQ
		url := corev1.EnvVar{Name: EnvRabbitMQURL, Value: r.URL}
		if r.URLSecretRef != nil {
			url = corev1.EnvVar{Name: EnvRabbitMQURL, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: r.URLSecretRef.DeepCopy()}}
		}
		broker := *url.DeepCopy()
		broker.Name = EnvBrokerURL
		env := []corev1.EnvVar{
			url,
			{Name: EnvRabbitMQQueue, Value: r.Queue},
			broker,
			{Name: EnvQueue, Value: r.Queue},
		}
		if r.TLS != nil {
			env = append(env, tlsEnv(EnvRabbitMQTLSCA, EnvRabbitMQTLSServerName, r.TLS)...)
		}
		return env
	},
}
