package stream

import (
	"fmt"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// The worker's side of WorkerEnv (pkg/queue/redis/stream/kube): reading back the
// QUEUEJOB_REDIS_STREAM_* variables the operator puts into worker pods. The lease is
// pkg/worker's QUEUEJOB_LEASE_SECONDS, which the operator sets from
// spec.queue.redisStream.leaseSeconds.

// Environment variables of Redis Streams workers.
const (
	envPrefix   = "QUEUEJOB_REDIS_STREAM"
	EnvAddress  = envPrefix + "_ADDRESS"
	EnvStream   = envPrefix + "_STREAM"
	EnvGroup    = envPrefix + "_GROUP"
	EnvDB       = envPrefix + "_DB"
	EnvPassword = envPrefix + "_PASSWORD"
	EnvUsername = envPrefix + "_USERNAME"
	// EnvTLS is "true" when the worker must connect over TLS.
	EnvTLS = envPrefix + "_TLS"
	// EnvTLSCA holds the PEM CA bundle of tls.caSecretRef (a secretKeyRef).
	EnvTLSCA = envPrefix + queue.EnvSuffixTLSCA
	// EnvTLSServerName is tls.serverName.
	EnvTLSServerName = envPrefix + queue.EnvSuffixTLSServerName
)

// OptionsFromEnv reads the QUEUEJOB_REDIS_STREAM_* variables of Redis Streams workers
// (kube.WorkerEnv) through getenv, os.Getenv say.
func OptionsFromEnv(getenv func(string) string) (Options, error) {
	s, err := redis.ServerFromEnv(getenv, envPrefix, EnvStream, "spec.queue.redisStream")
	o := Options{Address: s.Address, Username: s.Username, Password: s.Password, DB: s.DB, TLS: s.TLS,
		Stream: getenv(EnvStream), Group: getenv(EnvGroup)}
	if err == nil && o.Group == "" {
		err = fmt.Errorf("%s must be set (the operator sets it in the pods of a QueueJob with spec.queue.redisStream)", EnvGroup)
	}
	return o, err
}
