package kube

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

func selector(name, key string) *corev1.SecretKeySelector {
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}

var (
	passwordRef = selector("redis", "password")
	caRef       = selector("queue-ca", "ca.crt")
	// passwordField and caField are the references as SecretRefs lists them.
	passwordField = backends.SecretRef{Name: "redis", Key: "password", Field: "spec.queue.redis.passwordSecretRef"}
	caField       = backends.SecretRef{Name: "queue-ca", Key: "ca.crt", Field: "spec.queue.redis.tls.caSecretRef"}
)

// secretsIn says which of the test's secret values a message repeats.
func secretsIn(msg string) []string {
	var out []string
	for _, s := range []string{redisPassword, aclPassword, "wrong-pass-xyz", "guest:guest"} {
		if strings.Contains(msg, s) {
			out = append(out, s)
		}
	}
	return out
}

// checkProbe checks a probe's outcome: success if reason is empty, else an error of that
// reason whose message says says and repeats no secret.
func checkProbe(t *testing.T, err error, reason, says string) {
	t.Helper()
	if reason == "" {
		if err != nil {
			t.Fatalf("Probe: %v", err)
		}
		return
	}
	if err == nil || queue.ReasonOf(err) != reason {
		t.Fatalf("Probe error = %v (reason %s), want reason %s", err, queue.ReasonOf(err), reason)
	}
	if !strings.Contains(err.Error(), says) {
		t.Errorf("error %q does not say %q", err, says)
	}
	if s := secretsIn(err.Error()); s != nil {
		t.Errorf("error %q repeats the secrets %q", err, s)
	}
	t.Logf("error: %v", err)
}

// probeKind opens a connection of backend b to a source, probes it once and closes it.
func probeKind(t *testing.T, b backends.Backend, src backends.Source) error {
	t.Helper()
	c, err := b.Open(src)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Probe(ctx(t))
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("Probe took %s: it must not hang", took)
	}
	return err
}

func TestRedisTLSAndACL(t *testing.T) {
	type tc struct {
		name string
		// redis changes the spec of a TLS Redis with the default user's password and the
		// test CA.
		redis   func(*qjv1.RedisQueue)
		secrets map[string]string
		// reason is empty for a probe that must succeed; says, what its message must say.
		reason, says string
	}
	cases := []tc{
		{name: "the right CA", redis: func(*qjv1.RedisQueue) {}},
		{name: "the right CA, as an ACL user", redis: func(r *qjv1.RedisQueue) { r.Username = aclUser },
			secrets: map[string]string{"redis/password": aclPassword}},
		{name: "a server name the certificate is valid for, other than the address's host",
			redis: func(r *qjv1.RedisQueue) { r.TLS.ServerName = "localhost" }},
		{name: "a CA that did not sign the certificate", redis: func(*qjv1.RedisQueue) {},
			secrets: map[string]string{"queue-ca/ca.crt": string(otherCA.PEM())},
			reason:  queue.ReasonTLSFailed, says: "not signed by a trusted CA: check spec.queue.redis.tls.caSecretRef"},
		{name: "the system's roots", redis: func(r *qjv1.RedisQueue) { r.TLS.CASecretRef = nil },
			reason: queue.ReasonTLSFailed, says: "not signed by a trusted CA"},
		{name: "a server name the certificate is not valid for", redis: func(r *qjv1.RedisQueue) { r.TLS.ServerName = "redis.example.com" },
			reason: queue.ReasonTLSFailed, says: "not valid for the server name"},
		{name: "a CA Secret key that holds no PEM certificate", redis: func(*qjv1.RedisQueue) {},
			secrets: map[string]string{"queue-ca/ca.crt": "not a certificate"},
			reason:  queue.ReasonTLSFailed, says: `key "ca.crt" of Secret queue-ca (spec.queue.redis.tls.caSecretRef) holds no PEM certificate`},
		// redis-server takes a ClientHello for the start of an inline command and waits for
		// the rest: the handshake times out.
		{name: "TLS towards a plain-TCP server", redis: func(r *qjv1.RedisQueue) { r.Address = authRedis.Addr() },
			reason: queue.ReasonTLSFailed, says: "did not complete a TLS handshake"},
		{name: "plain TCP towards a TLS-only server", redis: func(r *qjv1.RedisQueue) { r.TLS = nil },
			reason: queue.ReasonConnectionFailed, says: "set spec.queue.redis.tls"},
		{name: "a user that does not exist", redis: func(r *qjv1.RedisQueue) { r.Username = "mallory" },
			reason: queue.ReasonAuthFailed, says: "spec.queue.redis.username"},
		{name: "an ACL user with the default user's password", redis: func(r *qjv1.RedisQueue) { r.Username = aclUser },
			reason: queue.ReasonAuthFailed, says: "passwordSecretRef"},
		{name: "the default user with a wrong password", redis: func(*qjv1.RedisQueue) {},
			secrets: map[string]string{"redis/password": "wrong-pass-xyz"},
			reason:  queue.ReasonAuthFailed, says: "passwordSecretRef"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := &qjv1.RedisQueue{Address: tlsRedis.Addr(), Key: key(t), PasswordSecretRef: passwordRef,
				TLS: &qjv1.TLSConfig{CASecretRef: caRef}}
			c.redis(spec)
			secrets := map[string]string{"redis/password": redisPassword, "queue-ca/ca.crt": string(testCA.PEM())}
			for k, v := range c.secrets {
				secrets[k] = v
			}
			err := probeKind(t, Backend, backends.Source{Spec: &qjv1.QueueSource{Redis: spec}, Secrets: secrets})
			checkProbe(t, err, c.reason, c.says)
		})
	}
}

func TestBackendTLSWorkerEnv(t *testing.T) {
	src := &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6380", Key: "job2", Username: aclUser, PasswordSecretRef: passwordRef,
		TLS: &qjv1.TLSConfig{CASecretRef: caRef, ServerName: "redis.example.com"}}}
	want := []corev1.EnvVar{
		{Name: redis.EnvAddress, Value: "redis:6380"},
		{Name: redis.EnvKey, Value: "job2"},
		{Name: redis.EnvDB, Value: "0"},
		{Name: redis.EnvUsername, Value: aclUser},
		{Name: redis.EnvPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: passwordRef}},
		{Name: redis.EnvTLS, Value: "true"},
		{Name: redis.EnvTLSCA, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: caRef}},
		{Name: redis.EnvTLSServerName, Value: "redis.example.com"},
	}
	if diff := cmp.Diff(want, Backend.WorkerEnv(src)); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]backends.SecretRef{passwordField, caField}, Backend.SecretRefs(src)); diff != "" {
		t.Errorf("SecretRefs (-want +got):\n%s", diff)
	}

	// tls: {} turns TLS on with the system's roots.
	src.Redis.TLS = &qjv1.TLSConfig{}
	env := Backend.WorkerEnv(src)
	if diff := cmp.Diff(corev1.EnvVar{Name: redis.EnvTLS, Value: "true"}, env[len(env)-1]); diff != "" {
		t.Errorf("WorkerEnv of tls: {} ends with (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]backends.SecretRef{passwordField}, Backend.SecretRefs(src)); diff != "" {
		t.Errorf("SecretRefs of tls: {} (-want +got):\n%s", diff)
	}
}

// Backend.TLS says whether a source speaks TLS and the server name it verifies: the
// controller's probe gates keep QueueJobs with other TLS settings apart by it.
func TestBackendTLS(t *testing.T) {
	type tlsOf struct {
		On         bool
		ServerName string
	}
	for _, tc := range []struct {
		name string
		tls  *qjv1.TLSConfig
		want tlsOf
	}{
		{name: "no tls: plain", want: tlsOf{}},
		{name: "tls: {}: on, the address's host", tls: &qjv1.TLSConfig{}, want: tlsOf{On: true}},
		{name: "a server name", tls: &qjv1.TLSConfig{ServerName: "redis.example.com"}, want: tlsOf{On: true, ServerName: "redis.example.com"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := backends.Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6380", Key: "k", TLS: tc.tls}}}
			var got tlsOf
			got.On, got.ServerName = Backend.TLS(src)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("TLS (-want +got):\n%s", diff)
			}
		})
	}
}
