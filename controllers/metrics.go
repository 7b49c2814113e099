package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics, registered with controller-runtime's registry and served on its metrics
// endpoint. Per-QueueJob series (the gauges) are deleted with their QueueJob.
var (
	queueReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "queuejob_queue_ready_items",
		Help: "Items waiting in the queue of a QueueJob, as of its last successful probe.",
	}, []string{"namespace", "queuejob"})
	queueInFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "queuejob_queue_in_flight_items",
		Help: "Items taken by a worker and not yet finished, as of the last successful probe.",
	}, []string{"namespace", "queuejob"})
	queueDeadLettered = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "queuejob_queue_dead_lettered_items",
		Help: "Items in the dead-letter list or queue of a QueueJob's queue (Redis <key>:failed, RabbitMQ <queue>.failed), earlier runs' included, as of the last successful probe.",
	}, []string{"namespace", "queuejob"})
	queueLastProbe = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "queuejob_queue_last_probe_timestamp_seconds",
		Help: "When the queue of a QueueJob was last probed successfully, in seconds since the Unix epoch (status.queue.lastProbeTime moves only when the counts change).",
	}, []string{"namespace", "queuejob"})
	queueWakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "queuejob_queue_wakes_total",
		Help: "Writes to a watched queue (Redis) that made a QueueJob waiting on an empty queue probe at once, instead of at its next probe.",
	}, []string{"backend"})
	probeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "queuejob_probe_duration_seconds",
		Help:    "How long probing a queue took, lease reaping included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"backend"})
	probeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "queuejob_probe_errors_total",
		Help: "Failed queue probes, by backend and reason.",
	}, []string{"backend", "reason"})
	jobsCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "queuejob_jobs_created_total",
		Help: "Jobs (waves) the operator created, by mode (None for QueueJobs without a queue).",
	}, []string{"mode"})
	leasesReclaimed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "queuejob_leases_reclaimed_total",
		Help: "In-flight items of gone workers (their pods ended, or their leases expired) that the operator returned to the queue.",
	}, []string{"backend"})
	objectsCleanedUp = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "queuejob_objects_cleaned_up_total",
		Help: "Finished Jobs and pods deleted by cleanup (TTL, history limits, ended waves).",
	}, []string{"kind"})
)

func init() {
	metrics.Registry.MustRegister(queueReady, queueInFlight, queueDeadLettered, queueLastProbe, queueWakes, probeDuration, probeErrors, jobsCreated, leasesReclaimed, objectsCleanedUp)
}
