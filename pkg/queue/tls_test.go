package queue

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

func selector(name, key string) *corev1.SecretKeySelector {
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}

var (
	passwordRef = selector("redis", "password")
	caRef       = selector("queue-ca", "ca.crt")
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
	if err == nil || ReasonOf(err) != reason {
		t.Fatalf("Probe error = %v (reason %s), want reason %s", err, ReasonOf(err), reason)
	}
	if !strings.Contains(err.Error(), says) {
		t.Errorf("error %q does not say %q", err, says)
	}
	if s := secretsIn(err.Error()); s != nil {
		t.Errorf("error %q repeats the secrets %q", err, s)
	}
	t.Logf("error: %v", err)
}

// probeKind opens a backend of kind for a source, probes it once and closes it.
func probeKind(t *testing.T, kind Kind, src Source) error {
	t.Helper()
	b, err := kind.Open(src)
	if err != nil {
		return err
	}
	defer b.Close()
	start := time.Now()
	_, err = b.Probe(ctx(t))
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
			reason:  ReasonTLSFailed, says: "not signed by a trusted CA: check spec.queue.redis.tls.caSecretRef"},
		{name: "the system's roots", redis: func(r *qjv1.RedisQueue) { r.TLS.CASecretRef = nil },
			reason: ReasonTLSFailed, says: "not signed by a trusted CA"},
		{name: "a server name the certificate is not valid for", redis: func(r *qjv1.RedisQueue) { r.TLS.ServerName = "redis.example.com" },
			reason: ReasonTLSFailed, says: "not valid for the server name"},
		{name: "a CA Secret key that holds no PEM certificate", redis: func(*qjv1.RedisQueue) {},
			secrets: map[string]string{"queue-ca/ca.crt": "not a certificate"},
			reason:  ReasonTLSFailed, says: `key "ca.crt" of Secret queue-ca (spec.queue.redis.tls.caSecretRef) holds no PEM certificate`},
		// redis-server takes a ClientHello for the start of an inline command and waits for
		// the rest: the handshake times out.
		{name: "TLS towards a plain-TCP server", redis: func(r *qjv1.RedisQueue) { r.Address = authRedis.Addr() },
			reason: ReasonTLSFailed, says: "did not complete a TLS handshake"},
		{name: "plain TCP towards a TLS-only server", redis: func(r *qjv1.RedisQueue) { r.TLS = nil },
			reason: ReasonConnectionFailed, says: "set spec.queue.redis.tls"},
		{name: "a user that does not exist", redis: func(r *qjv1.RedisQueue) { r.Username = "mallory" },
			reason: ReasonAuthFailed, says: "spec.queue.redis.username"},
		{name: "an ACL user with the default user's password", redis: func(r *qjv1.RedisQueue) { r.Username = aclUser },
			reason: ReasonAuthFailed, says: "passwordSecretRef"},
		{name: "the default user with a wrong password", redis: func(*qjv1.RedisQueue) {},
			secrets: map[string]string{"redis/password": "wrong-pass-xyz"},
			reason:  ReasonAuthFailed, says: "passwordSecretRef"},
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
			err := probeKind(t, RedisKind, Source{Spec: &qjv1.QueueSource{Redis: spec}, Secrets: secrets})
			checkProbe(t, err, c.reason, c.says)
		})
	}
}

func TestRedisKindTLSWorkerEnv(t *testing.T) {
	src := &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6380", Key: "job2", Username: aclUser, PasswordSecretRef: passwordRef,
		TLS: &qjv1.TLSConfig{CASecretRef: caRef, ServerName: "redis.example.com"}}}
	want := []corev1.EnvVar{
		{Name: EnvRedisAddress, Value: "redis:6380"},
		{Name: EnvRedisKey, Value: "job2"},
		{Name: EnvRedisDB, Value: "0"},
		{Name: EnvRedisUsername, Value: aclUser},
		{Name: EnvRedisPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: passwordRef}},
		{Name: EnvRedisTLS, Value: "true"},
		{Name: EnvRedisTLSCA, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: caRef}},
		{Name: EnvRedisTLSServerName, Value: "redis.example.com"},
	}
	if diff := cmp.Diff(want, RedisKind.WorkerEnv(src)); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]*corev1.SecretKeySelector{passwordRef, caRef}, RedisKind.SecretRefs(src)); diff != "" {
		t.Errorf("SecretRefs (-want +got):\n%s", diff)
	}

	// tls: {} turns TLS on with the system's roots.
	src.Redis.TLS = &qjv1.TLSConfig{}
	env := RedisKind.WorkerEnv(src)
	if diff := cmp.Diff(corev1.EnvVar{Name: EnvRedisTLS, Value: "true"}, env[len(env)-1]); diff != "" {
		t.Errorf("WorkerEnv of tls: {} ends with (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]*corev1.SecretKeySelector{passwordRef}, RedisKind.SecretRefs(src)); diff != "" {
		t.Errorf("SecretRefs of tls: {} (-want +got):\n%s", diff)
	}
}

func TestRabbitMQTLS(t *testing.T) {
	urlRef := selector("rabbit", "url")
	mgmtRef := selector("rabbit-mgmt", "url")
	cases := []struct {
		name       string
		url        string
		tls        *qjv1.TLSConfig
		mgmt       string
		ca         string
		reason     string
		says       string
		wantCounts *Counts
	}{
		{name: "amqps with the right CA", url: rabbitServer.TLSURL(), tls: &qjv1.TLSConfig{CASecretRef: caRef}},
		{name: "amqps and https management with the right CA", url: rabbitServer.TLSURL(), tls: &qjv1.TLSConfig{CASecretRef: caRef},
			mgmt: rabbitServer.ManagementTLSURL(), wantCounts: &Counts{Ready: 1, Lag: ManagementLag}},
		{name: "amqps with a server name the certificate is valid for", url: rabbitServer.TLSURL(),
			tls: &qjv1.TLSConfig{CASecretRef: caRef, ServerName: "localhost"}},
		{name: "amqps with a CA that did not sign the certificate", url: rabbitServer.TLSURL(), tls: &qjv1.TLSConfig{CASecretRef: caRef},
			ca: string(otherCA.PEM()), reason: ReasonTLSFailed, says: "not signed by a trusted CA: check spec.queue.rabbitmq.tls.caSecretRef"},
		{name: "amqps with the system's roots", url: rabbitServer.TLSURL(),
			reason: ReasonTLSFailed, says: "not signed by a trusted CA"},
		{name: "amqps with a server name the certificate is not valid for", url: rabbitServer.TLSURL(),
			tls: &qjv1.TLSConfig{CASecretRef: caRef, ServerName: "rabbitmq.example.com"}, reason: ReasonTLSFailed, says: "not valid for the server name"},
		{name: "amqps towards the plain AMQP port", url: strings.Replace(rabbitServer.URL(), "amqp://", "amqps://", 1),
			tls: &qjv1.TLSConfig{CASecretRef: caRef}, reason: ReasonTLSFailed, says: "does not speak TLS"},
		{name: "TLS settings with an amqp:// URL", url: rabbitServer.URL(), tls: &qjv1.TLSConfig{CASecretRef: caRef},
			reason: ReasonTLSFailed, says: "make the URL in the Secret of spec.queue.rabbitmq.urlSecretRef amqps://"},
		{name: "a CA Secret key that holds no PEM certificate", url: rabbitServer.TLSURL(), tls: &qjv1.TLSConfig{CASecretRef: caRef},
			ca: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", reason: ReasonTLSFailed, says: "spec.queue.rabbitmq.tls.caSecretRef"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := "tls-" + strings.ReplaceAll(t.Name(), "/", "-")
			publish(t, q, "a")
			spec := &qjv1.RabbitMQQueue{Queue: q, URLSecretRef: urlRef, TLS: c.tls}
			secrets := map[string]string{"rabbit/url": c.url, "queue-ca/ca.crt": string(testCA.PEM())}
			if c.ca != "" {
				secrets["queue-ca/ca.crt"] = c.ca
			}
			if c.mgmt != "" {
				spec.ManagementURLSecretRef = mgmtRef
				secrets["rabbit-mgmt/url"] = c.mgmt
			}
			src := Source{Spec: &qjv1.QueueSource{RabbitMQ: spec}, Secrets: secrets}
			if c.wantCounts != nil {
				b, err := RabbitMQKind.Open(src)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = b.Close() })
				probeUntil(t, b.(*RabbitMQ), "1 ready, 0 in flight, counted by the management API over https", func(got Counts) bool { return got == *c.wantCounts })
				return
			}
			err := probeKind(t, RabbitMQKind, src)
			checkProbe(t, err, c.reason, c.says)
		})
	}
}

func TestRabbitMQKindTLSWorkerEnv(t *testing.T) {
	urlRef := selector("rabbit", "url")
	src := &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{URLSecretRef: urlRef, Queue: "job1",
		TLS: &qjv1.TLSConfig{CASecretRef: caRef, ServerName: "rabbitmq.example.com"}}}
	fromSecret := &corev1.EnvVarSource{SecretKeyRef: urlRef}
	want := []corev1.EnvVar{
		{Name: EnvRabbitMQURL, ValueFrom: fromSecret},
		{Name: EnvRabbitMQQueue, Value: "job1"},
		{Name: EnvBrokerURL, ValueFrom: fromSecret},
		{Name: EnvQueue, Value: "job1"},
		{Name: EnvRabbitMQTLSCA, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: caRef}},
		{Name: EnvRabbitMQTLSServerName, Value: "rabbitmq.example.com"},
	}
	if diff := cmp.Diff(want, RabbitMQKind.WorkerEnv(src)); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]*corev1.SecretKeySelector{urlRef, caRef}, RabbitMQKind.SecretRefs(src)); diff != "" {
		t.Errorf("SecretRefs (-want +got):\n%s", diff)
	}
}
