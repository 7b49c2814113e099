package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// psaMessage is what the Job controller reports when Pod Security refuses a pod.
const psaMessage = `pods "psa-x7k2p" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false)`

// startJob plays the Job controller starting (or resuming) a Job: startTime, no pods yet;
// succeeded counts pods that already finished.
func startJob(job *batchv1.Job, at time.Time, succeeded int32) {
	Eventually(func(g Gomega) {
		cur := &batchv1.Job{}
		g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
		t := metav1.NewTime(at)
		cur.Status.StartTime = &t
		cur.Status.Succeeded = succeeded
		g.Expect(k8s.Status().Update(suiteCtx, cur)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

// failedCreate writes the event the Job controller writes when it cannot create a pod of
// the Job with uid (envtest has no Job controller).
func failedCreate(ns, jobName string, uid types.UID, at time.Time) {
	t := metav1.NewTime(at)
	Expect(k8s.Create(suiteCtx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", jobName, time.Now().UnixNano()), Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Job", APIVersion: "batch/v1", Namespace: ns, Name: jobName, UID: uid},
		Reason:         "FailedCreate", Message: "Error creating: " + psaMessage, Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "job-controller"},
		FirstTimestamp: t, LastTimestamp: t, Count: 1,
	})).To(Succeed())
}

func progressing(g Gomega, ns, name string) *metav1.Condition {
	c := meta.FindStatusCondition(getQJ(ns, name)(g).Status.Conditions, qjv1.ConditionProgressing)
	g.Expect(c).NotTo(BeNil())
	return c
}

var _ = Describe("A Job whose pods cannot be created", func() {
	It("gets the Job controller's FailedCreate report into the Progressing condition, and loses it once pods exist", func() {
		ns := newNamespace()
		qj := queueJob(ns, "psa")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		startJob(job, time.Now(), 0)
		failedCreate(ns, job.Name, job.UID, time.Now())
		Eventually(func(g Gomega) {
			c := progressing(g, ns, "psa")
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(qjv1.ReasonPodsNotCreated))
			g.Expect(c.Message).To(ContainSubstring(psaMessage))
			g.Expect(c.Message).To(ContainSubstring("Job " + job.Name))
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) { g.Expect(eventsFor(g, qj, qjv1.EventPodsNotCreated)).To(HaveLen(1)) }, timeout, interval).Should(Succeed())

		// Once the namespace allows the pods, the Job runs them: the condition goes.
		Eventually(func(g Gomega) {
			cur := &batchv1.Job{}
			g.Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(job), cur)).To(Succeed())
			cur.Status.Active = 1
			g.Expect(k8s.Status().Update(suiteCtx, cur)).To(Succeed())
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(progressing(g, ns, "psa").Reason).To(Equal(qjv1.ReasonJobRunning))
		}, timeout, interval).Should(Succeed())
	})

	It("ignores events from before the Job was last started, of another Job of that name, and of a Job that has had pods", func() {
		ns := newNamespace()
		qj := queueJob(ns, "stale")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)
		// Resumed (startTime reset) after a refusal that no longer holds; and an event of
		// an earlier Job of the same name.
		startJob(job, time.Now(), 0)
		failedCreate(ns, job.Name, job.UID, time.Now().Add(-time.Hour))
		failedCreate(ns, job.Name, types.UID("0f7e6c1a-earlier-job"), time.Now())

		done := queueJob(ns, "done")
		Expect(k8s.Create(suiteCtx, done)).To(Succeed())
		doneJob := theJob(done)
		// A Job whose pods succeeded and were deleted (pod TTL): no pod, but it had some.
		startJob(doneJob, time.Now(), 1)
		failedCreate(ns, doneJob.Name, doneJob.UID, time.Now())

		// Past the grace, twice over: neither says PodsNotCreated.
		Consistently(func(g Gomega) {
			g.Expect(progressing(g, ns, "stale").Reason).NotTo(Equal(qjv1.ReasonPodsNotCreated))
			g.Expect(progressing(g, ns, "done").Reason).NotTo(Equal(qjv1.ReasonPodsNotCreated))
		}, 2*PodCreateGrace+5*time.Second, time.Second).Should(Succeed())

		// The control: a fresh refusal of the stale QueueJob's own Job is reported.
		failedCreate(ns, job.Name, job.UID, time.Now())
		Eventually(func(g Gomega) {
			g.Expect(progressing(g, ns, "stale").Reason).To(Equal(qjv1.ReasonPodsNotCreated))
		}, timeout, interval).Should(Succeed())
	})
})

// eventLists is a seam: an APIReader that answers every List of events with events, and
// counts those Lists.
type eventLists struct {
	client.Reader
	events []corev1.Event
	lists  int
	err    error // if set, every List fails with it
}

func (r *eventLists) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	evs, ok := list.(*corev1.EventList)
	if !ok {
		return fmt.Errorf("unexpected List of %T", list)
	}
	r.lists++
	if r.err != nil {
		return r.err
	}
	evs.Items = slices.Clone(r.events)
	return nil
}

// podlessJob is a started Job of a QueueJob that has had no pod.
func podlessJob(qj *qjv1.QueueJob, uid types.UID, started time.Time) batchv1.Job {
	t := metav1.NewTime(started)
	return batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: qj.Namespace, Name: qj.Name + "-1", UID: uid},
		Status: batchv1.JobStatus{StartTime: &t}}
}

// podCreationFixture runs the phase on a podless Job started at start, whose events hold a
// refusal since then: lookAt(at) runs it as a reconcile at start+at would.
type podCreationFixture struct {
	start   time.Time
	refused corev1.Event
	reader  *eventLists
	r       *QueueJobReconciler
	qj      *qjv1.QueueJob
	job     batchv1.Job
}

func newPodCreationFixture() *podCreationFixture {
	f := &podCreationFixture{start: time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)}
	f.refused = corev1.Event{Reason: "FailedCreate", Message: "Error creating: " + psaMessage,
		LastTimestamp: metav1.NewTime(f.start.Add(time.Second))}
	f.reader = &eventLists{events: []corev1.Event{f.refused}}
	f.r = &QueueJobReconciler{APIReader: f.reader}
	f.qj = &qjv1.QueueJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "quota", UID: "qj-1"}}
	f.job = podlessJob(f.qj, "job-1", f.start)
	return f
}

func (f *podCreationFixture) lookAt(at time.Duration) (*progressProblem, error) {
	s := &scope{read: f.qj, qj: f.qj.DeepCopy(), now: f.start.Add(at), jobs: []batchv1.Job{f.job}, listed: true}
	err := f.r.checkPodCreation(context.Background(), s)
	return s.problem, err
}

// The events of a podless Job are read at most once per PodCreateGrace, and once a minute
// after two minutes, however often the QueueJob is reconciled; between looks the last
// finding stands, so the condition does not flap.
func TestCheckPodCreationLooksOncePerGrace(t *testing.T) {
	f := newPodCreationFixture()
	start, refused, reader, qj := f.start, f.refused, f.reader, f.qj
	// reconcileAt runs the phase as a reconcile at start+at would, and returns its finding.
	reconcileAt := func(at time.Duration) *progressProblem {
		t.Helper()
		p, err := f.lookAt(at)
		if err != nil {
			t.Fatalf("at %s: %v", at, err)
		}
		return p
	}

	// A reconcile every second for five minutes: the events are read at 10s, 20s, ...
	// 110s, then at 170s, 230s and 290s. The refusal stops at 30s and comes back at 50s:
	// a finding stands until the next look.
	wantLists := 0
	for at := time.Duration(0); at <= 5*time.Minute; at += time.Second {
		switch at {
		case 35 * time.Second:
			reader.events = nil
		case 55 * time.Second:
			reader.events = []corev1.Event{refused}
		}
		early := at >= PodCreateGrace && at < 2*time.Minute && at%PodCreateGrace == 0
		late := at >= 2*time.Minute && (at-110*time.Second)%time.Minute == 0
		if early || late {
			wantLists++
		}
		reported := at >= PodCreateGrace && (at < 40*time.Second || at >= 60*time.Second)
		got := reconcileAt(at)
		if got := got != nil && got.reason == qjv1.ReasonPodsNotCreated; got != reported {
			t.Fatalf("at %s: PodsNotCreated reported %v, want %v", at, got, reported)
		}
		if reader.lists != wantLists {
			t.Fatalf("at %s: %d Lists of events, want %d", at, reader.lists, wantLists)
		}
	}

	// Another Job (the next wave), and the same Job once it has had a pod and lost it, are
	// looked at afresh: the finding of the Job before does not stand for them.
	reader.events, reader.lists = nil, 0
	f.job = podlessJob(qj, "job-2", start)
	if got := reconcileAt(5*time.Minute + time.Second); got != nil || reader.lists != 1 {
		t.Fatalf("another Job: finding %v after %d Lists, want none after 1", got, reader.lists)
	}
	f.job.Status.Active = 1
	reconcileAt(5*time.Minute + 2*time.Second)
	f.job.Status.Active = 0
	reader.events = []corev1.Event{refused}
	if got := reconcileAt(5*time.Minute + 3*time.Second); got == nil || reader.lists != 2 {
		t.Fatalf("a Job that lost its pod: finding %v after %d Lists, want PodsNotCreated after 2", got, reader.lists)
	}
}

// A look at the events that fails keeps the last finding: the condition does not flap to
// WaveRunning and back.
func TestCheckPodCreationKeepsTheFindingOfAFailedLook(t *testing.T) {
	f := newPodCreationFixture()
	if p, err := f.lookAt(PodCreateGrace); err != nil || p == nil {
		t.Fatalf("first look: %v, %v; want the refusal", p, err)
	}
	f.reader.err = errors.New("the API server is away")
	lists := f.reader.lists
	p, err := f.lookAt(2 * PodCreateGrace)
	if err != nil {
		t.Errorf("a failed look failed the reconcile (%v): it would be retried at the reconcile's backoff", err)
	}
	if _, err := f.lookAt(2*PodCreateGrace + time.Second); err != nil || f.reader.lists != lists+1 {
		t.Errorf("%d Lists after a failed look and a reconcile a second later, want 1 (%v)", f.reader.lists-lists, err)
	}
	if p == nil || p.reason != qjv1.ReasonPodsNotCreated {
		t.Errorf("after a failed look the finding is %+v, want the last one (PodsNotCreated)", p)
	}
}
