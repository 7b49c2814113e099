//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// The waves of QueueJobs under a real Kueue (docs/kueue.md): on the local cluster the
// suite brings Kueue up (queuejob-cluster up --kueue, built from the module proxy into
// the cache on first use) unless it runs already, and takes it down again after. Each
// spec has a ClusterQueue of its own with a quota of 2 pods, and a LocalQueue "lq" in its
// namespace.
var _ = Describe("QueueJobs under Kueue", Ordered, func() {
	BeforeAll(func(ctx SpecContext) {
		if _, err := cluster.KubectlRun(ctx, "get", "crd", "clusterqueues.kueue.x-k8s.io"); err == nil {
			return
		}
		tool := os.Getenv("E2E_CLUSTER_TOOL")
		if tool == "" || !nodeIsThisMachine(ctx) {
			Skip("Kueue is not installed, and only the local cluster's tool (E2E_CLUSTER_TOOL, set by make test-e2e) can install it")
		}
		f := strings.Fields(tool) // the tool and its flags, which go after the subcommand
		start := time.Now()
		out, err := cluster.Run(ctx, f[0], append(append([]string{"up"}, f[1:]...), "--kueue")...)
		Expect(err).NotTo(HaveOccurred(), out)
		GinkgoWriter.Printf("Kueue up in %s\n", time.Since(start).Round(time.Second))
		DeferCleanup(func(ctx SpecContext) {
			out, err := cluster.Run(ctx, f[0], append([]string{"kueue-down"}, f[1:]...)...)
			Expect(err).NotTo(HaveOccurred(), out)
		}, NodeTimeout(5*time.Minute))
	}, NodeTimeout(15*time.Minute))

	It("runs a PerItem QueueJob of 6 items with parallelism 4 at most 2 pods at a time in a quota of 2 pods, admitted in part; Kueue alone flips suspend, once", func(ctx SpecContext) {
		ns := kueueNamespace(ctx)
		qj, key := kueueQueueJob(ns, "peritem", 2*time.Second)
		qj.Spec.Mode = qjv1.ModePerItem
		qj.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](4)
		items := []string{"p1", "p2", "p3", "p4", "p5", "p6"}
		rpush(ctx, key, items...)
		flips := watchSuspend(ctx, ns)
		most := watchRunningPods(ctx, ns)
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())

		got := finished(ctx, qj, 5*time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateComplete))
		jobs := jobsOf(ctx, got)
		Expect(jobs).To(HaveLen(1))
		Expect(jobs[0].Spec.Completions).To(HaveValue(BeEquivalentTo(6)))
		Expect(jobs[0].Annotations).To(HaveKeyWithValue("kueue.x-k8s.io/job-min-parallelism", "1"))
		Expect(jobs[0].Status.Succeeded).To(BeEquivalentTo(6))
		Expect(most()).To(BeNumerically("<=", 2), "pods running at once in a quota of 2")
		Expect(flips()[jobs[0].Name]).To(Equal([]bool{true, false}), "created suspended, resumed by Kueue once")
		Expect(lrange(ctx, key)).To(BeEmpty())
		Expect(lrange(ctx, key+":processing")).To(BeEmpty())
		report("Kueue PerItem: 6 items, parallelism 4, quota 2 pods: at most %d pods at once, suspend %v, Complete", most(), flips()[jobs[0].Name])
	})

	It("holds a WorkerPool wave suspended while the quota is taken (Waiting, WaitingForKueue), and runs it once admitted", func(ctx SpecContext) {
		ns := kueueNamespace(ctx)
		blocker := sleeperJob(ns, "blocker", 2, "")
		Expect(cluster.Client.Create(ctx, blocker)).To(Succeed())
		Eventually(ctx, func(g Gomega) int32 { return readyPods(g, ctx, blocker) }).Should(BeEquivalentTo(2))

		qj, key := kueueQueueJob(ns, "held", time.Second)
		rpush(ctx, key, "h1", "h2", "h3")
		flips := watchSuspend(ctx, ns)
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
		Eventually(ctx, func(g Gomega) {
			got := &qjv1.QueueJob{}
			g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(qj), got)).To(Succeed())
			g.Expect(got.Status.State).To(Equal(qjv1.StateWaiting))
			c := meta.FindStatusCondition(got.Status.Conditions, qjv1.ConditionProgressing)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(qjv1.ReasonWaitingForKueue))
			g.Expect(c.Message).To(ContainSubstring("LocalQueue lq"))
		}).Should(Succeed())
		Consistently(ctx, func(g Gomega) {
			g.Expect(lrange(ctx, key)).To(HaveLen(3), "no worker ran while the wave was held")
		}).WithTimeout(5 * time.Second).Should(Succeed())

		Expect(cluster.Client.Delete(ctx, blocker, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		got := finished(ctx, qj, 5*time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateComplete))
		jobs := jobsOf(ctx, got)
		Expect(jobs).To(HaveLen(1))
		Expect(flips()[jobs[0].Name]).To(Equal([]bool{true, false}), "held suspended, resumed by Kueue once")
		Expect(lrange(ctx, key)).To(BeEmpty())
		Expect(lrange(ctx, key+":processing")).To(BeEmpty())
	})

	It("gives a preempted wave's items back at once, and runs the wave again when Kueue readmits it: nothing lost, no duplicate Job, only Kueue flips suspend", func(ctx SpecContext) {
		ns := kueueNamespace(ctx)
		// Items of 30 s: the workers are still on theirs when the preemption stops them.
		qj, key := kueueQueueJob(ns, "preempted", 30*time.Second)
		qj.Spec.JobTemplate.Labels["kueue.x-k8s.io/priority-class"] = "e2e-low"
		items := []string{"q1", "q2", "q3", "q4"}
		rpush(ctx, key, items...)
		flips := watchSuspend(ctx, ns)
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
		Eventually(ctx, func() []string { return lrange(ctx, key+":processing") }).
			WithPolling(100*time.Millisecond).Should(HaveLen(2), "both workers hold an item")

		high := sleeperJob(ns, "high", 2, "e2e-high")
		Expect(cluster.Client.Create(ctx, high)).To(Succeed())
		preemptedAt := time.Now()
		Eventually(ctx, func() []string { return lrange(ctx, key+":processing") }).
			WithTimeout(time.Minute).WithPolling(20*time.Millisecond).Should(BeEmpty(), "the preempted workers' items back in the list")
		back := time.Since(preemptedAt)
		Expect(lrange(ctx, key)).To(HaveLen(len(items)))
		Expect(jobsOf(ctx, qj)).To(ConsistOf(HaveField("Spec.Suspend", HaveValue(BeTrue()))), "Kueue suspended the wave")
		Eventually(ctx, func(g Gomega) int32 { return readyPods(g, ctx, high) }).Should(BeEquivalentTo(2))
		Expect(cluster.Client.Delete(ctx, high, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())

		got := finished(ctx, qj, 5*time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateComplete))
		jobs := jobsOf(ctx, got)
		Expect(jobs).To(HaveLen(1), "the wave ran again in its own Job")
		Expect(got.Status.Waves).To(BeEquivalentTo(1))
		Expect(flips()[jobs[0].Name]).To(Equal([]bool{true, false, true, false}), "admitted, preempted, readmitted: by Kueue alone")
		Expect(lrange(ctx, key)).To(BeEmpty())
		Expect(lrange(ctx, key+":processing")).To(BeEmpty())
		logs, err := cluster.PodLogs(ctx, ns, map[string]string{qjv1.LabelQueueJob: qj.Name})
		Expect(err).NotTo(HaveOccurred())
		done := map[string]bool{}
		for _, w := range workedOn(logs) {
			for _, it := range w {
				done[it] = true
			}
		}
		for _, it := range items {
			Expect(done).To(HaveKey(it), "item %s was never worked on", it)
		}
		report("Kueue preemption: the wave's 2 held items back in the list %s after the high-priority Job was created; readmitted, Complete, 1 Job, suspend %v",
			back.Round(time.Millisecond), flips()[jobs[0].Name])
	})

	It("suspends a wave and ends one that outlived its drained queue through its Workload (spec.active), never by suspending an admitted Job", func(ctx SpecContext) {
		ns := kueueNamespace(ctx)
		qj, key := kueueQueueJob(ns, "paused", time.Second)
		// Workers that never exit: the queue is drained by the test, and the wave ended.
		qj.Spec.JobTemplate.Spec.Template.Spec.Containers[0] = sleeperJob(ns, "", 1, "").Spec.Template.Spec.Containers[0]
		qj.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](1)
		qj.Spec.DrainGracePeriodSeconds = ptr.To[int32](2)
		rpush(ctx, key, "only")
		flips := watchSuspend(ctx, ns)
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
		var job batchv1.Job
		Eventually(ctx, func(g Gomega) {
			jobs := jobsOf(ctx, qj)
			g.Expect(jobs).To(HaveLen(1))
			job = jobs[0]
			g.Expect(readyPods(g, ctx, &job)).To(BeEquivalentTo(1))
		}).Should(Succeed())

		By("spec.suspend: the Workload deactivated, Kueue suspends the Job, and it stays suspended")
		updateQueueJob(ctx, qj, func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(true) })
		Eventually(ctx, func() (string, error) { return workloadsActive(ctx, ns) }).Should(Equal("false"))
		Eventually(ctx, func(g Gomega) { g.Expect(readyPods(g, ctx, &job)).To(BeZero()) }).Should(Succeed())
		Consistently(ctx, func(g Gomega) {
			got := &batchv1.Job{}
			g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(&job), got)).To(Succeed())
			g.Expect(got.Spec.Suspend).To(HaveValue(BeTrue()))
		}).WithTimeout(5 * time.Second).Should(Succeed())

		By("spec.suspend false: the Workload active again, Kueue readmits and resumes the Job")
		updateQueueJob(ctx, qj, func(q *qjv1.QueueJob) { q.Spec.Suspend = ptr.To(false) })
		Eventually(ctx, func(g Gomega) { g.Expect(readyPods(g, ctx, &job)).To(BeEquivalentTo(1)) }).Should(Succeed())

		By("the queue drained by another consumer: the wave ended through its Workload, the QueueJob complete")
		rc := redisClient()
		defer rc.Close()
		Expect(rc.Del(ctx, key).Err()).To(Succeed())
		got := finished(ctx, qj, 5*time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateComplete))
		Expect(meta.FindStatusCondition(got.Status.Conditions, qjv1.ConditionComplete).Reason).To(Equal(qjv1.ReasonWorkersStopped))
		Expect(flips()[job.Name]).To(Equal([]bool{true, false, true, false, true}),
			"created suspended; Kueue alone resumed it, stopped it for spec.suspend, resumed it, and stopped it at the end")
		// The ended wave's Job is deleted once its pods stopped, its Workload with it: what
		// is left is Kueue's word that it stopped the Job, twice, for a deactivated Workload.
		Eventually(ctx, func() int32 { return kueueStops(ctx, ns, job.Name) }).Should(BeEquivalentTo(2))
		Expect(got.Status.Waves).To(BeEquivalentTo(1))
	})

	It("keeps an admitted WorkerPool wave's size when its queue grows (Kueue would evict it): no eviction, the one worker drains the queue", func(ctx SpecContext) {
		most, flips := growUnderKueue(ctx, "plain", false)
		Expect(most).To(Equal(1), "pods running at once")
		Expect(flips).To(Equal([]bool{true, false}), "admitted once, never evicted")
	})

	It("grows an elastic WorkerPool wave in place when its queue grows: Kueue admits the growth as a workload slice, no eviction", func(ctx SpecContext) {
		most, flips := growUnderKueue(ctx, "elastic", true)
		Expect(most).To(Equal(2), "pods running at once")
		Expect(flips).To(Equal([]bool{true, false}), "admitted once, never evicted")
	})
})

// updateQueueJob changes the QueueJob as mutate says, again on a conflict.
func updateQueueJob(ctx context.Context, qj *qjv1.QueueJob, mutate func(*qjv1.QueueJob)) {
	GinkgoHelper()
	Eventually(ctx, func(g Gomega) {
		got := &qjv1.QueueJob{}
		g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(qj), got)).To(Succeed())
		mutate(got)
		g.Expect(cluster.Client.Update(ctx, got)).To(Succeed())
	}).Should(Succeed())
}

// kueueStops counts Kueue's events on the Job name that it stopped the Job because its
// Workload was deactivated (-1: the events could not be listed).
func kueueStops(ctx context.Context, ns, name string) int32 {
	var evs corev1.EventList
	if err := cluster.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
		return -1
	}
	var n int32
	for _, e := range evs.Items {
		if e.InvolvedObject.Kind == "Job" && e.InvolvedObject.Name == name && e.Reason == "Stopped" &&
			strings.Contains(e.Message, "deactivated") {
			n += max(e.Count, 1)
		}
	}
	return n
}

// workloadsActive is the spec.active of the Kueue Workloads of ns, space-separated.
func workloadsActive(ctx context.Context, ns string) (string, error) {
	out, err := cluster.KubectlRun(ctx, "get", "workloads.kueue.x-k8s.io", "-n", ns, "-o", "jsonpath={.items[*].spec.active}")
	return strings.TrimSpace(out), err
}

// kueueNamespace makes the spec's namespace, its LocalQueue "lq", and a ClusterQueue of
// its own for it (quota: 2 pods; a higher priority preempts a lower one), with the
// priority classes e2e-low and e2e-high; all deleted after the spec.
func kueueNamespace(ctx context.Context) string {
	GinkgoHelper()
	ns := namespace(ctx, nil)
	cq := "e2e-" + ns
	manifest := fmt.Sprintf(`apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata:
  name: e2e-default
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: WorkloadPriorityClass
metadata:
  name: e2e-low
value: 10
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: WorkloadPriorityClass
metadata:
  name: e2e-high
value: 1000
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata:
  name: %[1]s
spec:
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: %[2]s
  preemption:
    withinClusterQueue: LowerPriority
  resourceGroups:
  - coveredResources: ["pods"]
    flavors:
    - name: e2e-default
      resources:
      - name: pods
        nominalQuota: 2
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata:
  name: lq
  namespace: %[2]s
spec:
  clusterQueue: %[1]s
`, cq, ns)
	file := filepath.Join(GinkgoT().TempDir(), "kueue.yaml")
	Expect(os.WriteFile(file, []byte(manifest), 0o600)).To(Succeed())
	out, err := cluster.KubectlRun(ctx, "apply", "-f", file)
	Expect(err).NotTo(HaveOccurred(), out)
	DeferCleanup(func(ctx SpecContext) {
		// Before the namespace goes (cleanups run last in, first out), without waiting: a
		// ClusterQueue that still has Workloads keeps its finalizer until they go with the
		// namespace. The shared ResourceFlavor and priority classes stay (kueue-down, or
		// the next run, reuses them).
		_, _ = cluster.KubectlRun(ctx, "delete", "clusterqueue", cq, "--wait=false")
	})
	return ns
}

// kueueQueueJob is the job-wq-2 sample in ns on the Redis list named after it, whose
// Jobs go to the LocalQueue lq, each item taking sleep; 10 min leases, so that only a
// pod's end returns an item in time.
func kueueQueueJob(ns, name string, sleep time.Duration) (*qjv1.QueueJob, string) {
	qj := sample("job-wq-2", ns)
	qj.Name = name
	key := name + "-" + ns
	qj.Spec.Queue.Redis.Key = key
	qj.Spec.JobTemplate.Labels = map[string]string{"kueue.x-k8s.io/queue-name": "lq"}
	c := &qj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
	c.Command = []string{"job-wq-2", "--sleep=" + sleep.String()}
	c.Env = append(c.Env, corev1.EnvVar{Name: "QUEUEJOB_LEASE_SECONDS", Value: fmt.Sprint(int(podDeathLease.Seconds()))})
	return qj, key
}

// sleeperJob is a Job of n pods that sleep until deleted (the pause image: the local
// cluster's, or E2E_PAUSE_IMAGE), in the LocalQueue lq, with the Kueue priority class
// given ("": none).
func sleeperJob(ns, name string, n int32, priority string) *batchv1.Job {
	labels := map[string]string{"kueue.x-k8s.io/queue-name": "lq"}
	if priority != "" {
		labels["kueue.x-k8s.io/priority-class"] = priority
	}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: batchv1.JobSpec{
			Parallelism: ptr.To(n), Completions: ptr.To(n),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy:                 corev1.RestartPolicyNever,
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{Name: "pause", Image: getenv("E2E_PAUSE_IMAGE", "queuejob.local/pause:1"),
					ImagePullPolicy: corev1.PullIfNotPresent}},
			}},
		},
	}
}

// readyPods is how many pods of the Job are ready.
func readyPods(g Gomega, ctx context.Context, job *batchv1.Job) int32 {
	got := &batchv1.Job{}
	g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(job), got)).To(Succeed())
	return ptr.Deref(got.Status.Ready, 0)
}

// watchSuspend records, by Job, each value of spec.suspend the Jobs of ns take, from
// their creation on, until the spec ends; the function returns what it has seen. It fails
// the spec if the creator of a wave's Job (the operator) is the last to have set its
// suspend in any change after the first: only Kueue may flip it (managedFields name who
// set it).
func watchSuspend(ctx context.Context, ns string) func() map[string][]bool {
	GinkgoHelper()
	w, err := cluster.Clientset.BatchV1().Jobs(ns).Watch(ctx, metav1.ListOptions{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(w.Stop)
	var mu sync.Mutex
	seen := map[string][]bool{}
	creator := map[string]string{}
	type flip struct{ job, by string }
	var flips []flip
	closed := false
	go func() {
		defer GinkgoRecover()
		defer func() { mu.Lock(); closed = true; mu.Unlock() }()
		for ev := range w.ResultChan() {
			job, ok := ev.Object.(*batchv1.Job)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			mu.Lock()
			s := ptr.Deref(job.Spec.Suspend, false)
			l := seen[job.Name]
			switch {
			case len(l) == 0:
				creator[job.Name] = suspendSetBy(job)
				seen[job.Name] = []bool{s}
			case l[len(l)-1] != s:
				seen[job.Name] = append(l, s)
				if job.Labels[qjv1.LabelQueueJob] != "" { // a wave, created while watched
					flips = append(flips, flip{job.Name, suspendSetBy(job)})
				}
			}
			mu.Unlock()
		}
	}()
	DeferCleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range flips {
			GinkgoWriter.Printf("Job %s (created by %s): suspend flipped by %s\n", f.job, creator[f.job], f.by)
			Expect(f.by).NotTo(Equal(creator[f.job]), "the creator of Job %s, the operator, flipped its suspend", f.job)
		}
	})
	return func() map[string][]bool {
		mu.Lock()
		defer mu.Unlock()
		Expect(closed).To(BeFalse(), "the watch of the Jobs ended early: their suspend changes are not all seen")
		out := map[string][]bool{}
		for k, v := range seen {
			out[k] = append([]bool(nil), v...)
		}
		return out
	}
}

// suspendSetBy is the field manager that last set the Job's spec.suspend.
func suspendSetBy(job *batchv1.Job) string {
	by, at := "", time.Time{}
	for _, m := range job.ManagedFields {
		if m.FieldsV1 != nil && strings.Contains(string(m.FieldsV1.Raw), `"f:suspend"`) && m.Time != nil && !m.Time.Time.Before(at) {
			by, at = m.Manager, m.Time.Time
		}
	}
	return by
}

// watchRunningPods records the most pods of ns running at once, until the spec ends.
func watchRunningPods(ctx context.Context, ns string) func() int {
	GinkgoHelper()
	w, err := cluster.Clientset.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(w.Stop)
	var mu sync.Mutex
	running := map[string]bool{}
	most := 0
	go func() {
		defer GinkgoRecover()
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			mu.Lock()
			running[pod.Name] = ev.Type != watch.Deleted && pod.Status.Phase == corev1.PodRunning
			n := 0
			for _, r := range running {
				if r {
					n++
				}
			}
			most = max(most, n)
			mu.Unlock()
		}
	}()
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return most
	}
}

// growUnderKueue runs a WorkerPool QueueJob (template parallelism 2) under Kueue whose
// wave starts with one item, so with one worker, and whose queue then grows by eight: an
// elastic Job ("kueue.x-k8s.io/elastic-job") grows to 2 workers, a plain one keeps 1. It
// returns the most pods that ran at once and the suspend values of the wave's Job.
func growUnderKueue(ctx context.Context, name string, elastic bool) (int, []bool) {
	GinkgoHelper()
	ns := kueueNamespace(ctx)
	qj, key := kueueQueueJob(ns, name, 6*time.Second)
	qj.Spec.JobTemplate.Spec.Parallelism = ptr.To[int32](2)
	if elastic {
		qj.Spec.JobTemplate.Annotations = map[string]string{"kueue.x-k8s.io/elastic-job": "true"}
	}
	rpush(ctx, key, "g1")
	flips := watchSuspend(ctx, ns)
	most := watchRunningPods(ctx, ns)
	Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
	Eventually(ctx, func() []string { return lrange(ctx, key+":processing") }).
		WithPolling(100*time.Millisecond).Should(HaveLen(1), "the one worker holds the one item")
	jobs := jobsOf(ctx, qj)
	Expect(jobs).To(HaveLen(1))
	Expect(jobs[0].Spec.Parallelism).To(HaveValue(BeEquivalentTo(1)))
	rpush(ctx, key, "g2", "g3", "g4", "g5", "g6", "g7", "g8", "g9")

	job := &jobs[0]
	parallelism := func(g Gomega) int32 {
		got := &batchv1.Job{}
		g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(job), got)).To(Succeed())
		return ptr.Deref(got.Spec.Parallelism, 1)
	}
	if elastic {
		Eventually(ctx, parallelism).Should(BeEquivalentTo(2))
		Eventually(ctx, func(g Gomega) int32 { return readyPods(g, ctx, job) }).Should(BeEquivalentTo(2))
	} else {
		// The operator probes every 2 s: several probes see the deeper queue.
		Consistently(ctx, parallelism).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
	}
	got := finished(ctx, qj, 5*time.Minute)
	Expect(got.Status.State).To(Equal(qjv1.StateComplete))
	Expect(jobsOf(ctx, got)).To(HaveLen(1))
	Expect(lrange(ctx, key)).To(BeEmpty())
	Expect(lrange(ctx, key+":processing")).To(BeEmpty())
	report("Kueue WorkerPool growth (%s): at most %d pods at once, suspend %v, Complete", name, most(), flips()[jobs[0].Name])
	return most(), flips()[jobs[0].Name]
}
