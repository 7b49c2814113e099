package main

import (
	"context"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// Section 5's backends with broker-side leases: Redis streams and NATS JetStream. Their
// leases last an hour here, so that no run's reaper returns an in-flight item to the
// queue and the runs of ours and the peer's find the same queues.
const probeLease = time.Hour

// probeGroup is the consumer group (Redis) or durable consumer (NATS) of every queue.
const probeGroup = "workers"

// rawStreamInfo is a minimal Redis streams prober: XINFO GROUPS and XPENDING (the
// summary form) in one pipeline, on a go-redis client of its own.
type rawStreamInfo struct {
	c   *goredis.Client
	key string
}

func (r rawStreamInfo) probe(ctx context.Context) error {
	_, err := r.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.XInfoGroups(ctx, r.key)
		p.XPending(ctx, r.key, probeGroup)
		return nil
	})
	return err
}

func (r rawStreamInfo) close() { _ = r.c.Close() }

func probeRedisStream(ctx context.Context, res *Results, title string, sizes []int, maxN int) error {
	res.Versions["redis-server"] = redisVersion()
	srv, err := servers.StartRedis("")
	if err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	defer srv.Close()
	setup := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), DisableIdentity: true})
	defer setup.Close()
	pipe := setup.Pipeline()
	for i := range maxN {
		k := probeKey(i)
		pipe.XGroupCreateMkStream(ctx, k, probeGroup, "0")
		for j := range probeInFlight + probeReady {
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: k, Values: []any{stream.FieldItem, fmt.Sprintf("item-%d-%d", i, j)}})
		}
		// The first probeInFlight entries are delivered to a worker and not acknowledged.
		pipe.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: probeGroup, Consumer: "worker-0", Streams: []string{k, ">"},
			Count: probeInFlight, Block: -1})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("fill the streams: %w", err)
	}
	b := probeBackend{
		name:     "redis stream",
		peerName: "raw XINFO GROUPS + XPENDING (go-redis)",
		ours: func(i int) prober {
			return ourProbe{stream.New(stream.Options{Address: srv.Addr(), Stream: probeKey(i), Group: probeGroup, LeaseTTL: probeLease})}
		},
		peer: func(i int) prober {
			return rawStreamInfo{goredis.NewClient(&goredis.Options{Addr: srv.Addr(), DisableIdentity: true}), probeKey(i)}
		},
		serverCPU: func() (time.Duration, error) { return procCPU(srv.PID()) },
		what: fmt.Sprintf("ours: Probe (one pipeline: TYPE and XLEN of the stream and of <stream>:failed, XINFO GROUPS) then Reap "+
			"(one pipeline: XPENDING IDLE past the lease and XINFO CONSUMERS; %d pending, none expired); peer: XINFO GROUPS + XPENDING in one pipeline", probeInFlight),
	}
	probeSizes(ctx, res, title, b, sizes)
	return nil
}

// rawConsumerInfo is a minimal NATS prober: a connection of its own, kept open, and the
// consumer's info on it.
type rawConsumerInfo struct {
	url, stream string
	nc          *natsgo.Conn
	cons        jetstream.Consumer
}

func (r *rawConsumerInfo) probe(ctx context.Context) error {
	if r.cons == nil {
		nc, err := natsgo.Connect(r.url)
		if err != nil {
			return err
		}
		js, err := jetstream.New(nc)
		if err == nil {
			r.cons, err = js.Consumer(ctx, r.stream, probeGroup)
		}
		if err != nil {
			nc.Close()
			return err
		}
		r.nc = nc
		return nil // the lookup was a consumer info already
	}
	_, err := r.cons.Info(ctx)
	return err
}

func (r *rawConsumerInfo) close() {
	if r.nc != nil {
		r.nc.Close()
	}
	r.nc, r.cons = nil, nil
}

func probeNATS(ctx context.Context, res *Results, title string, sizes []int, maxN int) error {
	res.Versions["nats-server"] = servers.NATSServerVersion
	srv, err := servers.StartNATSWith(servers.NATSOptions{})
	if err != nil {
		return fmt.Errorf("start nats-server: %w", err)
	}
	defer srv.Close()
	if err := fillNATS(ctx, srv.URL(), maxN); err != nil {
		return err
	}
	b := probeBackend{
		name:     "nats",
		peerName: "raw consumer info (nats.go jetstream)",
		ours: func(i int) prober {
			return ourProbe{nats.New(nats.Options{Servers: []string{srv.URL()}, Stream: probeKey(i), Consumer: probeGroup})}
		},
		peer:      func(i int) prober { return &rawConsumerInfo{url: srv.URL(), stream: probeKey(i)} },
		serverCPU: func() (time.Duration, error) { return procCPU(srv.PID()) },
		what: fmt.Sprintf("ours: Probe (consumer info, then the dead-letter stream's info: two requests) then Reap "+
			"(consumer info: it pulls only when nothing is ready; %d delivered and not acknowledged); peer: consumer info; one connection per QueueJob for both", probeInFlight),
	}
	probeSizes(ctx, res, title, b, sizes)
	return nil
}

// fillNATS creates n work-queue streams with their durable consumer (AckWait probeLease),
// each with probeReady ready messages and probeInFlight delivered and not acknowledged.
func fillNATS(ctx context.Context, url string, n int) error {
	nc, err := natsgo.Connect(url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for i := range n {
		name := probeKey(i)
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name},
			Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}); err != nil {
			return fmt.Errorf("create stream %s: %w", name, err)
		}
		cons, err := nats.EnsureConsumer(ctx, js, nats.Options{Stream: name, Consumer: probeGroup, AckWait: probeLease})
		if err != nil {
			return fmt.Errorf("create consumer of %s: %w", name, err)
		}
		for j := range probeInFlight + probeReady {
			if _, err := js.Publish(ctx, name, fmt.Appendf(nil, "item-%d-%d", i, j)); err != nil {
				return fmt.Errorf("publish to %s: %w", name, err)
			}
		}
		batch, err := cons.Fetch(probeInFlight, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("fetch from %s: %w", name, err)
		}
		got := 0
		for range batch.Messages() {
			got++
		}
		if got != probeInFlight {
			return fmt.Errorf("fetch from %s: %d messages, want %d (%v)", name, got, probeInFlight, batch.Error())
		}
	}
	return nil
}
