package rabbitmq

import (
	"fmt"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// The worker's side of WorkerEnv (pkg/queue/rabbitmq/kube): reading back the
// QUEUEJOB_RABBITMQ_* variables the operator puts into worker pods.

// Environment variables of RabbitMQ workers.
const (
	EnvURL   = "QUEUEJOB_RABBITMQ_URL"
	EnvQueue = "QUEUEJOB_RABBITMQ_QUEUE"
	// EnvBrokerURL and EnvBrokerQueue are the names the Kubernetes docs' job-wq-1 worker reads.
	EnvBrokerURL   = "BROKER_URL"
	EnvBrokerQueue = "QUEUE"
	// EnvTLSCA holds the PEM CA bundle of tls.caSecretRef (a secretKeyRef).
	EnvTLSCA = "QUEUEJOB_RABBITMQ" + queue.EnvSuffixTLSCA
	// EnvTLSServerName is tls.serverName.
	EnvTLSServerName = "QUEUEJOB_RABBITMQ" + queue.EnvSuffixTLSServerName
)

// OptionsFromEnv reads the QUEUEJOB_RABBITMQ_* variables of RabbitMQ workers
// (kube.WorkerEnv), falling back to BROKER_URL and QUEUE, through getenv.
func OptionsFromEnv(getenv func(string) string) (Options, error) {
	o := Options{URL: getenv(EnvURL), Queue: getenv(EnvQueue)}
	if o.URL == "" {
		o.URL = getenv(EnvBrokerURL)
	}
	if o.Queue == "" {
		o.Queue = getenv(EnvBrokerQueue)
	}
	if o.URL == "" || o.Queue == "" {
		return o, fmt.Errorf("%s and %s must be set (the operator sets them in the pods of a QueueJob with spec.queue.rabbitmq)", EnvURL, EnvQueue)
	}
	if getenv(EnvTLSCA) != "" || getenv(EnvTLSServerName) != "" {
		// The server name defaults to the URL's host, which New and Dial
		// fill in.
		var err error
		if o.TLS, err = queue.TLSFromEnv(getenv, "QUEUEJOB_RABBITMQ", ""); err != nil {
			return o, err
		}
	}
	return o, nil
}
