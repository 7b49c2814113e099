package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// Builders.

func jobTemplate() qjv1.JobTemplateSpec {
	return qjv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyOnFailure,
		Containers:    []corev1.Container{{Name: "c", Image: "example.com/worker"}},
	}}}}
}

func redisQueueJob(ns, name, addr, key string, password *corev1.SecretKeySelector) *qjv1.QueueJob {
	return &qjv1.QueueJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: qjv1.QueueJobSpec{
			Queue:       &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: addr, Key: key, PasswordSecretRef: password}},
			Mode:        qjv1.ModeWorkerPool,
			JobTemplate: jobTemplate(),
		},
	}
}

func secret(ns, name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func passwordRef() *corev1.SecretKeySelector {
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis-auth"}, Key: "password"}
}

func redisFor(t *testing.T) *goredis.Client {
	t.Helper()
	rc := goredis.NewClient(&goredis.Options{Addr: needRedis(t).Addr(), Password: redisPassword})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// noSecret fails the test if a run printed the Redis password.
func noSecret(t *testing.T, rs ...result) {
	t.Helper()
	for _, r := range rs {
		if strings.Contains(r.all(), redisPassword) {
			t.Fatalf("the output holds the Redis password:\n%s", r.all())
		}
	}
}

// TestEnqueueThenInspectRedis is the test: qj enqueue, then qj inspect, against
// a QueueJob in envtest whose Redis needs the password of a Secret.
func TestEnqueueThenInspectRedis(t *testing.T) {
	kc := needCluster(t)
	srv := needRedis(t)
	rc := redisFor(t)
	ctx := testCtx(t)
	ns := newNamespace(t)
	key := "job2-" + ns
	create(t, secret(ns, "redis-auth", map[string]string{"password": redisPassword}),
		redisQueueJob(ns, "job-wq-2", srv.Addr(), key, passwordRef()))

	// Arguments, then standard input (an empty line, a CRLF line).
	r1 := mustRun(t, "d\n\ne\r\n", "--kubeconfig", kc, "-n", ns, "enqueue", "job-wq-2", "a", "b", "c", "-f", "-")
	if want := fmt.Sprintf(`Enqueued 5 items into Redis %s, list %q of QueueJob %s/job-wq-2 (RPUSH at the tail: workers take the last item first)`, srv.Addr(), key, ns); !strings.Contains(r1.out, want) {
		t.Errorf("enqueue printed %q, want %q", r1.out, want)
	}
	// Exactly as the docs' `rpush`: the list reads in the order given.
	got, err := rc.LRange(ctx, key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b", "c", "d", "e"}, got); diff != "" {
		t.Errorf("list %s (-want +got):\n%s", key, diff)
	}

	// A worker leases the next item as rediswq does; another lost its lease; one item is
	// dead-lettered.
	leased, err := rc.RPopLPush(ctx, key, redis.ProcessingKey(key)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.SetEx(ctx, redis.LeaseKey(key, leased), "worker-session-1", 30*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.LPush(ctx, redis.ProcessingKey(key), "orphan").Err(); err != nil {
		t.Fatal(err)
	}
	// The dead-letter list is <key>:failed (issue 8), spelled out here to pin it.
	if err := rc.RPush(ctx, key+":failed", "poison").Err(); err != nil {
		t.Fatal(err)
	}

	r2 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "job-wq-2", "-o", "json")
	var res inspectResult
	if err := json.Unmarshal([]byte(r2.out), &res); err != nil {
		t.Fatalf("inspect -o json: %v\n%s", err, r2.out)
	}
	if res.Redis == nil {
		t.Fatalf("inspect -o json has no redis section:\n%s", r2.out)
	}
	if len(res.Redis.Leases) == 2 && res.Redis.Leases[0].TTLSeconds != nil {
		if s := *res.Redis.Leases[0].TTLSeconds; s <= 0 || s > 30 {
			t.Errorf("lease time left %.1fs, want in (0, 30]", s)
		}
		res.Redis.Leases[0].TTLSeconds = nil
	}
	want := &redis.Inspection{
		Key:   key,
		Ready: 4, Next: []string{"d", "c", "b", "a"},
		InFlight: 2, Leases: []redis.InFlightItem{
			{Item: "e", Holder: "worker-session-1", State: "leased"},
			{Item: "orphan", State: "no lease"},
		},
		Failed: 1, FailedItems: []string{"poison"},
	}
	if diff := cmp.Diff(want, res.Redis); diff != "" {
		t.Errorf("inspect (-want +got):\n%s", diff)
	}

	r3 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "job-wq-2")
	for _, s := range []string{"Ready:      4", "worker-session-1", "orphan", "no lease", "Failed:     1", "poison", key + ":failed"} {
		if !strings.Contains(r3.out, s) {
			t.Errorf("inspect does not show %q:\n%s", s, r3.out)
		}
	}
	r4 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "job-wq-2", "-o", "yaml")
	if !strings.Contains(r4.out, "holder: worker-session-1") {
		t.Errorf("inspect -o yaml:\n%s", r4.out)
	}

	// requeue puts the dead-lettered item back where workers take it.
	r5 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "requeue", "job-wq-2")
	if !strings.Contains(r5.out, "Requeued 1 dead-lettered items") {
		t.Errorf("requeue printed %q", r5.out)
	}
	if n := rc.LLen(ctx, key+":failed").Val(); n != 0 {
		t.Errorf("%d items left in %s:failed after requeue", n, key)
	}
	if got := rc.LRange(ctx, key, 0, -1).Val(); !slices.Contains(got, "poison") {
		t.Errorf("after requeue the list is %q, want it to hold \"poison\"", got)
	}
	noSecret(t, r1, r2, r3, r4, r5)
}

// TestEnqueueOrderAndFiles: --fifo pushes at the head, so that rediswq workers (which
// take from the tail) take the items in the order given; a file of JSON lines.
func TestEnqueueOrderAndFiles(t *testing.T) {
	kc := needCluster(t)
	srv := needRedis(t)
	rc := redisFor(t)
	ctx := testCtx(t)
	ns := newNamespace(t)
	key := "fifo-" + ns
	create(t, secret(ns, "redis-auth", map[string]string{"password": redisPassword}),
		redisQueueJob(ns, "q", srv.Addr(), key, passwordRef()))

	file := filepath.Join(t.TempDir(), "items.jsonl")
	if err := os.WriteFile(file, []byte("\"one\"\n{\"n\": 2}\n\n\"th\\nree\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "q", "--fifo", "--json-lines", "-f", file)
	mustRun(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "q", "--fifo", "four")
	// Take them as a rediswq worker does, from the tail.
	var taken []string
	for {
		it, err := rc.RPopLPush(ctx, key, redis.ProcessingKey(key)).Result()
		if err == goredis.Nil {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, it)
	}
	if diff := cmp.Diff([]string{"one", `{"n":2}`, "th\nree", "four"}, taken); diff != "" {
		t.Errorf("items taken (-want +got):\n%s", diff)
	}
}

// TestEnqueueMany: 100000 items from a file are pipelined in batches, with progress on a
// non-terminal stderr every --progress-every items.
func TestEnqueueMany(t *testing.T) {
	srv := needRedis(t)
	rc := redisFor(t)
	ctx := testCtx(t)
	key := fmt.Sprintf("many-%d", time.Now().UnixNano())
	const n = 100000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "item-%d\n", i)
	}
	file := filepath.Join(t.TempDir(), "items.txt")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("QJ_TEST_REDIS_PASSWORD", redisPassword)
	pushesBefore := rpushCalls(t, rc)
	start := time.Now()
	r := mustRun(t, "", "enqueue", "--redis-address", srv.Addr(), "--redis-key", key, "--redis-password-env", "QJ_TEST_REDIS_PASSWORD",
		"-f", file, "--progress-every", "25000", "-o", "json")
	took := time.Since(start)
	pushes := rpushCalls(t, rc) - pushesBefore
	t.Logf("enqueued %d items in %s (%.0f/s)", n, took, n/took.Seconds())
	var res enqueueResult
	if err := json.Unmarshal([]byte(r.out), &res); err != nil {
		t.Fatalf("enqueue -o json: %v\n%s", err, r.out)
	}
	if diff := cmp.Diff(enqueueResult{Backend: "redis", Queue: fmt.Sprintf("Redis %s, list %q", srv.Addr(), key), Enqueued: n, Push: "RPUSH"}, res); diff != "" {
		t.Errorf("enqueue -o json (-want +got):\n%s", diff)
	}
	if l := rc.LLen(ctx, key).Val(); l != n {
		t.Errorf("LLEN %s = %d, want %d", key, l, n)
	}
	if first, last := rc.LIndex(ctx, key, 0).Val(), rc.LIndex(ctx, key, -1).Val(); first != "item-0" || last != fmt.Sprintf("item-%d", n-1) {
		t.Errorf("list runs %q .. %q, want item-0 .. item-%d", first, last, n-1)
	}
	if lines := strings.Count(r.errOut, "enqueued "); lines != 4 {
		t.Errorf("%d progress lines, want 4 (one per 25000 items):\n%s", lines, r.errOut)
	}
	// Batched: one RPUSH a redisBatch items, not one an item; at least 100 items a command
	// whatever the batch. Counted on the server, not timed: time is noise on a loaded
	// machine.
	t.Logf("%d RPUSH commands", pushes)
	if pushes > n/100 {
		t.Errorf("enqueueing %d items took %d RPUSH commands, want at most %d (100 items a command)", n, pushes, n/100)
	}
}

// rpushCalls is how many RPUSH commands the server has run (INFO commandstats).
func rpushCalls(t *testing.T, rc *goredis.Client) int {
	t.Helper()
	info, err := rc.Info(testCtx(t), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_rpush:calls="); ok {
			n, err := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
			if err != nil {
				t.Fatalf("INFO commandstats: %q: %v", line, err)
			}
			return n
		}
	}
	return 0
}

// TestErrorsNameTheFix: a missing QueueJob names its namespace, a missing Secret is named,
// a wrong password says what to check, RBAC refusals name the verb and resource, and no
// message holds the password.
func TestErrorsNameTheFix(t *testing.T) {
	kc := needCluster(t)
	srv := needRedis(t)
	ns := newNamespace(t)
	key := "errs-" + ns
	create(t, redisQueueJob(ns, "q", srv.Addr(), key, passwordRef()))

	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "nope", "a"),
		fmt.Sprintf(`QueueJob "nope" not found in namespace %q`, ns), "-n")
	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "q"),
		fmt.Sprintf("Secret %s/redis-auth does not exist", ns), "spec.queue.redis.passwordSecretRef", "--redis-password-env")

	create(t, secret(ns, "redis-auth", map[string]string{"pw": redisPassword}))
	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "q", "a"),
		fmt.Sprintf(`Secret %s/redis-auth has no key "password"`, ns))

	wrong := "wrong-" + redisPassword
	t.Setenv("QJ_TEST_WRONG", wrong)
	r := run(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "q", "a", "--redis-password-env", "QJ_TEST_WRONG")
	wantErr(t, r, "Redis refused the credentials", "the credentials came from --redis-password-env QJ_TEST_WRONG")
	if strings.Contains(r.all(), wrong) {
		t.Errorf("the output holds the password:\n%s", r.all())
	}

	// A user who may read the QueueJob but not Secrets.
	bob, err := userKubeconfig("bob-" + ns)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, run(t, "", "--kubeconfig", bob, "-n", ns, "inspect", "q"),
		"forbidden", `"get" verb on "queuejobs.batch.queuejob.io"`, "kubectl auth can-i get queuejobs.batch.queuejob.io -n "+ns)
	create(t,
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "qj-reader"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{qjv1.GroupVersion.Group}, Resources: []string{"queuejobs"}, Verbs: []string{"get"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bob"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "qj-reader"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "bob-" + ns}}},
	)
	eventually(t, "bob's Secret read is refused by RBAC", func() (bool, string) {
		r := run(t, "", "--kubeconfig", bob, "-n", ns, "inspect", "q")
		return r.err != nil && strings.Contains(r.err.Error(), `"get" verb on "secrets"`) &&
			strings.Contains(r.err.Error(), "--redis-password-env"), r.all()
	})
	// The password as a flag needs no Secret: bob gets through.
	t.Setenv("QJ_TEST_RIGHT", redisPassword)
	r = mustRun(t, "", "--kubeconfig", bob, "-n", ns, "enqueue", "q", "x", "--redis-password-env", "QJ_TEST_RIGHT")
	noSecret(t, r)

	// Flags: both backends; nothing to enqueue; an unknown output format.
	wantErr(t, run(t, "", "enqueue", "--redis-address", "127.0.0.1:1", "--rabbitmq-queue", "q", "a"), "both --redis-* and --rabbitmq-*")
	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "q"), "no items")
	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", ns, "status", "q", "-o", "table"), `unknown output format "table"`)
	wantErr(t, run(t, "", "enqueue"), "name the QueueJob")
}

// TestQueueNotReachableHint: a QueueJob's address that does not answer from here gets the
// port-forward hint.
func TestQueueNotReachableHint(t *testing.T) {
	kc := needCluster(t)
	ns := newNamespace(t)
	ports, err := servers.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	create(t, redisQueueJob(ns, "q", addr, "k", nil))
	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", ns, "--timeout", "5s", "enqueue", "q", "a"),
		"cannot reach Redis", "kubectl port-forward -n "+ns+" svc/<redis-service> 6379:"+portOnly(addr), "--redis-address 127.0.0.1:6379")
}

// TestStatus: the QueueJob's conditions with reasons and messages, its waves and pods.
func TestStatus(t *testing.T) {
	kc := needCluster(t)
	ctx := testCtx(t)
	ns := newNamespace(t)
	qj := redisQueueJob(ns, "job-wq-2", "redis:6379", "job2", nil)
	create(t, qj)
	now := metav1.Now()
	qj.Status = qjv1.QueueJobStatus{
		State: qjv1.StateRunning, Mode: string(qjv1.ModeWorkerPool), Waves: 1, Active: 1, JobName: "job-wq-2-1",
		StartTime: &now,
		Queue: &qjv1.QueueStatus{Ready: 4, InFlight: 2, LastProbeTime: &now, Reclaimed: 1,
			DeadLettered: 5, DeadLetteredAtStart: ptr.To[int64](2)},
	}
	meta.SetStatusCondition(&qj.Status.Conditions, metav1.Condition{Type: qjv1.ConditionProgressing, Status: metav1.ConditionTrue,
		Reason: qjv1.ReasonWaveRunning, Message: "Wave 1 runs: 2 workers drain the queue"})
	meta.SetStatusCondition(&qj.Status.Conditions, metav1.Condition{Type: qjv1.ConditionQueueReachable, Status: metav1.ConditionFalse,
		Reason: queue.ReasonAuthFailed, Message: "Redis refused the credentials: check the Secret"})
	if err := k8s.Status().Update(ctx, qj); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{qjv1.LabelQueueJob: "job-wq-2", qjv1.LabelWave: "1"}
	owner := []metav1.OwnerReference{*metav1.NewControllerRef(qj, qjv1.GroupVersion.WithKind("QueueJob"))}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "job-wq-2-1", Labels: labels, OwnerReferences: owner},
		Spec: batchv1.JobSpec{Parallelism: ptr.To[int32](2), Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyOnFailure, Containers: []corev1.Container{{Name: "c", Image: "example.com/worker"}}},
		}},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "job-wq-2-1-abcde", Labels: labels},
		Spec:       corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "c", Image: "example.com/worker"}}},
	}
	create(t, job, pod)
	job.Status = batchv1.JobStatus{Active: 1, Succeeded: 3, StartTime: &now}
	if err := k8s.Status().Update(ctx, job); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "c", Ready: true, RestartCount: 2}}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: "job-wq-2.1"},
		InvolvedObject: corev1.ObjectReference{Kind: "QueueJob", APIVersion: qjv1.GroupVersion.String(), Namespace: ns, Name: "job-wq-2", UID: qj.UID},
		Type:           corev1.EventTypeNormal, Reason: qjv1.EventJobCreated, Message: "Created Job job-wq-2-1", LastTimestamp: now, Count: 1,
	}
	create(t, ev)

	r := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "status", "job-wq-2")
	for _, s := range []string{
		"State:      Running  (mode WorkerPool)",
		`Queue:      redis redis:6379, list "job2"`,
		"4 ready, 2 in flight, 1 reclaimed",
		"3 dead-lettered during this run, 5 in job2:failed in all",
		"Progressing", "WaveRunning", "Wave 1 runs: 2 workers drain the queue",
		"QueueReachable", "AuthFailed", "Redis refused the credentials: check the Secret",
		"job-wq-2-1", "Running", "3/1 of 2",
		"job-wq-2-1-abcde", "node-a",
		"JobCreated", "Created Job job-wq-2-1",
		"The operator cannot reach the queue (AuthFailed)",
	} {
		if !strings.Contains(r.out, s) {
			t.Errorf("status does not show %q:\n%s", s, r.out)
		}
	}

	r = mustRun(t, "", "--kubeconfig", kc, "-n", ns, "status", "job-wq-2", "-o", "json")
	var res statusResult
	if err := json.Unmarshal([]byte(r.out), &res); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, r.out)
	}
	if len(res.Jobs) != 1 || res.Jobs[0].State != "Running" || res.Jobs[0].Succeeded != 3 {
		t.Errorf("status -o json jobs: %+v", res.Jobs)
	}
	if len(res.Pods) != 1 || res.Pods[0].Restarts != 2 || res.Pods[0].Phase != "Running" || res.Pods[0].Node != "node-a" {
		t.Errorf("status -o json pods: %+v", res.Pods)
	}
	if q := res.Queue; q == nil || q.DeadLettered != 5 || q.DeadLetteredThisRun != 3 || q.DeadLetterQueue != "job2:failed" {
		t.Errorf("status -o json queue: %+v", res.Queue)
	}
	if c := meta.FindStatusCondition(res.Conditions, qjv1.ConditionQueueReachable); c == nil || c.Reason != queue.ReasonAuthFailed {
		t.Errorf("status -o json conditions: %+v", res.Conditions)
	}

	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", "default", "status", "job-wq-2"), `QueueJob "job-wq-2" not found in namespace "default"`)
}

// TestEnqueueThenInspectRabbitMQ: persistent messages with publisher confirms into the
// queue of a QueueJob whose URL is in a Secret; inspect counts ready, in-flight (through
// the management API) and the dead-letter queue.
func TestEnqueueThenInspectRabbitMQ(t *testing.T) {
	kc := needCluster(t)
	srv := needRabbitMQ(t)
	ns := newNamespace(t)
	q := "job1-" + ns
	mgmt := fmt.Sprintf("http://127.0.0.1:%d", srv.ManagementPort())
	create(t, secret(ns, "broker", map[string]string{"url": srv.URL()}), &qjv1.QueueJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "job-wq-1"},
		Spec: qjv1.QueueJobSpec{
			Queue: &qjv1.QueueSource{RabbitMQ: &qjv1.RabbitMQQueue{Queue: q, ManagementURL: mgmt,
				URLSecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "broker"}, Key: "url"}}},
			JobTemplate: jobTemplate(),
		},
	})

	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "job-wq-1", "a"), "RabbitMQ has no such queue", "--declare")
	r := mustRun(t, "c\n", "--kubeconfig", kc, "-n", ns, "enqueue", "job-wq-1", "--declare", "a", "b", "-f", "-")
	if !strings.Contains(r.out, fmt.Sprintf("Enqueued 3 items into RabbitMQ %s, queue %q", srv.Addr(), q)) {
		t.Errorf("enqueue printed %q", r.out)
	}
	if strings.Contains(r.all(), "guest:guest") {
		t.Errorf("the output holds the URL's credentials:\n%s", r.all())
	}

	ch := servers.AMQPChannel(t, srv.URL())
	// The messages are persistent, in the order given.
	msg, ok, err := ch.Get(q, false)
	if err != nil || !ok {
		t.Fatalf("basic.get: %v %v", ok, err)
	}
	if string(msg.Body) != "a" || msg.DeliveryMode != amqp.Persistent {
		t.Errorf("first message %q, delivery mode %d; want \"a\", persistent", msg.Body, msg.DeliveryMode)
	}
	// ... and held unacknowledged: in flight. A dead-letter queue with one message.
	if _, err := ch.QueueDeclare(rabbitmq.FailedQueue(q), true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", rabbitmq.FailedQueue(q), false, false, amqp.Publishing{Body: []byte("poison")}); err != nil {
		t.Fatal(err)
	}

	// The management API's counts lag by its statistics interval.
	var res inspectResult
	eventually(t, "inspect counts 2 ready, 1 in flight, 1 failed", func() (bool, string) {
		r := run(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "job-wq-1", "-o", "json")
		if r.err != nil {
			return false, r.all()
		}
		res = inspectResult{}
		if err := json.Unmarshal([]byte(r.out), &res); err != nil || res.RabbitMQ == nil {
			return false, r.out
		}
		ri := res.RabbitMQ
		return ri.Ready == 2 && ri.InFlight != nil && *ri.InFlight == 1 && ri.Failed != nil && *ri.Failed == 1, r.out
	})
	r = mustRun(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "job-wq-1")
	for _, s := range []string{"Ready:      2", "In flight:  1", "Failed:     1  (queue " + rabbitmq.FailedQueue(q) + ")"} {
		if !strings.Contains(r.out, s) {
			t.Errorf("inspect does not show %q:\n%s", s, r.out)
		}
	}

	// Without a management URL in-flight messages cannot be counted; without a dead-letter
	// queue there is no failed count. The coordinates as flags, no cluster.
	t.Setenv("QJ_TEST_AMQP_URL", srv.URL())
	r = mustRun(t, "", "inspect", "--rabbitmq-url-env", "QJ_TEST_AMQP_URL", "--rabbitmq-queue", rabbitmq.FailedQueue(q))
	for _, s := range []string{"Ready:      1", "In flight:  unknown", "Failed:     -  (no dead-letter queue " + rabbitmq.FailedQueue(rabbitmq.FailedQueue(q)) + ")"} {
		if !strings.Contains(r.out, s) {
			t.Errorf("inspect does not show %q:\n%s", s, r.out)
		}
	}

	// requeue moves the dead-lettered message back into the queue.
	r = mustRun(t, "", "requeue", "--rabbitmq-url-env", "QJ_TEST_AMQP_URL", "--rabbitmq-queue", q, "-o", "json")
	var rr requeueResult
	if err := json.Unmarshal([]byte(r.out), &rr); err != nil || rr.Requeued != 1 {
		t.Errorf("requeue -o json = %q (%v), want 1 requeued", r.out, err)
	}
	if n, err := ch.QueueDeclarePassive(rabbitmq.FailedQueue(q), true, false, false, false, nil); err != nil || n.Messages != 0 {
		t.Errorf("%s after requeue: %+v, %v; want empty", rabbitmq.FailedQueue(q), n, err)
	}
}

// TestRedisTLSAndACLUser: a QueueJob whose Redis speaks only TLS, with the CA in a Secret,
// and an ACL user; a CA that did not sign the server's certificate is refused with what
// to check.
func TestRedisTLSAndACLUser(t *testing.T) {
	kc := needCluster(t)
	ca, err := servers.NewCA("qj test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := servers.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := servers.StartRedisWith(servers.RedisOptions{TLS: ca, Password: "unused-default-pw",
		Users: []string{"alice on >" + redisPassword + " ~* +@all"}})
	if err != nil {
		t.Fatal("starting redis-server with TLS:", err)
	}
	t.Cleanup(srv.Close)
	ns := newNamespace(t)
	key := "tls-" + ns
	qj := redisQueueJob(ns, "q", srv.Addr(), key, passwordRef())
	qj.Spec.Queue.Redis.Username = "alice"
	qj.Spec.Queue.Redis.TLS = &qjv1.TLSConfig{CASecretRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "redis-ca"}, Key: "ca.crt"}}
	create(t, qj, secret(ns, "redis-auth", map[string]string{"password": redisPassword}),
		secret(ns, "redis-ca", map[string]string{"ca.crt": string(ca.PEM()), "other.crt": string(other.PEM())}))

	r1 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "enqueue", "q", "x", "y")
	r2 := mustRun(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "q", "-o", "json")
	var res inspectResult
	if err := json.Unmarshal([]byte(r2.out), &res); err != nil || res.Redis == nil {
		t.Fatalf("inspect -o json: %v\n%s", err, r2.out)
	}
	if diff := cmp.Diff([]string{"y", "x"}, res.Redis.Next); diff != "" {
		t.Errorf("next items (-want +got):\n%s", diff)
	}
	noSecret(t, r1, r2)

	// The wrong CA, given as a file: the certificate is refused.
	caFile := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(caFile, other.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	wantErr(t, run(t, "", "--kubeconfig", kc, "-n", ns, "inspect", "q", "--redis-tls-ca", caFile),
		"TLS certificate is not signed by a trusted CA", "(the CA came from --redis-tls-ca "+caFile+")")
}

// TestRequeueIntoDeletedQueue: requeue into a RabbitMQ queue that was deleted moves
// nothing (each message is returned as unroutable), leaves every message in the
// dead-letter queue, says how many moved and how many stayed, and fails.
func TestRequeueIntoDeletedQueue(t *testing.T) {
	srv := needRabbitMQ(t)
	q := "requeue-deleted"
	ch := servers.AMQPChannel(t, srv.URL())
	for _, name := range []string{q, rabbitmq.FailedQueue(q)} {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Fatal(err)
		}
	}
	servers.Publish(t, srv.URL(), rabbitmq.FailedQueue(q), "dead-1", "dead-2")
	t.Setenv("QJ_TEST_AMQP_URL", srv.URL())

	r := run(t, "", "requeue", "--rabbitmq-url-env", "QJ_TEST_AMQP_URL", "--rabbitmq-queue", q)
	wantErr(t, r, "2 dead-lettered items stayed in "+rabbitmq.FailedQueue(q), fmt.Sprintf("queue %q does not exist", q))
	if !strings.Contains(r.out, "Requeued 0 dead-lettered items") {
		t.Errorf("requeue printed %q, want it to say none moved", r.out)
	}
	if strings.Contains(r.all(), "dead-1") {
		t.Errorf("the output quotes a message's body:\n%s", r.all())
	}
	if n, err := servers.AMQPChannel(t, srv.URL()).QueueDeclarePassive(rabbitmq.FailedQueue(q), true, false, false, false, nil); err != nil || n.Messages != 2 {
		t.Errorf("%s after requeue into a deleted queue: %+v, %v; want its 2 messages", rabbitmq.FailedQueue(q), n, err)
	}
}
