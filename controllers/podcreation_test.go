package controllers

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

var _ = Describe("A Job whose pods cannot be created", func() {
	It("gets the Job controller's FailedCreate report into the Progressing condition, and loses it once pods exist", func() {
		ns := newNamespace()
		qj := queueJob(ns, "psa")
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		job := theJob(qj)

		// What the Job controller does when Pod Security refuses the template: an event on
		// the Job, nothing in its status. envtest has no Job controller, so the spec writes
		// the event itself.
		msg := `pods "psa-x7k2p" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false)`
		now := metav1.NewTime(time.Now())
		Expect(k8s.Create(suiteCtx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("psa.%x", now.UnixNano()), Namespace: ns},
			InvolvedObject: corev1.ObjectReference{Kind: "Job", APIVersion: "batch/v1", Namespace: ns, Name: job.Name, UID: job.UID},
			Reason:         "FailedCreate", Message: "Error creating: " + msg, Type: corev1.EventTypeWarning,
			Source:         corev1.EventSource{Component: "job-controller"},
			FirstTimestamp: now, LastTimestamp: now, Count: 1,
		})).To(Succeed())
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(getQJ(ns, "psa")(g).Status.Conditions, qjv1.ConditionProgressing)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(qjv1.ReasonPodsNotCreated))
			g.Expect(c.Message).To(ContainSubstring(msg))
			g.Expect(c.Message).To(ContainSubstring("Job " + job.Name))
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) { g.Expect(eventsFor(g, qj, qjv1.EventPodsNotCreated)).To(HaveLen(1)) }, timeout, interval).Should(Succeed())

		// Once the namespace allows the pods, the Job runs them: the condition goes.
		runJob(job, 1)
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(getQJ(ns, "psa")(g).Status.Conditions, qjv1.ConditionProgressing)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(qjv1.ReasonJobRunning))
		}, timeout, interval).Should(Succeed())
	})
})
