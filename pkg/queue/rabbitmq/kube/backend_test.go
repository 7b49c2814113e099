package kube

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// publish declares a queue and publishes items to it with publisher confirms, so the
// broker has them all when it returns.
func publish(t testing.TB, queue string, items ...string) {
	t.Helper()
	servers.Publish(t, rabbitServer.URL(), queue, items...)
}

func TestBackend(t *testing.T) {
	ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "rabbit"}, Key: "url"}
	src := &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{URLSecretRef: ref, Queue: "job1"}}
	fromSecret := &corev1.EnvVarSource{SecretKeyRef: ref}
	want := []corev1.EnvVar{
		{Name: rabbitmq.EnvURL, ValueFrom: fromSecret},
		{Name: rabbitmq.EnvQueue, Value: "job1"},
		{Name: rabbitmq.EnvBrokerURL, ValueFrom: fromSecret},
		{Name: rabbitmq.EnvBrokerQueue, Value: "job1"},
	}
	if diff := cmp.Diff(want, Backend.WorkerEnv(src)); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	b, err := Backend.Open(backends.Source{Spec: src, Secrets: map[string]string{"rabbit/url": rabbitServer.URL()}})
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
func probeUntil(t *testing.T, r *rabbitmq.Conn, what string, ok func(queue.Counts) bool) {
	t.Helper()
	servers.ProbeUntil(t, time.Minute, servers.ManagementStatsInterval/2,
		func() (queue.Counts, error) { return r.Probe(ctx(t)) }, ok, what)
}

func TestBackendManagementURLFromSecret(t *testing.T) {
	urlRef := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "rabbit"}, Key: "url"}
	mgmtRef := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "rabbit-mgmt"}, Key: "management-url"}
	src := &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{URLSecretRef: urlRef, ManagementURLSecretRef: mgmtRef, Queue: "kind-mgmt"}}
	if diff := cmp.Diff([]backends.SecretRef{
		{Name: "rabbit", Key: "url", Field: "spec.queue.rabbitmq.urlSecretRef"},
		{Name: "rabbit-mgmt", Key: "management-url", Field: "spec.queue.rabbitmq.managementURLSecretRef"}}, Backend.SecretRefs(src)); diff != "" {
		t.Errorf("SecretRefs (-want +got):\n%s", diff)
	}
	for _, env := range Backend.WorkerEnv(src) {
		if env.ValueFrom != nil && env.ValueFrom.SecretKeyRef.Name == mgmtRef.Name {
			t.Errorf("workers get the management URL in %s; they need not", env.Name)
		}
	}
	publish(t, "kind-mgmt", "a")
	b, err := Backend.Open(backends.Source{Spec: src, Secrets: map[string]string{
		"rabbit/url": rabbitServer.URL(), "rabbit-mgmt/management-url": rabbitServer.ManagementURL()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	probeUntil(t, b.(*rabbitmq.Conn), "1 ready, 0 in flight, counted", func(c queue.Counts) bool { return c == queue.Counts{Ready: 1, Lag: rabbitmq.ManagementLag} })

	// managementURL without credentials: the AMQP URL's are used.
	src.RabbitMQ.ManagementURLSecretRef = nil
	src.RabbitMQ.ManagementURL = servers.WithoutUserinfo(t, rabbitServer.ManagementURL())
	b, err = Backend.Open(backends.Source{Spec: src, Secrets: map[string]string{"rabbit/url": rabbitServer.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	probeUntil(t, b.(*rabbitmq.Conn), "1 ready, 0 in flight, counted", func(c queue.Counts) bool { return c == queue.Counts{Ready: 1, Lag: rabbitmq.ManagementLag} })
}
