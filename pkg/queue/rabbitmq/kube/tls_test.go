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
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
)

func selector(name, key string) *corev1.SecretKeySelector {
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}

var (
	caRef = selector("queue-ca", "ca.crt")
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
		wantCounts *queue.Counts
	}{
		{name: "amqps with the right CA", url: rabbitServer.TLSURL(), tls: &qjv1.TLSConfig{CASecretRef: caRef}},
		{name: "amqps and https management with the right CA", url: rabbitServer.TLSURL(), tls: &qjv1.TLSConfig{CASecretRef: caRef},
			mgmt: rabbitServer.ManagementTLSURL(), wantCounts: &queue.Counts{Ready: 1, Lag: rabbitmq.ManagementLag}},
		{name: "amqps with a server name the certificate is valid for", url: rabbitServer.TLSURL(),
			tls: &qjv1.TLSConfig{CASecretRef: caRef, ServerName: "localhost"}},
		{name: "amqps with a CA that did not sign the certificate", url: rabbitServer.TLSURL(), tls: &qjv1.TLSConfig{CASecretRef: caRef},
			ca: string(otherCA.PEM()), reason: queue.ReasonTLSFailed, says: "not signed by a trusted CA: check spec.queue.rabbitmq.tls.caSecretRef"},
		{name: "amqps with the system's roots", url: rabbitServer.TLSURL(),
			reason: queue.ReasonTLSFailed, says: "not signed by a trusted CA"},
		{name: "amqps with a server name the certificate is not valid for", url: rabbitServer.TLSURL(),
			tls: &qjv1.TLSConfig{CASecretRef: caRef, ServerName: "rabbitmq.example.com"}, reason: queue.ReasonTLSFailed, says: "not valid for the server name"},
		{name: "amqps towards the plain AMQP port", url: strings.Replace(rabbitServer.URL(), "amqp://", "amqps://", 1),
			tls: &qjv1.TLSConfig{CASecretRef: caRef}, reason: queue.ReasonTLSFailed, says: "does not speak TLS"},
		{name: "TLS settings with an amqp:// URL", url: rabbitServer.URL(), tls: &qjv1.TLSConfig{CASecretRef: caRef},
			reason: queue.ReasonTLSFailed, says: "make the URL in the Secret of spec.queue.rabbitmq.urlSecretRef amqps://"},
		{name: "a CA Secret key that holds no PEM certificate", url: rabbitServer.TLSURL(), tls: &qjv1.TLSConfig{CASecretRef: caRef},
			ca: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", reason: queue.ReasonTLSFailed, says: "spec.queue.rabbitmq.tls.caSecretRef"},
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
			src := backends.Source{Spec: &qjv1.QueueSource{RabbitMQ: spec}, Secrets: secrets}
			if c.wantCounts != nil {
				b, err := Backend.Open(src)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = b.Close() })
				probeUntil(t, b.(*rabbitmq.Conn), "1 ready, 0 in flight, counted by the management API over https", func(got queue.Counts) bool { return got == *c.wantCounts })
				return
			}
			err := probeKind(t, Backend, src)
			checkProbe(t, err, c.reason, c.says)
		})
	}
}

func TestBackendTLSWorkerEnv(t *testing.T) {
	urlRef := selector("rabbit", "url")
	src := &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{URLSecretRef: urlRef, Queue: "job1",
		TLS: &qjv1.TLSConfig{CASecretRef: caRef, ServerName: "rabbitmq.example.com"}}}
	fromSecret := &corev1.EnvVarSource{SecretKeyRef: urlRef}
	want := []corev1.EnvVar{
		{Name: rabbitmq.EnvURL, ValueFrom: fromSecret},
		{Name: rabbitmq.EnvQueue, Value: "job1"},
		{Name: rabbitmq.EnvBrokerURL, ValueFrom: fromSecret},
		{Name: rabbitmq.EnvBrokerQueue, Value: "job1"},
		{Name: rabbitmq.EnvTLSCA, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: caRef}},
		{Name: rabbitmq.EnvTLSServerName, Value: "rabbitmq.example.com"},
	}
	if diff := cmp.Diff(want, Backend.WorkerEnv(src)); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]backends.SecretRef{
		{Name: "rabbit", Key: "url", Field: "spec.queue.rabbitmq.urlSecretRef"},
		{Name: "queue-ca", Key: "ca.crt", Field: "spec.queue.rabbitmq.tls.caSecretRef"}}, Backend.SecretRefs(src)); diff != "" {
		t.Errorf("SecretRefs (-want +got):\n%s", diff)
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
		{name: "tls: {}: on, the URL's host", tls: &qjv1.TLSConfig{}, want: tlsOf{On: true}},
		{name: "a server name", tls: &qjv1.TLSConfig{ServerName: "rabbitmq.example.com"}, want: tlsOf{On: true, ServerName: "rabbitmq.example.com"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := backends.Source{Spec: &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{URL: "amqps://rabbitmq/", Queue: "q", TLS: tc.tls}}}
			var got tlsOf
			got.On, got.ServerName = Backend.TLS(src)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("TLS (-want +got):\n%s", diff)
			}
		})
	}
}
