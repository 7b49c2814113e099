package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// connPool keeps one backend connection per QueueJob, and replaces it when the QueueJob
// is recreated or the resolved source (a rotated Secret) changes.
type connPool struct {
	mu    sync.Mutex
	conns map[types.NamespacedName]*pooledConn
}

type pooledConn struct {
	uid         types.UID
	fingerprint string
	backend     queue.Backend
	// due is when the QueueJob may be probed next.
	due time.Time
	// goneWave is the latest wave whose Job the API server said is gone: it is not read
	// again on every probe.
	goneWave int32
	// reclaimed counts leases reclaimed that no status write has recorded yet.
	reclaimed int64
	// unwatch ends the watch of the queue (see watchQueue); nil if there is none.
	unwatch func()
	// probedAt is when the QueueJob was last probed, and interval its probe interval.
	probedAt time.Time
	interval time.Duration
	// waiting is set while the QueueJob waits for items (armWake): a write to its queue
	// then makes the probe due at once.
	waiting bool
	// writes counts the writes to the queue heard.
	writes uint64
	// woken is set while a probe that a write brought forward is due; emptyWakes counts
	// such probes in a row that found no item (see minWakeGap).
	woken      bool
	emptyWakes int
	// running is set while a probe runs; result is the last probe's, until a reconcile
	// takes it. reached is set once a probe went to the queue (the address policy
	// allowed it).
	running, reached bool
	result           *probeResult
	// serverWoke is set when the QueueJob's server answered again after turning it away:
	// its next probe is due at once, whatever the probe that was turned away set.
	serverWoke bool
}

// with calls f with the entry of a QueueJob (of this UID), under the pool's lock; not at
// all if the QueueJob has none.
func (p *connPool) with(key types.NamespacedName, uid types.UID, f func(*pooledConn)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[key]; ok && c.uid == uid {
		f(c)
	}
}

// addReclaimed counts reclaimed leases until a status write records them.
func (p *connPool) addReclaimed(key types.NamespacedName, uid types.UID, n int64) {
	p.with(key, uid, func(c *pooledConn) { c.reclaimed += n })
}

// pendingReclaimed is how many reclaimed leases no status write has recorded yet.
func (p *connPool) pendingReclaimed(key types.NamespacedName, uid types.UID) (n int64) {
	p.with(key, uid, func(c *pooledConn) { n = c.reclaimed })
	return n
}

// reclaimedWritten records that a status write has recorded n reclaimed leases.
func (p *connPool) reclaimedWritten(key types.NamespacedName, uid types.UID, n int64) {
	p.with(key, uid, func(c *pooledConn) { c.reclaimed -= n })
}

// goneWave is the wave recorded by markWaveGone, 0 if none.
func (p *connPool) goneWave(key types.NamespacedName, uid types.UID) (w int32) {
	p.with(key, uid, func(c *pooledConn) { w = c.goneWave })
	return w
}

// markWaveGone records that the Job of a QueueJob's latest wave is gone.
func (p *connPool) markWaveGone(key types.NamespacedName, uid types.UID, wave int32) {
	p.with(key, uid, func(c *pooledConn) { c.goneWave = wave })
}

// untilDue is how long until a QueueJob may be probed again; zero if now (or if it has no
// connection yet).
func (p *connPool) untilDue(key types.NamespacedName, uid types.UID, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.conns[key]
	if !ok || c.uid != uid {
		return 0
	}
	return max(c.due.Sub(now), 0)
}

// probed records when a QueueJob was probed, at what interval, when it may be probed
// next, and the result for its next reconcile (nil: that reconcile has it already). It
// disarms the wake: armWake arms it again once the reconcile knows the QueueJob waits for
// items.
func (p *connPool) probed(key types.NamespacedName, uid types.UID, at, due time.Time, interval time.Duration, res *probeResult) {
	p.with(key, uid, func(c *pooledConn) {
		c.probedAt, c.due, c.interval, c.waiting = at, due, interval, false
		c.running, c.result = false, res
		if c.serverWoke {
			c.due, c.serverWoke = time.Time{}, false
		}
	})
}

// begin records that a probe of the QueueJob runs.
func (p *connPool) begin(key types.NamespacedName, uid types.UID) {
	p.with(key, uid, func(c *pooledConn) { c.running, c.result, c.serverWoke = true, nil, false })
}

// abort records that a probe ended without a result.
func (p *connPool) abort(key types.NamespacedName, uid types.UID) {
	p.with(key, uid, func(c *pooledConn) { c.running = false })
}

// takeResult returns the result of the QueueJob's last probe, if no reconcile has taken
// it yet, and whether a probe runs.
func (p *connPool) takeResult(key types.NamespacedName, uid types.UID) (res *probeResult, running bool) {
	p.with(key, uid, func(c *pooledConn) { res, running, c.result = c.result, c.running, nil })
	return res, running
}

// reach records that a probe goes to the QueueJob's queue.
func (p *connPool) reach(key types.NamespacedName, uid types.UID) {
	p.with(key, uid, func(c *pooledConn) { c.reached = true })
}

// holds reports whether the QueueJob's entry still holds the backend.
func (p *connPool) holds(key types.NamespacedName, uid types.UID, b queue.Backend) (ok bool) {
	p.with(key, uid, func(c *pooledConn) { ok = c.backend == b })
	return ok
}

// makeDue makes a QueueJob's next probe due at once, also if a probe turned away by the
// server's gate records its end after this.
func (p *connPool) makeDue(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[key]; ok {
		c.due, c.serverWoke = time.Time{}, true
	}
}

// wakeState is whether a QueueJob waits for a write, and how many writes were heard.
func (p *connPool) wakeState(key types.NamespacedName, uid types.UID) (waiting bool, writes uint64) {
	p.with(key, uid, func(c *pooledConn) { waiting, writes = c.waiting, c.writes })
	return waiting, writes
}

// writesHeard counts the writes to a QueueJob's queue heard so far.
func (p *connPool) writesHeard(key types.NamespacedName, uid types.UID) (n uint64) {
	p.with(key, uid, func(c *pooledConn) { n = c.writes })
	return n
}

// minWakeGap is the least time between a probe and one that a write brings forward. It
// doubles with each probe in a row that a write brought forward and that found no item,
// up to the probe interval, and is back to minWakeGap after any other probe: a list that
// another consumer keeps empty while it is written to makes a QueueJob probe a few more
// times per interval, not back to back.
const minWakeGap = 250 * time.Millisecond

func (c *pooledConn) wakeGap() time.Duration {
	return min(minWakeGap<<min(c.emptyWakes, 16), max(c.interval, minWakeGap))
}

// heard records a write to a QueueJob's queue (or a report that one may have gone
// unheard). If the QueueJob waits for items, its probe falls due (at least the wake gap
// after the last one) and heard returns true with the wait until then: the caller queues
// a reconcile for that time. A wake is armed once per probe.
func (p *connPool) heard(key types.NamespacedName, uid types.UID, now time.Time, reported bool) (wake bool, after time.Duration) {
	p.with(key, uid, func(c *pooledConn) {
		c.writes++
		if !c.waiting {
			return
		}
		// A report (the watch started) is not a write: the probe it brings forward does
		// not count towards the gap's doubling.
		c.waiting, c.woken, wake = false, !reported, true
		c.due = c.probedAt.Add(c.wakeGap())
		after = max(c.due.Sub(now), 0)
	})
	return wake, after
}

// armWake records whether a QueueJob, just probed, waits for items: no wave runs and its
// queue held none. Only such a QueueJob is woken by a write: while a wave runs, every
// worker's take is a write too, and the probes at their interval decide. If a write was
// heard since the probe began (writesBefore), the probe may have counted before it: armWake
// then makes the probe due and returns true, and the caller queues a reconcile.
func (p *connPool) armWake(key types.NamespacedName, uid types.UID, waiting bool, writesBefore uint64) (probeAgain bool) {
	p.with(key, uid, func(c *pooledConn) {
		if c.woken && waiting {
			c.emptyWakes++ // brought forward by a write, and found nothing
		} else {
			c.emptyWakes = 0 // a probe at its time or brought forward by a report, or items came
		}
		c.waiting, c.woken = waiting, false
		if waiting && c.writes != writesBefore {
			c.waiting, c.woken, probeAgain = false, true, true
			c.due = c.probedAt.Add(c.wakeGap())
		}
	})
	return probeAgain
}

// setUnwatch records the end of a QueueJob's watch; it reports false (and the caller
// ends the watch) if the entry has one already or is gone.
func (p *connPool) setUnwatch(key types.NamespacedName, uid types.UID, stop func()) (kept bool) {
	p.with(key, uid, func(c *pooledConn) {
		if c.unwatch == nil && c.backend != nil {
			c.unwatch, kept = stop, true
		}
	})
	return kept
}

// watching reports whether a QueueJob's queue is watched.
func (p *connPool) watching(key types.NamespacedName, uid types.UID) (w bool) {
	p.with(key, uid, func(c *pooledConn) { w = c.unwatch != nil })
	return w
}

func (p *connPool) get(key types.NamespacedName, uid types.UID, kind *queue.Kind, src queue.Source) (queue.Backend, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fp := kind.Name + "/" + src.Fingerprint()
	var carried pooledConn
	if c, ok := p.conns[key]; ok {
		if c.uid == uid && c.fingerprint == fp {
			return c.backend, nil
		}
		closeInBackground(c.backend)
		stopWatch(c)
		delete(p.conns, key)
		if c.uid == uid { // a rotated Secret: what the QueueJob owes its status stays
			carried = pooledConn{due: c.due, goneWave: c.goneWave, reclaimed: c.reclaimed, writes: c.writes, probedAt: c.probedAt}
		}
	}
	b, err := kind.Open(src)
	if err != nil {
		return nil, err
	}
	if p.conns == nil {
		p.conns = map[types.NamespacedName]*pooledConn{}
	}
	carried.uid, carried.fingerprint, carried.backend = uid, fp, b
	p.conns[key] = &carried
	return b, nil
}

// abandon removes a backend that did not answer in time from the pool, keeping what the
// QueueJob owes its status, and closes it in the background.
func (p *connPool) abandon(key types.NamespacedName, b queue.Backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[key]; ok && c.backend == b {
		c.backend, c.fingerprint = nil, ""
		stopWatch(c)
	}
	closeInBackground(b)
}

// stopWatch ends an entry's watch of its queue, if it has one.
func stopWatch(c *pooledConn) {
	if c.unwatch != nil {
		go c.unwatch() // not under the pool's lock: a wake in progress takes it
		c.unwatch = nil
	}
}

// closeInBackground closes a backend without holding up the caller (nor the pool's lock):
// closing a connection to a frozen broker waits for its timeout.
func closeInBackground(b queue.Backend) {
	if b != nil {
		go func() { _ = b.Close() }()
	}
}

// take removes a QueueJob's connection from the pool and returns it, nil if it had none.
// A connection a probe uses, or one no probe went through (the address policy refused
// it), is closed instead: no two goroutines use one at once, and none goes where the
// policy refuses.
func (p *connPool) take(key types.NamespacedName) queue.Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.conns[key]
	if !ok {
		return nil
	}
	stopWatch(c)
	delete(p.conns, key)
	if c.running || !c.reached {
		closeInBackground(c.backend)
		return nil
	}
	return c.backend
}

func (p *connPool) drop(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[key]; ok {
		closeInBackground(c.backend)
		stopWatch(c)
		delete(p.conns, key)
	}
}

// size is the number of open connections.
func (p *connPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.conns {
		if c.backend != nil {
			n++
		}
	}
	return n
}

// has reports whether a QueueJob has an open connection.
func (p *connPool) has(key types.NamespacedName) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.conns[key]
	return ok && c.backend != nil
}
