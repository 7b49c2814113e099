package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// defaultPodStartGrace is how long the pods of a running Job must all be blocked from
// starting (see podStartBlock) before the operator says so, and how long they must have
// started since before it stops saying so.
const defaultPodStartGrace = 20 * time.Second

// maxBlockMessage bounds the kubelet's message the cache keeps of a pod and the condition
// repeats.
const maxBlockMessage = 512

// podUnfinishedKey indexes the pods that have not finished and are not being deleted by
// the UID of the Job that controls them, so that checkPodStart reads the current Job's
// pods and not every pod of every wave.
const podUnfinishedKey = ".status.unfinished.job"

// blockingWaits are the reasons the kubelet gives a waiting container that waiting alone
// does not fix: a person must (the image, the template, a Secret or ConfigMap that env or
// envFrom refers to, the program). ContainerCreating and PodInitializing are not among
// them, nor is a pod the scheduler has no node for yet (a cluster autoscaler may add one).
var blockingWaits = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true,
	"ImageInspectError": true, "CreateContainerConfigError": true, "CreateContainerError": true,
	"RunContainerError": true, "CrashLoopBackOff": true, "PreStartHookError": true, "PostStartHookError": true,
}

// podBlock is why a pod cannot start: the kubelet's reason for a waiting container.
type podBlock struct {
	reason, container, message string
}

// podStartBlock is why a pod that has not finished cannot start, if it is blocked: its
// first init container, then its first container, waiting for a blocking reason. Nil
// otherwise. It reads only what trimPod keeps.
func podStartBlock(pod *corev1.Pod) *podBlock {
	if !podUnfinished(pod) {
		return nil
	}
	for _, statuses := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, cs := range statuses {
			if w := cs.State.Waiting; w != nil && blockingWaits[w.Reason] {
				return &podBlock{reason: blockFamily(w.Reason), container: cs.Name, message: w.Message}
			}
		}
	}
	return nil
}

// blockFamily names the kubelet's alternating reasons once: an image pull that failed is
// ErrImagePull, then ImagePullBackOff until the next try, and so on.
func blockFamily(reason string) string {
	if reason == "ErrImagePull" {
		return "ImagePullBackOff"
	}
	return reason
}

// podUnfinished reports whether a pod has neither finished nor begun to be deleted: the
// pods podUnfinishedKey indexes, and the only ones whose block counts.
func podUnfinished(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp == nil && !podTerminal(pod)
}

// podTerminal reports whether a pod's phase is Succeeded or Failed: its containers have
// all stopped, and none restarts.
func podTerminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// podStartBlockReason is the reason of podStartBlock, "" if none: the pod watch wakes the
// QueueJob when it changes.
func podStartBlockReason(pod *corev1.Pod) string {
	if b := podStartBlock(pod); b != nil {
		return b.reason
	}
	return ""
}

// podStartWatch is what checkPodStart remembers of a QueueJob's current Job between
// reconciles: since when all its pods have been blocked, since when (after a report) they
// have not been, and the report.
type podStartWatch struct {
	job                       types.UID
	blockedSince, startedFrom time.Time
	reported                  *progressProblem
	// reasons are the reasons of the report, sorted: its message stays while they do.
	reasons string
}

// checkPodStart finds out why the pods of a running Job do not start. Neither the kubelet
// nor the Job controller reports a pod whose image cannot be pulled, whose Secret is
// missing or that crash-loops anywhere but in the pod: the Job counts it active for ever.
// So once every pod of the current Job that has not finished has been blocked
// (podStartBlock) for the grace, the Progressing condition says why (PodsCannotStart);
// it goes once they have not all been blocked for the grace (a crash loop runs its pod
// for moments between its back-offs). It reads the Job's pods from the cache, and not at
// all while some are ready and nothing was reported; the pod watch wakes the QueueJob when
// a pod becomes blocked or stops being so.
func (r *QueueJobReconciler) checkPodStart(ctx context.Context, s *scope) error {
	key := client.ObjectKeyFromObject(s.qj)
	w := s.wave()
	if w.job == nil {
		r.podStarts.forget(key)
		return nil
	}
	prev, remembered := r.podStarts.load(key)
	st := watchFor(prev, remembered, s.read, w.job)
	if s.problem != nil || !w.createsPods() || w.job.DeletionTimestamp != nil || w.job.Status.Active == 0 ||
		st.reported == nil && ptr.Deref(w.job.Status.Ready, 0) > 0 {
		// Nothing to report, and it is remembered as such: a later reconcile must not take
		// a status read from a lagging cache for a report that stands.
		r.podStarts.store(key, podStartWatch{job: w.job.UID})
		return nil
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(s.qj.Namespace),
		client.MatchingFields{podUnfinishedKey: string(w.job.UID)}, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing the pods of Job %s: %w", w.job.Name, err)
	}
	st = st.next(w.job, blockedPodsOf(w.job, pods.Items), s.now, r.podStartGrace())
	r.podStarts.store(key, st)
	if st.reported != nil {
		p := *st.reported // the memo's own stays as it was made
		s.problem = &p
	}
	s.requeue(st.wait(s.now, r.podStartGrace()))
	return nil
}

// watchFor is the watch to go on with for the QueueJob's current Job: the remembered one;
// an empty one for a Job it has not seen; and on the first look since the manager
// started, the report of this Job that the status holds (an earlier manager's), which
// stands until the pods have started for the grace.
func watchFor(prev podStartWatch, remembered bool, qj *qjv1.QueueJob, job *batchv1.Job) podStartWatch {
	switch {
	case !remembered:
		return podStartWatchFromStatus(qj, job)
	case prev.job != job.UID:
		return podStartWatch{job: job.UID}
	}
	return prev
}

// podStartWatchFromStatus picks up a report of this Job that the status holds.
func podStartWatchFromStatus(qj *qjv1.QueueJob, job *batchv1.Job) podStartWatch {
	st := podStartWatch{job: job.UID}
	c := meta.FindStatusCondition(qj.Status.Conditions, qjv1.ConditionProgressing)
	if c != nil && c.Reason == qjv1.ReasonPodsCannotStart && strings.HasPrefix(c.Message, podStartPrefix(job)) {
		st.reported = &progressProblem{reason: c.Reason, message: c.Message}
		st.blockedSince = c.LastTransitionTime.Time
	}
	return st
}

// next is the watch after a look at the pods (blocked nil: not all of them are blocked,
// or none is left); its report, if any, is the problem to report.
func (st podStartWatch) next(job *batchv1.Job, blocked *blockedPods, now time.Time, grace time.Duration) podStartWatch {
	if blocked != nil {
		st.startedFrom = time.Time{}
		if st.blockedSince.IsZero() {
			st.blockedSince = now
		}
		switch {
		case st.reported != nil && st.reasons == blocked.reasons():
			// The same reasons: the same message, though pods come and go.
		case st.reported == nil && now.Sub(st.blockedSince) < grace:
		default:
			st.reported = &progressProblem{reason: qjv1.ReasonPodsCannotStart, message: blocked.message(job)}
			st.reasons = blocked.reasons()
		}
		return st
	}
	if st.reported == nil {
		return podStartWatch{job: st.job}
	}
	st.blockedSince = time.Time{}
	if st.startedFrom.IsZero() {
		st.startedFrom = now
	}
	if now.Sub(st.startedFrom) < grace {
		return st
	}
	return podStartWatch{job: st.job}
}

// wait is how long until the watch's verdict changes by time alone: a report due, or one
// to withdraw.
func (st podStartWatch) wait(now time.Time, grace time.Duration) time.Duration {
	switch {
	case st.reported == nil && !st.blockedSince.IsZero():
		return grace - now.Sub(st.blockedSince)
	case st.reported != nil && !st.startedFrom.IsZero():
		return grace - now.Sub(st.startedFrom)
	}
	return 0
}

// blockedPods are the pods of a Job that cannot start, by reason, with the block of the
// first pod (by name) of each.
type blockedPods struct {
	names map[string][]string
	first map[string]*podBlock
}

// blockedPodsOf is the blocked pods of job among pods: nil if one of its pods that has
// not finished is not blocked, or if none is left.
func blockedPodsOf(job *batchv1.Job, pods []corev1.Pod) *blockedPods {
	b := &blockedPods{names: map[string][]string{}, first: map[string]*podBlock{}}
	firstName := map[string]string{}
	for i := range pods {
		pod := &pods[i]
		if !metav1.IsControlledBy(pod, job) || !podUnfinished(pod) {
			continue
		}
		blk := podStartBlock(pod)
		if blk == nil {
			return nil
		}
		b.names[blk.reason] = append(b.names[blk.reason], pod.Name)
		if n, ok := firstName[blk.reason]; !ok || pod.Name < n {
			b.first[blk.reason], firstName[blk.reason] = blk, pod.Name
		}
	}
	if len(b.names) == 0 {
		return nil
	}
	return b
}

// reasons are the reasons the pods are blocked for, sorted.
func (b *blockedPods) reasons() string {
	return strings.Join(slices.Sorted(maps.Keys(b.names)), ",")
}

func podStartPrefix(job *batchv1.Job) string {
	return fmt.Sprintf("The pods of Job %s cannot start: ", job.Name)
}

// message says which pods cannot start and why: the reason most pods share first, with the
// kubelet's message of one of its pods, then the others.
func (b *blockedPods) message(job *batchv1.Job) string {
	reasons := strings.Split(b.reasons(), ",")
	slices.SortStableFunc(reasons, func(x, y string) int { return len(b.names[y]) - len(b.names[x]) })
	var sb strings.Builder
	sb.WriteString(podStartPrefix(job))
	for i, reason := range reasons {
		if i > 0 {
			sb.WriteString("; ")
		}
		blk := b.first[reason]
		sb.WriteString(reason)
		fmt.Fprintf(&sb, " (container %q)", blk.container)
		if i == 0 && blk.message != "" {
			fmt.Fprintf(&sb, ": %s", blk.message)
		}
		fmt.Fprintf(&sb, " [%s]", namePods(b.names[reason]))
	}
	sb.WriteString(". They start once the cause is fixed; a change of spec.jobTemplate applies to the next wave only")
	return sb.String()
}

// namePods names up to three pods, sorted, and counts the rest.
func namePods(names []string) string {
	names = slices.Sorted(slices.Values(names))
	switch {
	case len(names) == 1:
		return "pod " + names[0]
	case len(names) <= 3:
		return "pods " + strings.Join(names, ", ")
	}
	return fmt.Sprintf("pods %s and %d more", strings.Join(names[:3], ", "), len(names)-3)
}

func (r *QueueJobReconciler) podStartGrace() time.Duration {
	if r.PodStartGrace == 0 {
		return defaultPodStartGrace
	}
	return r.PodStartGrace
}
