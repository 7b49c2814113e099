package controllers

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/registry"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// secretGets counts the Secrets a manager read from the API server, by namespace.
type secretGets struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *secretGets) add(ns string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[ns]++
}

// in is how many Secrets of namespace ns were read.
func (c *secretGets) in(ns string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[ns]
}

// countingReader is a seam: an APIReader that counts the Secrets read through it.
type countingReader struct {
	client.Reader
	gets *secretGets
}

func (r countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		r.gets.add(key.Namespace)
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// suiteSecretGets counts the Secret reads of the envtest suite's managers.
var suiteSecretGets secretGets

// failingBackend is a seam: a backend whose probes fail with err, if set.
type failingBackend struct {
	fakeBackend
	err error
}

func (b *failingBackend) Probe(context.Context) (queue.Counts, error) { return queue.Counts{}, b.err }

// A QueueJob's Secrets are read once per SecretRefresh, not on every probe; at once when
// the QueueJob changes, and on the probe after one that failed to connect or log in.
func TestProbeReadsSecretsOncePerRefresh(t *testing.T) {
	ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "password"}
	b := &failingBackend{}
	backend := backends.Backend{Name: "fake",
		Selected: func(*qjv1.QueueSource) bool { return true },
		SecretRefs: func(*qjv1.QueueSource) []backends.SecretRef {
			return []backends.SecretRef{backends.RefOf(ref, "spec.queue.redis.passwordSecretRef")}
		},
		Open: func(backends.Source) (queue.Conn, error) { return b, nil }}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "redis"}, Data: map[string][]byte{"password": []byte("pw")}}
	gets := &secretGets{}
	r := &QueueJobReconciler{
		APIReader:     countingReader{Reader: fake.NewClientBuilder().WithObjects(sec).Build(), gets: gets},
		Recorder:      events.NewFakeRecorder(100),
		Queues:        backends.NewRegistry(backend),
		SecretRefresh: time.Minute,
	}
	qj := &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q", UID: "uid-1", Generation: 1},
		Spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "r:6379", Key: "k", PasswordSecretRef: ref}}}}
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	// probeAt probes the QueueJob at start+at; it must be due.
	probeAt := func(t *testing.T, at time.Duration) {
		t.Helper()
		s := reconcileProbe(t, r, qj, start.Add(at))
		if s.probe == nil { // started, if due: take its result
			waitForProbe(t, r, qj)
			s = reconcileProbe(t, r, qj, start.Add(at))
		}
		if s.probe == nil {
			t.Fatalf("no probe at %s: not due", at)
		}
	}
	steps := []struct {
		name string
		// at is when the probe runs, after start; change changes the QueueJob or the
		// backend before it.
		at     time.Duration
		change func()
		// want is the number of Secret reads so far.
		want int
	}{
		{name: "the first probe reads the Secret", at: 0, want: 1},
		{name: "probes within the refresh period reuse it", at: 3 * time.Second, want: 1},
		{name: "...up to the end of the period", at: 57 * time.Second, want: 1},
		{name: "the first probe after the period reads it again", at: 60 * time.Second, want: 2},
		{name: "a changed QueueJob reads it at once", at: 63 * time.Second, change: func() { qj.Generation = 2 }, want: 3},
		{name: "a probe that fails to log in...", at: 66 * time.Second,
			change: func() { b.err = queue.Errorf(queue.ReasonAuthFailed, "refused") }, want: 3},
		{name: "...makes the next probe read it again", at: 69 * time.Second, want: 4},
		{name: "...and the next, while the login keeps failing", at: 72 * time.Second, want: 5},
		{name: "a probe that fails to connect...", at: 75 * time.Second,
			change: func() { b.err = queue.Errorf(queue.ReasonTLSFailed, "certificate not accepted") }, want: 6},
		{name: "a probe that finds no queue...", at: 78 * time.Second,
			change: func() { b.err = queue.Errorf(queue.ReasonQueueNotFound, "no queue") }, want: 7},
		{name: "...does not make the next one read it again", at: 81 * time.Second, want: 7},
		{name: "a recreated QueueJob reads it at once", at: 84 * time.Second,
			change: func() { b.err = nil; qj.UID = "uid-2" }, want: 8},
	}
	for _, st := range steps {
		if st.change != nil {
			st.change()
		}
		probeAt(t, st.at)
		if got := gets.in("ns"); got != st.want {
			t.Fatalf("%s: %d Secret reads after the probe at %s, want %d", st.name, got, st.at, st.want)
		}
	}

	r.forgetQueue(types.NamespacedName{Namespace: "ns", Name: "q"})
	if n := r.secrets.size(); n != 0 {
		t.Errorf("the values of %d QueueJobs' Secrets are kept after forgetQueue", n)
	}
}

// A Secret that cannot be read names the field that references it, so that the message
// says what to fix; a backend whose references do not name their field (one from outside
// this tree) is named by spec.queue, not by nothing.
func TestResolveNamesTheSecretsField(t *testing.T) {
	missing := corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "password"}
	keyless := corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "nokey"}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "redis"}, Data: map[string][]byte{"password": []byte("pw")}}
	r := &QueueJobReconciler{APIReader: fake.NewClientBuilder().WithObjects(sec).Build()}
	qj := &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q"}, Spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}}}
	for _, tc := range []struct {
		name string
		ref  backends.SecretRef
		want string
	}{
		{name: "a missing Secret, its field named", ref: backends.RefOf(&missing, "spec.queue.redis.passwordSecretRef"),
			want: "Secret ns/gone does not exist: create it, or fix spec.queue.redis.passwordSecretRef"},
		{name: "a missing Secret, no field named", ref: backends.RefOf(&missing, ""),
			want: "Secret ns/gone does not exist: create it, or fix spec.queue"},
		{name: "a missing key, its field named", ref: backends.RefOf(&keyless, "spec.queue.redis.tls.caSecretRef"),
			want: `Secret ns/redis has no key "nokey": add it, or fix the key in spec.queue.redis.tls.caSecretRef`},
		{name: "a missing key, no field named", ref: backends.RefOf(&keyless, ""),
			want: `Secret ns/redis has no key "nokey": add it, or fix the key in spec.queue`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := &backends.Backend{Name: "fake",
				SecretRefs: func(*qjv1.QueueSource) []backends.SecretRef { return []backends.SecretRef{tc.ref} }}
			_, err := r.resolve(context.Background(), qj, backend)
			if err == nil || err.Error() != tc.want || queue.ReasonOf(err) != queue.ReasonSecretNotFound {
				t.Errorf("resolve = %v (%s), want %q (%s)", err, queue.ReasonOf(err), tc.want, queue.ReasonSecretNotFound)
			}
		})
	}
}

// Every backend this project ships names the field of each Secret it references: each
// backend's field of spec.queue is set alone, with every Secret reference under it set.
func TestShippedBackendsNameTheirSecretsFields(t *testing.T) {
	all := &qjv1.QueueSource{}
	setEverySecretRef(reflect.ValueOf(all).Elem())
	fields := reflect.ValueOf(all).Elem()
	for i := range fields.NumField() {
		if fields.Field(i).Kind() != reflect.Pointer {
			continue
		}
		one := &qjv1.QueueSource{}
		reflect.ValueOf(one).Elem().Field(i).Set(fields.Field(i))
		backend, err := registry.Default().For(one)
		if err != nil {
			t.Errorf("spec.queue with only %s set: %v", fields.Type().Field(i).Name, err)
			continue
		}
		refs := backend.SecretRefs(one)
		if len(refs) == 0 {
			t.Errorf("the %s backend references no Secret of a spec.queue that sets them all", backend.Name)
		}
		for _, ref := range refs {
			if !strings.HasPrefix(ref.Field, "spec.queue.") {
				t.Errorf("the %s backend's reference to %s names the field %q, want its path under spec.queue", backend.Name, ref.ID(), ref.Field)
			}
		}
	}
}

// setEverySecretRef sets every Secret key reference under v, allocating the structs on
// the way.
func setEverySecretRef(v reflect.Value) {
	selector := reflect.TypeOf(corev1.SecretKeySelector{})
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() != reflect.Pointer || f.Type().Elem().Kind() != reflect.Struct || !f.CanSet() {
			continue
		}
		f.Set(reflect.New(f.Type().Elem()))
		if f.Type().Elem() == selector {
			f.Interface().(*corev1.SecretKeySelector).Name, f.Interface().(*corev1.SecretKeySelector).Key = "s-"+v.Type().Field(i).Name, "k"
			continue
		}
		setEverySecretRef(f.Elem())
	}
}

var _ = Describe("The Secrets of a queue", func() {
	It("are read once, not on every probe; again at once when the QueueJob changes, and when a login fails after a rotation", func() {
		ns := newNamespace()
		const first, second = "F1rst-Pa55word", "Sec0nd-Pa55word"
		own, err := servers.StartRedis(first)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(own.Close)
		c := redis.NewClient(&redis.Options{Addr: own.Addr(), Password: first, DisableIdentity: true})
		DeferCleanup(c.Close)
		s := secret(ns, "redis", map[string]string{"password": first})
		Expect(k8s.Create(suiteCtx, queueJob(ns, "reads", redisAt(own.Addr(), "reads"), func(q *qjv1.QueueJob) {
			q.Spec.Queue.Redis.PasswordSecretRef = keyRef("redis", "password")
		}))).To(Succeed())
		Eventually(getQJ(ns, "reads"), timeout, interval).Should(cond(qjv1.ConditionQueueReachable, metav1.ConditionTrue, qjv1.ReasonProbed))

		By("probing five times, once a second, on one reading of the Secret")
		gets, probes := suiteSecretGets.in(ns), redisProbes(c)
		Eventually(func() int { return redisProbes(c) - probes }, timeout, interval).Should(BeNumerically(">=", 5))
		Expect(suiteSecretGets.in(ns)-gets).To(BeZero(), "Secret reads while the QueueJob was probed 5 times")

		By("changing the QueueJob")
		updateQJ(ns, "reads", func(q *qjv1.QueueJob) { q.Spec.ProbeIntervalSeconds = ptr.To[int32](2) })
		Eventually(func() int { return suiteSecretGets.in(ns) }, timeout, interval).Should(Equal(gets + 1))
		gets, probes = suiteSecretGets.in(ns), redisProbes(c)
		Eventually(func() int { return redisProbes(c) - probes }, timeout, interval).Should(BeNumerically(">=", 3))
		Expect(suiteSecretGets.in(ns)-gets).To(BeZero(), "Secret reads after the change was seen")

		By("rotating the password: the server takes the new one and drops its clients")
		s.StringData = map[string]string{"password": second}
		Expect(k8s.Update(suiteCtx, s)).To(Succeed())
		Expect(c.ConfigSet(suiteCtx, "requirepass", second).Err()).To(Succeed())
		rotated := time.Now().Truncate(time.Second)
		Expect(c.ClientKillByFilter(suiteCtx, "TYPE", "normal").Err()).To(Succeed())
		c2 := redis.NewClient(&redis.Options{Addr: own.Addr(), Password: second, DisableIdentity: true})
		DeferCleanup(c2.Close)
		By("the failed login making the next probe read the Secret again, long before the refresh period")
		Eventually(func(g Gomega) {
			qc := condition(getQJ(ns, "reads")(g), qjv1.ConditionQueueReachable)
			g.Expect(qc).NotTo(BeNil())
			g.Expect(qc.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(qc.LastTransitionTime.Time).NotTo(BeTemporally("<", rotated), "QueueReachable went False and back")
		}, timeout, interval).Should(Succeed())
		Expect(suiteSecretGets.in(ns)).To(BeNumerically(">", gets))
		showsNone(ns, "reads", first, second)
	})
})

// reconcileProbe runs the probe phase of a reconcile of qj at now.
func reconcileProbe(t *testing.T, r *QueueJobReconciler, qj *qjv1.QueueJob, now time.Time) *scope {
	t.Helper()
	s := &scope{read: qj, qj: qj, now: now}
	if err := r.probeQueue(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitForProbe waits until no probe of qj runs.
func waitForProbe(t *testing.T, r *QueueJobReconciler, qj *qjv1.QueueJob) {
	t.Helper()
	key := types.NamespacedName{Namespace: qj.Namespace, Name: qj.Name}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		running := false
		r.probes.with(key, qj.UID, func(e *probeState) { running = e.schedule.running })
		if !running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the probe still runs after a minute")
		}
	}
}

// size is the number of QueueJobs whose values are kept.
func (c *secretCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
