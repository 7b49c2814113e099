package kube

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
)

func secretRef(name, key string) *corev1.SecretKeySelector {
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}

// WorkerEnv gives the pods the servers, stream, consumer and lease as values and every
// credential as a secretKeyRef; what a worker reads back from it is what the controller's
// probe uses.
func TestWorkerEnvAndOptions(t *testing.T) {
	src := &qjv1.QueueSource{NATS: &qjv1.NATSQueue{
		Servers: []string{"nats://nats-0:4222", "nats://nats-1:4222"}, Stream: "jobs", Consumer: "workers",
		UserSecretRef: secretRef("nats", "user"), PasswordSecretRef: secretRef("nats", "password"),
		AckWaitSeconds: ptr.To[int32](90),
	}}
	fromSecret := func(key string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{SecretKeyRef: secretRef("nats", key)}
	}
	want := []corev1.EnvVar{
		{Name: nats.EnvURL, Value: "nats://nats-0:4222,nats://nats-1:4222"},
		{Name: nats.EnvStream, Value: "jobs"},
		{Name: nats.EnvConsumer, Value: "workers"},
		{Name: nats.EnvAckWaitSeconds, Value: "90"},
		{Name: nats.EnvUser, ValueFrom: fromSecret("user")},
		{Name: nats.EnvPassword, ValueFrom: fromSecret("password")},
	}
	env := Backend.WorkerEnv(src)
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	secrets := map[string]string{"nats/user": "alice", "nats/password": "s3cret"}
	resolved := map[string]string{}
	for _, e := range env {
		resolved[e.Name] = e.Value
		if e.ValueFrom != nil {
			resolved[e.Name] = secrets[e.ValueFrom.SecretKeyRef.Name+"/"+e.ValueFrom.SecretKeyRef.Key]
		}
	}
	fromEnv, err := nats.OptionsFromEnv(func(k string) string { return resolved[k] })
	if err != nil {
		t.Fatal(err)
	}
	probe, err := Options(backends.Source{Spec: src, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	wantOpts := nats.Options{Servers: []string{"nats://nats-0:4222", "nats://nats-1:4222"}, Stream: "jobs", Consumer: "workers",
		User: "alice", Password: "s3cret", AckWait: 90 * time.Second}
	if diff := cmp.Diff(wantOpts, fromEnv); diff != "" {
		t.Errorf("the worker's options (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantOpts, probe); diff != "" {
		t.Errorf("the probe's options (-want +got):\n%s", diff)
	}
	refs := SecretRefs(src)
	wantRefs := []backends.SecretRef{{Name: "nats", Key: "user", Field: FieldUser}, {Name: "nats", Key: "password", Field: FieldPassword}}
	if diff := cmp.Diff(wantRefs, refs); diff != "" {
		t.Errorf("SecretRefs (-want +got):\n%s", diff)
	}
}

// The lease defaults to 30 s; a token, a .creds file, an NKey seed and the TLS CA each
// come from their Secret, named by their field.
func TestOptionsCredentialsAndTLS(t *testing.T) {
	for _, tc := range []struct {
		name  string
		set   func(n *qjv1.NATSQueue)
		field string
		env   string
	}{
		{"token", func(n *qjv1.NATSQueue) { n.TokenSecretRef = secretRef("s", "k") }, FieldToken, nats.EnvToken},
		{"creds", func(n *qjv1.NATSQueue) { n.CredsSecretRef = secretRef("s", "k") }, FieldCreds, nats.EnvCreds},
		{"nkey seed", func(n *qjv1.NATSQueue) { n.NKeySeedSecretRef = secretRef("s", "k") }, FieldNKeySeed, nats.EnvNKeySeed},
		{"TLS CA", func(n *qjv1.NATSQueue) { n.TLS = &qjv1.TLSConfig{CASecretRef: secretRef("s", "k")} }, FieldTLSCA, nats.EnvTLSCA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &qjv1.NATSQueue{URL: "tls://nats:4222", Stream: "jobs", Consumer: "workers"}
			tc.set(n)
			src := &qjv1.QueueSource{NATS: n}
			if diff := cmp.Diff([]backends.SecretRef{{Name: "s", Key: "k", Field: tc.field}}, SecretRefs(src)); diff != "" {
				t.Errorf("SecretRefs (-want +got):\n%s", diff)
			}
			var found bool
			for _, e := range WorkerEnv(src) {
				if e.Name == tc.env {
					found = e.Value == "" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef.Name == "s"
				}
				if e.Name == nats.EnvAckWaitSeconds && e.Value != "30" {
					t.Errorf("%s = %q, want the default 30", e.Name, e.Value)
				}
			}
			if !found {
				t.Errorf("WorkerEnv has no %s from the Secret", tc.env)
			}
		})
	}
}

// Addresses are each server's host:port (4222 by default), named by the field they are in.
func TestAddresses(t *testing.T) {
	src := backends.Source{Spec: &qjv1.QueueSource{NATS: &qjv1.NATSQueue{Servers: []string{"nats://a:4223", "tls://b"}}}}
	got, err := Addresses(src)
	want := []queue.Address{{HostPort: "a:4223", Field: FieldServers}, {HostPort: "b:4222", Field: FieldServers}}
	if diff := cmp.Diff(want, got); err != nil || diff != "" {
		t.Errorf("Addresses = %v (-want +got):\n%s", err, diff)
	}
}
