package controllers

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// delayedBody holds back every chunk of a watch stream for a while, once the stream's
// initial events (a watch-list's initial list) are through: the events it carries reach
// the informer late, as they do from a slow or distant API server.
type delayedBody struct {
	io.ReadCloser
	delay time.Duration
	// waiting is set while the initial events of a watch-list stream pass undelayed.
	waiting bool
}

func (b *delayedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.waiting {
		b.waiting = !bytes.Contains(p[:n], []byte("k8s.io/initial-events-end"))
		return n, err
	}
	time.Sleep(b.delay)
	return n, err
}

type delayWatches struct {
	next     http.RoundTripper
	resource string
	delay    time.Duration
}

func (d delayWatches) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := d.next.RoundTrip(req)
	q := req.URL.Query()
	if err == nil && q.Get("watch") == "true" && strings.HasSuffix(req.URL.Path, "/"+d.resource) {
		resp.Body = &delayedBody{ReadCloser: resp.Body, delay: d.delay, waiting: q.Get("sendInitialEvents") == "true"}
	}
	return resp, err
}

// withDelayedWatch returns a copy of cfg whose watches of resource deliver their events
// delay late. It speaks HTTP/1.1 over connections of its own: over HTTP/2, a stream read
// slowly would stall every other stream of the connection it shares with other clients.
func withDelayedWatch(cfg *rest.Config, resource string, delay time.Duration) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.NextProtos = []string{"http/1.1"}
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper { return delayWatches{rt, resource, delay} })
	return c
}

// createOwnedJob creates the Job of a wave as the operator would.
func createOwnedJob(qj *qjv1.QueueJob, wave int32, size jobSizing) *batchv1.Job {
	job := desiredJob(qj, wave, size, nil)
	Expect(controllerutil.SetControllerReference(qj, job, scheme)).To(Succeed())
	Expect(k8s.Create(suiteCtx, job)).To(Succeed())
	return job
}

var _ = Describe("A stale Job cache", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("plans no wave while the latest wave the status names is missing from the cache", func() {
		// An empty queue: the running manager plans nothing for this QueueJob by itself.
		qj := redisQJ(ns, "stale", redisSrv.Addr(), "stale-"+ns)
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		first := createOwnedJob(qj, 1, jobSizing{parallelism: 1})
		finishJob(first, true, time.Now(), 1, 0, "CompletionsReached")
		second := createOwnedJob(qj, 2, jobSizing{parallelism: 1})
		Expect(k8s.Get(suiteCtx, client.ObjectKeyFromObject(first), first)).To(Succeed())

		By("reconciling from a status that names wave 2 and a cache that only has the finished wave 1")
		r := &QueueJobReconciler{Client: k8s, APIReader: k8s, Scheme: scheme,
			Recorder: events.NewFakeRecorder(10), Clock: clock.RealClock{}}
		read := qj.DeepCopy()
		read.Status.Waves = 2
		s := &scope{read: read, qj: read.DeepCopy(), now: time.Now(), jobs: []batchv1.Job{*first}, listed: true,
			probe: &probeResult{counts: &queue.Counts{Ready: 5}}}
		Expect(r.ensureWave(suiteCtx, s)).To(Succeed())

		Expect(k8s.Get(suiteCtx, types.NamespacedName{Namespace: ns, Name: "stale-3"}, &batchv1.Job{})).
			NotTo(Succeed(), "a third wave was started beside the running second one")
		Expect(s.plan).NotTo(BeNil())
		Expect(s.plan.create).To(BeNil())
		Expect(s.current().UID).To(Equal(second.UID), "the running wave is read from the API server")
	})

	It("starts no duplicate wave while Job watch events arrive late", func() {
		By("replacing the manager with one whose Job watch events arrive 4s late")
		stopMgr()
		stopMgr, _ = startManagerWith(withDelayedWatch(cfg, "jobs", 4*time.Second))
		DeferCleanup(restartManager)

		c := redisClient(redisSrv.Addr())
		key := "lag-" + ns
		Expect(c.RPush(suiteCtx, key, "a", "b").Err()).To(Succeed())
		qj := redisQJ(ns, "lag", redisSrv.Addr(), key) // probed every second
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		first := theJob(qj)
		Expect(first.Spec.Completions).To(HaveValue(BeEquivalentTo(2)))

		By("finishing wave 1 with items still ready: wave 2 starts, and nothing beside it")
		Expect(c.RPush(suiteCtx, key, "c", "d", "e").Err()).To(Succeed())
		finishJob(first, true, time.Now(), 2, 0, "CompletionsReached")
		Eventually(func(g Gomega) []batchv1.Job { return ownedJobs(g, qj) }, timeout, interval).Should(HaveLen(2))
		Consistently(func(g Gomega) []string {
			var names []string
			for _, j := range ownedJobs(g, qj) {
				names = append(names, j.Name)
			}
			return names
		}, 12*time.Second, 500*time.Millisecond).Should(ConsistOf("lag-1", "lag-2"))
	})

	It("starts no wave after the QueueJob completed while QueueJob watch events arrive late", func() {
		By("replacing the manager with one whose QueueJob watch events arrive 4s late")
		stopMgr()
		stopMgr, _ = startManagerWith(withDelayedWatch(cfg, "queuejobs", 4*time.Second))
		DeferCleanup(restartManager)

		c := redisClient(redisSrv.Addr())
		key := "done-" + ns
		Expect(c.RPush(suiteCtx, key, "a").Err()).To(Succeed())
		qj := redisQJ(ns, "done", redisSrv.Addr(), key) // refill Once, probed every second
		Expect(k8s.Create(suiteCtx, qj)).To(Succeed())
		first := theJob(qj)

		By("draining the queue and finishing wave 1: the QueueJob completes")
		Expect(rediswqWork(c, key)).To(BeTrue())
		finishJob(first, true, time.Now(), 1, 0, "CompletionsReached")
		Eventually(getQJ(ns, "done"), timeout, interval).Should(cond(qjv1.ConditionComplete, metav1.ConditionTrue, qjv1.ReasonQueueDrained))

		By("pushing items right after: for 4s the cache still shows the QueueJob unfinished, and no wave starts")
		Expect(c.RPush(suiteCtx, key, "b", "c").Err()).To(Succeed())
		Consistently(func(g Gomega) []string {
			var names []string
			for _, j := range ownedJobs(g, qj) {
				names = append(names, j.Name)
			}
			return names
		}, 8*time.Second, 250*time.Millisecond).Should(ConsistOf("done-1"), "a wave started after the QueueJob completed")
	})
})
