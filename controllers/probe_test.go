package controllers

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
)

// fakeBackend is a seam: it counts how it was opened and closed.
type fakeBackend struct{ closed atomic.Int32 }

func (f *fakeBackend) Probe(context.Context) (queue.Counts, error) { return queue.Counts{}, nil }
func (f *fakeBackend) Close() error                                { f.closed.Add(1); return nil }

// closedOnce waits for probeStates' background close of a connection.
func closedOnce(f *fakeBackend) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if f.closed.Load() == 1 {
			return true
		}
	}
	return false
}

// reapingBackend is a seam: a backend with a lease reaper that records its calls.
// A reapingBackend must stay a queue.Reaper: probeAndReap finds the reaper by a type
// assertion, which a stale method signature would fail silently.
var _ queue.Reaper = (*reapingBackend)(nil)

type reapingBackend struct {
	fakeBackend
	counts    queue.Counts
	reclaim   int
	reapErr   error
	reapCalls []time.Time
	// hang makes Reap return its reclaims only after this long, whatever its context says.
	hang time.Duration
}

func (f *reapingBackend) Probe(context.Context) (queue.Counts, error) { return f.counts, nil }
func (f *reapingBackend) Reap(_ context.Context, now time.Time, _ time.Duration, _ queue.GoneHolders) (int, error) {
	f.reapCalls = append(f.reapCalls, now)
	time.Sleep(f.hang)
	return f.reclaim, f.reapErr
}

// fakeKind opens b for any source.
func fakeKind(b queue.Conn) *backends.Backend {
	return &backends.Backend{Name: "fake",
		SecretRefs: func(*qjv1.QueueSource) []backends.SecretRef { return nil },
		Open:       func(backends.Source) (queue.Conn, error) { return b, nil }}
}

// probeOnceOf runs one probe of the scope's QueueJob, as startProbe would start it, in
// the caller's goroutine.
func probeOnceOf(t interface {
	Helper()
	Fatal(...any)
}, r *QueueJobReconciler, s *scope, backend *backends.Backend) probeResult {
	t.Helper()
	p := r.newProbeRun(context.Background(), s, backend)
	p.source = backends.Source{Spec: s.qj.Spec.Queue}
	var err error
	if p.conn, err = r.probes.get(p.key, p.uid, backend, p.source); err != nil {
		t.Fatal(err)
	}
	return r.probeOnce(context.Background(), p)
}

// Items a reaper returned are back in the queue, so they are counted even when the probe
// fails after them or is abandoned for taking too long.
func TestProbeOnceCountsEveryReclaim(t *testing.T) {
	qj := &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q", UID: "uid-1"},
		Spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "r:6379", Key: "k"}}}}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	cases := []struct {
		name string
		b    *reapingBackend
	}{
		{name: "the reaper fails after returning some items", b: &reapingBackend{counts: queue.Counts{InFlight: 9}, reclaim: 4,
			reapErr: queue.Errorf(queue.ReasonConnectionFailed, "connection reset")}},
		{name: "the reaper outlasts the probe's bound and ignores its context", b: &reapingBackend{counts: queue.Counts{InFlight: 9}, reclaim: 4,
			hang: 3 * time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &QueueJobReconciler{Recorder: events.NewFakeRecorder(10), ProbeTimeout: 500 * time.Millisecond}
			start := time.Now()
			err := probeOnceOf(t, r, &scope{read: qj, qj: qj, now: start}, fakeKind(tc.b)).err
			if err == nil {
				t.Fatal("probeOnce succeeded, want an error")
			}
			if took := time.Since(start); took > 2500*time.Millisecond {
				t.Errorf("probeOnce took %s with a bound of 500ms", took)
			}
			deadline := time.Now().Add(10 * time.Second)
			for r.probes.pendingReclaimed(key, "uid-1") != 4 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := r.probes.pendingReclaimed(key, "uid-1"); got != 4 {
				t.Errorf("pending reclaimed = %d, want the 4 items the reaper returned", got)
			}
		})
	}
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
			backend := &backends.Backend{Name: "fake",
				SecretRefs: func(*qjv1.QueueSource) []backends.SecretRef { return nil },
				Open:       func(backends.Source) (queue.Conn, error) { return b, nil }}
			qj := &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q", UID: "uid-1"},
				Spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "r:6379", Key: "k"}}}}
			r := &QueueJobReconciler{Recorder: events.NewFakeRecorder(10)}
			res := probeOnceOf(t, r, &scope{read: qj, qj: qj, now: now}, backend)
			reclaimed := int(r.probes.pendingReclaimed(types.NamespacedName{Namespace: "ns", Name: "q"}, "uid-1"))
			if res.err != nil {
				t.Fatal(res.err)
			}
			got := *res.counts
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

// Counts measured against another wave, or another spec, than the reconcile that takes
// them sees plan no wave: the pods of a wave that started or finished meanwhile may have
// taken the items counted.
func TestUseProbeTakesOnlyCountsOfTheWaveItSees(t *testing.T) {
	withUID := func(uid types.UID) func(*batchv1.Job) { return func(j *batchv1.Job) { j.UID = uid } }
	wave1 := job(1, withUID("j1"), running(2, 0, 0))
	wave1Done := job(1, withUID("j1"), running(0, 2, 0), ended(batchv1.JobComplete, "Done"))
	wave2 := job(2, withUID("j2"), running(2, 0, 0))
	failed := queue.Errorf(queue.ReasonConnectionFailed, "refused")
	cases := []struct {
		name           string
		atStart, atEnd []batchv1.Job
		generation     int64 // the QueueJob's at the end; 1 at the start
		err            error
		want           bool
	}{
		{name: "no wave, then and now", want: true},
		{name: "the same running wave", atStart: []batchv1.Job{wave1}, atEnd: []batchv1.Job{wave1}, want: true},
		{name: "the same finished wave", atStart: []batchv1.Job{wave1Done}, atEnd: []batchv1.Job{wave1Done}, want: true},
		{name: "the wave finished meanwhile", atStart: []batchv1.Job{wave1}, atEnd: []batchv1.Job{wave1Done}},
		{name: "a wave started meanwhile", atStart: []batchv1.Job{wave1Done}, atEnd: []batchv1.Job{wave1Done, wave2}},
		{name: "the first wave started meanwhile", atEnd: []batchv1.Job{wave1}},
		{name: "the spec changed meanwhile", generation: 2},
		{name: "an error is taken whatever changed", atStart: []batchv1.Job{wave1}, atEnd: []batchv1.Job{wave1Done}, err: failed, want: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			qj := &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q", Generation: 1}}
			start := &scope{read: qj, qj: qj, jobs: tc.atStart}
			res := &probeResult{counts: &queue.Counts{Ready: 3}, mark: markOf(start)}
			if tc.err != nil {
				res.counts, res.err = nil, tc.err
			}
			now := qj.DeepCopy()
			now.Generation = max(tc.generation, 1)
			end := &scope{read: now, qj: now, jobs: tc.atEnd}
			r := &QueueJobReconciler{}
			if got := r.useProbe(end, res); got != tc.want {
				t.Errorf("useProbe = %v, want %v", got, tc.want)
			}
			if took := end.probe != nil; took != tc.want {
				t.Errorf("scope has the result: %v, want %v", took, tc.want)
			}
		})
	}
}

// The next probe is due an interval after a probe ended, not after it started: a probe
// that waited for its server's slots must not leave the next one due at once.
func TestSettleProbeCountsFromTheEnd(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	backend := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	r := &QueueJobReconciler{}
	if _, err := r.probes.get(key, "uid-1", backend, backends.Source{Spec: &qjv1.QueueSource{}}); err != nil {
		t.Fatal(err)
	}
	p := &probeRun{key: key, uid: "uid-1", backend: backend, at: at, interval: 2 * time.Second, backoff: 2 * time.Second, log: logr.Discard()}
	end := at.Add(8 * time.Second)
	r.settleProbe(p, &probeResult{counts: &queue.Counts{}}, true, end)
	if d := r.probes.untilDue(key, "uid-1", end); d < 2*time.Second {
		t.Errorf("the next probe is due %s after the end, want at least the interval (2s)", d)
	}
}

func TestProbeBackoff(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	qj := func(status metav1.ConditionStatus, since time.Duration) *qjv1.QueueJob {
		q := &qjv1.QueueJob{}
		if status != "" {
			q.Status.Conditions = []metav1.Condition{{Type: qjv1.ConditionQueueReachable, Status: status, LastTransitionTime: metav1.NewTime(now.Add(-since))}}
		}
		return q
	}
	cases := []struct {
		name string
		qj   *qjv1.QueueJob
		want time.Duration
	}{
		{name: "first failure: the probe interval", qj: qj("", 0), want: 2 * time.Second},
		{name: "was reachable", qj: qj(metav1.ConditionTrue, time.Hour), want: 2 * time.Second},
		{name: "unreachable for 1s: still the interval", qj: qj(metav1.ConditionFalse, time.Second), want: 2 * time.Second},
		{name: "unreachable for 8s: 8s", qj: qj(metav1.ConditionFalse, 8*time.Second), want: 8 * time.Second},
		{name: "unreachable for an hour: a minute", qj: qj(metav1.ConditionFalse, time.Hour), want: time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := probeBackoff(tc.qj, 2*time.Second, now); got != tc.want {
				t.Errorf("probeBackoff = %s, want %s", got, tc.want)
			}
		})
	}
}
