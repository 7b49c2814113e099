package stream

import (
	"fmt"
	"strconv"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// The worker's side of WorkerEnv (pkg/queue/redis/stream/kube): reading back the
// QUEUEJOB_REDIS_STREAM_* variables the operator puts into worker pods. The worker's own
// lease is pkg/worker's QUEUEJOB_LEASE_SECONDS (a template or --lease may change it); the
// reaper's, spec.queue.redisStream.leaseSeconds, is EnvLeaseSeconds, and a worker renews
// within the shorter of the two.

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
	// EnvLeaseSeconds is the lease the operator's reaper goes by
	// (spec.queue.redisStream.leaseSeconds): Options.LeaseTTL.
	EnvLeaseSeconds = envPrefix + "_LEASE_SECONDS"
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
	if v := getenv(EnvLeaseSeconds); err == nil && v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n <= 0 {
			err = fmt.Errorf("%s=%q: want a positive number of seconds (spec.queue.redisStream.leaseSeconds)", EnvLeaseSeconds, v)
		}
		o.LeaseTTL = time.Duration(n) * time.Second
	}
	return o, err
}
