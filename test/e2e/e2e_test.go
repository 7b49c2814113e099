//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	qredis "github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/e2e/framework"
)

// printedOf lists the messages of msgs that a pod's log holds. The log mixes cat's
// stdout with queuejob-worker's log lines, whose session names the pod and a hex suffix
// (session=job-wq-1-1-xbm4-a3f0...): the whole messages are looked for, not a pattern
// that such a name can match too.
func printedOf(log string, msgs []string) []string {
	var out []string
	for _, m := range msgs {
		if strings.Contains(log, m) {
			out = append(out, m)
		}
	}
	return out
}

// sample is a seed sample with the project's image of its worker, in namespace ns.
func sample(name, ns string) *qjv1.QueueJob {
	qj, err := framework.Sample(repoRoot, name)
	Expect(err).NotTo(HaveOccurred())
	Expect(framework.Localize(qj, images, framework.Brokers{RedisAddress: redisS.Addr(), RedisPasswordSecret: "redis"})).To(Succeed())
	qj.Namespace = ns
	return qj
}

// finished waits until the QueueJob is Complete or Failed and returns it.
func finished(ctx context.Context, qj *qjv1.QueueJob, timeout time.Duration) *qjv1.QueueJob {
	got := &qjv1.QueueJob{}
	Eventually(ctx, func(g Gomega) {
		g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(qj), got)).To(Succeed())
		g.Expect(got.Status.State).To(BeElementOf(qjv1.StateComplete, qjv1.StateFailed))
	}).WithTimeout(timeout).Should(Succeed())
	return got
}

// jobsOf lists the Jobs the QueueJob owns.
func jobsOf(ctx context.Context, qj *qjv1.QueueJob) []batchv1.Job {
	var l batchv1.JobList
	Expect(cluster.Client.List(ctx, &l, client.InNamespace(qj.Namespace))).To(Succeed())
	var out []batchv1.Job
	for _, j := range l.Items {
		if ref := metav1.GetControllerOf(&j); ref != nil && ref.UID == qj.UID {
			out = append(out, j)
		}
	}
	return out
}

// workedOn collects the "Working on X" lines of job-wq-2's workers, by pod.
func workedOn(logs map[string]string) map[string][]string {
	out := map[string][]string{}
	for pod, l := range logs {
		for _, line := range strings.Split(l, "\n") {
			if s, ok := strings.CutPrefix(line, "Working on "); ok {
				out[pod] = append(out[pod], s)
			}
		}
	}
	return out
}

// onlyEvent checks that the QueueJob name has one PodsCannotStart Warning, emitted once (a
// second emission makes the event a series).
func onlyEvent(ctx context.Context, ns, name string) error {
	var evs eventsv1.EventList
	if err := cluster.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
		return err
	}
	var mine []eventsv1.Event
	for _, e := range evs.Items {
		if e.Regarding.Kind == "QueueJob" && e.Regarding.Name == name && e.Reason == qjv1.EventPodsCannotStart {
			mine = append(mine, e)
		}
	}
	switch {
	case len(mine) != 1:
		return fmt.Errorf("%d PodsCannotStart events of %s, want 1", len(mine), name)
	case mine[0].Type != corev1.EventTypeWarning || mine[0].Series != nil:
		return fmt.Errorf("the PodsCannotStart event of %s: type %s, series %+v; want a Warning emitted once", name, mine[0].Type, mine[0].Series)
	}
	return nil
}

var _ = Describe("QueueJobs in a real cluster", Ordered, ContinueOnFailure, func() {
	It("runs seed example 1, pi: its log holds the digits; the pod and the Job go after their TTLs and the counts stay", func(ctx SpecContext) {
		ns := namespace(ctx, nil)
		qj := sample("pi", ns)
		qj.Spec.Cleanup.PodTTLSecondsAfterFinished = ptr.To[int32](15)
		qj.Spec.Cleanup.TTLSecondsAfterFinished = ptr.To[int32](20)
		start := time.Now()
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
		out, err := cluster.KubectlRun(ctx, "wait", "--for=condition=Complete", "qj/pi", "-n", ns, "--timeout=5m")
		Expect(err).NotTo(HaveOccurred(), out)
		report("pi: Complete %s after creation", time.Since(start).Round(time.Second))

		// The log, while the pod is still there (its TTL is 15 s).
		logs, err := cluster.PodLogs(ctx, ns, map[string]string{"batch.kubernetes.io/job-name": "pi"})
		Expect(err).NotTo(HaveOccurred())
		Expect(logs).To(HaveLen(1))
		for _, l := range logs {
			Expect(l).To(HavePrefix("3.14159265358979323846264338327950288"))
			Expect(len(strings.TrimSpace(l))).To(Equal(2001), "2000 significant digits and the point")
		}

		// The pod is deleted after its TTL: the Job controller counted it first (the
		// Job-tracking finalizer), so the Job still says 1 succeeded.
		Eventually(ctx, func(g Gomega) {
			var pods corev1.PodList
			g.Expect(cluster.Client.List(ctx, &pods, client.InNamespace(ns))).To(Succeed())
			g.Expect(pods.Items).To(BeEmpty())
		}).Should(Succeed())
		podGone := time.Since(start)
		var job batchv1.Job
		Expect(cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pi"}, &job)).To(Succeed())
		Expect(job.Status.Succeeded).To(Equal(int32(1)))
		Expect(job.Status.UncountedTerminatedPods == nil || len(job.Status.UncountedTerminatedPods.Succeeded) == 0).To(BeTrue())

		// Then the Job, after ttlSecondsAfterFinished; the QueueJob keeps the counts.
		Eventually(ctx, func() bool {
			return apierrors.IsNotFound(cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pi"}, &batchv1.Job{}))
		}).Should(BeTrue())
		got := finished(ctx, qj, time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateComplete))
		Expect(got.Status.Succeeded).To(Equal(int32(1)))
		report("pi: pod deleted %s and Job deleted %s after creation; status still succeeded=%d", podGone.Round(time.Second), time.Since(start).Round(time.Second), got.Status.Succeeded)
	})

	It("runs seed example 2, job-wq-1: 8 RabbitMQ messages, one a pod, parallelism 2, completions 8", func(ctx SpecContext) {
		ns := namespace(ctx, nil)
		queue := "job1-" + ns
		qj := sample("job-wq-1", ns)
		qj.Spec.Queue.RabbitMQ.Queue = queue
		qj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Env[1].Value = queue
		Expect(cluster.Client.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "rabbitmq-url", Namespace: ns},
			StringData: map[string]string{"url": rabbitS.URL()},
		})).To(Succeed())
		// The pods' logs hold queuejob-worker's log lines too (stderr), and cat prints a
		// message without a newline: the messages are made easy to pick out.
		msgs := []string{"m1-apple", "m2-banana", "m3-cherry", "m4-date", "m5-fig", "m6-grape", "m7-lemon", "m8-melon"}
		publish(ctx, queue, msgs...)
		start := time.Now()
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
		got := finished(ctx, qj, 5*time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateComplete))
		Expect(got.Status.Completions).To(Equal("8/8"))
		Expect(got.Status.Succeeded).To(Equal(int32(8)))

		Expect(queueDepth(queue)).To(BeZero())
		logs, err := cluster.PodLogs(ctx, ns, map[string]string{"batch.kubernetes.io/job-name": got.Status.JobName})
		Expect(err).NotTo(HaveOccurred())
		var printed []string
		for _, l := range logs {
			printed = append(printed, strings.Join(printedOf(l, msgs), ","))
		}
		sort.Strings(printed)
		Expect(printed).To(Equal(msgs), "each pod printed the one message it took; the pods' logs:\n%v", logs)
		report("job-wq-1: 8 messages acked by 8 pods, queue empty, Complete %s after creation", time.Since(start).Round(time.Second))
	})

	It("runs seed example 3, job-wq-2: 9 Redis items drained by a WorkerPool of 2; the real Job completes when its workers exit 0", func(ctx SpecContext) {
		ns := namespace(ctx, nil)
		qj := sample("job-wq-2", ns)
		qj.Spec.Queue.Redis.Key = "job2-" + ns
		items := []string{"apple", "banana", "cherry", "date", "fig", "grape", "lemon", "melon", "orange"}
		rpush(ctx, qj.Spec.Queue.Redis.Key, items...)
		start := time.Now()
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
		got := finished(ctx, qj, 5*time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateComplete))
		Expect(meta.FindStatusCondition(got.Status.Conditions, qjv1.ConditionComplete).Reason).To(Equal(qjv1.ReasonQueueDrained))
		Expect(lrange(ctx, qj.Spec.Queue.Redis.Key)).To(BeEmpty())
		Expect(lrange(ctx, qj.Spec.Queue.Redis.Key+":processing")).To(BeEmpty())

		// The workers exited 0 on an empty queue, and the real Job controller completed
		// the WorkerPool Job (no completions) on that.
		jobs := jobsOf(ctx, got)
		Expect(jobs).To(HaveLen(1))
		Expect(jobs[0].Status.Succeeded).To(BeNumerically(">=", 1))
		Expect(jobs[0].Status.Failed).To(BeZero())
		var complete bool
		for _, c := range jobs[0].Status.Conditions {
			complete = complete || (c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue)
		}
		Expect(complete).To(BeTrue(), "the Job's own Complete condition")
		logs, err := cluster.PodLogs(ctx, ns, map[string]string{"batch.kubernetes.io/job-name": jobs[0].Name})
		Expect(err).NotTo(HaveOccurred())
		var all []string
		for _, w := range workedOn(logs) {
			all = append(all, w...)
		}
		sort.Strings(all)
		Expect(all).To(Equal(items), "each item worked on once")
		report("job-wq-2: 9 items by %d pods, list and :processing empty, Complete %s after creation", len(logs), time.Since(start).Round(time.Second))
	})

	It("returns the item of a worker pod deleted mid-item with --grace-period=0 --force at once (the worker on SIGTERM or the operator on the deletion, whichever is first), its lease 10 min from expiry: nothing is lost", func(ctx SpecContext) {
		killMidItem(ctx, "deleted", redisList, podDeathLease, corev1.RestartPolicyOnFailure, func(ctx context.Context, ns, pod string) {
			out, err := cluster.KubectlRun(ctx, "delete", "pod", pod, "-n", ns, "--grace-period=0", "--force")
			Expect(err).NotTo(HaveOccurred(), out)
		})
	})

	It("returns the entry of a worker pod deleted mid-item on a Redis stream at once (the worker or the operator), its lease 10 min from expiry: nothing is lost, nothing pending, no stranded consumer", func(ctx SpecContext) {
		killMidItem(ctx, "stream-deleted", redisStream, podDeathLease, corev1.RestartPolicyOnFailure, func(ctx context.Context, ns, pod string) {
			out, err := cluster.KubectlRun(ctx, "delete", "pod", pod, "-n", ns, "--grace-period=0", "--force")
			Expect(err).NotTo(HaveOccurred(), out)
		})
	})

	It("returns the message of a worker pod deleted mid-item on a NATS JetStream stream: nothing is lost, nothing pending", func(ctx SpecContext) {
		killMidItem(ctx, "nats-deleted", natsStream, 10*time.Second, corev1.RestartPolicyOnFailure, func(ctx context.Context, ns, pod string) {
			out, err := cluster.KubectlRun(ctx, "delete", "pod", pod, "-n", ns, "--grace-period=0", "--force")
			Expect(err).NotTo(HaveOccurred(), out)
		})
	})

	It("returns the item of a worker OOM-killed mid-item (SIGKILL, restartPolicy Never: the pod fails) at once, its lease 10 min from expiry", func(ctx SpecContext) {
		if !nodeIsThisMachine(ctx) {
			Skip("SIGKILL of a container's process needs the node's process table: only on the local cluster (make cluster-up)")
		}
		killMidItem(ctx, "oomkilled", redisList, podDeathLease, corev1.RestartPolicyNever, func(ctx context.Context, ns, pod string) {
			pid, err := containerProcess(pod, "job-wq-2")
			Expect(err).NotTo(HaveOccurred())
			Expect(syscall.Kill(pid, syscall.SIGKILL)).To(Succeed())
		})
	})

	It("reclaims the lease of a worker killed mid-item with SIGKILL whose container restarts in its pod (the lease reaper): nothing is lost", func(ctx SpecContext) {
		if !nodeIsThisMachine(ctx) {
			Skip("SIGKILL of a container's process needs the node's process table: only on the local cluster (make cluster-up)")
		}
		killMidItem(ctx, "sigkill", redisList, 10*time.Second, corev1.RestartPolicyOnFailure, func(ctx context.Context, ns, pod string) {
			pid, err := containerProcess(pod, "job-wq-2")
			Expect(err).NotTo(HaveOccurred())
			Expect(syscall.Kill(pid, syscall.SIGKILL)).To(Succeed())
		})
	})

	It("passes podFailurePolicy through to the real Job controller, which fails the Job at once", func(ctx SpecContext) {
		ns := namespace(ctx, nil)
		qj := sample("pi", ns)
		qj.Name = "pfp"
		c := &qj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
		c.Command = []string{"pi", "--no-such-flag"} // exits 2
		qj.Spec.JobTemplate.Spec.BackoffLimit = ptr.To[int32](6)
		qj.Spec.JobTemplate.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
			Action: batchv1.PodFailurePolicyActionFailJob,
			OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
				ContainerName: ptr.To(c.Name), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{2},
			},
		}}}
		start := time.Now()
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
		got := finished(ctx, qj, 5*time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateFailed))
		Expect(got.Status.Failed).To(Equal(int32(1)), "one pod, not backoffLimit+1")
		var job batchv1.Job
		Expect(cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pfp"}, &job)).To(Succeed())
		var reason string
		for _, c := range job.Status.Conditions {
			if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
				reason = c.Reason
			}
		}
		Expect(reason).To(Equal(batchv1.JobReasonPodFailurePolicy))
		failed := meta.FindStatusCondition(got.Status.Conditions, qjv1.ConditionFailed)
		Expect(failed).NotTo(BeNil())
		report("podFailurePolicy: Job Failed (%s) after 1 pod, QueueJob Failed (%s: %s) %s after creation", reason, failed.Reason, failed.Message, time.Since(start).Round(time.Second))
	})

	It("says in a condition why the pods of a template that Pod Security refuses are not created", func(ctx SpecContext) {
		ns := namespace(ctx, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
		qj := sample("pi", ns) // the article's pod: no securityContext at all
		qj.Name = "psa"
		start := time.Now()
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
		var cond *metav1.Condition
		Eventually(ctx, func(g Gomega) {
			got := &qjv1.QueueJob{}
			g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(qj), got)).To(Succeed())
			cond = meta.FindStatusCondition(got.Status.Conditions, qjv1.ConditionProgressing)
			g.Expect(cond).NotTo(BeNil())
			g.Expect(cond.Reason).To(Equal(qjv1.ReasonPodsNotCreated))
		}).WithTimeout(2 * time.Minute).Should(Succeed())
		Expect(cond.Status).To(Equal(metav1.ConditionFalse))
		Expect(cond.Message).To(ContainSubstring("violates PodSecurity"))
		report("Pod Security: Progressing=False %s %s after creation: %s", cond.Reason, time.Since(start).Round(time.Second), cond.Message)
	})

	It("says why a wave's pods cannot start (a missing image, a missing Secret), once in an event each; the QueueJob completes once the Secret exists", func(ctx SpecContext) {
		ns := namespace(ctx, nil)
		noImage := sample("pi", ns)
		noImage.Name = "noimage"
		c := &noImage.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
		c.Image, c.ImagePullPolicy = "ghcr.io/queuejob/no-such-image:0", corev1.PullNever
		noSecret := sample("pi", ns)
		noSecret.Name = "nosecret"
		c = &noSecret.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
		c.Env = append(c.Env, corev1.EnvVar{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "later"}, Key: "token"}}})
		start := time.Now()
		Expect(cluster.Client.Create(ctx, noImage)).To(Succeed())
		Expect(cluster.Client.Create(ctx, noSecret)).To(Succeed())
		cannotStart := func(qj *qjv1.QueueJob, reason string) *metav1.Condition {
			var cond *metav1.Condition
			Eventually(ctx, func(g Gomega) {
				got := &qjv1.QueueJob{}
				g.Expect(cluster.Client.Get(ctx, client.ObjectKeyFromObject(qj), got)).To(Succeed())
				cond = meta.FindStatusCondition(got.Status.Conditions, qjv1.ConditionProgressing)
				g.Expect(cond).NotTo(BeNil())
				g.Expect(cond.Reason).To(Equal(qjv1.ReasonPodsCannotStart))
				g.Expect(cond.Message).To(ContainSubstring(reason))
				g.Expect(got.Status.State).To(Equal(qjv1.StateRunning))
			}).WithTimeout(3 * time.Minute).Should(Succeed())
			return cond
		}
		cond := cannotStart(noImage, "ErrImageNeverPull")
		Expect(cond.Message).To(ContainSubstring("no-such-image"))
		report("missing image: Progressing=False %s %s after creation: %s", cond.Reason, time.Since(start).Round(time.Second), cond.Message)
		cond = cannotStart(noSecret, "CreateContainerConfigError")
		Expect(cond.Message).To(ContainSubstring(`"later"`))
		report("missing Secret: Progressing=False %s %s after creation: %s", cond.Reason, time.Since(start).Round(time.Second), cond.Message)
		// One Warning each, emitted once (a second would make the event a series).
		for _, qj := range []*qjv1.QueueJob{noImage, noSecret} {
			Eventually(ctx, func() error { return onlyEvent(ctx, ns, qj.Name) }).WithTimeout(time.Minute).Should(Succeed())
		}

		// The Secret comes: the pods start and the QueueJob completes. (That the report goes
		// once pods have started is an envtest spec: pi finishes within the grace here.)
		Expect(cluster.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "later", Namespace: ns},
			StringData: map[string]string{"token": "t"}})).To(Succeed())
		got := finished(ctx, noSecret, 5*time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateComplete))
		Expect(onlyEvent(ctx, ns, noSecret.Name)).To(Succeed(), "after the pods started")
		Expect(cluster.Client.Delete(ctx, noImage)).To(Succeed())
	})

	It("converges without a duplicate wave when the operator's pod is deleted mid-wave", func(ctx SpecContext) {
		ns := namespace(ctx, nil)
		qj := sample("job-wq-2", ns)
		qj.Name = "restart"
		key := "restart-" + ns
		qj.Spec.Queue.Redis.Key = key
		qj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Command = []string{"job-wq-2", "--sleep=3s"}
		items := []string{"r1", "r2", "r3", "r4", "r5", "r6"}
		rpush(ctx, key, items...)
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
		Eventually(ctx, func(g Gomega) {
			g.Expect(jobsOf(ctx, qj)).NotTo(BeEmpty())
		}).Should(Succeed())
		// Killed, not stopped: no chance to finish a reconcile or hand the lease over.
		out, err := cluster.KubectlRun(ctx, "delete", "pod", "-n", release.Namespace, "-l", "app.kubernetes.io/instance="+release.Name,
			"--grace-period=0", "--force", "--wait=false")
		Expect(err).NotTo(HaveOccurred(), out)
		start := time.Now()
		got := finished(ctx, qj, 5*time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateComplete))
		Expect(got.Status.Waves).To(Equal(int32(1)))
		Expect(jobsOf(ctx, got)).To(HaveLen(1))
		Expect(lrange(ctx, key)).To(BeEmpty())
		report("operator restart mid-wave: 1 wave, 1 Job, Complete %s after the manager pod was deleted", time.Since(start).Round(time.Second))
	})

	It("converges without a duplicate wave when the API server restarts mid-wave", func(ctx SpecContext) {
		tool := os.Getenv("E2E_CLUSTER_TOOL")
		if tool == "" || !nodeIsThisMachine(ctx) {
			Skip("restarting kube-apiserver needs the local cluster's tool (E2E_CLUSTER_TOOL, set by make test-e2e)")
		}
		ns := namespace(ctx, nil)
		qj := sample("job-wq-2", ns)
		qj.Name = "apiserver"
		key := "apiserver-" + ns
		qj.Spec.Queue.Redis.Key = key
		qj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Command = []string{"job-wq-2", "--sleep=3s"}
		rpush(ctx, key, "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8")
		Expect(cluster.Client.Create(ctx, qj)).To(Succeed())
		Eventually(ctx, func(g Gomega) {
			g.Expect(jobsOf(ctx, qj)).NotTo(BeEmpty())
		}).Should(Succeed())
		start := time.Now()
		f := strings.Fields(tool) // the tool and its flags, which go after the subcommand
		out, err := cluster.Run(ctx, f[0], append(append([]string{"restart"}, f[1:]...), "kube-apiserver")...)
		Expect(err).NotTo(HaveOccurred(), out)
		back := time.Since(start)
		got := finished(ctx, qj, 5*time.Minute)
		Expect(got.Status.State).To(Equal(qjv1.StateComplete))
		Expect(got.Status.Waves).To(Equal(int32(1)))
		Expect(jobsOf(ctx, got)).To(HaveLen(1))
		Expect(lrange(ctx, key)).To(BeEmpty())
		Expect(lrange(ctx, key+":processing")).To(BeEmpty())
		report("API server restart mid-wave: ready again after %s; 1 wave, 1 Job, Complete %s after the restart began", back.Round(time.Second), time.Since(start).Round(time.Second))
	})

	It("rolls the manager on helm upgrade, and helm uninstall leaves only the CRD", func(ctx SpecContext) {
		before := deployment(ctx)
		r := release
		r.Values = map[string]string{}
		for k, v := range release.Values {
			r.Values[k] = v
		}
		r.Values["extraArgs[0]"] = "--zap-log-level=info"
		out, err := cluster.Install(ctx, r)
		Expect(err).NotTo(HaveOccurred(), out)
		var after *appsv1.Deployment
		Eventually(ctx, func(g Gomega) {
			after = deployment(ctx)
			g.Expect(after.Generation).To(BeNumerically(">", before.Generation))
			g.Expect(after.Status.ObservedGeneration).To(Equal(after.Generation))
			g.Expect(after.Status.UpdatedReplicas).To(Equal(*after.Spec.Replicas))
			g.Expect(after.Status.AvailableReplicas).To(Equal(*after.Spec.Replicas))
		}).Should(Succeed())
		Expect(after.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--zap-log-level=info"))

		out, err = cluster.Uninstall(ctx, release)
		Expect(err).NotTo(HaveOccurred(), out)
		sel := "app.kubernetes.io/instance=" + release.Name
		for _, kind := range []string{"deployments,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets,pods", "clusterroles,clusterrolebindings"} {
			Eventually(ctx, func() (string, error) {
				return cluster.KubectlRun(ctx, "get", kind, "-A", "-l", sel, "-o", "name")
			}).Should(BeEmpty(), "objects of the release left after helm uninstall")
		}
		out, err = cluster.KubectlRun(ctx, "get", "crd", "queuejobs.batch.queuejob.io", "-o", "name")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(strings.TrimSpace(out)).To(Equal("customresourcedefinition.apiextensions.k8s.io/queuejobs.batch.queuejob.io"))
		// Install it again for whoever uses the cluster next (make demo).
		out, err = cluster.Install(ctx, release)
		Expect(err).NotTo(HaveOccurred(), out)
	})
})

// deployment reads the chart's Deployment of the manager.
func deployment(ctx context.Context) *appsv1.Deployment {
	GinkgoHelper()
	d := &appsv1.Deployment{}
	Expect(cluster.Client.Get(ctx, client.ObjectKey{Namespace: release.Namespace, Name: release.Name}, d)).To(Succeed(),
		fmt.Sprintf("the chart's Deployment %s/%s", release.Namespace, release.Name))
	return d
}

// killMidItem runs job-wq-2 on 6 items of 15 s each with a WorkerPool of 2 and a 10 s
// lease (renewed every 10/3 s while an item is worked on), kills a worker with kill while
// it holds an item, and checks that every item was finished by some worker: those the
// killed worker had moved on from, and the rest by the others. Each item's extra finishes
// are the duplicates it reports.
//
// The victim took its item less than 2 s before it is picked; the 15 s of an item leave
// the search's last poll and the kill over 10 s on a loaded machine before the worker
// would finish the item (after a forced delete, the kubelet stops the container moments
// after kubectl returns). A kill that comes later anyway fails as such, not as a lost
// item.
func killMidItem(ctx context.Context, name string, q queueFixture, lease time.Duration, restart corev1.RestartPolicy, kill func(ctx context.Context, ns, pod string)) {
	GinkgoHelper()
	const itemTime = 15 * time.Second
	ns := namespace(ctx, nil)
	qj := sample("job-wq-2", ns)
	qj.Name = name
	key := name + "-" + ns
	q.use(qj, key, lease)
	qj.Spec.JobTemplate.Spec.Template.Spec.RestartPolicy = restart
	c := &qj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
	c.Command = []string{"job-wq-2", "--sleep=" + itemTime.String()}
	c.Env = append(c.Env, corev1.EnvVar{Name: "QUEUEJOB_LEASE_SECONDS", Value: strconv.Itoa(int(lease.Seconds()))})
	items := []string{"i1", "i2", "i3", "i4", "i5", "i6"}
	q.enqueue(ctx, key, items...)
	start := time.Now()
	Expect(cluster.Client.Create(ctx, qj)).To(Succeed())

	podLog := func(pod string, previous bool) string {
		b, err := cluster.Clientset.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Previous: previous}).DoRaw(ctx)
		Expect(err).NotTo(HaveOccurred())
		return string(b)
	}
	// A running pod that holds an item: its log's last line is "Working on X", taken at
	// heldSince (the log's timestamp).
	var victim, held, victimLog string
	var heldSince time.Time
	Eventually(ctx, func(g Gomega) {
		var pods corev1.PodList
		g.Expect(cluster.Client.List(ctx, &pods, client.InNamespace(ns))).To(Succeed())
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning {
				continue
			}
			// With timestamps: the item must have been taken less than 2 s ago, so
			// that the worker (itemTime an item) is still on it when it is killed.
			b, err := cluster.Clientset.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Timestamps: true}).DoRaw(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			ts, line, _ := strings.Cut(lines[len(lines)-1], " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if s, ok := strings.CutPrefix(line, "Working on "); ok && err == nil && time.Since(at) < 2*time.Second {
				victim, held, victimLog, heldSince = p.Name, s, podLog(p.Name, false), at
				return
			}
		}
		g.Expect(victim).NotTo(BeEmpty(), "a running pod working on an item")
	}).WithTimeout(3 * time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
	kill(ctx, ns, victim)
	killedAt := time.Now()
	killedAfter := time.Since(heldSince)
	GinkgoWriter.Printf("%s: killed %s %s after it took %s\n", name, victim, killedAfter.Round(time.Millisecond), held)
	Expect(killedAfter).To(BeNumerically("<", itemTime),
		"the kill of %s came %s after it took %s, an item takes %s: the worker may have finished it, so the test cannot tell a lost item (the machine was too slow for the test)",
		victim, killedAfter.Round(time.Millisecond), held, itemTime)

	back := "not measured"
	if session := sessionOf(victimLog); q.released != nil && session != "" {
		// Polled every 20 ms: the time measured is the reclaim's, give or take that.
		Eventually(ctx, func() bool { return q.released(ctx, key, held, session) }).
			WithTimeout(5*time.Minute).WithPolling(20*time.Millisecond).Should(BeTrue(), "%s's %s never went back to the queue", victim, held)
		back = time.Since(killedAt).Round(time.Millisecond).String()
	}
	got := finished(ctx, qj, 5*time.Minute)
	Expect(got.Status.State).To(Equal(qjv1.StateComplete))
	q.drained(ctx, key)

	// Finished items: every "Working on" of the pods that exited 0, and those the killed
	// worker had moved on from. A killed container that restarted in its pod (SIGKILL,
	// restartPolicy OnFailure) has its later items in the pod's current log.
	var pods corev1.PodList
	Expect(cluster.Client.List(ctx, &pods, client.InNamespace(ns))).To(Succeed())
	logs := map[string]string{}
	for _, p := range pods.Items {
		if p.Name == victim {
			if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount > 0 {
				logs[p.Name] = podLog(p.Name, false)
			}
			continue
		}
		logs[p.Name] = podLog(p.Name, false)
	}
	done := map[string]int{}
	for _, w := range workedOn(logs) {
		for _, it := range w {
			done[it]++
		}
	}
	killed := workedOn(map[string]string{victim: victimLog})[victim]
	for _, it := range killed[:len(killed)-1] {
		done[it]++
	}
	for _, it := range items {
		Expect(done).To(HaveKey(it), "item %s was never finished (%s was killed %s after it took %s)", it, victim, killedAfter.Round(time.Millisecond), held)
	}
	dups := 0
	for _, n := range done {
		dups += n - 1
	}
	var reclaimed int64
	if got.Status.Queue != nil {
		reclaimed = got.Status.Queue.Reclaimed
	}
	if name == "sigkill" || name == "oomkilled" {
		Expect(reclaimed).To(BeNumerically(">=", 1), "the operator's reaper returned the dead worker's lease")
	}
	report("%s: pod %s killed mid-item %s, lease %s; the item free again %s after the kill; %d items all finished, %d duplicates, %d leases reclaimed by the operator, Complete %s after creation",
		name, victim, held, lease, back, len(items), dups, reclaimed, time.Since(start).Round(time.Second))
}

// podDeathLease is the workers' lease in the specs where a pod's end must return its
// item: ten minutes, longer than the specs wait, so that only the pod's end can.
const podDeathLease = 10 * time.Minute

// sessionOf is the session a job-wq-2 worker's log names ("Worker with sessionID: ...").
func sessionOf(log string) string {
	for line := range strings.SplitSeq(log, "\n") {
		if s, ok := strings.CutPrefix(line, "Worker with sessionID: "); ok {
			return strings.TrimSpace(s)
		}
	}
	return ""
}

// queueFixture is a queue backend as killMidItem uses it: use points the job-wq-2
// sample's spec.queue at a fresh queue named key, enqueue puts items into it in order, and
// drained checks that nothing of it is left, ready or held.
type queueFixture struct {
	use     func(qj *qjv1.QueueJob, key string, lease time.Duration)
	enqueue func(ctx context.Context, key string, items ...string)
	drained func(ctx context.Context, key string)
	// released reports whether the item is ready again, or held by another session than
	// the one given (nil: not told).
	released func(ctx context.Context, key, item, session string) bool
}

// redisList is the sample's own backend: a Redis list and its <key>:processing.
var redisList = queueFixture{
	use:     func(qj *qjv1.QueueJob, key string, _ time.Duration) { qj.Spec.Queue.Redis.Key = key },
	enqueue: rpush,
	released: func(ctx context.Context, key, item, session string) bool {
		rc := redisClient()
		defer rc.Close()
		if _, err := rc.LPos(ctx, key, item, redis.LPosArgs{}).Result(); err == nil {
			return true // ready again
		}
		holder, err := rc.Get(ctx, qredis.LeaseKey(key, item)).Result()
		return err == nil && holder != session // taken again, by another worker
	},
	drained: func(ctx context.Context, key string) {
		GinkgoHelper()
		Expect(lrange(ctx, key)).To(BeEmpty())
		Expect(lrange(ctx, key+":processing")).To(BeEmpty())
	},
}

// redisStream is the sample on a Redis stream of the same server (spec.queue.redisStream,
// group "workers", leaseSeconds as the workers' QUEUEJOB_LEASE_SECONDS): drained also
// means nothing pending and no consumer left (workers that exit delete theirs, the reaper
// a killed worker's).
var redisStream = queueFixture{
	use: func(qj *qjv1.QueueJob, key string, lease time.Duration) {
		r := qj.Spec.Queue.Redis
		qj.Spec.Queue = &qjv1.QueueSource{RedisStream: &qjv1.RedisStreamQueue{Address: r.Address, DB: r.DB, Username: r.Username,
			PasswordSecretRef: r.PasswordSecretRef, TLS: r.TLS, Stream: key, Group: "workers", LeaseSeconds: ptr.To(int32(lease.Seconds()))}}
	},
	released: func(ctx context.Context, key, _, session string) bool {
		rc := redisClient()
		defer rc.Close()
		p, err := rc.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: key, Group: "workers", Start: "-", End: "+", Count: 1, Consumer: session}).Result()
		return err == nil && len(p) == 0
	},
	enqueue: func(ctx context.Context, key string, items ...string) {
		GinkgoHelper()
		rc := redisClient()
		defer rc.Close()
		Expect(rc.XGroupCreateMkStream(ctx, key, "workers", "0").Err()).To(Succeed())
		for _, it := range items {
			Expect(rc.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"item", it}}).Err()).To(Succeed())
		}
	},
	drained: func(ctx context.Context, key string) {
		GinkgoHelper()
		rc := redisClient()
		defer rc.Close()
		Expect(rc.XLen(ctx, key).Val()).To(BeZero(), "entries left in the stream")
		p, err := rc.XPending(ctx, key, "workers").Result()
		Expect(err).NotTo(HaveOccurred())
		Expect(p.Count).To(BeZero(), "entries left pending")
		// The last workers may still be stopping (a wave ended by suspending its Job).
		Eventually(ctx, func(g Gomega) {
			cs, err := rc.XInfoConsumers(ctx, key, "workers").Result()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(cs).To(BeEmpty(), "stranded consumers")
		}).WithTimeout(time.Minute).Should(Succeed())
	},
}

// natsStream is the sample on a NATS JetStream work-queue stream named key, subject key,
// drained by the durable consumer "workers" (which the workers create, AckWait as their
// QUEUEJOB_LEASE_SECONDS): drained means no message left in the stream, none pending or
// unacknowledged for the consumer.
var natsStream = queueFixture{
	use: func(qj *qjv1.QueueJob, key string, _ time.Duration) {
		secret := func(k string) *corev1.SecretKeySelector {
			return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nats"}, Key: k}
		}
		qj.Spec.Queue = &qjv1.QueueSource{NATS: &qjv1.NATSQueue{URL: natsS.URL(), Stream: key, Consumer: "workers",
			UserSecretRef: secret("user"), PasswordSecretRef: secret("password"), AckWaitSeconds: ptr.To[int32](10)}}
	},
	enqueue: func(ctx context.Context, key string, items ...string) {
		GinkgoHelper()
		nc, js := natsJetStream()
		defer nc.Close()
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: key, Subjects: []string{key},
			Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
		Expect(err).NotTo(HaveOccurred())
		for _, it := range items {
			_, err := js.Publish(ctx, key, []byte(it))
			Expect(err).NotTo(HaveOccurred())
		}
	},
	drained: func(ctx context.Context, key string) {
		GinkgoHelper()
		nc, js := natsJetStream()
		defer nc.Close()
		s, err := js.Stream(ctx, key)
		Expect(err).NotTo(HaveOccurred())
		si, err := s.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(si.State.Msgs).To(BeZero(), "messages left in the stream")
		c, err := js.Consumer(ctx, key, "workers")
		Expect(err).NotTo(HaveOccurred())
		ci, err := c.Info(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(ci.NumPending).To(BeZero(), "messages not yet delivered")
		Expect(ci.NumAckPending).To(BeZero(), "messages delivered and not acknowledged")
	},
}

// nodeIsThisMachine says whether the cluster's node runs on this machine (the local
// cluster): its InternalIP is one of this machine's addresses.
func nodeIsThisMachine(ctx context.Context) bool {
	ip, err := cluster.NodeAddress(ctx)
	if err != nil {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.String() == ip {
			return true
		}
	}
	return false
}

// containerProcess finds the process named comm of a pod's container on this machine by
// the HOSTNAME the kubelet gives it (the pod's name).
func containerProcess(pod, comm string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		c, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(c)) != comm {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if kv == "HOSTNAME="+pod {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no process %s of pod %s on this machine", comm, pod)
}
