package backends

import (
	"crypto/tls"
	"crypto/x509"

	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// TLSClientConfig is the client TLS configuration of a queue's TLS settings: the
// certificate must chain to the PEM CA bundle of caSecretRef (to the system's roots
// without one) and be valid for serverName (for host without one). field names the
// settings in messages, e.g. spec.queue.redis.tls. A nil spec gives the defaults.
func TLSClientConfig(spec *qjv1.TLSConfig, src Source, host, field string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if spec == nil {
		return c, nil
	}
	if spec.ServerName != "" {
		c.ServerName = spec.ServerName
	}
	if ref := spec.CASecretRef; ref != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(src.Secret(ref))) {
			return nil, queue.Errorf(queue.ReasonTLSFailed, "key %q of Secret %s (%s.caSecretRef) holds no PEM certificate: "+
				"put the CA certificates, as -----BEGIN CERTIFICATE----- blocks, in it", ref.Key, ref.Name, field)
		}
		c.RootCAs = pool
	}
	return c, nil
}

// TLSEnv is what workers need of a queue's TLS settings: the CA bundle as a secretKeyRef
// (never a literal) in the variable caEnv and the server name in serverNameEnv
// (redis.EnvTLSCA and redis.EnvTLSServerName, say).
func TLSEnv(caEnv, serverNameEnv string, spec *qjv1.TLSConfig) []corev1.EnvVar {
	var env []corev1.EnvVar
	if spec.CASecretRef != nil {
		env = append(env, corev1.EnvVar{Name: caEnv, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: spec.CASecretRef.DeepCopy()}})
	}
	if spec.ServerName != "" {
		env = append(env, corev1.EnvVar{Name: serverNameEnv, Value: spec.ServerName})
	}
	return env
}
