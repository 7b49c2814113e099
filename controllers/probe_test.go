package controllers

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// fakeBackend is a seam: it counts how it was opened and closed.
type fakeBackend struct{ closed int }

func (f *fakeBackend) Probe(context.Context) (queue.Counts, error) { return queue.Counts{}, nil }
func (f *fakeBackend) Close() error                                { f.closed++; return nil }

func TestConnPool(t *testing.T) {
	var opened []*fakeBackend
	kind := &queue.Kind{Name: "fake", Open: func(queue.Source) (queue.Backend, error) {
		b := &fakeBackend{}
		opened = append(opened, b)
		return b, nil
	}}
	spec := &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "r:6379", Key: "k"}}
	src := func(password string) queue.Source {
		return queue.Source{Spec: spec, Secrets: map[string]string{"redis/password": password}}
	}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	var p connPool

	a, _ := p.get(key, "uid-1", kind, src("one"))
	b, _ := p.get(key, "uid-1", kind, src("one"))
	if a != b || len(opened) != 1 {
		t.Fatalf("the same source opened %d connections", len(opened))
	}
	c, _ := p.get(key, "uid-1", kind, src("rotated"))
	if c == a || opened[0].closed != 1 {
		t.Fatalf("a rotated Secret must replace the connection (closed %d)", opened[0].closed)
	}
	d, _ := p.get(key, "uid-2", kind, src("rotated"))
	if d == c || opened[1].closed != 1 {
		t.Fatalf("a recreated QueueJob must get a new connection (closed %d)", opened[1].closed)
	}
	p.drop(key)
	if opened[2].closed != 1 || p.size() != 0 {
		t.Fatalf("drop left %d connections, closed %d", p.size(), opened[2].closed)
	}
	p.drop(key) // dropping twice is harmless
}

func TestConnPoolSchedule(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	kind := &queue.Kind{Name: "fake", Open: func(queue.Source) (queue.Backend, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	var p connPool
	if d := p.untilDue(key, "uid-1", now); d != 0 {
		t.Fatalf("a QueueJob never probed is due now, got %s", d)
	}
	p.probed(key, now.Add(time.Second)) // no connection yet: nothing to remember
	if d := p.untilDue(key, "uid-1", now); d != 0 {
		t.Fatalf("untilDue = %s without a connection", d)
	}
	if _, err := p.get(key, "uid-1", kind, queue.Source{Spec: &qjv1.QueueSource{}}); err != nil {
		t.Fatal(err)
	}
	p.probed(key, now.Add(2*time.Second))
	if d := p.untilDue(key, "uid-1", now.Add(500*time.Millisecond)); d != 1500*time.Millisecond {
		t.Errorf("untilDue = %s, want 1.5s", d)
	}
	if d := p.untilDue(key, "uid-1", now.Add(3*time.Second)); d != 0 {
		t.Errorf("untilDue after the due time = %s, want 0", d)
	}
	if d := p.untilDue(key, "uid-2", now); d != 0 {
		t.Errorf("a recreated QueueJob is due at once, got %s", d)
	}
}

func TestArchiveExpired(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	finishedAgo := func(n int32, d time.Duration) batchv1.Job {
		j := job(n)
		j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: "True", LastTransitionTime: metav1.NewTime(now.Add(-d))}}
		return j
	}
	jobs := []batchv1.Job{finishedAgo(1, 2*time.Hour), finishedAgo(2, 30*time.Minute), job(3)}
	cases := []struct {
		name        string
		spec        qjv1.QueueJobSpec
		status      qjv1.QueueJobStatus
		wantArchive []string
		wantRequeue time.Duration
	}{
		{name: "Continuous: each wave from its own finish",
			spec:        qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}, Refill: qjv1.RefillContinuous},
			wantArchive: []string{"pi-1"}, wantRequeue: 30 * time.Minute},
		{name: "Once, not finished: nothing yet",
			spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}}},
		{name: "Once, finished 10 minutes ago: all finished waves in 50 minutes",
			spec:        qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}},
			status:      finishedStatus(now.Add(-10 * time.Minute)),
			wantRequeue: 50 * time.Minute},
		{name: "Once, finished 2 hours ago: every finished wave",
			spec:        qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{}},
			status:      finishedStatus(now.Add(-2 * time.Hour)),
			wantArchive: []string{"pi-1", "pi-2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &scope{read: &qjv1.QueueJob{Status: tc.status}, qj: &qjv1.QueueJob{Spec: tc.spec}, jobs: jobs, now: now}
			archiveExpired(s, 3600)
			var got []string
			for _, j := range s.archive {
				got = append(got, j.Name)
			}
			if diff := cmp.Diff(tc.wantArchive, got); diff != "" {
				t.Errorf("archived (-want +got):\n%s", diff)
			}
			if s.requeueAfter != tc.wantRequeue {
				t.Errorf("requeue = %s, want %s", s.requeueAfter, tc.wantRequeue)
			}
		})
	}
}

func finishedStatus(at time.Time) qjv1.QueueJobStatus {
	t := metav1.NewTime(at)
	return qjv1.QueueJobStatus{CompletionTime: &t, Conditions: []metav1.Condition{
		{Type: qjv1.ConditionComplete, Status: metav1.ConditionTrue, Reason: qjv1.ReasonQueueDrained, LastTransitionTime: t}}}
}

// reapingBackend is a seam: a backend with a lease reaper that records its calls.
type reapingBackend struct {
	fakeBackend
	counts    queue.Counts
	reclaim   int
	reapCalls []time.Time
}

func (f *reapingBackend) Probe(context.Context) (queue.Counts, error) { return f.counts, nil }
func (f *reapingBackend) Reap(_ context.Context, now time.Time, _ time.Duration) (int, error) {
	f.reapCalls = append(f.reapCalls, now)
	return f.reclaim, nil
}

// The reaper only learns that an item left the processing list by looking: probeOnce must
// call it on every successful probe, also when nothing is in flight.
func TestProbeOnceAlwaysReaps(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		counts  queue.Counts
		reclaim int
		want    queue.Counts
	}{
		{name: "nothing in flight", counts: queue.Counts{Ready: 2}, want: queue.Counts{Ready: 2}},
		{name: "items in flight", counts: queue.Counts{Ready: 1, InFlight: 3}, want: queue.Counts{Ready: 1, InFlight: 3}},
		{name: "reclaimed items move from in flight to ready", counts: queue.Counts{Ready: 1, InFlight: 3}, reclaim: 2,
			want: queue.Counts{Ready: 3, InFlight: 1}},
		{name: "items taken after the count and reclaimed never make in flight negative", counts: queue.Counts{InFlight: 1}, reclaim: 2,
			want: queue.Counts{Ready: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &reapingBackend{counts: tc.counts, reclaim: tc.reclaim}
			kind := &queue.Kind{Name: "fake",
				SecretRefs: func(*qjv1.QueueSource) []*corev1.SecretKeySelector { return nil },
				Open:       func(queue.Source) (queue.Backend, error) { return b, nil }}
			qj := &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q", UID: "uid-1"},
				Spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "r:6379", Key: "k"}}}}
			r := &QueueJobReconciler{}
			got, reclaimed, err := r.probeOnce(context.Background(), &scope{read: qj, qj: qj, now: now}, kind, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(b.reapCalls) != 1 || !b.reapCalls[0].Equal(now) {
				t.Errorf("Reap called at %v, want once at %v", b.reapCalls, now)
			}
			if reclaimed != tc.reclaim {
				t.Errorf("reclaimed = %d, want %d", reclaimed, tc.reclaim)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
		})
	}
}
