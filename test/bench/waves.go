package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Section 8: n QueueJobs and n ScaledJobs, idle, each on an empty Redis list of its own;
// then an item pushed onto every list at once (one pipeline): how long until each has
// its Job, and how many API requests that cost each operator. Both at their defaults.

// wavesSettle is how long after the last Job the operators' requests are still counted:
// the status writes that follow a Job's creation.
const wavesSettle = 10 * time.Second

func (b *bench) waves(ctx context.Context) error {
	const tag = "waves"
	title := sectionTitle["waves"]
	ctx, cp, c, done, err := b.setup(ctx, tag, 1000)
	if err != nil {
		return err
	}
	defer done()
	rs, rdb, err := b.redisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	mgr, err := b.startManager(ctx, cp, tag)
	if err != nil {
		return err
	}
	defer mgr.Stop()
	keda, kedaErr := b.startKEDA(ctx, cp, tag)
	if kedaErr == nil {
		defer keda.Stop()
	}
	n := b.o.QueueJobs
	sides, err := wavesSides(ctx, c, cp, rs.Addr(), mgr, keda, kedaErr, n)
	if err != nil {
		return err
	}
	// Every list of both at once.
	p := rdb.Pipeline()
	for _, s := range sides {
		for j := range n {
			p.RPush(ctx, s.key(j), "item")
		}
	}
	t0 := time.Now()
	if _, err := p.Exec(ctx); err != nil {
		return err
	}
	for i := range sides {
		if err := sides[i].await(ctx, n, t0); err != nil {
			return err
		}
	}
	b.wavesReport(title, sides, n, kedaErr)
	return nil
}

// wavesSides creates each operator's n idle objects, each on a list of its own, and waits
// until every one has looked at its queue.
func wavesSides(ctx context.Context, c client.Client, cp *ControlPlane, redisAddr string, mgr, keda *Operator, kedaErr error, n int) ([]wavesSide, error) {
	sides := []wavesSide{{op: mgr, ns: "waves-qj", peer: ourPeer(redisList(redisAddr), 0)}}
	if kedaErr == nil {
		sides = append(sides, wavesSide{op: keda, ns: "waves-keda", peer: kedaPeer(redisAddr, 0)})
	}
	for i := range sides {
		s := &sides[i]
		if err := createNamespace(ctx, c, s.ns); err != nil {
			return nil, err
		}
		var objs []client.Object
		for j := range n {
			objs = append(objs, s.peer.make(s.ns, fmt.Sprintf("w-%04d", j), s.key(j)))
		}
		if err := createAll(ctx, c, objs); err != nil {
			return nil, err
		}
		s.jobs = watchJobs(ctx, cp.Clientset, s.ns)
	}
	for _, s := range sides {
		if err := waitFor(ctx, 10*time.Minute, 2*time.Second, s.peer.Name+": every object ready", func() (bool, error) {
			return s.peer.ready(ctx, c, s.ns, n)
		}); err != nil {
			return nil, err
		}
	}
	var err error
	for i := range sides {
		if sides[i].before, err = sides[i].op.Sample(ctx); err != nil {
			return nil, err
		}
	}
	return sides, nil
}

// wavesReport adds section 8's rows.
func (b *bench) wavesReport(title string, sides []wavesSide, n int, kedaErr error) {
	row := func(name, unit string, ours, peer func(s wavesSide) float64, note string) {
		r := Row{Section: title, Name: name, Unit: unit, Ours: ptr.To(ours(sides[0])), PeerName: "KEDA ScaledJob", Note: note}
		if kedaErr == nil {
			r.Peer = ptr.To(peer(sides[1]))
		} else {
			r.Note += "; KEDA not measured: " + kedaErr.Error()
		}
		b.res.add(r)
	}
	q := func(p float64) func(s wavesSide) float64 {
		return func(s wavesSide) float64 { return quantile(s.latencies, 0, p) }
	}
	row(fmt.Sprintf("each of %d gets its Job, p50", n), "s", q(0.5), q(0.5), "from one pipeline that pushed an item onto every list; ours probes every 2 s and watches Redis, KEDA polls every 30 s (the defaults)")
	row(fmt.Sprintf("all %d have their Job", n), "s", q(1), q(1), "")
	perObject := func(s wavesSide) float64 { return float64(s.requests) / float64(n) }
	row("API requests per object, until 10 s after its operator's last Job", "", perObject, perObject,
		"ours: "+formatCounts(sides[0].counts)+kedaCounts(sides))
}

// kedaCounts is KEDA's requests for the note, if it ran.
func kedaCounts(sides []wavesSide) string {
	if len(sides) < 2 {
		return ""
	}
	return "; KEDA: " + formatCounts(sides[1].counts)
}

// wavesSide is one operator's half of section 8.
type wavesSide struct {
	op        *Operator
	ns        string
	peer      peer
	jobs      *JobWatch
	before    Sample
	latencies []time.Duration
	requests  int64
	counts    map[string]int64
}

func (s wavesSide) key(i int) string { return fmt.Sprintf("%s:%04d", s.ns, i) }

// await waits until each of the side's n objects has a Job, records how long each took
// from t0, and counts the requests until wavesSettle after the last.
func (s *wavesSide) await(ctx context.Context, n int, t0 time.Time) error {
	if err := waitFor(ctx, 10*time.Minute, 100*time.Millisecond, s.peer.Name+": every object has its Job", func() (bool, error) {
		s.latencies = s.latencies[:0]
		for j := range n {
			at, ok := s.jobs.Created(fmt.Sprintf("w-%04d", j))
			if !ok {
				return false, nil
			}
			s.latencies = append(s.latencies, at.Sub(t0))
		}
		return true, nil
	}); err != nil {
		return err
	}
	slices.Sort(s.latencies)
	last := t0.Add(s.latencies[len(s.latencies)-1])
	settle(ctx, time.Until(last.Add(wavesSettle)))
	after, err := s.op.Sample(ctx)
	if err != nil {
		return err
	}
	s.counts, s.requests = countsDelta(s.before.Requests, after.Requests)
	logf("%s: %d Jobs, the last %.1f s after the push; %d API requests", s.peer.Name, n, s.latencies[len(s.latencies)-1].Seconds(), s.requests)
	return nil
}
