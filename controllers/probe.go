package controllers

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
)

const (
	// maxProbeBackoff bounds the wait between probes of an unreachable queue.
	maxProbeBackoff = 60 * time.Second
	// minReapGrace is the least time an in-flight item must be seen without a lease
	// before the reaper returns it.
	minReapGrace = 10 * time.Second
	// defaultSecretRefresh is how long the values of a QueueJob's Secrets are reused
	// before they are read again.
	defaultSecretRefresh = time.Minute
)

// probeResult is what a probe found: the counts, or the error that kept it from counting.
type probeResult struct {
	counts *queue.Counts // nil when the probe failed
	err    error
	// mark and writesBefore are the probe's start: the wave its counts are measured
	// against, and how many writes to the queue had been heard.
	mark         waveMark
	writesBefore uint64
	// watched is set when the queue's watch was up as the probe ended: a write to the
	// queue would be heard (see idleGap).
	watched bool
}

// waveMark is what a probe's counts are measured against: the spec and the latest
// wave's Job, started or finished. Counts taken before a wave started or finished (its
// pods may have taken the items counted), or of a queue the spec no longer names, must
// not plan the next wave.
type waveMark struct {
	generation int64
	job        types.UID
	finished   bool
}

func markOf(s *scope) waveMark {
	m := waveMark{generation: s.qj.Generation}
	if w := s.wave(); w.job != nil {
		m.job, m.finished = w.job.UID, !w.state.runs()
	}
	return m
}

// probeQueue counts the queue's items and returns the items of crashed workers. A failed
// probe is not an error of the reconcile: it is reported in QueueReachable, and the phases
// after it create and delete nothing because of it.
//
// Probes run off the reconcile goroutines (startProbe): a reconcile starts one when it is
// due and returns; the probe's end queues a reconcile, which takes its result. So a queue
// that does not answer holds up no other QueueJob, only its own next probe. A reconcile
// without a fresh result decides no wave (a count from an earlier probe could start a
// duplicate one). A QueueJob is probed at most once per probe interval (or per backoff
// step after a failure), however often it is reconciled, unless a write to its queue
// (heard) or the end of one of its running pods (podEnded) brings a probe forward, to
// minWakeGap after the last at the earliest: every status write triggers a
// reconcile, and without this bound a draining queue, whose counts change at every probe,
// would be probed and written back to back.
func (r *QueueJobReconciler) probeQueue(ctx context.Context, s *scope) error {
	src := s.qj.Spec.Queue
	if src == nil {
		return nil
	}
	key := client.ObjectKeyFromObject(s.qj)
	if isFinished(&s.read.Status) && !strandedItems(&s.read.Status) {
		// Nothing more to decide or reap: release the connection and the gauges.
		r.forgetQueue(key)
		return nil
	}
	backend, err := r.registry().For(src)
	if err != nil {
		return err
	}
	// The probe's wave mark (markOf), taken at its start and checked at its use, must
	// name the latest wave even while the Job cache lags.
	if err := r.seeLatestWave(ctx, s); err != nil {
		return err
	}
	r.probes.specChanged(key, s.qj.UID, s.qj.Generation)
	res, running := r.probes.takeResult(key, s.qj.UID)
	switch {
	case running:
		s.requeue(r.probeTimeout()) // its end queues a reconcile; this is a safety net
		return nil
	case res != nil && r.useProbe(s, res):
		s.probeTaken = true
		// A probe made due while this one ran (makeDue: the server answered again;
		// podEnded: a pod ended) runs in a reconcile at that time, also when that is now.
		s.requeue(max(r.probes.untilDue(key, s.qj.UID, s.now), time.Millisecond))
		return nil
	case res == nil:
		if wait := r.probes.untilDue(key, s.qj.UID, s.now); wait > 0 {
			s.requeue(wait)
			return nil
		}
	}
	// Due, or the result just taken was measured against another wave: probe now.
	return r.startProbe(ctx, s, backend)
}

// useProbe takes a finished probe's result into the reconcile, and reports whether it
// could: counts measured against another wave or spec than the reconcile sees are
// dropped (see waveMark), and the caller probes again at once. An error is always taken.
func (r *QueueJobReconciler) useProbe(s *scope, res *probeResult) bool {
	if res.err == nil && res.mark != markOf(s) {
		return false
	}
	s.probe, s.writesBefore = res, res.writesBefore
	if c := res.counts; c != nil {
		queueReady.WithLabelValues(s.qj.Namespace, s.qj.Name).Set(float64(c.Ready))
		queueInFlight.WithLabelValues(s.qj.Namespace, s.qj.Name).Set(float64(c.InFlight))
		queueDeadLettered.WithLabelValues(s.qj.Namespace, s.qj.Name).Set(float64(c.DeadLettered))
		queueLastProbe.WithLabelValues(s.qj.Namespace, s.qj.Name).Set(float64(s.now.UnixNano()) / 1e9)
	}
	return true
}

// probeRun is one probe of a QueueJob's queue. It runs after the reconcile that started it
// has returned, so it holds copies of what it needs from it.
type probeRun struct {
	key     types.NamespacedName
	uid     types.UID
	target  *qjv1.QueueJob // the QueueJob's metadata, for events
	backend *backends.Backend
	source  backends.Source
	// server names the server the probe reaches, and gate is its entry in that server's
	// gate (see serverGates).
	server string
	gate   *gateTicket
	conn   queue.Conn
	// at is when it started (the reconcile's now), interval the QueueJob's probe interval
	// and backoff the wait before the next probe should this one fail.
	at                time.Time
	interval, backoff time.Duration
	started           probeResult // mark and writesBefore
	// gone says which sessions are of the QueueJob's pods seen to end, as of the probe's
	// start: the reaper returns their items at once.
	gone queue.GoneHolders
	log  logr.Logger
}

// newProbeRun describes a probe of the scope's QueueJob.
func (r *QueueJobReconciler) newProbeRun(ctx context.Context, s *scope, backend *backends.Backend) *probeRun {
	interval := time.Duration(s.qj.Spec.EffectiveProbeIntervalSeconds()) * time.Second
	key := client.ObjectKeyFromObject(s.qj)
	return &probeRun{
		key: key, uid: s.qj.UID, backend: backend, at: s.now, interval: interval, log: logf.FromContext(ctx),
		target:  &qjv1.QueueJob{TypeMeta: s.qj.TypeMeta, ObjectMeta: *s.qj.ObjectMeta.DeepCopy()},
		backoff: probeBackoff(s.read, interval, s.now),
		// A write heard during the probe (items pushed after the count) must not be
		// lost to the due time set after it: see armWake.
		started: probeResult{mark: markOf(s), writesBefore: r.probes.writesHeard(key, s.qj.UID)},
	}
}

// startProbe starts a probe of the QueueJob's queue in the background. What fails before
// the queue is reached (a Secret missing, a server whose last probe found it down) fails
// the probe at once, in this reconcile.
func (r *QueueJobReconciler) startProbe(ctx context.Context, s *scope, backend *backends.Backend) error {
	p := r.newProbeRun(ctx, s, backend)
	var err error
	if p.source, err = r.resolveCached(ctx, s, backend); err == nil {
		p.source.Spec = p.source.Spec.DeepCopy() // the reconcile's status write decodes into s.qj
		p.server = serverOf(backend, p.source, p.key)
		p.conn, err = r.probes.get(p.key, p.uid, backend, p.source)
	}
	if err == nil {
		if p.gate = r.gates.enter(p.server, p.key, s.now); p.gate == nil {
			err = skipped(p.server)
		}
	}
	if err != nil {
		s.probe = &probeResult{err: err, mark: p.started.mark, writesBefore: p.started.writesBefore}
		s.writesBefore = p.started.writesBefore
		s.requeue(r.settleProbe(p, s.probe, false, p.at))
		return nil
	}
	r.probes.begin(p.key, p.uid)
	// After begin: a pod that ends from now on brings the next probe forward (podEnded).
	if r.confirmGone(ctx, p.key, s.now) {
		r.probes.podEnded(p.key) // some could not be read: the next probe tries again soon
	}
	p.gone = r.gone.holders(p.key, s.now)
	go r.runProbe(p)
	s.requeue(r.probeTimeout())
	return nil
}

// errServerDown turns away the probes of a server whose last probe found it down, until
// the next probe tries it again (see serverGates).
var errServerDown = errors.New("the server is down")

// skipped is the error of a probe turned away from a server (backend and addresses) that is
// down. The message is the same at every probe, so that it costs no status write.
func skipped(server string) error {
	return queue.Errorf(queue.ReasonConnectionFailed, "The queue's server (%s) did not answer the last probe of a "+
		"QueueJob that uses it, so this probe was skipped: one probe at a time tries the server again, at most %s apart, "+
		"and this QueueJob is probed as soon as the server answers", server, maxServerBackoff)
}

// runProbe runs a probe, records its result for the next reconcile of its QueueJob, and
// queues that reconcile.
func (r *QueueJobReconciler) runProbe(p *probeRun) {
	ctx := logf.IntoContext(r.runContext(), p.log)
	start := time.Now()
	var res probeResult
	var wake []types.NamespacedName
	// Refused before connecting (--allowed-queue-addresses); here, since it may resolve
	// the queue's host name.
	refused := r.AllowedAddresses.Check(ctx, p.backend, p.source)
	var err error
	if refused == nil {
		err = r.gates.wait(ctx, p.gate)
	}
	switch {
	case refused != nil || errors.Is(err, errServerDown):
		res = p.started
		res.err = refused
		if refused == nil {
			res.err = skipped(p.server)
		}
		r.gates.leave(p.gate, p.at.Add(time.Since(start)), probeSkipped)
	case err != nil:
		r.gates.leave(p.gate, p.at.Add(time.Since(start)), probeSkipped)
		r.probes.abort(p.key, p.uid) // the manager is stopping
		return
	default:
		r.probes.reach(p.key, p.uid)
		res = r.probeOnce(ctx, p)
		probeDuration.WithLabelValues(p.backend.Name).Observe(time.Since(start).Seconds())
		end := endOf(res.err)
		if end == serverAnswered && res.err != nil && !r.probes.holds(p.key, p.uid, p.conn) {
			end = probeSkipped // its connection was closed under it (the QueueJob went): that says nothing
		}
		wake = r.gates.leave(p.gate, p.at.Add(time.Since(start)), end)
	}
	r.settleProbe(p, &res, true, p.at.Add(time.Since(start)))
	r.enqueue(p.key, 0)
	for _, key := range wake {
		r.probes.makeDue(key)
		r.enqueue(key, 0)
	}
}

// settleProbe records a probe that ended at end: when the next one is due (counted from
// its end, so that a probe that waited for its server does not leave the next one due at
// once), and its result if it is kept for the next reconcile. It returns the wait until
// the next probe, from end.
func (r *QueueJobReconciler) settleProbe(p *probeRun, res *probeResult, keep bool, end time.Time) time.Duration {
	next := p.interval + time.Duration(rand.Int64N(int64(p.interval)/10+1)) // jitter spreads the probes of many QueueJobs
	if res.err != nil {
		if secretsSuspect(res.err) {
			// A rotated password, URL or CA shows first as a failed login or connection:
			// the next probe reads the Secrets again.
			r.secrets.forget(p.key)
		}
		probeErrors.WithLabelValues(p.backend.Name, queue.ReasonOf(res.err)).Inc()
		p.log.V(1).Info("Probe failed", "reason", queue.ReasonOf(res.err), "error", res.err.Error())
		next = p.backoff
	}
	if !keep {
		res = nil
	}
	r.probes.probed(p.key, p.uid, p.at, end.Add(next), p.interval, res)
	return next
}

// strandedItems reports whether a finished QueueJob still has items in flight that its
// probes must keep reaping: a Failed QueueJob's workers are gone, and the items they held
// would otherwise stay in flight (in Redis's <key>:processing) for good. A Complete one
// finished with nothing in flight. Until a probe after the failure has counted them, the
// items in flight are unknown: a worker may have taken one after the last probe and died
// with its Job.
func strandedItems(st *qjv1.QueueJobStatus) bool {
	if !meta.IsStatusConditionTrue(st.Conditions, qjv1.ConditionFailed) {
		return false
	}
	q := st.Queue
	// Status times have whole seconds: a probe in the second of the failure may precede it.
	if q == nil || q.LastProbeTime == nil || (st.CompletionTime != nil && !q.LastProbeTime.After(st.CompletionTime.Time)) {
		return true
	}
	return q.InFlight > 0
}

// probeOnce probes and reaps, within ProbeTimeout.
func (r *QueueJobReconciler) probeOnce(ctx context.Context, p *probeRun) probeResult {
	res := p.started
	// The bound holds whatever the connection does with the context: a connection that does not
	// answer in time is abandoned (closed in the background, or its shared client released:
	// the client drops a socket whose read timed out), and the next probe opens a new one,
	// so that no two probes ever use one connection at once.
	ctx, cancel := context.WithTimeout(ctx, r.probeTimeout())
	defer cancel()
	type result struct {
		counts queue.Counts
		err    error
	}
	done := make(chan result, 1)
	go func() {
		counts, reclaimed, err := probeAndReap(ctx, p.conn, p.at, max(minReapGrace, 2*p.interval), p.gone)
		// Reclaimed items are back in the queue, whether this probe failed later on or was
		// abandoned: count them until a status write records them, and say so now.
		r.recordReclaimed(ctx, p, reclaimed)
		done <- result{counts, err}
	}()
	select {
	case got := <-done:
		if got.err != nil {
			res.err = got.err
			return res
		}
		r.watchQueue(ctx, p.key, p.uid, p.backend, p.source)
		res.counts, res.watched = &got.counts, r.queueWatched(p.key, p.uid, p.backend, p.source)
	case <-ctx.Done():
		r.probes.abandon(p.key, p.conn)
		e := queue.Errorf(queue.ReasonConnectionFailed,
			"the queue did not answer within %s: check spec.queue's address and that the broker is healthy", r.probeTimeout())
		e.NoAnswer = true
		res.err = e
	}
	return res
}

// watchQueue has the QueueJob's queue watched, if its backend can be and it is not yet: a
// write to it wakes a QueueJob waiting on an empty queue at once, instead of at its next
// probe. A watch that cannot start (a server that refuses tracking) changes nothing: the
// probes find the items.
func (r *QueueJobReconciler) watchQueue(ctx context.Context, key types.NamespacedName, uid types.UID, backend *backends.Backend, src backends.Source) {
	if r.NoQueueWatch || backend.NewWatcher == nil || r.probes.watching(key, uid) {
		return
	}
	w := r.watcher(backend)
	if w == nil {
		return // the manager is stopping
	}
	stop, err := w.Watch(src, func(reported bool) {
		if wake, after := r.probes.heard(key, uid, r.Clock.Now(), reported); wake {
			queueWakes.WithLabelValues(backend.Name).Inc()
			r.enqueue(key, after)
		}
	})
	if err != nil {
		logf.FromContext(ctx).V(1).Info("Cannot watch the queue; the probes alone find its items", "error", err.Error())
		return
	}
	if !r.probes.setUnwatch(key, uid, stop) {
		stop()
	}
}

// queueWatched reports whether the QueueJob's queue is watched and its watch is up.
func (r *QueueJobReconciler) queueWatched(key types.NamespacedName, uid types.UID, backend *backends.Backend, src backends.Source) bool {
	if r.NoQueueWatch || backend.NewWatcher == nil || !r.probes.watching(key, uid) {
		return false
	}
	w := r.watcher(backend)
	return w != nil && w.Active(src)
}

// watcher is the Watcher of a backend, started on first use; nil once the manager stops.
func (r *QueueJobReconciler) watcher(backend *backends.Backend) backends.Watcher {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	if r.watchersClosed {
		return nil
	}
	if r.watchers == nil {
		r.watchers = map[string]backends.Watcher{}
	}
	w, ok := r.watchers[backend.Name]
	if !ok {
		// Not the reconcile's logger: a watch serves every QueueJob on its server.
		w = backend.NewWatcher(logf.Log.WithName("queue-watch").WithValues("backend", backend.Name))
		r.watchers[backend.Name] = w
	}
	return w
}

// closeWatchers ends every watch (the manager is stopping).
func (r *QueueJobReconciler) closeWatchers() {
	r.watchMu.Lock()
	ws := r.watchers
	r.watchers, r.watchersClosed = nil, true
	r.watchMu.Unlock()
	for _, w := range ws {
		w.Close()
	}
}

// enqueue queues a reconcile of the QueueJob after a while (once the controller has
// started).
func (r *QueueJobReconciler) enqueue(key types.NamespacedName, after time.Duration) {
	r.watchMu.Lock()
	q := r.wakeQueue
	r.watchMu.Unlock()
	if q != nil {
		q.AddAfter(reconcile.Request{NamespacedName: key}, after) // at once if after <= 0
	}
}

// recordReclaimed counts reclaimed leases, and reports them in an event, a metric and the log.
func (r *QueueJobReconciler) recordReclaimed(ctx context.Context, p *probeRun, n int) {
	if n == 0 {
		return
	}
	r.probes.addReclaimed(p.key, p.uid, int64(n))
	leasesReclaimed.WithLabelValues(p.backend.Name).Add(float64(n))
	logf.FromContext(ctx).Info("Returned items of gone workers to the queue", "items", n)
	r.Recorder.Eventf(p.target, nil, corev1.EventTypeNormal, qjv1.EventLeasesReclaimed, "ReclaimLeases",
		"Returned %d in-flight items of gone workers (their pods ended, or their leases expired) to the queue", n)
}

// probeAndReap counts the queue's items and returns those of gone workers to it: those
// whose lease expired, and those of the pods gone names (see gonepods.go). Items already
// returned are counted even when the reaper then fails.
func probeAndReap(ctx context.Context, conn queue.Conn, now time.Time, grace time.Duration, gone queue.GoneHolders) (queue.Counts, int, error) {
	counts, err := conn.Probe(ctx)
	if err != nil {
		return queue.Counts{}, 0, err
	}
	// The reaper runs on every successful probe, also with nothing in flight: it learns
	// that an item left the in-flight list only by looking, and an item it saw without a
	// lease, that then finished and was later taken again, must not be reclaimed as if it
	// had been abandoned all along. With nothing in flight a Reap is one cheap read.
	reclaimed := 0
	if reaper, ok := conn.(queue.Reaper); ok {
		reclaimed, err = reaper.Reap(ctx, now, grace, gone)
		if err != nil {
			return queue.Counts{}, reclaimed, err
		}
		// Reap runs after the count: items taken meanwhile may be among the reclaimed.
		counts.InFlight = max(counts.InFlight-int64(reclaimed), 0)
		counts.Ready += int64(reclaimed)
	}
	return counts, reclaimed, nil
}

// secretsSuspect reports whether a failed probe may be due to a Secret that changed since
// it was read: a refused login, a failed connection (a URL that moved), a certificate not
// accepted (a CA that was renewed). A missing queue or a key of the wrong type is not.
func secretsSuspect(err error) bool {
	switch queue.ReasonOf(err) {
	case queue.ReasonQueueNotFound, queue.ReasonWrongType:
		return false
	}
	return true
}

// probeBackoff is the wait before probing an unreachable queue again: it doubles with the
// time the queue has been unreachable, from the probe interval up to a minute.
func probeBackoff(read *qjv1.QueueJob, interval time.Duration, now time.Time) time.Duration {
	c := meta.FindStatusCondition(read.Status.Conditions, qjv1.ConditionQueueReachable)
	if c == nil || c.Status != "False" {
		return interval
	}
	return min(max(now.Sub(c.LastTransitionTime.Time), interval), maxProbeBackoff)
}

// forgetQueue closes a QueueJob's connection and drops its metric series and the values
// of its Secrets.
func (r *QueueJobReconciler) forgetQueue(key types.NamespacedName) {
	r.secrets.forget(key)
	r.gone.forget(key)
	r.dropGauges(key)
	r.probes.drop(key) // last: once the entry is gone, the rest is gone too
}

// forgetDeletedQueue closes a deleted QueueJob's connection, and logs the items its
// queue still holds in flight: nothing reaps them any more (another QueueJob on the same
// queue would).
func (r *QueueJobReconciler) forgetDeletedQueue(ctx context.Context, key types.NamespacedName) {
	r.dropGauges(key)
	r.secrets.forget(key)
	b := r.probes.take(key)
	if b == nil {
		return
	}
	log := logf.FromContext(ctx)
	go func() { // a broker that does not answer must not hold up the reconciles
		defer func() { _ = b.Close() }()
		// A few at a time: they share their server's client with the live probes, and a
		// thousand QueueJobs deleted at once must not take its connections.
		release, ok := r.forgets.acquire(r.runContext())
		if !ok {
			return
		}
		defer release()
		pctx, cancel := context.WithTimeout(r.runContext(), r.probeTimeout())
		counts, err := b.Probe(pctx)
		cancel()
		if err == nil && counts.InFlight > 0 {
			log.Info("QueueJob deleted with items in flight: nothing reaps them now; they go back to the queue only if their worker finishes them or another QueueJob on the same queue reaps them",
				"inFlight", counts.InFlight)
		}
	}()
}

// forgetProbes bounds the probes of deleted QueueJobs' queues that run at once.
const forgetProbes = 4

// limiter bounds how many goroutines hold a slot at once (forgetProbes); its zero value
// is ready.
type limiter struct {
	once  sync.Once
	slots chan struct{}
}

// acquire waits for a slot, and returns its release; false if ctx ended first.
func (l *limiter) acquire(ctx context.Context) (release func(), ok bool) {
	l.once.Do(func() { l.slots = make(chan struct{}, forgetProbes) })
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, true
	case <-ctx.Done():
		return nil, false
	}
}

func (r *QueueJobReconciler) dropGauges(key types.NamespacedName) {
	queueReady.DeleteLabelValues(key.Namespace, key.Name)
	queueInFlight.DeleteLabelValues(key.Namespace, key.Name)
	queueDeadLettered.DeleteLabelValues(key.Namespace, key.Name)
	queueLastProbe.DeleteLabelValues(key.Namespace, key.Name)
}
