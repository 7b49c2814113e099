package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	qredis "github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// reclaimLease is the lease of the trials' items in the lease-expiry round: rediswq's
// default is 60 s, SQS's visibility 30 s; the shorter it is, the better the peer does.
const reclaimLease = 10 * time.Second

// reclaim is section 7: a worker pod deleted (kubectl delete --force) or failed (as when
// OOM-killed) while it holds an item, and the time until the item is ready in the queue
// again. Ours: the worker's session names its pod, and the manager returns the item when
// it sees the pod end; the lease is ten minutes and the probe interval five, so nothing
// else could. Peer: the lease-expiry path every queue tool has (a session without a pod,
// a lease of reclaimLease, the default probe interval), in the same run on the same
// manager. The bench plays the workers: it takes and leases each item itself, as
// pkg/worker does, for a pod of the QueueJob's running wave (no kubelet runs them).
func (b *bench) reclaim(ctx context.Context) error {
	const sec = "reclaim"
	ctx, cp, c, done, err := b.setup(ctx, sec, 0)
	if err != nil {
		return err
	}
	defer done()
	sw := startStatusWriter(ctx, cp.Clientset, 4)
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
	trials := min(b.o.Trials, 20)
	// Ours probes every 5 min: only a pod's end can bring the reclaim forward. The peer
	// probes at the default interval, which its grace counts in. Each kind of trial has a
	// QueueJob of its own, whose first pods it uses up: the Job controller replaces failed
	// pods only after a backoff that grows with each.
	run := func(ns string) *reclaimRun {
		return &reclaimRun{c: c, rdb: rdb, ns: ns, key: ns, used: map[types.UID]bool{}}
	}
	deletedRun, failedRun, peer := run("reclaim-deleted"), run("reclaim-failed"), run("reclaim-lease")
	for _, r := range []struct {
		run      *reclaimRun
		interval int32
	}{{deletedRun, 300}, {failedRun, 300}, {peer, 0}} {
		sw.SetPolicy(r.run.ns, PodRun)
		if err := r.run.start(ctx, rs.Addr(), trials, r.interval); err != nil {
			return err
		}
	}
	deleted, missedDeleted := deletedRun.trials(ctx, trials, false)
	failed, missedFailed := failedRun.trials(ctx, trials, true)
	expired, missedExpired := peer.leaseTrials(ctx, trials)
	for _, how := range []struct {
		name   string
		lat    []time.Duration
		missed int
	}{{"pod deleted (kubectl delete --force), then marked Failed at once", deleted, missedDeleted}, {"pod Failed (OOM-killed, evicted)", failed, missedFailed}} {
		for _, q := range []struct {
			name string
			p    float64
			goal string
		}{{"p50", 0.50, ""}, {"p99", 0.99, "≤ 2 s"}} {
			row := Row{Section: sectionTitle[sec], Name: q.name + ", Redis list, " + how.name, Unit: "s",
				PeerName: fmt.Sprintf("lease expiry (a session without its pod, lease %s, default probe interval)", reclaimLease),
				Ours:     ptr.To(quantile(how.lat, how.missed, q.p)), Peer: ptr.To(quantile(expired, missedExpired, q.p)),
				Note: fmt.Sprintf("ours: lease 10 min, probe interval 5 min, %d trials one after another, %d missed; peer: %d trials at once, %d missed; "+
					"the peer's time grows with its lease and probe interval, ours with neither", len(how.lat), how.missed, len(expired), missedExpired)}
			if q.goal != "" {
				row.Goal, row.Met = q.goal, ptr.To(*row.Ours <= 2)
			}
			b.res.add(row)
		}
	}
	return nil
}

// reclaimRun is what the trials of section 7 share.
type reclaimRun struct {
	c        client.Client
	rdb      *redis.Client
	ns, key  string
	used     map[types.UID]bool
	sessions int
}

// take leases the next item for a worker of pod (its session ends in the pod's UID if
// named is set), and returns the item.
func (r *reclaimRun) take(ctx context.Context, pod *corev1.Pod, named bool, lease time.Duration) (string, error) {
	wq := qredis.WQ{Client: r.rdb, Key: r.key}
	item, err := wq.Take(ctx, 0)
	if err != nil {
		return "", err
	}
	r.sessions++
	session := fmt.Sprintf("bench-%06d", r.sessions)
	if named {
		session += "@" + string(pod.UID)
	}
	outcome, _, err := wq.Claim(ctx, item, session, lease, 0)
	if err == nil && outcome != qredis.ClaimLeased {
		err = fmt.Errorf("claim of %s: outcome %d", item, outcome)
	}
	return item, err
}

// start fills the list and creates the QueueJob: a WorkerPool of n pods, probed every
// interval seconds (the default if 0), whose Job's pods may fail as often as the trials
// make them.
func (r *reclaimRun) start(ctx context.Context, addr string, n int, interval int32) error {
	if err := createNamespace(ctx, r.c, r.ns); err != nil {
		return err
	}
	items := make([]any, 4*n)
	for i := range items {
		items[i] = fmt.Sprintf("item-%04d", i)
	}
	if err := r.rdb.RPush(ctx, r.key, items...).Err(); err != nil {
		return err
	}
	qj := queueJobOn(r.ns, "reclaim", redisList(addr)(r.key), interval)
	qj.Spec.Mode = qjv1.ModeWorkerPool
	qj.Spec.JobTemplate.Spec.Parallelism = ptr.To(int32(n))
	qj.Spec.JobTemplate.Spec.BackoffLimit = ptr.To(int32(10 * n))
	return r.c.Create(ctx, qj)
}

// trials runs n trials one after another, and returns their times and how many missed.
func (r *reclaimRun) trials(ctx context.Context, n int, fail bool) ([]time.Duration, int) {
	var lat []time.Duration
	for i := range n {
		d, err := r.trial(ctx, 10*time.Minute, fail)
		if err != nil {
			logf("reclaim: %s, trial %d (fail %v): %v", r.ns, i, fail, err)
			continue
		}
		lat = append(lat, d)
	}
	return lat, n - len(lat)
}

// trial leases an item for a running pod of the wave, by a session that names the pod,
// then deletes the pod at once (unless fail: its container was OOM-killed) and marks it
// Failed, as its kubelet would, and returns how long until the item was in the list
// again, counted from the deletion (or the failure).
func (r *reclaimRun) trial(ctx context.Context, lease time.Duration, fail bool) (time.Duration, error) {
	pods, err := r.runningPods(ctx, 1)
	if err != nil {
		return 0, err
	}
	item, err := r.take(ctx, pods[0], true, lease)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if !fail {
		if err := r.c.Delete(ctx, pods[0], client.GracePeriodSeconds(0)); err != nil {
			return 0, err
		}
	}
	// The kubelet's part, which no kubelet plays here: the pod's containers stopped, it
	// marks the pod Failed (a deleted one too: the Job controller's finalizer keeps it
	// until then, and removes the pod after).
	orig := pods[0].DeepCopy()
	pods[0].Status.Phase = corev1.PodFailed
	if err := r.c.Status().Patch(ctx, pods[0], client.MergeFrom(orig)); err != nil {
		return 0, err
	}
	return r.readyAgain(ctx, item, start, time.Minute)
}

// leaseTrials runs n lease-expiry trials at once: n items leased for n pods by sessions
// that name none, the pods deleted together.
func (r *reclaimRun) leaseTrials(ctx context.Context, n int) ([]time.Duration, int) {
	pods, err := r.runningPods(ctx, n)
	if err != nil {
		logf("reclaim: lease expiry: %v", err)
		return nil, n
	}
	var items []string
	for _, p := range pods {
		item, err := r.take(ctx, p, false, reclaimLease)
		if err != nil {
			logf("reclaim: lease expiry: %v", err)
			return nil, n
		}
		items = append(items, item)
	}
	start := time.Now()
	for _, p := range pods {
		_ = r.c.Delete(ctx, p, client.GracePeriodSeconds(0))
	}
	var lat []time.Duration
	for _, item := range items {
		if d, err := r.readyAgain(ctx, item, start, 3*time.Minute); err == nil {
			lat = append(lat, d)
		}
	}
	return lat, n - len(lat)
}

// runningPods waits for n running pods of the wave not used by an earlier trial.
func (r *reclaimRun) runningPods(ctx context.Context, n int) ([]*corev1.Pod, error) {
	var got []*corev1.Pod
	err := waitFor(ctx, 2*time.Minute, 50*time.Millisecond, fmt.Sprintf("%d running pods", n), func() (bool, error) {
		var list corev1.PodList
		if err := r.c.List(ctx, &list, client.InNamespace(r.ns)); err != nil {
			return false, err
		}
		got = got[:0]
		for i := range list.Items {
			p := &list.Items[i]
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && !r.used[p.UID] && len(got) < n {
				got = append(got, p)
			}
		}
		return len(got) == n, nil
	})
	for _, p := range got {
		r.used[p.UID] = true
	}
	return got, err
}

// readyAgain polls the list every 5 ms until item is in it, and returns the time since
// start.
func (r *reclaimRun) readyAgain(ctx context.Context, item string, start time.Time, timeout time.Duration) (time.Duration, error) {
	var d time.Duration
	err := waitFor(ctx, timeout, 5*time.Millisecond, item+" ready again", func() (bool, error) {
		_, err := r.rdb.LPos(ctx, r.key, item, redis.LPosArgs{}).Result()
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		d = time.Since(start)
		return err == nil, err
	})
	return d, err
}
