package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// cleanupTTL is the TTL of every object of section 4.
const cleanupTTL = 5

// cleanup is section 4: how long past its TTL a finished pod or Job is deleted, by our
// per-pod TTL and Job TTL, beside the upstream TTL-after-finished controller (and the
// garbage collector, for pods) deleting plain Jobs with the same TTL, in the same run.
// kube-controller-manager's client is not held to its default 20 requests a second: at
// that rate the Job controller takes half a minute to count 300 finished pods (and a pod
// may not be deleted before it is counted), which would hide both TTLs behind it. So that
// the TTL controllers meet on equal terms, the first round gives our manager the same
// limit; the second runs it at its default, as the chart does. Each round has a control
// plane of its own, so that the second starts as clean as the first.
func (b *bench) cleanup(ctx context.Context) error {
	const kcmQPS = 1000
	for _, round := range []struct {
		tag, what string
		args      []string
	}{
		{"same-qps", fmt.Sprintf("both at %d API requests a second", kcmQPS),
			[]string{fmt.Sprintf("--kube-api-qps=%d", kcmQPS), fmt.Sprintf("--kube-api-burst=%d", 2*kcmQPS)}},
		{"default-qps", fmt.Sprintf("ours at its defaults (50 API requests a second, burst 100), kube-controller-manager at %d", kcmQPS), nil},
	} {
		if err := b.cleanupRound(ctx, kcmQPS, round.tag, round.what, round.args); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) cleanupRound(ctx context.Context, kcmQPS int, tag, what string, mgrArgs []string) error {
	title := sectionTitle["cleanup"]
	ctx, cp, c, done, err := b.setup(ctx, "cleanup-"+tag, kcmQPS)
	if err != nil {
		return err
	}
	defer done()
	sw := startStatusWriter(ctx, cp.Clientset, 16)
	mgr, err := b.startManager(ctx, cp, "cleanup-"+tag, mgrArgs...)
	if err != nil {
		return err
	}
	defer mgr.Stop()

	const n = 100
	ttl := int32(cleanupTTL)
	nsQJ, nsUp := "ttl-qj-"+tag, "ttl-upstream-"+tag
	var objs []client.Object
	for _, ns := range []string{nsQJ, nsUp} {
		if err := createNamespace(ctx, c, ns); err != nil {
			return err
		}
		sw.SetPolicy(ns, PodSucceed)
	}
	qjJobs, upJobs := watchJobs(ctx, cp.Clientset, nsQJ), watchJobs(ctx, cp.Clientset, nsUp)
	qjPods, upPods := watchPods(ctx, cp.Clientset, nsQJ), watchPods(ctx, cp.Clientset, nsUp)
	for i := range n {
		// QueueJobs without a queue (like the seed's pi): one pod, then Complete. Half
		// delete each finished pod after the TTL, half their finished Job.
		p := &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Namespace: nsQJ, Name: fmt.Sprintf("pod-ttl-%03d", i)},
			Spec: qjv1.QueueJobSpec{JobTemplate: qjv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: podTemplate()}},
				Cleanup: &qjv1.CleanupPolicy{PodTTLSecondsAfterFinished: ptr.To(ttl)}}}
		j := p.DeepCopy()
		j.Name = fmt.Sprintf("job-ttl-%03d", i)
		j.Spec.Cleanup = &qjv1.CleanupPolicy{TTLSecondsAfterFinished: ptr.To(ttl)}
		up := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: nsUp, Name: fmt.Sprintf("plain-%03d", i)},
			Spec: batchv1.JobSpec{Template: podTemplate(), TTLSecondsAfterFinished: ptr.To(ttl)}}
		objs = append(objs, p, j, up)
	}
	if err := createAll(ctx, c, objs); err != nil {
		return err
	}
	// Every pod of the pod-TTL QueueJobs, every Job of the Job-TTL ones and every plain
	// Job and its pod deleted.
	var podLat, jobLat, upPodLat, upJobLat []time.Duration
	measure := func() (bool, error) {
		podLat = podLatencies(qjPods, sw, "pod-ttl-", ttl)
		upPodLat = podLatencies(upPods, sw, "plain-", ttl)
		jobLat = jobLatencies(qjJobs, "job-ttl-", ttl)
		upJobLat = jobLatencies(upJobs, "plain-", ttl)
		return len(podLat) >= n && len(jobLat) >= n && len(upPodLat) >= n && len(upJobLat) >= n, nil
	}
	err = waitFor(ctx, 5*time.Minute, time.Second, "every finished pod and Job deleted", measure)
	_, _ = measure()
	if err != nil {
		logf("%v: pods %d/%d, Jobs %d/%d, plain Jobs' pods %d/%d, plain Jobs %d/%d", err, len(podLat), n, len(jobLat), n, len(upPodLat), n, len(upJobLat), n)
	}
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", 0.5}, {"p99", 0.99}} {
		b.res.add(Row{Section: title, Name: fmt.Sprintf("pods (our podTTLSecondsAfterFinished), %s; %s", q.name, what), Unit: "s",
			Ours: ptr.To(quantile(podLat, n-len(podLat), q.p)), PeerName: "upstream: a plain Job's pod, deleted with its Job (TTL controller, then garbage collector)",
			Peer: ptr.To(quantile(upPodLat, n-len(upPodLat), q.p)),
			Note: fmt.Sprintf("past the pod's finishedAt + %d s; %d of %d pods deleted ours, %d of %d upstream; upstream has no per-pod TTL: its pods also wait for the Job to complete, so the ratio compares two ways to the same end, not like with like", ttl, len(podLat), n, len(upPodLat), n)})
		b.res.add(Row{Section: title, Name: fmt.Sprintf("Jobs (our cleanup.ttlSecondsAfterFinished), %s; %s", q.name, what), Unit: "s",
			Ours: ptr.To(quantile(jobLat, n-len(jobLat), q.p)), PeerName: "upstream TTL-after-finished controller", Peer: ptr.To(quantile(upJobLat, n-len(upJobLat), q.p)),
			Note: fmt.Sprintf("past the Job's Complete condition as seen by a watch + %d s; %d of %d deleted ours, %d of %d upstream; both TTLs count from times of whole seconds, so a figure can be below 0", ttl, len(jobLat), n, len(upJobLat), n)})
	}
	return nil
}

// podLatencies is, for each deleted pod of the Jobs whose names start with prefix, how
// long after its finish + ttl its deletion began.
func podLatencies(w *PodWatch, sw *StatusWriter, prefix string, ttl int32) []time.Duration {
	var out []time.Duration
	deleted, jobOf := w.Deleted()
	for uid, t := range deleted {
		if !strings.HasPrefix(jobOf[uid], prefix) {
			continue
		}
		if fin, ok := sw.Finished(types.UID(uid)); ok {
			out = append(out, t.Sub(fin.Add(time.Duration(ttl)*time.Second)))
		}
	}
	return out
}

// jobLatencies is, for each finished and deleted Job whose name starts with prefix, how
// long after its completion + ttl its deletion began.
func jobLatencies(w *JobWatch, prefix string, ttl int32) []time.Duration {
	var out []time.Duration
	complete, deleted := w.CompleteDeleted()
	for name, t := range deleted {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		if fin, ok := complete[name]; ok {
			out = append(out, t.Sub(fin.Add(time.Duration(ttl)*time.Second)))
		}
	}
	return out
}
