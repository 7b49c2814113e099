package redis

import (
	"fmt"
	"strconv"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// The worker's side of WorkerEnv (pkg/queue/redis/kube): reading back the QUEUEJOB_REDIS_*
// variables the operator puts into worker pods.

// OptionsFromEnv reads the QUEUEJOB_REDIS_* variables of Redis workers (kube.WorkerEnv)
// through getenv, os.Getenv say.
func OptionsFromEnv(getenv func(string) string) (Options, error) {
	o := Options{
		Address:  getenv(EnvAddress),
		Key:      getenv(EnvKey),
		Username: getenv(EnvUsername),
		Password: getenv(EnvPassword),
	}
	if o.Address == "" || o.Key == "" {
		return o, fmt.Errorf("%s and %s must be set (the operator sets them in the pods of a QueueJob with spec.queue.redis)", EnvAddress, EnvKey)
	}
	if db := getenv(EnvDB); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return o, fmt.Errorf("%s=%q is not a database number", EnvDB, db)
		}
		o.DB = n
	}
	switch v := getenv(EnvTLS); v {
	case "", "false":
		if getenv(EnvTLSCA) != "" || getenv(EnvTLSServerName) != "" {
			return o, fmt.Errorf("%s or %s is set without %s=true", EnvTLSCA, EnvTLSServerName, EnvTLS)
		}
	case "true":
		var err error
		if o.TLS, err = queue.TLSFromEnv(getenv, "QUEUEJOB_REDIS", queue.HostOf(o.Address)); err != nil {
			return o, err
		}
	default:
		return o, fmt.Errorf("%s=%q: want true or false", EnvTLS, v)
	}
	return o, nil
}

// Environment variables of Redis workers.
const (
	EnvAddress  = "QUEUEJOB_REDIS_ADDRESS"
	EnvKey      = "QUEUEJOB_REDIS_KEY"
	EnvDB       = "QUEUEJOB_REDIS_DB"
	EnvPassword = "QUEUEJOB_REDIS_PASSWORD"
	EnvUsername = "QUEUEJOB_REDIS_USERNAME"
	// EnvTLS is "true" when the worker must connect over TLS.
	EnvTLS = "QUEUEJOB_REDIS_TLS"
	// EnvTLSCA holds the PEM CA bundle of tls.caSecretRef (a secretKeyRef).
	EnvTLSCA = "QUEUEJOB_REDIS" + queue.EnvSuffixTLSCA
	// EnvTLSServerName is tls.serverName.
	EnvTLSServerName = "QUEUEJOB_REDIS" + queue.EnvSuffixTLSServerName
)
