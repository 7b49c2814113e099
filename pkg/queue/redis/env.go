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
	o, err := ServerFromEnv(getenv, "QUEUEJOB_REDIS", EnvKey, "spec.queue.redis")
	if err != nil {
		return o, err
	}
	o.Key = getenv(EnvKey)
	return o, nil
}

// ServerFromEnv reads where a Redis server is and how to log in from the variables
// <prefix>_ADDRESS, _USERNAME, _PASSWORD, _DB, _TLS, _TLS_CA and _TLS_SERVER_NAME: the
// list backend's (prefix QUEUEJOB_REDIS), or another's on a Redis server. required is
// the variable, besides the address, that must be set; field the spec field whose
// QueueJobs get them. o.Key is left empty.
func ServerFromEnv(getenv func(string) string, prefix, required, field string) (Options, error) {
	envAddress, envDB, envTLS := prefix+"_ADDRESS", prefix+"_DB", prefix+"_TLS"
	envTLSCA, envTLSServerName := prefix+queue.EnvSuffixTLSCA, prefix+queue.EnvSuffixTLSServerName
	o := Options{
		Address:  getenv(envAddress),
		Username: getenv(prefix + "_USERNAME"),
		Password: getenv(prefix + "_PASSWORD"),
	}
	if o.Address == "" || getenv(required) == "" {
		return o, fmt.Errorf("%s and %s must be set (the operator sets them in the pods of a QueueJob with %s)", envAddress, required, field)
	}
	if db := getenv(envDB); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return o, fmt.Errorf("%s=%q is not a database number", envDB, db)
		}
		o.DB = n
	}
	switch v := getenv(envTLS); v {
	case "", "false":
		if getenv(envTLSCA) != "" || getenv(envTLSServerName) != "" {
			return o, fmt.Errorf("%s or %s is set without %s=true", envTLSCA, envTLSServerName, envTLS)
		}
	case "true":
		var err error
		if o.TLS, err = queue.TLSFromEnv(getenv, prefix, queue.HostOf(o.Address)); err != nil {
			return o, err
		}
	default:
		return o, fmt.Errorf("%s=%q: want true or false", envTLS, v)
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
