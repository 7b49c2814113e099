package queue

import (
	"crypto/tls"
	"net/url"

	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// RabbitMQKind is the RabbitMQ queue backend.
var RabbitMQKind = Kind{
	Name:     "rabbitmq",
	Selected: func(s *qjv1.QueueSource) bool { return s.RabbitMQ != nil },
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
		amqpURL, mgmt := rabbitURLs(src)
		var tlsConfig *tls.Config
		if r.TLS != nil {
			// The server name defaults to the URL's host, which only NewRabbitMQ parses.
			var err error
			if tlsConfig, err = TLSClientConfig(r.TLS, src, "", "spec.queue.rabbitmq.tls"); err != nil {
				return nil, err
			}
		}
		return NewRabbitMQ(RabbitMQOptions{URL: amqpURL, Queue: r.Queue, ManagementURL: mgmt, TLS: tlsConfig}), nil
	},
	Server: func(src Source) string {
		amqpURL, mgmt := rabbitURLs(src)
		return urlHost(amqpURL) + " " + urlHost(mgmt)
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

// rabbitURLs are the AMQP and management URLs of a resolved source, from the spec or
// their Secrets.
func rabbitURLs(src Source) (amqpURL, mgmt string) {
	r := src.Spec.RabbitMQ
	amqpURL, mgmt = r.URL, r.ManagementURL
	if r.URLSecretRef != nil {
		amqpURL = src.Secret(r.URLSecretRef)
	}
	if r.ManagementURLSecretRef != nil {
		mgmt = src.Secret(r.ManagementURLSecretRef)
	}
	return amqpURL, mgmt
}

// urlHost is the host and port of a URL, "" if it has none or does not parse.
func urlHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}
