package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// TestEnqueueThenInspectNATS: enqueue into the stream of a QueueJob whose user and password
// are in Secrets (creating the stream with --declare), inspect the consumer's counts and
// the dead-letter stream, requeue its dead letter with the coordinates as flags; no output
// holds the password.
func TestEnqueueThenInspectNATS(t *testing.T) {
	kc := needCluster(t)
	srv, err := servers.StartNATSWith(servers.NATSOptions{User: "qj", Password: "n4ts-" + servers.RandomString(12)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	ns := newNamespace(t)
	ref := func(key string) *corev1.SecretKeySelector {
		return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nats"}, Key: key}
	}
	create(t, secret(ns, "nats", map[string]string{"user": srv.User(), "password": srv.Password()}), &qjv1.QueueJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "jobs"},
		Spec: qjv1.QueueJobSpec{
			Queue: &qjv1.QueueSource{NATS: &qjv1.NATSQueue{URL: srv.URL(), Stream: "jobs", Consumer: "workers",
				UserSecretRef: ref("user"), PasswordSecretRef: ref("password")}},
			JobTemplate: jobTemplate(),
		},
	})
	var outputs []string
	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "jobs", "a"), `has no stream "jobs"`, "--declare")
	r := mustRun(t, "c\n", "--kubeconfig", kc, "-n", ns, "enqueue", "jobs", "--declare", "a", "b", "-f", "-")
	outputs = append(outputs, r.all())
	if want := fmt.Sprintf("Enqueued 3 items into NATS %s, stream %q, consumer %q", srv.Addr(), "jobs", "workers"); !strings.Contains(r.out, want) {
		t.Errorf("enqueue printed %q, want %q", r.out, want)
	}

	// A worker takes "a" and holds it; another takes "b" and dead-letters it.
	o := nats.Options{Servers: []string{srv.URL()}, Stream: "jobs", Consumer: "workers", User: srv.User(), Password: srv.Password()}
	take(t, o, 5, "a")
	if dead, err := take(t, o, 1, "b").Fail(testCtx(t), errors.New("poison")); err != nil || !dead {
		t.Fatalf("Fail of the only attempt = %v, %v; want dead-lettered", dead, err)
	}

	var res inspectResult
	r = mustRun(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "jobs", "-o", "json")
	outputs = append(outputs, r.all())
	if err := json.Unmarshal([]byte(r.out), &res); err != nil || res.NATS == nil {
		t.Fatalf("inspect -o json = %q (%v)", r.out, err)
	}
	if n := res.NATS; n.Ready != 1 || n.InFlight != 1 || n.Failed != 1 || len(n.Next) != 1 || n.Next[0] != "c" {
		t.Errorf("inspect = %+v; want 1 ready (c), 1 in flight, 1 failed", *n)
	}
	r = mustRun(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "jobs")
	outputs = append(outputs, r.all())
	for _, s := range []string{"Ready:      1", "In flight:  1", "Failed:     1  (stream jobs_failed)"} {
		if !strings.Contains(r.out, s) {
			t.Errorf("inspect does not show %q:\n%s", s, r.out)
		}
	}

	t.Setenv("QJ_TEST_NATS_PASSWORD", srv.Password())
	r = mustRun(t, "", "requeue", "--nats-url", srv.URL(), "--nats-stream", "jobs", "--nats-consumer", "workers",
		"--nats-user", srv.User(), "--nats-password-env", "QJ_TEST_NATS_PASSWORD", "-o", "json")
	outputs = append(outputs, r.all())
	var rr requeueResult
	if err := json.Unmarshal([]byte(r.out), &rr); err != nil || rr.Requeued != 1 {
		t.Errorf("requeue -o json = %q (%v), want 1 requeued", r.out, err)
	}
	c := nats.New(o)
	defer func() { _ = c.Close() }()
	if got, err := c.Probe(testCtx(t)); err != nil || got.Ready != 2 || got.DeadLettered != 0 {
		t.Errorf("after requeue, Probe = %+v, %v; want 2 ready, none dead-lettered", got, err)
	}

	// Given with the QueueJob, --nats-url and --nats-stream replace its fields; its
	// consumer and credentials stay.
	r = mustRun(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "jobs", "--nats-url", srv.URL(), "--nats-stream", "other", "--declare", "x")
	outputs = append(outputs, r.all())
	r = mustRun(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "jobs", "--nats-url", srv.URL(), "--nats-stream", "other", "-o", "json")
	outputs = append(outputs, r.all())
	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "--nats-url", srv.URL(), "--nats-stream", "other", "x", "y"),
		`QueueJob "x" not found`, "without a QueueJob: --nats-url and --nats-stream need --nats-consumer")
	res = inspectResult{}
	if err := json.Unmarshal([]byte(r.out), &res); err != nil || res.NATS == nil || res.NATS.Ready != 1 || len(res.NATS.Next) != 1 || res.NATS.Next[0] != "x" {
		t.Errorf("inspect jobs --nats-url --nats-stream other -o json = %q (%v); want 1 ready (x)", r.out, err)
	}
	for _, out := range outputs {
		if strings.Contains(out, srv.Password()) {
			t.Errorf("an output holds the password:\n%s", out)
		}
	}
}

// take leases the next item of o (want) with a worker of maxAttempts.
func take(t *testing.T, o nats.Options, maxAttempts int, want string) queue.Lease {
	t.Helper()
	c, err := nats.NewConsumer(testCtx(t), o, queue.ConsumerOptions{MaxAttempts: maxAttempts, LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	l, err := c.Take(testCtx(t), 5*time.Second)
	if err != nil || l == nil || string(l.Data()) != want {
		t.Fatalf("Take = %v, %v; want %q", l, err, want)
	}
	return l
}

// The status names a NATS queue by its stream, consumer and servers, and its dead letters
// by their stream.
func TestStatusSummaryNATS(t *testing.T) {
	qs := summarizeQueue(&qjv1.QueueSource{NATS: &qjv1.NATSQueue{Servers: []string{"nats://a:4222", "nats://b"}, Stream: "jobs", Consumer: "w"}}, nil)
	if qs.Backend != "nats" || qs.Where != `stream "jobs", consumer "w" at a:4222,b:4222` || qs.DeadLetterQueue != "stream jobs_failed" {
		t.Errorf("summarizeQueue = %+v", qs)
	}
}
