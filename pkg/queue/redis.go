package queue

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// RedisKind is the Redis list backend.
var RedisKind = Kind{
	Name:     "redis",
	Selected: func(s *qjv1.QueueSource) bool { return s.Redis != nil },
	SecretRefs: func(s *qjv1.QueueSource) []*corev1.SecretKeySelector {
		var refs []*corev1.SecretKeySelector
		if s.Redis.PasswordSecretRef != nil {
			refs = append(refs, s.Redis.PasswordSecretRef)
		}
		if s.Redis.TLS != nil && s.Redis.TLS.CASecretRef != nil {
			refs = append(refs, s.Redis.TLS.CASecretRef)
		}
		return refs
	},
	Open: func(src Source) (Backend, error) {
		o, err := redisOptions(src)
		if err != nil {
			return nil, err
		}
		return NewRedis(o), nil
	},
	Addresses: func(src Source) ([]Address, error) {
		return []Address{{HostPort: src.Spec.Redis.Address, Field: "spec.queue.redis.address"}}, nil
	},
	NewWatcher: NewRedisWatcher,
	DeadLetterQueue: func(s *qjv1.QueueSource) string {
		return fmt.Sprintf("Redis list %q", FailedKey(s.Redis.Key))
	},
	WorkerEnv: func(s *qjv1.QueueSource) []corev1.EnvVar {
		r := s.Redis
		env := []corev1.EnvVar{
			{Name: EnvRedisAddress, Value: r.Address},
			{Name: EnvRedisKey, Value: r.Key},
			{Name: EnvRedisDB, Value: strconv.Itoa(int(derefInt32(r.DB)))},
		}
		if r.Username != "" {
			env = append(env, corev1.EnvVar{Name: EnvRedisUsername, Value: r.Username})
		}
		if r.PasswordSecretRef != nil {
			env = append(env, corev1.EnvVar{Name: EnvRedisPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: r.PasswordSecretRef.DeepCopy()}})
		}
		if r.TLS != nil {
			env = append(env, corev1.EnvVar{Name: EnvRedisTLS, Value: "true"})
			env = append(env, tlsEnv(EnvRedisTLSCA, EnvRedisTLSServerName, r.TLS)...)
		}
		return env
	},
}

// redisOptions are the connection options of a resolved Redis source.
func redisOptions(src Source) (RedisOptions, error) {
	r := src.Spec.Redis
	o := RedisOptions{
		Address:  r.Address,
		DB:       int(derefInt32(r.DB)),
		Username: r.Username,
		Password: src.Secret(r.PasswordSecretRef),
		Key:      r.Key,
	}
	if r.TLS != nil {
		var err error
		if o.TLS, err = TLSClientConfig(r.TLS, src, hostOf(r.Address), "spec.queue.redis.tls"); err != nil {
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
