package kube

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// key is a fresh list name per test.
func key(t *testing.T) string { return "q-" + strings.ReplaceAll(t.Name(), "/", "-") }

func TestBackend(t *testing.T) {
	ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "password"}
	src := &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6379", Key: "job2", DB: ptr.To[int32](3), PasswordSecretRef: ref}}
	want := []corev1.EnvVar{
		{Name: redis.EnvAddress, Value: "redis:6379"},
		{Name: redis.EnvKey, Value: "job2"},
		{Name: redis.EnvDB, Value: "3"},
		{Name: redis.EnvPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref}},
	}
	if diff := cmp.Diff(want, Backend.WorkerEnv(src)); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	wantRefs := []backends.SecretRef{{Name: "redis", Key: "password", Field: "spec.queue.redis.passwordSecretRef"}}
	if diff := cmp.Diff(wantRefs, Backend.SecretRefs(src)); diff != "" {
		t.Errorf("SecretRefs (-want +got):\n%s", diff)
	}

	b, err := Backend.Open(backends.Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: authRedis.Addr(), Key: "k", PasswordSecretRef: ref}},
		Secrets: map[string]string{"redis/password": redisPassword}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Probe(ctx(t)); err != nil {
		t.Errorf("Probe with the password from the Secret: %v", err)
	}
}
