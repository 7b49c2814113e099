package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
)

// probeStates remembers, per QueueJob, what its probes carry from one reconcile to the
// next: the connection to its queue and the watch of it (probeConn), when it was and may
// next be probed and the result no reconcile has taken yet (probeSchedule), the writes to
// its queue heard (writeWake), and what no status write has recorded yet. The first
// connection (get) makes an entry; a recreated QueueJob gets a new one, a rotated Secret
// a new connection in the same entry; the entry goes with the QueueJob (take, drop).
type probeStates struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]*probeState
}

// probeState is what probeStates remembers of one QueueJob (of this UID).
type probeState struct {
	uid      types.UID
	conn     probeConn
	schedule probeSchedule
	wake     writeWake
	// goneWave is the latest wave whose Job the API server said is gone: it is not read
	// again on every probe.
	goneWave int32
	// reclaimed counts leases reclaimed that no status write has recorded yet.
	reclaimed int64
}

// probeConn is a QueueJob's connection to its queue, opened from a resolved source.
type probeConn struct {
	fingerprint string
	conn        queue.Conn
	// unwatch ends the watch of the queue (see watchQueue); nil if there is none.
	unwatch func()
	// reached is set once a probe went through it to the queue (the address policy
	// allowed it).
	reached bool
}

// probeSchedule is when a QueueJob is probed, and the last probe's result.
type probeSchedule struct {
	// due is when the QueueJob may be probed next.
	due time.Time
	// probedAt is when the QueueJob was last probed, and interval its probe interval.
	probedAt time.Time
	interval time.Duration
	// running is set while a probe runs; result is the last probe's, until a reconcile
	// takes it.
	running bool
	result  *probeResult
	// serverWoke is set when the QueueJob's server answered again after turning it away:
	// its next probe is due at once, whatever the probe that was turned away set.
	serverWoke bool
	// podEnded is set when a running pod of the QueueJob ended while a probe ran: the next
	// probe is due a pod-end gap after that one's start (see podEnded). podWakes counts
	// the probes in a row so brought forward: the gap doubles with each.
	podEnded bool
	podWakes int
}

// writeWake is what the writes heard to a QueueJob's queue (see watchQueue) do to its
// probes.
type writeWake struct {
	// waiting is set while the QueueJob waits for items (armWake): a write to its queue
	// then makes the probe due at once.
	waiting bool
	// writes counts the writes to the queue heard.
	writes uint64
	// woken is set while a probe that a write brought forward is due; emptyWakes counts
	// such probes in a row that found no item (see minWakeGap).
	woken      bool
	emptyWakes int
	// idleProbes counts the probes in a row that found the queue idle while its watch was
	// up: the next probe comes later with each (see idleGap). idleGen is the QueueJob's
	// generation they were made under: a changed spec is probed at its interval again.
	idleProbes int
	idleGen    int64
}

// with calls f with the entry of a QueueJob (of this UID), under the lock; not at all if
// the QueueJob has none.
func (p *probeStates) with(key types.NamespacedName, uid types.UID, f func(*probeState)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.entries[key]; ok && e.uid == uid {
		f(e)
	}
}

// addReclaimed counts reclaimed leases until a status write records them.
func (p *probeStates) addReclaimed(key types.NamespacedName, uid types.UID, n int64) {
	p.with(key, uid, func(e *probeState) { e.reclaimed += n })
}

// pendingReclaimed is how many reclaimed leases no status write has recorded yet.
func (p *probeStates) pendingReclaimed(key types.NamespacedName, uid types.UID) (n int64) {
	p.with(key, uid, func(e *probeState) { n = e.reclaimed })
	return n
}

// reclaimedWritten records that a status write has recorded n reclaimed leases.
func (p *probeStates) reclaimedWritten(key types.NamespacedName, uid types.UID, n int64) {
	p.with(key, uid, func(e *probeState) { e.reclaimed -= n })
}

// goneWave is the wave recorded by markWaveGone, 0 if none.
func (p *probeStates) goneWave(key types.NamespacedName, uid types.UID) (w int32) {
	p.with(key, uid, func(e *probeState) { w = e.goneWave })
	return w
}

// markWaveGone records that the Job of a QueueJob's latest wave is gone.
func (p *probeStates) markWaveGone(key types.NamespacedName, uid types.UID, wave int32) {
	p.with(key, uid, func(e *probeState) { e.goneWave = wave })
}

// untilDue is how long until a QueueJob may be probed again; zero if now (or if it has no
// connection yet).
func (p *probeStates) untilDue(key types.NamespacedName, uid types.UID, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[key]
	if !ok || e.uid != uid {
		return 0
	}
	return max(e.schedule.due.Sub(now), 0)
}

// probed records when a QueueJob was probed, at what interval, when it may be probed
// next, and the result for its next reconcile (nil: that reconcile has it already). It
// disarms the wake: armWake arms it again once the reconcile knows the QueueJob waits for
// items.
func (p *probeStates) probed(key types.NamespacedName, uid types.UID, at, due time.Time, interval time.Duration, res *probeResult) {
	p.with(key, uid, func(e *probeState) {
		s := &e.schedule
		s.probedAt, s.due, s.interval, e.wake.waiting = at, due, interval, false
		s.running, s.result = false, res
		if s.serverWoke {
			s.due, s.serverWoke = time.Time{}, false
		}
		if s.podEnded {
			s.podWakes++
			s.due, s.podEnded = minTime(s.due, at.Add(s.podGap())), false
		} else {
			s.podWakes = 0
		}
	})
}

// podEnded brings a QueueJob's next probe forward: a running pod of it ended, and the
// items its workers held go back at that probe (see gonepods.go). The probe falls due a
// pod-end gap (podGap) after the last one's start at the earliest, so that the pods of a
// wave that end together cost a probe every gap, not one each; a pod that ends while a
// probe runs makes the next one due as early.
func (p *probeStates) podEnded(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[key]
	if !ok {
		return // not probed yet: the first probe comes anyway
	}
	e.schedule.podEnded = true
	e.schedule.due = minTime(e.schedule.due, e.schedule.probedAt.Add(e.schedule.podGap()))
}

// podGap is the least time between the start of a probe and that of one a pod's end
// brings forward: minWakeGap, doubled with each probe in a row so brought forward, up to
// the probe interval. Pods that keep failing (a crash loop of replacements) cost a probe
// every interval again, however long a probe takes.
func (s *probeSchedule) podGap() time.Duration {
	return min(minWakeGap<<min(s.podWakes, 16), max(s.interval, minWakeGap))
}

// minTime is the earlier of two times.
func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// begin records that a probe of the QueueJob runs.
func (p *probeStates) begin(key types.NamespacedName, uid types.UID) {
	p.with(key, uid, func(e *probeState) {
		e.schedule.running, e.schedule.result, e.schedule.serverWoke, e.schedule.podEnded = true, nil, false, false
	})
}

// abort records that a probe ended without a result.
func (p *probeStates) abort(key types.NamespacedName, uid types.UID) {
	p.with(key, uid, func(e *probeState) { e.schedule.running = false })
}

// takeResult returns the result of the QueueJob's last probe, if no reconcile has taken
// it yet, and whether a probe runs.
func (p *probeStates) takeResult(key types.NamespacedName, uid types.UID) (res *probeResult, running bool) {
	p.with(key, uid, func(e *probeState) {
		res, running, e.schedule.result = e.schedule.result, e.schedule.running, nil
	})
	return res, running
}

// giveBack returns a probe's result that a reconcile took but could not record (its
// status write conflicted), for the next reconcile; unless a newer probe runs or ended.
func (p *probeStates) giveBack(key types.NamespacedName, uid types.UID, res *probeResult) {
	p.with(key, uid, func(e *probeState) {
		if !e.schedule.running && e.schedule.result == nil {
			e.schedule.result = res
		}
	})
}

// reach records that a probe goes to the QueueJob's queue.
func (p *probeStates) reach(key types.NamespacedName, uid types.UID) {
	p.with(key, uid, func(e *probeState) { e.conn.reached = true })
}

// holds reports whether the QueueJob's entry still holds the connection.
func (p *probeStates) holds(key types.NamespacedName, uid types.UID, conn queue.Conn) (ok bool) {
	p.with(key, uid, func(e *probeState) { ok = e.conn.conn == conn })
	return ok
}

// makeDue makes a QueueJob's next probe due at once, also if a probe turned away by the
// server's gate records its end after this.
func (p *probeStates) makeDue(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.entries[key]; ok {
		e.schedule.due, e.schedule.serverWoke = time.Time{}, true
	}
}

// writesHeard counts the writes to a QueueJob's queue heard so far.
func (p *probeStates) writesHeard(key types.NamespacedName, uid types.UID) (n uint64) {
	p.with(key, uid, func(e *probeState) { n = e.wake.writes })
	return n
}

// minWakeGap is the least time between a probe and one that a write brings forward. It
// doubles with each probe in a row that a write brought forward and that found no item,
// up to the probe interval, and is back to minWakeGap after any other probe: a list that
// another consumer keeps empty while it is written to makes a QueueJob probe a few more
// times per interval, not back to back.
const minWakeGap = 250 * time.Millisecond

func (e *probeState) wakeGap() time.Duration {
	return min(minWakeGap<<min(e.wake.emptyWakes, 16), max(e.schedule.interval, minWakeGap))
}

// heard records a write to a QueueJob's queue (or a report that one may have gone
// unheard). If the QueueJob waits for items, its probe falls due (at least the wake gap
// after the last one) and heard returns true with the wait until then: the caller queues
// a reconcile for that time. A wake is armed once per probe.
func (p *probeStates) heard(key types.NamespacedName, uid types.UID, now time.Time, reported bool) (wake bool, after time.Duration) {
	p.with(key, uid, func(e *probeState) {
		e.wake.writes++
		if !e.wake.waiting {
			return
		}
		// A report (the watch started) is not a write: the probe it brings forward does
		// not count towards the gap's doubling.
		e.wake.waiting, e.wake.woken, wake = false, !reported, true
		e.schedule.due = e.schedule.probedAt.Add(e.wakeGap())
		after = max(e.schedule.due.Sub(now), 0)
	})
	return wake, after
}

// armWake records whether a QueueJob, just probed, waits for items: no wave runs and its
// queue held none. Only such a QueueJob is woken by a write: while a wave runs, every
// worker's take is a write too, and the probes at their interval decide. If a write was
// heard since the probe began (writesBefore), the probe may have counted before it: armWake
// then makes the probe due and returns true, and the caller queues a reconcile. A
// QueueJob idle as well (nothing in flight either, and its queue's watch up) has its next
// probe put off (idleGap).
func (p *probeStates) armWake(key types.NamespacedName, uid types.UID, gen int64, waiting, idle bool, writesBefore uint64) (probeAgain bool) {
	p.with(key, uid, func(e *probeState) {
		w := &e.wake
		if w.woken && waiting {
			w.emptyWakes++ // brought forward by a write, and found nothing
		} else {
			w.emptyWakes = 0 // a probe at its time or brought forward by a report, or items came
		}
		w.waiting, w.woken = waiting, false
		switch {
		case waiting && w.writes != writesBefore:
			w.waiting, w.woken, probeAgain = false, true, true
			e.schedule.due = e.schedule.probedAt.Add(e.wakeGap())
			w.idleProbes = 0
		case idle:
			w.idleProbes, w.idleGen = w.idleProbes+1, gen
			e.schedule.due = maxTime(e.schedule.due, e.schedule.probedAt.Add(e.idleGap()))
		default:
			w.idleProbes = 0
		}
	})
	return probeAgain
}

// specChanged ends the putting off of an idle QueueJob's probes once its spec changed
// (gen, its generation, is not the one they were put off under): its next probe is due
// an interval after the last.
func (p *probeStates) specChanged(key types.NamespacedName, uid types.UID, gen int64) {
	p.with(key, uid, func(e *probeState) {
		if e.wake.idleProbes > 0 && e.wake.idleGen != gen {
			e.wake.idleProbes = 0
			e.schedule.due = minTime(e.schedule.due, e.schedule.probedAt.Add(e.schedule.interval))
		}
	})
}

// maxIdleGap bounds how far an idle QueueJob's probes are put off.
const maxIdleGap = time.Minute

// idleGap is the time from a probe that found the queue idle, its watch up, to the next:
// the probe interval doubled with each such probe in a row, up to maxIdleGap (never less
// than the interval). A write to the queue brings the probe forward as it does at any
// interval; a watch that fails wakes its QueueJobs (backends.Watcher), whose next probe,
// the watch down, comes at the interval again. The probe goes on at all only for what no
// watch reports: a queue deleted, a password changed.
func (e *probeState) idleGap() time.Duration {
	iv := e.schedule.interval
	return max(iv, min(iv<<min(e.wake.idleProbes, 16), maxIdleGap))
}

// maxTime is the later of two times.
func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// setUnwatch records the end of a QueueJob's watch; it reports false (and the caller
// ends the watch) if the entry has one already or is gone.
func (p *probeStates) setUnwatch(key types.NamespacedName, uid types.UID, stop func()) (kept bool) {
	p.with(key, uid, func(e *probeState) {
		if e.conn.unwatch == nil && e.conn.conn != nil {
			e.conn.unwatch, kept = stop, true
		}
	})
	return kept
}

// watching reports whether a QueueJob's queue is watched.
func (p *probeStates) watching(key types.NamespacedName, uid types.UID) (w bool) {
	p.with(key, uid, func(e *probeState) { w = e.conn.unwatch != nil })
	return w
}

// get returns the QueueJob's connection to its queue, opened from src. It opens a new one
// when the QueueJob was recreated (a new entry) or the resolved source changed (a rotated
// Secret: the entry keeps its schedule, the writes heard and what it owes the status).
func (p *probeStates) get(key types.NamespacedName, uid types.UID, backend *backends.Backend, src backends.Source) (queue.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fp := backend.Name + "/" + src.Fingerprint()
	var carried probeState
	if e, ok := p.entries[key]; ok {
		if e.uid == uid && e.conn.fingerprint == fp {
			return e.conn.conn, nil
		}
		closeInBackground(e.conn.conn)
		stopWatch(e)
		delete(p.entries, key)
		// A rotated Secret: what the QueueJob owes its status stays.
		// TestProbeStatesRotationCarries names each field carried or reset.
		if e.uid == uid {
			carried = probeState{
				// Not put off for idleness: the new connection's watch is not up yet.
				schedule: probeSchedule{due: minTime(e.schedule.due, e.schedule.probedAt.Add(e.schedule.interval)), probedAt: e.schedule.probedAt},
				wake:     writeWake{writes: e.wake.writes},
				goneWave: e.goneWave, reclaimed: e.reclaimed,
			}
		}
	}
	conn, err := backend.Open(src)
	if err != nil {
		return nil, err
	}
	if p.entries == nil {
		p.entries = map[types.NamespacedName]*probeState{}
	}
	carried.uid, carried.conn.fingerprint, carried.conn.conn = uid, fp, conn
	p.entries[key] = &carried
	return conn, nil
}

// abandon removes a connection that did not answer in time from the entry, keeping what the
// QueueJob owes its status, and closes it in the background.
func (p *probeStates) abandon(key types.NamespacedName, conn queue.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.entries[key]; ok && e.conn.conn == conn {
		e.conn.conn, e.conn.fingerprint = nil, ""
		stopWatch(e)
	}
	closeInBackground(conn)
}

// stopWatch ends an entry's watch of its queue, if it has one.
func stopWatch(e *probeState) {
	if e.conn.unwatch != nil {
		go e.conn.unwatch() // not under the lock: a wake in progress takes it
		e.conn.unwatch = nil
	}
}

// closeInBackground closes a connection without holding up the caller (nor the lock):
// closing a connection to a frozen broker waits for its timeout.
func closeInBackground(conn queue.Conn) {
	if conn != nil {
		go func() { _ = conn.Close() }()
	}
}

// take removes a QueueJob's entry and returns its connection, nil if it had none. A
// connection a probe uses, or one no probe went through (the address policy refused it),
// is closed instead: no two goroutines use one at once, and none goes where the policy
// refuses.
func (p *probeStates) take(key types.NamespacedName) queue.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[key]
	if !ok {
		return nil
	}
	stopWatch(e)
	delete(p.entries, key)
	if e.schedule.running || !e.conn.reached {
		closeInBackground(e.conn.conn)
		return nil
	}
	return e.conn.conn
}

// drop removes a QueueJob's entry and closes its connection.
func (p *probeStates) drop(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.entries[key]; ok {
		closeInBackground(e.conn.conn)
		stopWatch(e)
		delete(p.entries, key)
	}
}
