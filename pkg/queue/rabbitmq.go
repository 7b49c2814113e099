package queue

import (
	"crypto/tls"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/protocol"
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
		url, mgmt := rabbitURLs(src)
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
	Addresses: rabbitAddresses,
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

// rabbitURLs are the AMQP URL and the management URL of a resolved source (from the
// spec or its Secrets); the management URL is empty if there is none.
func rabbitURLs(src Source) (amqpURL, managementURL string) {
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

// rabbitAddresses are where a probe of a resolved source connects: the AMQP URL's host
// and port, and the management URL's.
func rabbitAddresses(src Source) ([]Address, error) {
	r := src.Spec.RabbitMQ
	amqpURL, managementURL := rabbitURLs(src)
	amqpAddr, mgmtAddr, err := protocol.RabbitMQAddresses(amqpURL, managementURL)
	if err != nil {
		return nil, err
	}
	urlField, mgmtField := "spec.queue.rabbitmq.url", "spec.queue.rabbitmq.managementURL"
	if r.URLSecretRef != nil {
		urlField = "the URL in the Secret of spec.queue.rabbitmq.urlSecretRef"
	}
	if r.ManagementURLSecretRef != nil {
		mgmtField = "the URL in the Secret of spec.queue.rabbitmq.managementURLSecretRef"
	}
	addrs := []Address{{HostPort: amqpAddr, Field: urlField}}
	if mgmtAddr != "" {
		addrs = append(addrs, Address{HostPort: mgmtAddr, Field: mgmtField})
	}
	return addrs, nil
}
