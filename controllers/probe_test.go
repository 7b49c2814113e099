package controllers

import (
	"context"
	"slices"
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

// closedOnce waits for the pool's background close of a backend.
func closedOnce(f *fakeBackend) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if f.closed.Load() == 1 {
			return true
		}
	}
	return false
}

func TestConnPool(t *testing.T) {
	var opened []*fakeBackend
	kind := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) {
		b := &fakeBackend{}
		opened = append(opened, b)
		return b, nil
	}}
	spec := &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "r:6379", Key: "k"}}
	src := func(password string) backends.Source {
		return backends.Source{Spec: spec, Secrets: map[string]string{"redis/password": password}}
	}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	var p connPool

	a, _ := p.get(key, "uid-1", kind, src("one"))
	b, _ := p.get(key, "uid-1", kind, src("one"))
	if a != b || len(opened) != 1 {
		t.Fatalf("the same source opened %d connections", len(opened))
	}
	c, _ := p.get(key, "uid-1", kind, src("rotated"))
	if c == a || !closedOnce(opened[0]) {
		t.Fatalf("a rotated Secret must replace the connection (closed %d)", opened[0].closed.Load())
	}
	d, _ := p.get(key, "uid-2", kind, src("rotated"))
	if d == c || !closedOnce(opened[1]) {
		t.Fatalf("a recreated QueueJob must get a new connection (closed %d)", opened[1].closed.Load())
	}
	p.drop(key)
	if !closedOnce(opened[2]) || p.size() != 0 {
		t.Fatalf("drop left %d connections, closed %d", p.size(), opened[2].closed.Load())
	}
	p.drop(key) // dropping twice is harmless
}

func TestConnPoolSchedule(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	kind := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	var p connPool
	if d := p.untilDue(key, "uid-1", now); d != 0 {
		t.Fatalf("a QueueJob never probed is due now, got %s", d)
	}
	p.probed(key, "uid-1", now, now.Add(time.Second), time.Second, nil) // no connection yet: nothing to remember
	if d := p.untilDue(key, "uid-1", now); d != 0 {
		t.Fatalf("untilDue = %s without a connection", d)
	}
	if _, err := p.get(key, "uid-1", kind, backends.Source{Spec: &qjv1.QueueSource{}}); err != nil {
		t.Fatal(err)
	}
	p.probed(key, "uid-1", now, now.Add(2*time.Second), 2*time.Second, nil)
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

// TestConnPoolWake: a write to the queue makes the probe of a QueueJob that waits for
// items due, once per probe, no sooner than minWakeGap after the last probe; a QueueJob
// that runs a wave is not woken; a write heard while a probe ran is not lost.
func TestConnPoolWake(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	kind := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	var p connPool
	if wake, _ := p.heard(key, "uid-1", now, false); wake {
		t.Fatal("woke a QueueJob without an entry")
	}
	if _, err := p.get(key, "uid-1", kind, backends.Source{Spec: &qjv1.QueueSource{}}); err != nil {
		t.Fatal(err)
	}
	probe := func(at time.Time, waiting bool) (probeAgain bool) {
		before := p.writesHeard(key, "uid-1")
		p.probed(key, "uid-1", at, at.Add(2*time.Second), 2*time.Second, nil)
		return p.armWake(key, "uid-1", waiting, before)
	}
	// A wave runs: the probes at their interval decide.
	if probe(now, false) {
		t.Fatal("probe again without a write")
	}
	if wake, _ := p.heard(key, "uid-1", now.Add(time.Second), false); wake || p.untilDue(key, "uid-1", now.Add(time.Second)) == 0 {
		t.Fatal("a write woke a QueueJob that runs a wave")
	}
	// Waiting for items: the first write makes the probe due, later ones until the next
	// probe do nothing.
	probe(now, true)
	wake, after := p.heard(key, "uid-1", now.Add(time.Second), false)
	if !wake || after != 0 || p.untilDue(key, "uid-1", now.Add(time.Second)) != 0 {
		t.Fatalf("a write to the empty queue: wake %v after %s, due in %s", wake, after, p.untilDue(key, "uid-1", now.Add(time.Second)))
	}
	if wake, _ := p.heard(key, "uid-1", now.Add(time.Second), false); wake {
		t.Error("a second write before the probe woke the QueueJob again")
	}
	if wake, _ := p.heard(key, "uid-2", now, false); wake {
		t.Error("woke the entry of another UID")
	}
	// A write just after a probe at its time: the next one comes minWakeGap after it.
	probe(now, true) // the probe the write above brought forward
	probe(now, true) // a probe at its time
	if wake, after := p.heard(key, "uid-1", now.Add(50*time.Millisecond), false); !wake || after != minWakeGap-50*time.Millisecond {
		t.Errorf("a write 50ms after the probe: wake %v after %s, want after %s", wake, after, minWakeGap-50*time.Millisecond)
	}
	// Writes that bring forward probes that find nothing (another consumer keeps the list
	// empty): the gap doubles each time, up to the interval; a probe with items resets it.
	probe(now, false)
	probe(now, true)
	var gaps []time.Duration
	for range 5 {
		wake, after := p.heard(key, "uid-1", now, false)
		if !wake {
			t.Fatal("no wake")
		}
		gaps = append(gaps, after)
		probe(now, true) // the brought-forward probe: still nothing
	}
	if want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 2 * time.Second}; !slices.Equal(gaps, want) {
		t.Errorf("gaps after empty wakes %v, want %v", gaps, want)
	}
	probe(now, true) // at its time: nothing, but not brought forward
	if _, after := p.heard(key, "uid-1", now, false); after != minWakeGap {
		t.Errorf("gap after a probe at its time %s, want %s", after, minWakeGap)
	}
	// Reports (the watch started: a write may have gone unheard) bring probes forward
	// without doubling the gap.
	probe(now, true) // the probe the write above brought forward
	probe(now, true) // a probe at its time
	for range 3 {
		if wake, after := p.heard(key, "uid-1", now, true); !wake || after != minWakeGap {
			t.Fatalf("a report: wake %v after %s, want after %s", wake, after, minWakeGap)
		}
		probe(now, true) // the probe the report brought forward: nothing
	}
	// A write heard while a probe ran, whatever the probe before it found: the probe may
	// have counted before it.
	probe(now, false)
	before := p.writesHeard(key, "uid-1")
	p.probed(key, "uid-1", now, now.Add(2*time.Second), 2*time.Second, nil)
	if wake, _ := p.heard(key, "uid-1", now.Add(10*time.Millisecond), false); wake {
		t.Fatal("woke during the probe")
	}
	if !p.armWake(key, "uid-1", true, before) || p.untilDue(key, "uid-1", now.Add(minWakeGap)) != 0 {
		t.Error("a write heard during the probe was lost")
	}
	// The watch ends with the entry.
	stopped := make(chan struct{})
	if !p.setUnwatch(key, "uid-1", func() { close(stopped) }) || !p.watching(key, "uid-1") {
		t.Fatal("the watch was not recorded")
	}
	if p.setUnwatch(key, "uid-1", func() {}) {
		t.Error("a second watch was recorded")
	}
	p.drop(key)
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("drop did not end the watch")
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
	reapErr   error
	reapCalls []time.Time
	// hang makes Reap return its reclaims only after this long, whatever its context says.
	hang time.Duration
}

func (f *reapingBackend) Probe(context.Context) (queue.Counts, error) { return f.counts, nil }
func (f *reapingBackend) Reap(_ context.Context, now time.Time, _ time.Duration) (int, error) {
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
}, r *QueueJobReconciler, s *scope, kind *backends.Backend) probeResult {
	t.Helper()
	p := r.newProbeRun(context.Background(), s, kind)
	p.source = backends.Source{Spec: s.qj.Spec.Queue}
	var err error
	if p.backend, err = r.pool.get(p.key, p.uid, kind, p.source); err != nil {
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
			for r.pool.pendingReclaimed(key, "uid-1") != 4 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := r.pool.pendingReclaimed(key, "uid-1"); got != 4 {
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
			kind := &backends.Backend{Name: "fake",
				SecretRefs: func(*qjv1.QueueSource) []backends.SecretRef { return nil },
				Open:       func(backends.Source) (queue.Conn, error) { return b, nil }}
			qj := &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "q", UID: "uid-1"},
				Spec: qjv1.QueueJobSpec{Queue: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "r:6379", Key: "k"}}}}
			r := &QueueJobReconciler{Recorder: events.NewFakeRecorder(10)}
			res := probeOnceOf(t, r, &scope{read: qj, qj: qj, now: now}, kind)
			reclaimed := int(r.pool.pendingReclaimed(types.NamespacedName{Namespace: "ns", Name: "q"}, "uid-1"))
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

// A QueueJob turned away by its server's gate is probed at once when the server answers
// again, whether the wake comes before or after the turned-away probe records its end.
func TestConnPoolServerWake(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	kind := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	for _, wakeFirst := range []bool{true, false} {
		var p connPool
		if _, err := p.get(key, "uid-1", kind, backends.Source{Spec: &qjv1.QueueSource{}}); err != nil {
			t.Fatal(err)
		}
		if wakeFirst {
			p.makeDue(key)
		}
		p.probed(key, "uid-1", now, now.Add(time.Minute), 2*time.Second, nil) // turned away: backoff
		if !wakeFirst {
			p.makeDue(key)
		}
		if d := p.untilDue(key, "uid-1", now); d != 0 {
			t.Errorf("wake first %v: the probe is due in %s, want at once", wakeFirst, d)
		}
		p.begin(key, "uid-1")
		p.probed(key, "uid-1", now, now.Add(2*time.Second), 2*time.Second, nil)
		if d := p.untilDue(key, "uid-1", now); d != 2*time.Second {
			t.Errorf("wake first %v: the probe after the wake is due in %s, want its interval", wakeFirst, d)
		}
	}
}

// The next probe is due an interval after a probe ended, not after it started: a probe
// that waited for its server's slots must not leave the next one due at once.
func TestSettleProbeCountsFromTheEnd(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	kind := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	r := &QueueJobReconciler{}
	if _, err := r.pool.get(key, "uid-1", kind, backends.Source{Spec: &qjv1.QueueSource{}}); err != nil {
		t.Fatal(err)
	}
	p := &probeRun{key: key, uid: "uid-1", kind: kind, at: at, interval: 2 * time.Second, backoff: 2 * time.Second, log: logr.Discard()}
	end := at.Add(8 * time.Second)
	r.settleProbe(p, &probeResult{counts: &queue.Counts{}}, true, end)
	if d := r.pool.untilDue(key, "uid-1", end); d < 2*time.Second {
		t.Errorf("the next probe is due %s after the end, want at least the interval (2s)", d)
	}
}
