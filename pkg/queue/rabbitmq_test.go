package queue

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// publish declares a queue and publishes items to it with publisher confirms, so the
// broker has them all when it returns.
func publish(t testing.TB, queue string, items ...string) {
	t.Helper()
	servers.Publish(t, rabbitServer.URL(), queue, items...)
}

func TestRabbitMQKind(t *testing.T) {
	ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "rabbit"}, Key: "url"}
	src := &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{URLSecretRef: ref, Queue: "job1"}}
	fromSecret := &corev1.EnvVarSource{SecretKeyRef: ref}
	want := []corev1.EnvVar{
		{Name: EnvRabbitMQURL, ValueFrom: fromSecret},
		{Name: EnvRabbitMQQueue, Value: "job1"},
		{Name: EnvBrokerURL, ValueFrom: fromSecret},
		{Name: EnvQueue, Value: "job1"},
	}
	if diff := cmp.Diff(want, RabbitMQKind.WorkerEnv(src)); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	b, err := RabbitMQKind.Open(Source{Spec: src, Secrets: map[string]string{"rabbit/url": rabbitServer.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	publish(t, "job1")
	if _, err := b.Probe(ctx(t)); err != nil {
		t.Errorf("Probe with the URL from the Secret: %v", err)
	}
}

// probeUntil probes until ok accepts the counts, or fails the test after a minute: the
// management plugin's counts lag by up to its statistics interval.
func probeUntil(t *testing.T, r *RabbitMQ, what string, ok func(Counts) bool) {
	t.Helper()
	servers.ProbeUntil(t, time.Minute, servers.ManagementStatsInterval/2,
		func() (Counts, error) { return r.Probe(ctx(t)) }, ok, what)
}

func TestRabbitMQKindManagementURLFromSecret(t *testing.T) {
	urlRef := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "rabbit"}, Key: "url"}
	mgmtRef := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "rabbit-mgmt"}, Key: "management-url"}
	src := &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{URLSecretRef: urlRef, ManagementURLSecretRef: mgmtRef, Queue: "kind-mgmt"}}
	if diff := cmp.Diff([]*corev1.SecretKeySelector{urlRef, mgmtRef}, RabbitMQKind.SecretRefs(src)); diff != "" {
		t.Errorf("SecretRefs (-want +got):\n%s", diff)
	}
	for _, env := range RabbitMQKind.WorkerEnv(src) {
		if env.ValueFrom != nil && env.ValueFrom.SecretKeyRef.Name == mgmtRef.Name {
			t.Errorf("workers get the management URL in %s; they need not", env.Name)
		}
	}
	publish(t, "kind-mgmt", "a")
	b, err := RabbitMQKind.Open(Source{Spec: src, Secrets: map[string]string{
		"rabbit/url": rabbitServer.URL(), "rabbit-mgmt/management-url": rabbitServer.ManagementURL()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	probeUntil(t, b.(*RabbitMQ), "1 ready, 0 in flight, counted", func(c Counts) bool { return c == Counts{Ready: 1, Lag: ManagementLag} })

	// managementURL without credentials: the AMQP URL's are used.
	src.RabbitMQ.ManagementURLSecretRef = nil
	src.RabbitMQ.ManagementURL = servers.WithoutUserinfo(t, rabbitServer.ManagementURL())
	b, err = RabbitMQKind.Open(Source{Spec: src, Secrets: map[string]string{"rabbit/url": rabbitServer.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	probeUntil(t, b.(*RabbitMQ), "1 ready, 0 in flight, counted", func(c Counts) bool { return c == Counts{Ready: 1, Lag: ManagementLag} })
}
