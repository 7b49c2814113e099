package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// peer is one of the two operators (or settings) under the same trial: how to make its
// object for a queue, and how to tell it has looked at the queue at least once.
type peer struct {
	Name string
	// Interval is the polling interval set on the object, 0 for the default; Effective is
	// what that default is.
	Interval, Effective int32
	make                func(ns, name, key string) client.Object
	ready               func(ctx context.Context, c client.Client, ns string, n int) (bool, error)
}

// ourPeer is the operator's QueueJob on the queue source(key).
func ourPeer(source func(key string) qjv1.QueueSource, interval int32) peer {
	eff := interval
	if eff == 0 {
		eff = qjv1.DefaultProbeIntervalSeconds
	}
	return peer{Name: "queuejob-operator", Interval: interval, Effective: eff,
		make: func(ns, name, key string) client.Object { return queueJobOn(ns, name, source(key), interval) },
		ready: func(ctx context.Context, c client.Client, ns string, n int) (bool, error) {
			var l qjv1.QueueJobList
			if err := c.List(ctx, &l, client.InNamespace(ns)); err != nil {
				return false, err
			}
			probed := 0
			for _, qj := range l.Items {
				if qj.Status.Queue != nil && qj.Status.Queue.LastProbeTime != nil {
					probed++
				}
			}
			return probed >= n, nil
		}}
}

// kedaDefaultPollingInterval is ScaledJob's pollingInterval when unset.
const kedaDefaultPollingInterval = 30

func kedaPeer(redisAddr string, interval int32) peer {
	eff := interval
	if eff == 0 {
		eff = kedaDefaultPollingInterval
	}
	return peer{Name: "KEDA ScaledJob", Interval: interval, Effective: eff,
		make: func(ns, name, key string) client.Object { return scaledJob(ns, name, redisAddr, key, interval) },
		ready: func(ctx context.Context, c client.Client, ns string, n int) (bool, error) {
			l := &unstructured.UnstructuredList{}
			l.SetGroupVersionKind(scaledJobGVK.GroupVersion().WithKind("ScaledJobList"))
			if err := c.List(ctx, l, client.InNamespace(ns)); err != nil {
				return false, err
			}
			ready := 0
			for _, u := range l.Items {
				conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
				for _, c := range conds {
					m, _ := c.(map[string]any)
					if m["type"] == "Ready" && m["status"] == string(metav1.ConditionTrue) {
						ready++
					}
				}
			}
			return ready >= n, nil
		}}
}

// trialResult is the latencies of the trials that ended with a Job, and how many didn't.
type trialResult struct {
	Latencies []time.Duration
	Missed    int
	Early     int // a Job that was there before the push: a broken trial
}

// trialQueue is the kind of queue a trial's objects wait on: how to name queue i of a
// namespace, how to make it exist and empty, and how to push one item into it.
type trialQueue struct {
	key   func(ns string, i int) string
	reset func(ctx context.Context, key string) error
	push  func(ctx context.Context, key string) error
}

// redisListQueue is a Redis list: a missing key is an empty list.
func redisListQueue(rdb *redis.Client) trialQueue {
	return trialQueue{
		key:   func(ns string, i int) string { return fmt.Sprintf("rx:%s:%03d", ns, i) },
		reset: func(ctx context.Context, key string) error { return rdb.Del(ctx, key).Err() },
		push:  func(ctx context.Context, key string) error { return rdb.LPush(ctx, key, "item").Err() },
	}
}

// reactionTrials makes trials objects of p, each on a queue q of its own, waits until p
// has looked at each once, then pushes one item into each queue at a random moment of a window
// at least one polling interval long (and at least trials/2 seconds), so that pushes fall
// at every phase of the polls, and times push → first Job seen. Trials without a Job in
// time count as never ending in the percentiles.
func (b *bench) reactionTrials(ctx context.Context, cp *ControlPlane, c client.Client, q trialQueue, p peer, ns string, trials int) (trialResult, error) {
	var res trialResult
	if err := createNamespace(ctx, c, ns); err != nil {
		return res, err
	}
	jobs := watchJobs(ctx, cp.Clientset, ns)
	objs := make([]client.Object, trials)
	keys := make([]string, trials)
	for i := range objs {
		keys[i] = q.key(ns, i)
		if err := q.reset(ctx, keys[i]); err != nil {
			return res, err
		}
		objs[i] = p.make(ns, fmt.Sprintf("rx-%03d", i), keys[i])
	}
	if err := createAll(ctx, c, objs); err != nil {
		return res, err
	}
	defer func() {
		for _, o := range objs {
			_ = c.Delete(context.WithoutCancel(ctx), o)
		}
	}()
	if err := waitFor(ctx, 5*time.Minute, time.Second, p.Name+": every object looked at its queue", func() (bool, error) {
		return p.ready(ctx, c, ns, trials)
	}); err != nil {
		return res, err
	}
	// Two pushes a second at most: a reaction costs each manager a few API requests (the
	// Job, the status, an event) under its client's rate limit (ours 50 a second, KEDA's
	// 20), and the figure is to be the reaction, not a queue in the rate limiter.
	interval := time.Duration(p.Effective) * time.Second
	window := max(interval, time.Duration(trials)*time.Second/2)
	start := time.Now().Add(time.Second)
	pushed := make([]time.Time, trials)
	var wg sync.WaitGroup
	var pushErr error
	var mu sync.Mutex
	for i := range trials {
		at := start.Add(time.Duration(rand.Int64N(int64(window))))
		wg.Go(func() {
			select {
			case <-time.After(time.Until(at)):
			case <-ctx.Done():
				return
			}
			t := time.Now()
			if err := q.push(ctx, keys[i]); err != nil {
				mu.Lock()
				pushErr = err
				mu.Unlock()
				return
			}
			pushed[i] = t
		})
	}
	wg.Wait()
	if pushErr != nil {
		return res, pushErr
	}
	deadline := 2*interval + 30*time.Second
	_ = waitFor(ctx, deadline, 200*time.Millisecond, "a Job for every push", func() (bool, error) {
		for i := range trials {
			if _, ok := jobs.Created(objs[i].GetName()); !ok {
				return false, nil
			}
		}
		return true, nil
	})
	for i := range trials {
		t, ok := jobs.Created(objs[i].GetName())
		switch {
		case !ok:
			res.Missed++
		case t.Before(pushed[i]):
			res.Early++
		default:
			res.Latencies = append(res.Latencies, t.Sub(pushed[i]))
		}
	}
	return res, ctx.Err()
}

// reaction is section 1: on a Redis list, ours and KEDA's, at default settings and at a
// 1 s interval; then on a Redis stream and on NATS, ours with the queue watch beside ours
// polling alone.
func (b *bench) reaction(ctx context.Context) error {
	const sec = "reaction"
	ctx, cp, c, done, err := b.setup(ctx, sec, 0)
	if err != nil {
		return err
	}
	defer done()
	b.res.Settings["reaction trials"] = fmt.Sprint(b.o.Trials)
	if err := b.reactionList(ctx, cp, c); err != nil {
		return err
	}
	return b.reactionWatched(ctx, cp, c)
}

// reactionList is section 1 on Redis lists: ours and KEDA's, at default settings and at
// a 1 s interval.
func (b *bench) reactionList(ctx context.Context, cp *ControlPlane, c client.Client) error {
	const sec = "reaction"
	title := sectionTitle[sec]
	rs, rdb, err := b.redisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()

	mgr, err := b.startManager(ctx, cp, sec)
	if err != nil {
		return err
	}
	defer mgr.Stop()
	keda, kedaErr := b.startKEDA(ctx, cp, sec)
	if kedaErr == nil {
		defer keda.Stop()
	}

	for _, setting := range []struct {
		name     string
		interval int32
	}{{"default settings", 0}, {"1 s polling", 1}} {
		ours := ourPeer(redisList(rs.Addr()), setting.interval)
		theirs := kedaPeer(rs.Addr(), setting.interval)
		o, err := b.reactionTrials(ctx, cp, c, redisListQueue(rdb), ours, fmt.Sprintf("rx-qj-%d", setting.interval), b.o.Trials)
		if err != nil {
			return err
		}
		var k trialResult
		if kedaErr == nil {
			if k, err = b.reactionTrials(ctx, cp, c, redisListQueue(rdb), theirs, fmt.Sprintf("rx-keda-%d", setting.interval), b.o.Trials); err != nil {
				return err
			}
		}
		for _, q := range []struct {
			name string
			p    float64
			goal string
		}{{"p50", 0.50, ""}, {"p99", 0.99, "≤ 1 s"}} {
			row := Row{Section: title, Name: fmt.Sprintf("%s, %s (ours every %d s, KEDA every %d s)", q.name, setting.name, ours.Effective, theirs.Effective),
				Unit: "s", PeerName: "KEDA ScaledJob (redis trigger)", Ours: ptr.To(quantile(o.Latencies, o.Missed+o.Early, q.p))}
			row.Note = trialNote("ours", o)
			if kedaErr == nil {
				row.Peer = ptr.To(quantile(k.Latencies, k.Missed+k.Early, q.p))
				row.Note += "; " + trialNote("KEDA", k)
			} else {
				row.Note += "; KEDA not measured: " + kedaErr.Error()
			}
			if q.goal != "" && setting.interval == 0 {
				row.Goal = q.goal
				row.Met = ptr.To(*row.Ours <= 1)
			}
			b.res.add(row)
		}
	}
	return nil
}

func trialNote(who string, r trialResult) string {
	s := fmt.Sprintf("%s: %d trials", who, len(r.Latencies))
	if r.Missed > 0 {
		s += fmt.Sprintf(", %d without a Job in time", r.Missed)
	}
	if r.Early > 0 {
		s += fmt.Sprintf(", %d with a Job before the push", r.Early)
	}
	return s
}
