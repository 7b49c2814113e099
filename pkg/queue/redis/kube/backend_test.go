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

func TestClientID(t *testing.T) {
	ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "password"}
	base := qjv1.RedisQueue{Address: "redis:6379", Key: "a", DB: ptr.To[int32](1), Username: "u", PasswordSecretRef: ref, TLS: &qjv1.TLSConfig{ServerName: "redis"}}
	secrets := map[string]string{"redis/password": "p1"}
	id := func(r qjv1.RedisQueue, secrets map[string]string) string {
		return ClientID(backends.Source{Spec: &qjv1.QueueSource{Redis: &r}, Secrets: secrets}, r)
	}
	with := func(f func(*qjv1.RedisQueue)) qjv1.RedisQueue {
		r := *base.DeepCopy()
		f(&r)
		return r
	}
	if id(with(func(r *qjv1.RedisQueue) { r.Key = "b" }), secrets) != id(base, secrets) {
		t.Error("two keys on one server, database and credentials have different ClientIDs: their probes would not share a client")
	}
	for name, r := range map[string]qjv1.RedisQueue{
		"another address":     with(func(r *qjv1.RedisQueue) { r.Address = "redis-2:6379" }),
		"another database":    with(func(r *qjv1.RedisQueue) { r.DB = ptr.To[int32](2) }),
		"another user":        with(func(r *qjv1.RedisQueue) { r.Username = "v" }),
		"no TLS":              with(func(r *qjv1.RedisQueue) { r.TLS = nil }),
		"another server name": with(func(r *qjv1.RedisQueue) { r.TLS.ServerName = "other" }),
	} {
		if id(r, secrets) == id(base, secrets) {
			t.Errorf("%s: the same ClientID", name)
		}
	}
	if id(base, map[string]string{"redis/password": "p2"}) == id(base, secrets) {
		t.Error("another password: the same ClientID")
	}
}
