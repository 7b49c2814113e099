package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
	"github.com/queuejob/queuejob-operator/pkg/worker"
)

type statusOptions struct {
	*options
	events int
}

// statusResult is what -o json|yaml prints.
type statusResult struct {
	QueueJob       string             `json:"queueJob"`
	State          qjv1.State         `json:"state,omitempty"`
	Mode           string             `json:"mode,omitempty"`
	Queue          *queueSummary      `json:"queue,omitempty"`
	Active         int32              `json:"active"`
	Succeeded      int32              `json:"succeeded"`
	Failed         int32              `json:"failed"`
	Waves          int32              `json:"waves"`
	StartTime      *metav1.Time       `json:"startTime,omitempty"`
	CompletionTime *metav1.Time       `json:"completionTime,omitempty"`
	Conditions     []metav1.Condition `json:"conditions"`
	Jobs           []waveJob          `json:"jobs"`
	Pods           []wavePod          `json:"pods"`
	Events         []eventLine        `json:"events"`
	// EventsNote says why events are missing (RBAC), empty otherwise.
	EventsNote string `json:"eventsNote,omitempty"`
}

// queueSummary is the queue as the QueueJob names it and as the operator last counted it.
type queueSummary struct {
	Backend   string `json:"backend"`
	Where     string `json:"where"`
	Ready     int64  `json:"ready"`
	InFlight  int64  `json:"inFlight"`
	Reclaimed int64  `json:"reclaimed,omitempty"`
	// Redelivered counts the items in flight delivered more than once (NATS).
	Redelivered   int64        `json:"redelivered,omitempty"`
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`
	Probed        bool         `json:"probed"`

	// DeadLettered is the count of DeadLetterQueue at the last probe, earlier runs'
	// items included; DeadLetteredThisRun those that came during this QueueJob's run.
	DeadLettered        int64  `json:"deadLettered"`
	DeadLetteredThisRun int64  `json:"deadLetteredThisRun"`
	DeadLetterQueue     string `json:"deadLetterQueue"`
}

type waveJob struct {
	Wave           string       `json:"wave"`
	Name           string       `json:"name"`
	State          string       `json:"state"`
	Completions    string       `json:"completions"`
	Active         int32        `json:"active"`
	Succeeded      int32        `json:"succeeded"`
	Failed         int32        `json:"failed"`
	Created        metav1.Time  `json:"created"`
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Reason is the reason of the Job's terminal condition, if any.
	Reason string `json:"reason,omitempty"`
}

type wavePod struct {
	Name  string `json:"name"`
	Wave  string `json:"wave"`
	Phase string `json:"phase"`
	// Waiting is why a container of the pod waits, as kubectl get pods shows it
	// (ErrImagePull, CrashLoopBackOff, ContainerCreating ...): init containers first.
	Waiting  string      `json:"waiting,omitempty"`
	Ready    string      `json:"ready"`
	Node     string      `json:"node,omitempty"`
	Restarts int32       `json:"restarts"`
	Created  metav1.Time `json:"created"`
}

type eventLine struct {
	Type    string      `json:"type"`
	Reason  string      `json:"reason"`
	Message string      `json:"message"`
	Count   int32       `json:"count,omitempty"`
	Last    metav1.Time `json:"last"`
}

func newStatusCmd(o *options) *cobra.Command {
	s := &statusOptions{options: o}
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a QueueJob's waves, pods, queue and conditions on one screen",
		Long: `Show the QueueJob NAME on one screen: its state, its queue as the operator last counted it,
its conditions with their reasons and messages, its waves (Jobs) with their state and
counts, their pods (phase, node, restarts, age) and its latest events.

It reads the QueueJob, and lists Jobs, pods and events in its namespace, with your
kubeconfig; it reads no Secret and does not talk to the queue (inspect does).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return s.run(cmd.Context(), args[0])
		},
	}
	cmd.Flags().IntVar(&s.events, "events", 10, "How many of the latest events to show; 0 for none.")
	return cmd
}

func (s *statusOptions) run(ctx context.Context, name string) error {
	c, ns, err := s.kubeClient()
	if err != nil {
		return err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	qj, err := getQueueJob(ctx, c, ns, name)
	if err != nil {
		return err
	}
	res := statusResult{
		QueueJob: ns + "/" + name,
		State:    qj.Status.State, Mode: qj.Status.Mode,
		Active: qj.Status.Active, Succeeded: qj.Status.Succeeded, Failed: qj.Status.Failed,
		Waves:     qj.Status.Waves,
		StartTime: qj.Status.StartTime, CompletionTime: qj.Status.CompletionTime,
		Conditions: qj.Status.Conditions,
		Jobs:       []waveJob{}, Pods: []wavePod{}, Events: []eventLine{},
	}
	if res.Conditions == nil {
		res.Conditions = []metav1.Condition{}
	}
	if q := qj.Spec.Queue; q != nil {
		res.Queue = summarizeQueue(q, qj.Status.Queue)
	}
	owned := client.MatchingLabels{qjv1.LabelQueueJob: name}
	var jobs batchv1.JobList
	if err := c.List(ctx, &jobs, client.InNamespace(ns), owned); err != nil {
		return apiError(err, "list", "jobs.batch", ns, fmt.Sprintf("listing the Jobs of QueueJob %s/%s", ns, name))
	}
	for i := range jobs.Items {
		if ownedBy(&jobs.Items[i], qj) {
			res.Jobs = append(res.Jobs, summarizeJob(&jobs.Items[i]))
		}
	}
	sort.Slice(res.Jobs, func(i, j int) bool { return waveLess(res.Jobs[i].Wave, res.Jobs[j].Wave) })
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns), owned); err != nil {
		return apiError(err, "list", "pods", ns, fmt.Sprintf("listing the pods of QueueJob %s/%s", ns, name))
	}
	for i := range pods.Items {
		res.Pods = append(res.Pods, summarizePod(&pods.Items[i]))
	}
	sort.Slice(res.Pods, func(i, j int) bool {
		a, b := res.Pods[i], res.Pods[j]
		if a.Wave != b.Wave {
			return waveLess(a.Wave, b.Wave)
		}
		return a.Name < b.Name
	})
	if s.events > 0 {
		res.Events, res.EventsNote = s.listEvents(ctx, c, qj)
	}
	return s.print(res, func(w io.Writer) { s.human(w, &res) })
}

// ownedBy reports whether the QueueJob controls the Job (an older QueueJob of the same
// name does not).
func ownedBy(obj metav1.Object, qj *qjv1.QueueJob) bool {
	ref := metav1.GetControllerOf(obj)
	return ref == nil || ref.UID == qj.UID
}

func (s *statusOptions) listEvents(ctx context.Context, c client.Client, qj *qjv1.QueueJob) ([]eventLine, string) {
	var evs corev1.EventList
	sel := fields.OneTermEqualSelector("involvedObject.uid", string(qj.UID))
	if err := c.List(ctx, &evs, client.InNamespace(qj.Namespace), client.MatchingFieldsSelector{Selector: sel}); err != nil {
		return []eventLine{}, fmt.Sprintf("events not shown: %v", apiError(err, "list", "events", qj.Namespace, "listing events"))
	}
	out := make([]eventLine, 0, len(evs.Items))
	for _, e := range evs.Items {
		last := e.LastTimestamp
		if last.IsZero() {
			last = metav1.NewTime(e.EventTime.Time)
		}
		if last.IsZero() {
			last = e.CreationTimestamp
		}
		out = append(out, eventLine{Type: e.Type, Reason: e.Reason, Message: e.Message, Count: e.Count, Last: last})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Last.Before(&out[j].Last) })
	if len(out) > s.events {
		out = out[len(out)-s.events:]
	}
	return out, ""
}

func summarizeQueue(q *qjv1.QueueSource, st *qjv1.QueueStatus) *queueSummary {
	qs := &queueSummary{}
	switch {
	case q.Redis != nil:
		qs.Backend = "redis"
		qs.Where = fmt.Sprintf("%s, list %q", q.Redis.Address, q.Redis.Key)
		qs.DeadLetterQueue = redis.FailedKey(q.Redis.Key)
	case q.RabbitMQ != nil:
		qs.Backend = "rabbitmq"
		at := "the URL of Secret " + refName(q.RabbitMQ.URLSecretRef)
		if q.RabbitMQ.URL != "" {
			at = rabbitmq.AddrOf(q.RabbitMQ.URL)
		}
		qs.Where = fmt.Sprintf("queue %q at %s", q.RabbitMQ.Queue, at)
		qs.DeadLetterQueue = rabbitmq.FailedQueue(q.RabbitMQ.Queue)
	case q.NATS != nil:
		qs.Backend = "nats"
		qs.Where, qs.DeadLetterQueue = natsSummary(q.NATS)
	case q.RedisStream != nil:
		qs.Backend = worker.BackendRedisStream
		qs.Where = fmt.Sprintf("%s, stream %q, group %q", q.RedisStream.Address, q.RedisStream.Stream, q.RedisStream.Group)
		qs.DeadLetterQueue = stream.FailedKey(q.RedisStream.Stream)
	}
	if st != nil {
		qs.Ready, qs.InFlight, qs.Reclaimed, qs.LastProbeTime = st.Ready, st.InFlight, st.Reclaimed, st.LastProbeTime
		qs.Probed = st.LastProbeTime != nil
		qs.DeadLettered, qs.DeadLetteredThisRun, qs.Redelivered = st.DeadLettered, st.DeadLetteredThisRun(), st.Redelivered
	}
	return qs
}

func refName(ref *corev1.SecretKeySelector) string {
	if ref == nil {
		return "?"
	}
	return ref.Name
}

func summarizeJob(j *batchv1.Job) waveJob {
	w := waveJob{
		Wave: j.Labels[qjv1.LabelWave], Name: j.Name,
		Active: j.Status.Active, Succeeded: j.Status.Succeeded, Failed: j.Status.Failed,
		Created: j.CreationTimestamp, CompletionTime: j.Status.CompletionTime,
	}
	cond := func(t batchv1.JobConditionType) *batchv1.JobCondition {
		for i := range j.Status.Conditions {
			if c := &j.Status.Conditions[i]; c.Type == t && c.Status == corev1.ConditionTrue {
				return c
			}
		}
		return nil
	}
	switch {
	case cond(batchv1.JobComplete) != nil:
		w.State, w.Reason = "Complete", cond(batchv1.JobComplete).Reason
	case cond(batchv1.JobFailed) != nil:
		w.State, w.Reason = "Failed", cond(batchv1.JobFailed).Reason
	case cond(batchv1.JobSuccessCriteriaMet) != nil:
		w.State, w.Reason = "Completing", cond(batchv1.JobSuccessCriteriaMet).Reason
	case cond(batchv1.JobFailureTarget) != nil:
		w.State, w.Reason = "Failing", cond(batchv1.JobFailureTarget).Reason
	case j.Annotations[qjv1.AnnotationWaveEnded] != "":
		w.State = "Ending"
	case j.Spec.Suspend != nil && *j.Spec.Suspend:
		w.State = "Suspended"
	case j.Status.Active > 0:
		w.State = "Running"
	default:
		w.State = "Pending"
	}
	if j.Spec.Completions != nil {
		w.Completions = fmt.Sprintf("%d/%d", j.Status.Succeeded, *j.Spec.Completions)
	} else {
		par := int32(1)
		if j.Spec.Parallelism != nil {
			par = *j.Spec.Parallelism
		}
		w.Completions = fmt.Sprintf("%d/1 of %d", j.Status.Succeeded, par)
	}
	return w
}

func summarizePod(p *corev1.Pod) wavePod {
	wp := wavePod{Name: p.Name, Wave: p.Labels[qjv1.LabelWave], Phase: string(p.Status.Phase), Node: p.Spec.NodeName, Created: p.CreationTimestamp}
	if p.DeletionTimestamp != nil {
		wp.Phase = "Terminating"
	}
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && wp.Waiting == "" {
			wp.Waiting = w.Reason
		}
	}
	ready := 0
	for _, cs := range p.Status.ContainerStatuses {
		wp.Restarts += cs.RestartCount
		if cs.Ready {
			ready++
		}
	}
	wp.Ready = fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers))
	return wp
}

// waveLess orders wave labels numerically.
func waveLess(a, b string) bool {
	x, errA := strconv.Atoi(a)
	y, errB := strconv.Atoi(b)
	if errA != nil || errB != nil {
		return a < b
	}
	return x < y
}

func (s *statusOptions) human(w io.Writer, r *statusResult) {
	now := s.now()
	since := func(t *metav1.Time) string {
		if t == nil || t.IsZero() {
			return "-"
		}
		return age(now.Sub(t.Time))
	}
	state := string(r.State)
	if state == "" {
		state = "(not reconciled yet: is the operator running?)"
	}
	fmt.Fprintf(w, "QueueJob:   %s\n", r.QueueJob)
	fmt.Fprintf(w, "State:      %s", state)
	if r.Mode != "" {
		fmt.Fprintf(w, "  (mode %s)", r.Mode)
	}
	fmt.Fprintln(w)
	if q := r.Queue; q != nil {
		fmt.Fprintf(w, "Queue:      %s %s\n", q.Backend, q.Where)
		if q.Probed {
			redelivered := ""
			if q.Redelivered > 0 {
				redelivered = fmt.Sprintf(" (%d redelivered)", q.Redelivered)
			}
			fmt.Fprintf(w, "            %d ready, %d in flight%s, %d reclaimed (counts dated %s ago)\n", q.Ready, q.InFlight, redelivered, q.Reclaimed, since(q.LastProbeTime))
			fmt.Fprintf(w, "            %d dead-lettered during this run, %d in %s in all\n", q.DeadLetteredThisRun, q.DeadLettered, q.DeadLetterQueue)
		} else {
			fmt.Fprintf(w, "            not probed yet\n")
		}
	}
	fmt.Fprintf(w, "Pods:       %d active, %d succeeded, %d failed (all waves)\n", r.Active, r.Succeeded, r.Failed)
	fmt.Fprintf(w, "Waves:      %d", r.Waves)
	if r.StartTime != nil {
		fmt.Fprintf(w, ", started %s ago", since(r.StartTime))
	}
	if r.CompletionTime != nil {
		fmt.Fprintf(w, ", finished %s ago", since(r.CompletionTime))
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "\nConditions:")
	if len(r.Conditions) == 0 {
		fmt.Fprintln(w, "  none")
	} else {
		rows := make([][]any, len(r.Conditions))
		for i, c := range r.Conditions {
			rows[i] = []any{c.Type, c.Status, c.Reason, since(&c.LastTransitionTime), oneLine(c.Message)}
		}
		table(indent(w), "TYPE\tSTATUS\tREASON\tAGE\tMESSAGE", rows)
	}

	fmt.Fprintln(w, "\nWaves:")
	if len(r.Jobs) == 0 {
		fmt.Fprintln(w, "  none")
	} else {
		rows := make([][]any, len(r.Jobs))
		for i, j := range r.Jobs {
			state := j.State
			if j.Reason != "" {
				state += " (" + j.Reason + ")"
			}
			rows[i] = []any{j.Wave, j.Name, state, j.Completions, j.Active, j.Succeeded, j.Failed, since(&j.Created)}
		}
		table(indent(w), "WAVE\tJOB\tSTATE\tCOMPLETIONS\tACTIVE\tSUCCEEDED\tFAILED\tAGE", rows)
	}

	podsTable(w, r.Pods, since)

	if s.events > 0 {
		fmt.Fprintln(w, "\nEvents:")
		switch {
		case r.EventsNote != "":
			fmt.Fprintf(w, "  %s\n", r.EventsNote)
		case len(r.Events) == 0:
			fmt.Fprintln(w, "  none")
		default:
			rows := make([][]any, len(r.Events))
			for i, e := range r.Events {
				rows[i] = []any{since(&e.Last), e.Type, e.Reason, oneLine(e.Message)}
			}
			table(indent(w), "LAST SEEN\tTYPE\tREASON\tMESSAGE", rows)
		}
	}
	warnings(w, r)
}

// podsTable lists the pods of the waves, with why a container waits beside the phase.
func podsTable(w io.Writer, pods []wavePod, since func(*metav1.Time) string) {
	fmt.Fprintln(w, "\nPods:")
	if len(pods) == 0 {
		fmt.Fprintln(w, "  none")
		return
	}
	rows := make([][]any, len(pods))
	for i, p := range pods {
		node := p.Node
		if node == "" {
			node = "<none>"
		}
		phase := p.Phase
		if p.Waiting != "" {
			phase += " (" + p.Waiting + ")"
		}
		rows[i] = []any{p.Name, p.Wave, phase, p.Ready, node, p.Restarts, since(&p.Created)}
	}
	table(indent(w), "NAME\tWAVE\tPHASE\tREADY\tNODE\tRESTARTS\tAGE", rows)
}

// warnings ends the human output with what stops the QueueJob, on its own lines: the
// conditions' table above holds it too, among the rest.
func warnings(w io.Writer, r *statusResult) {
	if c := meta.FindStatusCondition(r.Conditions, qjv1.ConditionQueueReachable); c != nil && c.Status == metav1.ConditionFalse {
		fmt.Fprintf(w, "\nThe operator cannot reach the queue (%s): %s\n", c.Reason, oneLine(c.Message))
	}
	if c := meta.FindStatusCondition(r.Conditions, qjv1.ConditionProgressing); c != nil && c.Reason == qjv1.ReasonPodsCannotStart {
		fmt.Fprintf(w, "\nThe pods cannot start (%s): %s\n", c.Reason, oneLine(c.Message))
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
