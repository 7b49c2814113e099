package controllers

import (
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

const pullMessage = `Container image "ghcr.io/queuejob/missing:0" is not present with pull policy of Never`

func waiting(reason, msg string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: "worker", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}
}

func runningStatus() corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: "worker", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

// startPod is a pod of job created at created, in phase with these container statuses.
func startPod(job *batchv1.Job, name string, created time.Time, phase corev1.PodPhase, cs ...corev1.ContainerStatus) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: job.Namespace, CreationTimestamp: metav1.NewTime(created),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true)}}},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: cs},
	}
}

func TestPodStartBlock(t *testing.T) {
	unschedulable := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message: "0/1 nodes are available: 1 Insufficient cpu."}
	for _, tc := range []struct {
		name string
		pod  corev1.Pod
		want string
	}{
		{"image never pulled", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("ErrImageNeverPull", pullMessage)}}}, "ErrImageNeverPull"},
		{"creating", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("ContainerCreating", "")}}}, ""},
		{"crash loop beside a running sidecar", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning,
			ContainerStatuses: []corev1.ContainerStatus{runningStatus(), waiting("CrashLoopBackOff", "back-off 40s")}}}, "CrashLoopBackOff"},
		{"init container's Secret missing", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []corev1.ContainerStatus{waiting("CreateContainerConfigError", `secret "creds" not found`)},
			ContainerStatuses:     []corev1.ContainerStatus{waiting("PodInitializing", "")}}}, "CreateContainerConfigError"},
		// A cluster autoscaler may add a node: not blocked (the scheduler's events say why).
		{"unschedulable", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{unschedulable}}}, ""},
		{"pull failed, one family with its back-off", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("ErrImagePull", "")}}}, "ImagePullBackOff"},
		{"gated by a scheduling gate", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonSchedulingGated}}}}, ""},
		{"failed pod with a stale wait", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{waiting("ErrImagePull", "")}}}, ""},
		{"deleting pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: ptr.To(metav1.Now())},
			Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("ImagePullBackOff", "")}}}, ""},
	} {
		// What the watch and the phase read is the cached, trimmed pod: the trim must keep it.
		trimmed, _ := trimPod(tc.pod.DeepCopy())
		for what, p := range map[string]*corev1.Pod{"full": &tc.pod, "trimmed": trimmed.(*corev1.Pod)} {
			if got := podStartBlockReason(p); got != tc.want {
				t.Errorf("%s, %s: podStartBlockReason = %q, want %q", tc.name, what, got, tc.want)
			}
		}
	}
}

func TestBlockedPodsOf(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "q-2", Namespace: "ns", UID: "job-2"}}
	other := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "q-1", Namespace: "ns", UID: "job-1"}}
	never := func(job *batchv1.Job, name string) corev1.Pod {
		return startPod(job, name, now, corev1.PodPending, waiting("ErrImageNeverPull", pullMessage))
	}

	// All blocked: the reason most pods share first, with its message; the others after.
	b := blockedPodsOf(job, []corev1.Pod{
		never(job, "q-2-d"), never(job, "q-2-b"), never(job, "q-2-c"), never(job, "q-2-a"),
		startPod(job, "q-2-e", now, corev1.PodPending, waiting("CreateContainerConfigError", `secret "creds" not found`)),
		startPod(job, "q-2-f", now, corev1.PodSucceeded),                  // finished: not counted
		startPod(other, "q-1-a", now, corev1.PodRunning, runningStatus()), // another Job's pod: not counted
	})
	if b == nil {
		t.Fatal("all blocked: blockedPodsOf = nil")
	}
	want := `The pods of Job q-2 cannot start: ErrImageNeverPull (container "worker"): ` + pullMessage +
		` [pods q-2-a, q-2-b, q-2-c and 1 more]; CreateContainerConfigError (container "worker") [pod q-2-e]`
	if msg := b.message(job); !strings.HasPrefix(msg, want) || strings.Contains(msg, "secret") {
		t.Errorf("message = %q\nwant the prefix %q, and only the first reason's kubelet message", msg, want)
	}
	if got := b.reasons(); got != "CreateContainerConfigError,ErrImageNeverPull" {
		t.Errorf("reasons = %q", got)
	}

	// One pod not blocked (creating, or running): nil. No pod of the Job left: nil.
	for _, free := range []corev1.Pod{
		startPod(job, "q-2-b", now, corev1.PodPending, waiting("ContainerCreating", "")),
		startPod(job, "q-2-b", now, corev1.PodRunning, runningStatus()),
	} {
		if b := blockedPodsOf(job, []corev1.Pod{never(job, "q-2-a"), free}); b != nil {
			t.Errorf("one pod %s: blockedPodsOf = %v, want nil", free.Status.Phase, b.names)
		}
	}
	if b := blockedPodsOf(job, []corev1.Pod{never(other, "q-1-a")}); b != nil {
		t.Errorf("no pod of the Job: blockedPodsOf = %v", b.names)
	}
}

// TestPodStartWatch: a report only after the pods have all been blocked for the grace; it
// stands while they are (its message while the reasons are the same), through the moments
// a crash loop runs its pod, and goes once they have not all been blocked for the grace.
func TestPodStartWatch(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	grace := 20 * time.Second
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "q-2", Namespace: "ns", UID: "job-2"}}
	pods := func(reason string, names ...string) *blockedPods {
		var ps []corev1.Pod
		for _, n := range names {
			ps = append(ps, startPod(job, n, t0, corev1.PodPending, waiting(reason, reason+" of "+n)))
		}
		return blockedPodsOf(job, ps)
	}
	st := podStartWatch{job: job.UID}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	step := func(what string, b *blockedPods, now time.Time, wantReported bool, wantWait time.Duration) *progressProblem {
		t.Helper()
		st = st.next(job, b, now, grace)
		if p := st.reported; (p != nil) != wantReported || st.wait(now, grace) != wantWait || st.job != job.UID {
			t.Fatalf("%s: reported %v, wait %v, job %q; want %v, %v, %q", what, p != nil, st.wait(now, grace), st.job, wantReported, wantWait, job.UID)
		}
		return st.reported
	}
	step("blocked, first seen", pods("CrashLoopBackOff", "a"), at(0), false, grace)
	step("blocked, within the grace", pods("CrashLoopBackOff", "a"), at(15*time.Second), false, 5*time.Second)
	step("runs for a moment, before a report", nil, at(16*time.Second), false, 0)
	step("blocked again: the grace starts again", pods("CrashLoopBackOff", "a"), at(17*time.Second), false, grace)
	p := step("blocked for the grace", pods("CrashLoopBackOff", "a"), at(37*time.Second), true, 0)
	if !strings.Contains(p.message, "CrashLoopBackOff of a") || p.reason != qjv1.ReasonPodsCannotStart {
		t.Errorf("report: %s %q", p.reason, p.message)
	}
	p = step("a pod more, same reason", pods("CrashLoopBackOff", "a", "b"), at(40*time.Second), true, 0)
	if strings.Contains(p.message, "pods a, b") {
		t.Errorf("the message changed with the same reasons: %q", p.message)
	}
	step("runs for a moment, after a report", nil, at(41*time.Second), true, grace)
	step("still running, within the grace", nil, at(50*time.Second), true, 11*time.Second)
	step("back in its back-off", pods("CrashLoopBackOff", "a", "b"), at(55*time.Second), true, 0)
	p = step("another reason", pods("CreateContainerConfigError", "a", "b"), at(56*time.Second), true, 0)
	if !strings.Contains(p.message, "CreateContainerConfigError of a") {
		t.Errorf("a new reason, the same message: %q", p.message)
	}
	step("started", nil, at(60*time.Second), true, grace)
	step("started for the grace", nil, at(80*time.Second), false, 0)

	// A report of this Job in the status (an earlier manager's) stands until the pods have
	// started, on the first look since the manager started, and only then: once the watch
	// withdrew it, a status read from a lagging cache that still holds it is not a report.
	qj := &qjv1.QueueJob{Status: qjv1.QueueJobStatus{Conditions: []metav1.Condition{{Type: qjv1.ConditionProgressing,
		Status: metav1.ConditionFalse, Reason: qjv1.ReasonPodsCannotStart, Message: podStartPrefix(job) + "ErrImageNeverPull ...",
		LastTransitionTime: metav1.NewTime(t0)}}}}
	st = watchFor(podStartWatch{}, false, qj, job)
	step("after a restart, started", nil, at(time.Hour), true, grace)
	step("after a restart, started for the grace", nil, at(time.Hour+grace), false, 0)
	if st = watchFor(st, true, qj, job); st.reported != nil {
		t.Errorf("a withdrawn report came back from a stale status")
	}
	if got := watchFor(podStartWatch{job: "job-1", reported: &progressProblem{}}, true, qj, job); got.reported != nil || got.job != job.UID {
		t.Errorf("the watch of another Job went on: %+v", got)
	}
	for _, other := range []*batchv1.Job{
		{ObjectMeta: metav1.ObjectMeta{Name: "q-20", UID: "job-20"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "q", UID: "job-q"}},
	} {
		if st := watchFor(podStartWatch{}, false, qj, other); st.reported != nil {
			t.Errorf("the report of Job q-2 was taken for %s's", other.Name)
		}
	}
}

func TestBoundMessage(t *testing.T) {
	if got := boundMessage("line one\n\tline two\x1b[31m"); got != "line one line two [31m" {
		t.Errorf("boundMessage kept control characters or line breaks: %q", got)
	}
	long := strings.Repeat("é", maxBlockMessage)
	got := boundMessage(long)
	if len(got) > maxBlockMessage || !strings.HasSuffix(got, "...") || !strings.HasPrefix(got, "éé") || strings.ContainsRune(got, '\uFFFD') {
		t.Errorf("boundMessage of %d bytes: %d bytes, %q...", len(long), len(got), got[:10])
	}
}

func TestPodWatchPredicate(t *testing.T) {
	pred := podWatchPredicate()
	pending := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("ContainerCreating", "")}}}
	pulling := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("ErrImagePull", "x")}}}
	backoff := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("ImagePullBackOff", "y")}}}
	backoff2 := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("ImagePullBackOff", "z")}}}
	configErr := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("CreateContainerConfigError", "x")}}}
	runningPod := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{runningStatus()}}}
	done := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded}}
	for _, tc := range []struct {
		name     string
		old, new *corev1.Pod
		want     bool
	}{
		{"creating to running", pending, runningPod, false},
		{"creating to blocked", pending, pulling, true},
		{"pull failed to its back-off: one family", pulling, backoff, false},
		{"blocked, another reason", configErr, backoff, true},
		{"blocked, same reason, another message", backoff, backoff2, false},
		{"blocked to running", backoff, runningPod, true},
		{"running to finished", runningPod, done, true},
	} {
		if got := pred.Update(crevent.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.new}); got != tc.want {
			t.Errorf("%s: Update = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !pred.Create(crevent.CreateEvent{Object: backoff}) || pred.Create(crevent.CreateEvent{Object: pending}) {
		t.Error("Create passes a blocked pod and not a creating one")
	}
}

var _ = Describe("A Job whose pods cannot start", func() {
	It("says why in the Progressing condition and once in a Warning event, and stops saying it once they have started", func() {
		ns := newNamespace()
		qj := queueJob(ns, "never")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		runJob(job, 2)
		pods := []*corev1.Pod{jobPod(job, "never-a", corev1.PodPending, time.Time{}), jobPod(job, "never-b", corev1.PodPending, time.Time{})}
		setStatuses := func(cs corev1.ContainerStatus, phase corev1.PodPhase) {
			for _, pod := range pods {
				Eventually(func(g Gomega) {
					cur := &corev1.Pod{}
					g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(pod), cur)).To(Succeed())
					cur.Status.Phase, cur.Status.ContainerStatuses = phase, []corev1.ContainerStatus{cs}
					g.Expect(k8s.Status().Update(suiteCtx, cur)).To(Succeed())
				}, timeout, interval).Should(Succeed())
			}
		}
		setStatuses(waiting("ErrImageNeverPull", pullMessage), corev1.PodPending)
		// Not before the grace (2 s here) since all of them were first seen blocked.
		Consistently(func(g Gomega) {
			g.Expect(progressing(g, ns, "never").Reason).NotTo(Equal(qjv1.ReasonPodsCannotStart))
		}, 1500*time.Millisecond, interval).Should(Succeed())
		Eventually(func(g Gomega) {
			c := progressing(g, ns, "never")
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(qjv1.ReasonPodsCannotStart))
			g.Expect(c.Message).To(ContainSubstring("ErrImageNeverPull"))
			g.Expect(c.Message).To(ContainSubstring(pullMessage))
			g.Expect(c.Message).To(ContainSubstring("pods never-a, never-b"))
		}, timeout, interval).Should(Succeed())
		// One event, emitted once: the recorder folds a second one of the same reason into
		// the first as a series.
		oneEvent := func(g Gomega) {
			evs := eventsFor(g, qj, qjv1.EventPodsCannotStart)
			g.Expect(evs).To(HaveLen(1))
			g.Expect(evs[0].Type).To(Equal(corev1.EventTypeWarning))
			g.Expect(evs[0].Series).To(BeNil())
			g.Expect(evs[0].DeprecatedCount).To(BeNumerically("<=", 1))
		}
		Eventually(oneEvent, timeout, interval).Should(Succeed())

		// The kubelet moves on to another reason: the report says so, no second event.
		setStatuses(waiting("CrashLoopBackOff", "back-off 10s restarting failed container"), corev1.PodRunning)
		Eventually(func(g Gomega) {
			g.Expect(progressing(g, ns, "never").Message).To(ContainSubstring("CrashLoopBackOff"))
		}, timeout, interval).Should(Succeed())
		Consistently(oneEvent, 3*time.Second, interval).Should(Succeed())

		// The pods run now: once they have for the grace (2 s here), the condition goes,
		// though the Job has not counted them ready.
		setStatuses(runningStatus(), corev1.PodRunning)
		Eventually(func(g Gomega) {
			g.Expect(progressing(g, ns, "never").Reason).To(Equal(qjv1.ReasonJobRunning))
		}, timeout, interval).Should(Succeed())
		// Withdrawn for good: not again from a status the cache still held.
		Consistently(func(g Gomega) {
			g.Expect(progressing(g, ns, "never").Reason).To(Equal(qjv1.ReasonJobRunning))
			oneEvent(g)
		}, 4*time.Second, interval).Should(Succeed())
	})
})
