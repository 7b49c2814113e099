package queue

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// key is a fresh list name per test.
func key(t *testing.T) string { return "q-" + strings.ReplaceAll(t.Name(), "/", "-") }

func TestRedisKind(t *testing.T) {
	ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "password"}
	src := &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6379", Key: "job2", DB: ptr.To[int32](3), PasswordSecretRef: ref}}
	want := []corev1.EnvVar{
		{Name: EnvRedisAddress, Value: "redis:6379"},
		{Name: EnvRedisKey, Value: "job2"},
		{Name: EnvRedisDB, Value: "3"},
		{Name: EnvRedisPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref}},
	}
	if diff := cmp.Diff(want, RedisKind.WorkerEnv(src)); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	if got := RedisKind.SecretRefs(src); len(got) != 1 || got[0].Name != "redis" {
		t.Errorf("SecretRefs = %v", got)
	}
	kind, err := DefaultRegistry().For(src)
	if err != nil || kind.Name != "redis" {
		t.Errorf("registry chose %v, %v", kind, err)
	}

	b, err := RedisKind.Open(Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: authRedis.Addr(), Key: "k", PasswordSecretRef: ref}},
		Secrets: map[string]string{"redis/password": redisPassword}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Probe(ctx(t)); err != nil {
		t.Errorf("Probe with the password from the Secret: %v", err)
	}
}
