package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

const mib = 1 << 20

// scale is sections 2 and 3 in one control plane: API cost with idle QueueJobs beside
// KEDA with as many idle ScaledJobs, then the manager's memory as 10 000 pods of its own
// and 10 000 unrelated pods are added.
func (b *bench) scale(ctx context.Context, api, memory bool) error {
	const tag = "scale"
	// The Job controller creates pods at most as fast as its client's rate limit: at the
	// default 20 a second, 10 000 pods would take 8 minutes. The figures here don't
	// depend on it, only the run's length.
	ctx, cp, c, done, err := b.setup(ctx, tag, 1000)
	if err != nil {
		return err
	}
	defer done()
	rs, rdb, err := b.redisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	sw := startStatusWriter(ctx, cp.Clientset, 16)

	mgr, err := b.startManager(ctx, cp, tag)
	if err != nil {
		return err
	}
	defer mgr.Stop()
	keda, kedaErr := b.startKEDA(ctx, cp, tag)
	if kedaErr == nil {
		defer keda.Stop()
	}
	n := b.o.QueueJobs
	b.res.Settings["idle QueueJobs and ScaledJobs"] = fmt.Sprint(n)
	intervals := "probe every 2 s (ours, the default; an idle queue whose watch is up every 4, 8, ... up to 60 s), poll every 30 s (KEDA, the default)"
	if iv := b.o.IdleInterval; iv > 0 {
		intervals = fmt.Sprintf("both every %d s (ours: an idle queue whose watch is up every %d s)", iv, max(60, iv))
		if 2*iv < 60 {
			intervals = fmt.Sprintf("both every %d s (ours: an idle queue whose watch is up every %d, %d, ... up to 60 s)", iv, 2*iv, 4*iv)
		}
	}
	b.res.Settings["idle intervals"] = intervals

	// n idle QueueJobs and n idle ScaledJobs, each on an empty list of its own.
	for _, ns := range []string{"idle-qj", "idle-keda"} {
		if err := createNamespace(ctx, c, ns); err != nil {
			return err
		}
	}
	var qjs, sjs []client.Object
	for i := range n {
		iv := int32(b.o.IdleInterval)
		qjs = append(qjs, queueJob("idle-qj", fmt.Sprintf("idle-%04d", i), rs.Addr(), fmt.Sprintf("idle:qj:%04d", i), iv))
		sjs = append(sjs, scaledJob("idle-keda", fmt.Sprintf("idle-%04d", i), rs.Addr(), fmt.Sprintf("idle:keda:%04d", i), iv))
	}
	t0 := time.Now()
	if err := createAll(ctx, c, qjs); err != nil {
		return err
	}
	if kedaErr == nil {
		if err := createAll(ctx, c, sjs); err != nil {
			return err
		}
	}
	logf("created %d QueueJobs and %d ScaledJobs in %s", n, map[bool]int{true: n}[kedaErr == nil], time.Since(t0).Round(time.Millisecond))
	ours := ourPeer(redisList(rs.Addr()), 0)
	if err := waitFor(ctx, 10*time.Minute, 2*time.Second, "every QueueJob probed once", func() (bool, error) {
		return ours.ready(ctx, c, "idle-qj", n)
	}); err != nil {
		return err
	}
	logf("every QueueJob probed %s after the first was created", time.Since(t0).Round(time.Second))
	if kedaErr == nil {
		if err := waitFor(ctx, 10*time.Minute, 2*time.Second, "every ScaledJob Ready", func() (bool, error) {
			return kedaPeer(rs.Addr(), 0).ready(ctx, c, "idle-keda", n)
		}); err != nil {
			return err
		}
	}
	// Let the first status writes and the start-up lists pass: one KEDA polling interval.
	settle(ctx, kedaDefaultPollingInterval*time.Second)

	const window = time.Minute
	// The peaks so far include creating the objects; each phase below has its own.
	startup := map[*Operator]Memory{}
	for _, op := range []*Operator{mgr, keda} {
		if op != nil {
			if m, err := op.Proc.Memory(); err == nil {
				startup[op] = m
			}
		}
	}
	if err := resetPeaks(mgr, keda); err != nil {
		return err
	}
	o0, err := mgr.Sample(ctx)
	if err != nil {
		return err
	}
	var k0, k1 Sample
	if kedaErr == nil {
		if k0, err = keda.Sample(ctx); err != nil {
			return err
		}
	}
	settle(ctx, window)
	o1, err := mgr.Sample(ctx)
	if err != nil {
		return err
	}
	if kedaErr == nil {
		if k1, err = keda.Sample(ctx); err != nil {
			return err
		}
	}
	// The CPU profile of the idle manager: after the window, so that profiling does not
	// weigh on the figures.
	cpuProf := filepath.Join(b.o.Out, b.o.Stem+"-manager-cpu-idle.pprof")
	if err := mgr.Profile(ctx, "profile?seconds=30", cpuProf); err == nil {
		b.res.Profiles = append(b.res.Profiles, filepath.Base(cpuProf))
	} else {
		logf("CPU profile: %v", err)
	}

	if api {
		title := sectionTitle["api"]
		perMin := func(a, z Sample) (float64, map[string]int64) {
			d, total := countsDelta(a.Requests, z.Requests)
			return float64(total) / z.At.Sub(a.At).Minutes(), d
		}
		oRate, oCounts := perMin(o0, o1)
		row := Row{Section: title, Name: fmt.Sprintf("API requests per minute, %d idle objects", n), Unit: "req/min",
			Ours: ptr.To(oRate), PeerName: "KEDA ScaledJob", Note: "ours: " + orDash(formatCounts(oCounts))}
		var kCounts map[string]int64
		if kedaErr == nil {
			var kRate float64
			kRate, kCounts = perMin(k0, k1)
			row.Peer = ptr.To(kRate)
			row.Note += "; KEDA: " + orDash(formatCounts(kCounts))
		} else {
			row.Note += "; KEDA not measured: " + kedaErr.Error()
		}
		b.res.add(row)

		oRec := o1.Reconciles - o0.Reconciles
		secs := o1.At.Sub(o0.At).Seconds()
		rec := Row{Section: title, Name: "reconciles per second", Unit: "/s", Ours: ptr.To(oRec / secs), PeerName: "KEDA ScaledJob",
			Note: "ours: each idle QueueJob is reconciled at each probe, and once more when the probe is put off (" + intervals + ")"}
		if kedaErr == nil {
			rec.Peer = ptr.To((k1.Reconciles - k0.Reconciles) / secs)
			rec.Note += "; KEDA polls in a goroutine per ScaledJob, outside reconciles"
		}
		b.res.add(rec)

		writes := oCounts["update queuejobs/status"] + oCounts["patch queuejobs/status"]
		nw := Row{Section: title, Name: "status writes per no-op reconcile", Unit: "", Goal: "0", PeerName: "KEDA ScaledJob",
			Note: fmt.Sprintf("ours: %d status writes in %.0f reconciles", writes, oRec)}
		if oRec > 0 {
			nw.Ours = ptr.To(float64(writes) / oRec)
			nw.Met = ptr.To(writes == 0)
		}
		if kedaErr == nil {
			kw := kCounts["update scaledjobs/status"] + kCounts["patch scaledjobs/status"]
			kRec := k1.Reconciles - k0.Reconciles
			nw.Note += fmt.Sprintf("; KEDA: %d status writes in %.0f reconciles", kw, kRec)
			if kRec > 0 {
				nw.Peer = ptr.To(float64(kw) / kRec)
			}
		}
		b.res.add(nw)

		cpu := Row{Section: title, Name: fmt.Sprintf("CPU, %d idle objects", n), Unit: "% of a core",
			Ours: ptr.To(100 * (o1.CPU - o0.CPU).Seconds() / secs), PeerName: "KEDA ScaledJob",
			Note: intervals}
		if kedaErr == nil {
			cpu.Peer = ptr.To(100 * (k1.CPU - k0.CPU).Seconds() / secs)
		}
		b.res.add(cpu)
	}
	if !memory {
		return nil
	}

	title := sectionTitle["memory"]
	memRow := func(name, goal string, limit float64, o, k Sample, note string) {
		row := Row{Section: title, Name: name, Unit: "MiB", Ours: ptr.To(float64(o.Mem.Peak) / mib), PeerName: "KEDA ScaledJob",
			Note: fmt.Sprintf("RSS now: ours %.1f MiB (%.1f anonymous, %.1f of its binary's pages)", float64(o.Mem.RSS)/mib, float64(o.Mem.Anon)/mib, float64(o.Mem.File)/mib)}
		if kedaErr == nil {
			row.Peer = ptr.To(float64(k.Mem.Peak) / mib)
			row.Note += fmt.Sprintf(", KEDA %.1f MiB (%.1f anonymous, %.1f of its binary's pages)", float64(k.Mem.RSS)/mib, float64(k.Mem.Anon)/mib, float64(k.Mem.File)/mib)
		}
		if note != "" {
			row.Note += "; " + note
		}
		if goal != "" {
			row.Goal, row.Met = goal, ptr.To(*row.Ours <= limit)
		}
		b.res.add(row)
	}
	startNote := fmt.Sprintf("the peak over a minute of idling; while the objects were created and first reconciled: ours %.1f MiB", float64(startup[mgr].Peak)/mib)
	if kedaErr == nil {
		startNote += fmt.Sprintf(", KEDA %.1f MiB", float64(startup[keda].Peak)/mib)
	}
	memRow(fmt.Sprintf("peak RSS, %d QueueJobs (KEDA: %d ScaledJobs)", n, n), "", 0, o1, k1, startNote)

	// One PerItem wave of b.o.Pods pods, all running at once.
	pods := b.o.Pods
	if err := createNamespace(ctx, c, "owned"); err != nil {
		return err
	}
	sw.SetPolicy("owned", PodRun)
	key := "owned:items"
	rdb.Del(ctx, key)
	items := make([]any, pods)
	for i := range items {
		items[i] = fmt.Sprintf("item-%05d", i)
	}
	if err := rdb.LPush(ctx, key, items...).Err(); err != nil {
		return err
	}
	if err := resetPeaks(mgr, keda); err != nil {
		return err
	}
	big := queueJob("owned", "wave", rs.Addr(), key, 0)
	big.Spec.JobTemplate.Spec.Parallelism = ptr.To(int32(pods))
	t0 = time.Now()
	if err := c.Create(ctx, big); err != nil {
		return err
	}
	if err := waitFor(ctx, 20*time.Minute, 5*time.Second, fmt.Sprintf("%d running pods counted by the QueueJob", pods), func() (bool, error) {
		var qj qjv1.QueueJob
		if err := c.Get(ctx, client.ObjectKeyFromObject(big), &qj); err != nil {
			return false, err
		}
		return qj.Status.Active >= int32(pods), nil
	}); err != nil {
		return err
	}
	logf("%d pods running and counted %s after the QueueJob was created", pods, time.Since(t0).Round(time.Second))
	settle(ctx, 15*time.Second)
	o2, err := mgr.Sample(ctx)
	if err != nil {
		return err
	}
	var k2 Sample
	if kedaErr == nil {
		if k2, err = keda.Sample(ctx); err != nil {
			return err
		}
	}
	heap := filepath.Join(b.o.Out, b.o.Stem+"-manager-heap-owned-pods.pprof")
	if err := mgr.Profile(ctx, "heap?gc=1", heap); err == nil {
		b.res.Profiles = append(b.res.Profiles, filepath.Base(heap))
	} else {
		logf("heap profile: %v", err)
	}
	memRow(fmt.Sprintf("peak RSS, + %d owned pods (one PerItem wave, all running)", pods), "≤ 64 MiB", 64, o2, k2, "")

	// As many unrelated pods, in a namespace of their own, running.
	if err := createNamespace(ctx, c, "unrelated"); err != nil {
		return err
	}
	sw.SetPolicy("unrelated", PodRun)
	var others []client.Object
	for i := range pods {
		others = append(others, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "unrelated", Name: fmt.Sprintf("other-%05d", i),
			Labels: map[string]string{"app": "other"}}, Spec: podTemplate().Spec})
	}
	// The unrelated pods' share: the peak while they come, against the RSS just before.
	before, err := mgr.Proc.Memory()
	if err != nil {
		return err
	}
	if err := resetPeaks(mgr, keda); err != nil {
		return err
	}
	t0 = time.Now()
	if err := createAll(ctx, c, others); err != nil {
		return err
	}
	if err := waitFor(ctx, 20*time.Minute, 5*time.Second, fmt.Sprintf("%d unrelated pods running", pods), func() (bool, error) {
		return sw.Count("unrelated", corev1.PodRunning) >= pods, nil
	}); err != nil {
		return err
	}
	logf("%d unrelated pods running %s after the first was created", pods, time.Since(t0).Round(time.Second))
	settle(ctx, 15*time.Second)
	o3, err := mgr.Sample(ctx)
	if err != nil {
		return err
	}
	var k3 Sample
	if kedaErr == nil {
		if k3, err = keda.Sample(ctx); err != nil {
			return err
		}
	}
	growth := 100 * (float64(o3.Mem.Peak) - float64(before.RSS)) / float64(before.RSS)
	memRow(fmt.Sprintf("peak RSS, + %d unrelated pods", pods), "≤ 64 MiB", 64, o3, k3,
		fmt.Sprintf("the peak while the unrelated pods came was %.1f %% above ours just before (goal < 5 %%)", growth))
	b.res.add(Row{Section: title, Name: "growth from the unrelated pods", Unit: "%", Ours: ptr.To(growth), Goal: "< 5 %", Met: ptr.To(growth < 5),
		Note: "the manager lists and watches only pods labelled batch.queuejob.io/queuejob"})
	return nil
}

// resetPeaks starts each process's VmHWM afresh, so that the next phase's peak is its own.
func resetPeaks(ops ...*Operator) error {
	for _, op := range ops {
		if op != nil {
			if err := op.Proc.ResetPeak(); err != nil {
				return err
			}
		}
	}
	return nil
}

// settle waits d, or less if ctx ends: a measurement window, not a synchronisation.
func settle(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}
