package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
	"github.com/queuejob/queuejob-operator/pkg/worker"
)

func streamQueueJob(ns, name, addr, key string, password *corev1.SecretKeySelector) *qjv1.QueueJob {
	return &qjv1.QueueJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: qjv1.QueueJobSpec{
			Queue:       &qjv1.QueueSource{RedisStream: &qjv1.RedisStreamQueue{Address: addr, Stream: key, Group: "workers", PasswordSecretRef: password}},
			Mode:        qjv1.ModeWorkerPool,
			JobTemplate: jobTemplate(),
		},
	}
}

// TestEnqueueThenInspectRedisStream: qj enqueue, inspect (the pending entries with their
// consumer and idle time, the dead letters with their error), requeue and status on a
// QueueJob whose Redis stream needs the password of a Secret.
func TestEnqueueThenInspectRedisStream(t *testing.T) {
	kc := needCluster(t)
	srv := needRedis(t)
	ctx := testCtx(t)
	ns := newNamespace(t)
	key := "stream-" + ns
	create(t, secret(ns, "redis-auth", map[string]string{"password": redisPassword}),
		streamQueueJob(ns, "streamed", srv.Addr(), key, passwordRef()))

	r1 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "streamed", "a", "b", "c", "--fifo")
	if want := fmt.Sprintf(`Enqueued 3 items into Redis %s, stream %q, group "workers" of QueueJob %s/streamed (XADD at the stream's end`, srv.Addr(), key, ns); !strings.Contains(r1.out, want) {
		t.Errorf("enqueue printed %q, want %q", r1.out, want)
	}

	// A worker holds the first entry, and dead-letters the second.
	o := stream.Options{Address: srv.Addr(), Password: redisPassword, Stream: key, Group: "workers"}
	w, err := worker.New(ctx, worker.Options{Backend: worker.BackendRedisStream, RedisStream: o, Session: "worker-pod-1", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	held, err := w.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	failed, err := w.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := failed.Fail(ctx, errors.New("poisoned")); err != nil || !failed.DeadLettered() {
		t.Fatalf("Fail = %v (dead-lettered %v)", err, failed.DeadLettered())
	}

	r2 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "streamed", "-o", "json")
	var res inspectResult
	if err := json.Unmarshal([]byte(r2.out), &res); err != nil || res.RedisStream == nil {
		t.Fatalf("inspect -o json: %v\n%s", err, r2.out)
	}
	in := res.RedisStream
	if len(in.Pending) == 1 && (in.Pending[0].IdleSeconds < 0 || in.Pending[0].IdleSeconds > 30) {
		t.Errorf("idle %.1fs, want in [0, 30]", in.Pending[0].IdleSeconds)
	}
	want := &stream.Inspection{
		Stream: key, Group: "workers",
		Ready: 1, Next: []stream.Entry{{Item: "c"}},
		InFlight: 1, Pending: []stream.PendingEntry{{Entry: stream.Entry{Item: "a"}, Consumer: "worker-pod-1", Deliveries: 1}},
		Consumers: []stream.ConsumerInfo{{Name: "worker-pod-1", Pending: 1}},
		Failed:    1, FailedItems: []stream.Entry{{Item: "b", Attempts: 1, Error: "poisoned"}},
	}
	ignore := cmpopts.IgnoreFields(stream.Entry{}, "ID")
	idle := cmpopts.IgnoreFields(stream.PendingEntry{}, "IdleSeconds")
	if diff := cmp.Diff(want, in, ignore, idle, cmpopts.IgnoreFields(stream.ConsumerInfo{}, "IdleSeconds")); diff != "" {
		t.Errorf("inspect (-want +got):\n%s", diff)
	}
	r3 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "streamed")
	for _, s := range []string{"Ready:      1", "worker-pod-1", "CONSUMER", "IDLE", "Failed:     1", "poisoned", key + ":failed"} {
		if !strings.Contains(r3.out, s) {
			t.Errorf("inspect does not show %q:\n%s", s, r3.out)
		}
	}

	r4 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "requeue", "streamed")
	if !strings.Contains(r4.out, "Requeued 1 dead-lettered items") {
		t.Errorf("requeue printed %q", r4.out)
	}
	if err := held.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 2 {
		it, err := w.Lease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s@%d", it.Data(), it.Attempt()))
		if err := it.Complete(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"c@1", "b@1"}, got); diff != "" {
		t.Errorf("after requeue, leased (-want +got):\n%s", diff)
	}

	r5 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "status", "streamed")
	if want := fmt.Sprintf(`Queue:      redis-stream %s, stream %q, group "workers"`, srv.Addr(), key); !strings.Contains(r5.out, want) {
		t.Errorf("status does not show %q:\n%s", want, r5.out)
	}
	noSecret(t, r1, r2, r3, r4, r5)
}
