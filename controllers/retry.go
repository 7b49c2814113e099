package controllers

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

const (
	// defaultCreateRetry is how long a QueueJob whose Job cannot be created for a reason
	// only a person can fix (a foreign Job holds its name, the API server refuses its
	// template) waits before trying again, unless its spec changes first.
	defaultCreateRetry = time.Minute
	// maxErrorBackoff bounds the wait after failed reconciles of a QueueJob that asked for
	// no requeue of its own (controller-runtime's default grows to 1000 s).
	maxErrorBackoff = time.Minute
)

// createHolds remembers, per QueueJob, a Job create that failed for a reason only a person
// can fix, so that the create is tried again on a slow schedule and not on every probe.
type createHolds struct {
	mu    sync.Mutex
	holds map[types.UID]createHold
}

type createHold struct {
	generation int64
	until      time.Time
	problem    progressProblem
}

// held returns the problem of a create that must not be tried yet, and how long until it
// may; nil once it may (or after the spec changed).
func (h *createHolds) held(uid types.UID, generation int64, now time.Time) (*progressProblem, time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.holds[uid]
	if !ok || c.generation != generation || !now.Before(c.until) {
		return nil, 0
	}
	p := c.problem
	return &p, c.until.Sub(now)
}

func (h *createHolds) hold(uid types.UID, generation int64, until time.Time, p progressProblem) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.holds == nil {
		h.holds = map[types.UID]createHold{}
	}
	h.holds[uid] = createHold{generation, until, p}
}

func (h *createHolds) release(uid types.UID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.holds, uid)
}

// cadenceLimiter is the controller's rate limiter for failed reconciles: exponential
// backoff, but never longer than the requeue the QueueJob's last reconcile asked for (its
// probe interval, a TTL). A phase that keeps failing (a webhook refusing pod deletes, say)
// then cannot stretch the QueueJob's probing and completion to the backoff's minutes.
type cadenceLimiter struct {
	workqueue.TypedRateLimiter[reconcile.Request]
	cadence sync.Map // reconcile.Request → time.Duration
}

func newCadenceLimiter() *cadenceLimiter {
	// controller-runtime's default, with the exponential part capped at maxErrorBackoff.
	return &cadenceLimiter{TypedRateLimiter: workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, maxErrorBackoff),
		&workqueue.TypedBucketRateLimiter[reconcile.Request]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
	)}
}

func (l *cadenceLimiter) When(req reconcile.Request) time.Duration {
	d := l.TypedRateLimiter.When(req)
	if c, ok := l.cadence.Load(req); ok && c.(time.Duration) < d {
		return c.(time.Duration)
	}
	return d
}

// setCadence records the requeue a reconcile asked for; zero forgets it.
func (l *cadenceLimiter) setCadence(req reconcile.Request, d time.Duration) {
	switch {
	case l == nil: // a reconciler not set up with a manager (unit tests)
	case d > 0:
		l.cadence.Store(req, d)
	default:
		l.cadence.Delete(req)
	}
}
