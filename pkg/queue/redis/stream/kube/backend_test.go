package kube

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	goredis "github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
	"github.com/queuejob/queuejob-operator/pkg/worker"
)

var passwordRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "password"}

// source is a resolved source of the stream name on the test server.
func source(name string) backends.Source {
	return backends.Source{
		Spec:    &qjv1.QueueSource{RedisStream: &qjv1.RedisStreamQueue{Address: authRedis.Addr(), Stream: name, Group: "g", PasswordSecretRef: passwordRef}},
		Secrets: map[string]string{"redis/password": redisPassword},
	}
}

func TestWorkerEnvAndSecretRefs(t *testing.T) {
	src := &qjv1.QueueSource{RedisStream: &qjv1.RedisStreamQueue{Address: "redis:6379", Stream: "jobs", Group: "workers",
		DB: ptr.To[int32](3), Username: "u", PasswordSecretRef: passwordRef, LeaseSeconds: ptr.To[int32](45)}}
	want := []corev1.EnvVar{
		{Name: stream.EnvAddress, Value: "redis:6379"},
		{Name: stream.EnvStream, Value: "jobs"},
		{Name: stream.EnvGroup, Value: "workers"},
		{Name: stream.EnvDB, Value: "3"},
		{Name: worker.EnvLeaseSeconds, Value: "45"},
		{Name: stream.EnvLeaseSeconds, Value: "45"},
		{Name: stream.EnvUsername, Value: "u"},
		{Name: stream.EnvPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: passwordRef}},
	}
	if diff := cmp.Diff(want, Backend.WorkerEnv(src)); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	wantRefs := []backends.SecretRef{{Name: "redis", Key: "password", Field: "spec.queue.redisStream.passwordSecretRef"}}
	if diff := cmp.Diff(wantRefs, Backend.SecretRefs(src)); diff != "" {
		t.Errorf("SecretRefs (-want +got):\n%s", diff)
	}
	// What a worker reads back is what the spec says (the password from its Secret).
	t.Setenv(stream.EnvPassword, "pw")
	t.Setenv(queue.EnvBackend, Backend.Name)
	for _, e := range Backend.WorkerEnv(src) {
		if e.ValueFrom == nil {
			t.Setenv(e.Name, e.Value)
		}
	}
	o, err := worker.OptionsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	wantOpts := stream.Options{Address: "redis:6379", Stream: "jobs", Group: "workers", DB: 3, Username: "u", Password: "pw",
		LeaseTTL: 45 * time.Second}
	if o.Backend != worker.BackendRedisStream || o.LeaseTTL != 45*time.Second {
		t.Errorf("worker.OptionsFromEnv: backend %q, lease %s; want %s, 45s", o.Backend, o.LeaseTTL, worker.BackendRedisStream)
	}
	if diff := cmp.Diff(wantOpts, o.RedisStream); diff != "" {
		t.Errorf("worker.OptionsFromEnv (-want +got):\n%s", diff)
	}
}

func TestOptions(t *testing.T) {
	src := source("s")
	o, err := Options(src)
	if err != nil {
		t.Fatal(err)
	}
	want := stream.Options{Address: authRedis.Addr(), Password: redisPassword, Stream: "s", Group: "g", LeaseTTL: 30 * time.Second}
	if diff := cmp.Diff(want, o); diff != "" {
		t.Errorf("Options without leaseSeconds (-want +got):\n%s", diff)
	}
	src.Spec.RedisStream.LeaseSeconds = ptr.To[int32](7)
	if o, _ := Options(src); o.LeaseTTL != 7*time.Second {
		t.Errorf("Options with leaseSeconds 7: lease %s", o.LeaseTTL)
	}
	if got := Backend.DeadLetterQueue(src.Spec); got != `Redis stream "s:failed"` {
		t.Errorf("DeadLetterQueue = %s", got)
	}
	c, err := Backend.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.Probe(ctx(t)); err != nil {
		t.Errorf("Probe with the password from the Secret: %v", err)
	}
}

// TestWatcherHearsXADD: the backend's watcher (the list backend's, on the stream's key)
// wakes a QueueJob when an entry is added to its stream, and not for another stream.
func TestWatcherHearsXADD(t *testing.T) {
	w := Backend.NewWatcher(logr.Discard())
	defer w.Close()
	name := "w-" + strings.ReplaceAll(t.Name(), "/", "-")
	var heard, other atomic.Int32
	stop, err := w.Watch(source(name), func(reported bool) {
		if !reported {
			heard.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	stopOther, err := w.Watch(source(name+"-other"), func(reported bool) {
		if !reported {
			other.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stopOther()
	c := redis.NewClient(redis.Options{Address: authRedis.Addr(), Password: redisPassword}, 1)
	defer func() { _ = c.Close() }()
	deadline := time.Now().Add(time.Minute)
	for heard.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no wake within a minute of XADDs")
		}
		if err := c.XAdd(ctx(t), &goredis.XAddArgs{Stream: name, Values: []any{stream.FieldItem, "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := other.Load(); n != 0 {
		t.Errorf("the other stream's QueueJob was woken %d times", n)
	}
}

// TestWatchFailureNamesTheStreamsFields: a watch the server refuses says what to fix in
// spec.queue.redisStream's fields, not spec.queue.redis's.
func TestWatchFailureNamesTheStreamsFields(t *testing.T) {
	w := redis.NewKeyWatchIn(stream.Wording, redis.Options{Address: authRedis.Addr(), Password: "not-the-password"}, func(string, bool) {}, nil)
	defer w.Close()
	w.Add("s")
	deadline := time.Now().Add(time.Minute)
	for {
		active, err := w.Active()
		if active {
			t.Fatal("the watch is active with a wrong password")
		}
		if err != nil && strings.Contains(err.Error(), "check spec.queue.redisStream.username") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Active() = %v, want a refusal that names spec.queue.redisStream.username", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
