package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// Section 5: what one probe costs, per backend, with 1, 100 and 1 000 QueueJobs on one
// broker. Each QueueJob has a queue of its own and a connection of its own (the operator's
// probeStates), and is probed every probe interval; the probes of the N QueueJobs are spread
// evenly over the interval, as the operator's jitter spreads them in the long run. The peer
// is the raw client call a minimal prober would make, on the same schedule, in the same run.

const (
	// probeInterval is the operator's default probe interval.
	probeInterval = time.Duration(qjv1.DefaultProbeIntervalSeconds) * time.Second
	// probeReapGrace is the reaper's grace at the default interval: max(minReapGrace,
	// 2×interval) in controllers/probe.go.
	probeReapGrace = max(10*time.Second, 2*probeInterval)
	// Each run lasts at least probeMinIntervals intervals and, unless that takes more than
	// probeMaxIntervals, enough of them for probeMinProbes probes.
	probeMinIntervals = 3
	probeMaxIntervals = 10
	probeMinProbes    = 200
	// probeTimeout bounds one probe (the operator's default probe timeout is 5 s too).
	probeTimeout = 5 * time.Second
	// probeReady and probeInFlight are the items each queue holds: ready ones and, on
	// Redis, leased in-flight ones, so that Reap reads a page and checks leases as it
	// does for a small busy pool.
	probeReady    = 5
	probeInFlight = 3
	// probeWarmConcurrency is how many connections are opened at once before a run.
	probeWarmConcurrency = 16
)

// prober is one QueueJob's probe, as the operator or a peer makes it.
type prober interface {
	probe(ctx context.Context) error
	close()
}

// spreadOffsets are the start offsets, within one interval, of the probes of n QueueJobs
// spread evenly over it: i×interval/n.
func spreadOffsets(n int, interval time.Duration) []time.Duration {
	off := make([]time.Duration, n)
	for i := range off {
		off[i] = time.Duration(int64(interval) * int64(i) / int64(n))
	}
	return off
}

// windowIntervals is how many intervals a run with n QueueJobs lasts: enough for
// minProbes probes, but at least lo and at most hi intervals.
func windowIntervals(n, minProbes, lo, hi int) int {
	k := lo
	if n > 0 {
		k = max(k, (minProbes+n-1)/n)
	}
	return min(k, hi)
}

// probeRun is what one run measured.
type probeRun struct {
	lat      []time.Duration // of the probes that succeeded
	probes   int             // made, failed ones included
	errs     int
	firstErr error
	cpu      time.Duration // this process's user+system time over the run
	wall     time.Duration
}

// runSchedule probes each prober once per interval for intervals intervals, prober i at
// offset i×interval/n of each interval. A probe that overruns delays that prober's next
// one, as a reconcile would; probes of different probers overlap freely.
func runSchedule(ctx context.Context, probers []prober, interval time.Duration, intervals int) probeRun {
	n := len(probers)
	off := spreadOffsets(n, interval)
	lats := make([][]time.Duration, n)
	errs := make([]int, n)
	firstErrs := make([]error, n)
	var wg sync.WaitGroup
	cpu0 := selfCPU()
	start := time.Now().Add(20 * time.Millisecond)
	for i, p := range probers {
		lats[i] = make([]time.Duration, 0, intervals)
		wg.Go(func() {
			t := time.NewTimer(time.Hour)
			defer t.Stop()
			for k := range intervals {
				t.Reset(time.Until(start.Add(off[i] + time.Duration(k)*interval)))
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				pctx, cancel := context.WithTimeout(ctx, probeTimeout)
				t0 := time.Now()
				err := p.probe(pctx)
				d := time.Since(t0)
				cancel()
				if err != nil {
					errs[i]++
					if firstErrs[i] == nil {
						firstErrs[i] = err
					}
					continue
				}
				lats[i] = append(lats[i], d)
			}
		})
	}
	wg.Wait()
	r := probeRun{cpu: selfCPU() - cpu0, wall: time.Since(start)}
	for i := range probers {
		r.lat = append(r.lat, lats[i]...)
		r.errs += errs[i]
		if r.firstErr == nil {
			r.firstErr = firstErrs[i]
		}
	}
	r.probes = len(r.lat) + r.errs
	return r
}

// selfCPU is this process's user plus system time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// warm makes each prober's first probe, which opens its connection: the operator keeps
// one per QueueJob, so the runs measure probes on open connections.
func warm(ctx context.Context, probers []prober) error {
	sem := make(chan struct{}, probeWarmConcurrency)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for i, p := range probers {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := p.probe(pctx); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("connection %d of %d: %w", i+1, len(probers), err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func closeAll(probers []prober) {
	var wg sync.WaitGroup
	for _, p := range probers {
		if p != nil {
			wg.Go(p.close)
		}
	}
	wg.Wait()
}

// ourProbe is what controllers/probe.go's probeAndReap does: Probe, then Reap for a
// backend that leases items.
type ourProbe struct{ b queue.Conn }

func (o ourProbe) probe(ctx context.Context) error {
	if _, err := o.b.Probe(ctx); err != nil {
		return err
	}
	if r, ok := o.b.(queue.Reaper); ok {
		_, err := r.Reap(ctx, time.Now(), probeReapGrace, nil)
		return err
	}
	return nil
}

func (o ourProbe) close() { _ = o.b.Close() }

// rawLLen is a minimal Redis prober: LLEN on a go-redis client of its own.
type rawLLen struct {
	c   *goredis.Client
	key string
}

func (r rawLLen) probe(ctx context.Context) error { return r.c.LLen(ctx, r.key).Err() }
func (r rawLLen) close()                          { _ = r.c.Close() }

// rawDeclare is a minimal RabbitMQ prober: a connection and a channel of its own, kept
// open, and QueueDeclarePassive on it.
type rawDeclare struct {
	url, queue string
	conn       *amqp.Connection
	ch         *amqp.Channel
}

// probe honours ctx although amqp091's calls take none: past ctx's deadline the kept
// connection is closed, which ends a call on it, and the next probe dials again. Only
// this goroutine touches r's fields; a dial that finishes too late is closed.
func (r *rawDeclare) probe(ctx context.Context) error {
	type result struct {
		conn *amqp.Connection
		ch   *amqp.Channel
		err  error
	}
	kept, keptCh := r.conn, r.ch
	done := make(chan result, 1)
	go func() {
		conn, ch := kept, keptCh
		if ch == nil {
			var err error
			if conn, err = amqp.Dial(r.url); err != nil {
				done <- result{err: err}
				return
			}
			if ch, err = conn.Channel(); err != nil {
				_ = conn.Close()
				done <- result{err: err}
				return
			}
		}
		_, err := ch.QueueDeclarePassive(r.queue, false, false, false, false, nil)
		done <- result{conn, ch, err}
	}()
	select {
	case res := <-done:
		r.conn, r.ch = res.conn, res.ch
		if res.err != nil {
			r.close() // a failed declare closes the channel: start again
		}
		return res.err
	case <-ctx.Done():
		r.close()
		go func() {
			if res := <-done; res.conn != nil && res.conn != kept {
				_ = res.conn.Close()
			}
		}()
		return ctx.Err()
	}
}

func (r *rawDeclare) close() {
	if r.conn != nil {
		_ = r.conn.Close()
	}
	r.conn, r.ch = nil, nil
}

// probeBackend is one backend of the section: how to build N of our probers and of the
// peer's, on queues 0..N-1 set up beforehand.
type probeBackend struct {
	name     string
	peerName string
	ours     func(i int) prober
	peer     func(i int) prober
	// serverCPU, if set, is the broker's CPU time so far.
	serverCPU func() (time.Duration, error)
	// what describes our probe and the peer's, for the notes.
	what string
}

// benchProbe is section 5.
func benchProbe(ctx context.Context, res *Results, sizes []int) error {
	title := sectionTitle["probe"]
	maxN := 0
	for _, n := range sizes {
		maxN = max(maxN, n)
	}
	res.Settings["probe"] = fmt.Sprintf("interval %s, probes spread evenly over it, ≥ %d intervals and ≥ %d probes (≤ %d intervals) per run; each queue %d ready items (Redis lists and streams, NATS: and %d leased in flight)",
		probeInterval, probeMinIntervals, probeMinProbes, probeMaxIntervals, probeReady, probeInFlight)

	for _, be := range []struct {
		name  string
		probe func(context.Context, *Results, string, []int, int) error
	}{{"redis", probeRedis}, {"rabbitmq", probeRabbitMQ}, {"redis stream", probeRedisStream}, {"nats", probeNATS}} {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := be.probe(ctx, res, title, sizes, maxN); err != nil {
			logf("probe: %s: %v", be.name, err)
			for _, n := range sizes {
				res.missing(title, probeRowName(be.name, n), err.Error())
			}
		}
	}
	return ctx.Err()
}

// probeRowName names a size's rows: "redis, 100 QueueJobs".
func probeRowName(backend string, n int) string {
	if n == 1 {
		return backend + ", 1 QueueJob"
	}
	return fmt.Sprintf("%s, %d QueueJobs", backend, n)
}

func probeKey(i int) string { return fmt.Sprintf("bench-probe-%d", i) }

func probeRedis(ctx context.Context, res *Results, title string, sizes []int, maxN int) error {
	res.Versions["redis-server"] = redisVersion()
	srv, err := servers.StartRedis("")
	if err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	defer srv.Close()
	setup := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer setup.Close()
	pipe := setup.Pipeline()
	for i := range maxN {
		k := probeKey(i)
		for j := range probeReady {
			pipe.RPush(ctx, k, fmt.Sprintf("item-%d-%d", i, j))
		}
		for j := range probeInFlight {
			item := fmt.Sprintf("inflight-%d-%d", i, j)
			pipe.RPush(ctx, redis.ProcessingKey(k), item)
			pipe.Set(ctx, redis.LeaseKey(k, item), "bench-session", time.Hour)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("fill the lists: %w", err)
	}
	b := probeBackend{
		name:     "redis",
		peerName: "raw LLEN (go-redis)",
		ours: func(i int) prober {
			return ourProbe{redis.New(redis.Options{Address: srv.Addr(), Key: probeKey(i)})}
		},
		peer: func(i int) prober {
			return rawLLen{goredis.NewClient(&goredis.Options{Addr: srv.Addr()}), probeKey(i)}
		},
		serverCPU: func() (time.Duration, error) { return procCPU(srv.PID()) },
		what:      fmt.Sprintf("ours: Probe (one pipeline: TYPE, TYPE, LLEN, LLEN) then Reap (MULTI LLEN+LRANGE of <key>:processing, then a pipeline of EXISTS per in-flight item; %d in flight, all leased); peer: one LLEN", probeInFlight),
	}
	probeSizes(ctx, res, title, b, sizes)
	return nil
}

func probeRabbitMQ(ctx context.Context, res *Results, title string, sizes []int, maxN int) error {
	res.Versions["rabbitmq-server"] = dpkgVersion("rabbitmq-server")
	srv, err := servers.StartRabbitMQ(servers.AMQPReady)
	if err != nil {
		return fmt.Errorf("start rabbitmq-server: %w", err)
	}
	defer srv.Close()
	conn, err := amqp.Dial(srv.URL())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if v, ok := conn.Properties["version"].(string); ok {
		res.Versions["rabbitmq-server"] = v
	}
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	for i := range maxN {
		q := probeKey(i)
		if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
			return fmt.Errorf("declare %s: %w", q, err)
		}
		for j := range probeReady {
			if err := ch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{Body: fmt.Appendf(nil, "item-%d-%d", i, j)}); err != nil {
				return fmt.Errorf("publish to %s: %w", q, err)
			}
		}
	}
	// The publishes are asynchronous: a passive declare on the same channel comes after them.
	if _, err := ch.QueueDeclarePassive(probeKey(maxN-1), false, false, false, false, nil); err != nil {
		return err
	}
	b := probeBackend{
		name:     "rabbitmq",
		peerName: "raw QueueDeclarePassive (amqp091-go)",
		ours: func(i int) prober {
			return ourProbe{rabbitmq.New(rabbitmq.Options{URL: srv.URL(), Queue: probeKey(i)})}
		},
		peer: func(i int) prober { return &rawDeclare{url: srv.URL(), queue: probeKey(i)} },
		what: "ours: Probe without a management URL (QueueDeclarePassive on a channel kept open, in a worker goroutine bounded by the timeout); peer: QueueDeclarePassive on a channel kept open; one connection per QueueJob for both",
	}
	probeSizes(ctx, res, title, b, sizes)
	return nil
}

// probeSizes measures each size; a size that cannot run (too many connections for the
// broker, say) gets a row saying why, and the others still run.
func probeSizes(ctx context.Context, res *Results, title string, b probeBackend, sizes []int) {
	for i, n := range sizes {
		if ctx.Err() != nil {
			return
		}
		if err := probeSize(ctx, res, title, b, n, i == 0); err != nil {
			logf("probe: %s: %v", probeRowName(b.name, n), err)
			res.missing(title, probeRowName(b.name, n), err.Error())
		}
	}
}

// probeSize measures ours, then the peer, with n QueueJobs, and adds the rows.
func probeSize(ctx context.Context, res *Results, title string, b probeBackend, n int, first bool) error {
	intervals := windowIntervals(n, probeMinProbes, probeMinIntervals, probeMaxIntervals)
	measure := func(who string, mk func(int) prober) (probeRun, time.Duration, error) {
		ps := make([]prober, n)
		for i := range ps {
			ps[i] = mk(i)
		}
		defer closeAll(ps)
		if err := warm(ctx, ps); err != nil {
			return probeRun{}, 0, fmt.Errorf("%s: opening %d connections: %w", who, n, err)
		}
		var s0 time.Duration
		if b.serverCPU != nil {
			s0, _ = b.serverCPU()
		}
		logf("probe: %s, %d QueueJobs, %s: %d intervals of %s", b.name, n, who, intervals, probeInterval)
		r := runSchedule(ctx, ps, probeInterval, intervals)
		var srvCPU time.Duration
		if b.serverCPU != nil {
			s1, _ := b.serverCPU()
			srvCPU = s1 - s0
		}
		if ctx.Err() != nil {
			return r, 0, ctx.Err()
		}
		if len(r.lat) == 0 {
			return r, 0, fmt.Errorf("%s: all %d probes failed: %v", who, r.probes, r.firstErr)
		}
		return r, srvCPU, nil
	}
	ours, oursSrv, err := measure("ours", b.ours)
	if err != nil {
		return err
	}
	peer, peerSrv, err := measure(b.peerName, b.peer)
	if err != nil {
		return err
	}
	name := probeRowName(b.name, n)
	note := fmt.Sprintf("%d probes each over %d intervals of %s", ours.probes, intervals, probeInterval)
	if ours.probes < 100 {
		note += " (so p99 is the slowest)"
	}
	for _, f := range []struct {
		who string
		r   probeRun
	}{{"ours", ours}, {"peer", peer}} {
		if f.r.errs > 0 {
			note += fmt.Sprintf("; %s: %d of %d probes failed, counted as the slowest (first: %v)", f.who, f.r.errs, f.r.probes, f.r.firstErr)
		}
	}
	if first {
		note += "; " + b.what
	}
	ms := func(r probeRun, p float64) *float64 { return ptr.To(quantile(r.lat, r.errs, p) * 1e3) }
	res.add(Row{Section: title, Name: name + ": p50", Unit: "ms", Ours: ms(ours, 0.50), Peer: ms(peer, 0.50), PeerName: b.peerName, Note: note})
	res.add(Row{Section: title, Name: name + ": p99", Unit: "ms", Ours: ms(ours, 0.99), Peer: ms(peer, 0.99), PeerName: b.peerName})
	perProbe := func(cpu time.Duration, r probeRun) *float64 {
		return ptr.To(float64(cpu.Microseconds()) / float64(r.probes))
	}
	cpuNote := "this process's CPU (getrusage) over the run ÷ probes: includes the harness's own timers and goroutine wake-ups, not the broker's"
	if ours.probes < 100 {
		cpuNote += fmt.Sprintf("; with %d probes in %s it is mostly the process's idle cost (Go runtime, timers), not the probes'", ours.probes, ours.wall.Round(time.Second))
	}
	if b.serverCPU != nil {
		cpuNote += fmt.Sprintf("; the server's CPU per probe (/proc, 10 ms ticks, its own idle cron included): ours %.0f µs, peer %.0f µs",
			float64(oursSrv.Microseconds())/float64(ours.probes), float64(peerSrv.Microseconds())/float64(peer.probes))
	}
	res.add(Row{Section: title, Name: name + ": CPU per probe", Unit: "µs", Ours: perProbe(ours.cpu, ours), Peer: perProbe(peer.cpu, peer), PeerName: b.peerName, Note: cpuNote})
	return nil
}

// redisVersion is redis-server's version, "7.0.15" from "Redis server v=7.0.15 sha=…".
func redisVersion() string {
	out, err := exec.Command("redis-server", "--version").CombinedOutput()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return strings.TrimSpace(string(out))
}

// dpkgVersion is a Debian package's version, "unknown" if it cannot be read.
func dpkgVersion(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil || len(out) == 0 {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
