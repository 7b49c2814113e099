package main

import (
	"context"
	"errors"
	"fmt"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// trialGroup is the consumer group (Redis streams) or durable consumer (NATS) of the
// reaction trials' queues.
const trialGroup = "workers"

// redisStreamQueue is a Redis stream with its consumer group, created empty (MKSTREAM)
// as a user's setup would leave it before the first item.
func redisStreamQueue(rdb *goredis.Client) trialQueue {
	return trialQueue{
		key: func(ns string, i int) string { return fmt.Sprintf("rx:%s:%03d", ns, i) },
		reset: func(ctx context.Context, key string) error {
			if err := rdb.Del(ctx, key).Err(); err != nil {
				return err
			}
			return rdb.XGroupCreateMkStream(ctx, key, trialGroup, "$").Err()
		},
		push: func(ctx context.Context, key string) error {
			return rdb.XAdd(ctx, &goredis.XAddArgs{Stream: key, Values: []any{stream.FieldItem, "item"}}).Err()
		},
	}
}

func redisStreamSource(addr string) func(key string) qjv1.QueueSource {
	return func(key string) qjv1.QueueSource {
		return qjv1.QueueSource{RedisStream: &qjv1.RedisStreamQueue{Address: addr, Stream: key, Group: trialGroup}}
	}
}

// natsQueue is a work-queue stream bound to the subject of its name, with its durable
// consumer, created empty.
func natsQueue(js jetstream.JetStream) trialQueue {
	return trialQueue{
		key: func(ns string, i int) string { return fmt.Sprintf("%s-%03d", ns, i) },
		reset: func(ctx context.Context, key string) error {
			if err := js.DeleteStream(ctx, key); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return err
			}
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: key, Subjects: []string{key},
				Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}); err != nil {
				return err
			}
			_, err := nats.EnsureConsumer(ctx, js, nats.Options{Stream: key, Consumer: trialGroup})
			return err
		},
		push: func(ctx context.Context, key string) error {
			_, err := js.Publish(ctx, key, []byte("item"))
			return err
		},
	}
}

func natsSource(url string) func(key string) qjv1.QueueSource {
	return func(key string) qjv1.QueueSource {
		return qjv1.QueueSource{NATS: &qjv1.NATSQueue{URL: url, Stream: key, Consumer: trialGroup}}
	}
}

// watchedBackend is a backend of reactionWatched: its queues and its QueueJobs' source.
type watchedBackend struct {
	name, tag string
	queue     trialQueue
	source    func(key string) qjv1.QueueSource
}

// reactionWatched is section 1 on a Redis stream and on NATS JetStream: ours at the
// default probe interval with the queue watch (the default), beside ours with
// --watch-queues=false, which finds items by its probes alone. The two settings are two
// runs of the manager, one after the other, on the same control plane.
func (b *bench) reactionWatched(ctx context.Context, cp *ControlPlane, c client.Client) error {
	_, rdb, err := b.redisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	ns, err := servers.StartNATSWith(servers.NATSOptions{})
	if err != nil {
		return fmt.Errorf("start nats-server: %w", err)
	}
	defer ns.Close()
	b.res.Versions["nats-server"] = servers.NATSServerVersion
	nc, err := natsgo.Connect(ns.URL())
	if err != nil {
		return fmt.Errorf("connect to nats-server: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	backends := []watchedBackend{
		{"Redis stream", "stream", redisStreamQueue(rdb), redisStreamSource(b.redis.Addr())},
		{"NATS", "nats", natsQueue(js), natsSource(ns.URL())},
	}
	watched, err := b.reactionRun(ctx, cp, c, backends, "watch")
	if err != nil {
		return err
	}
	polled, err := b.reactionRun(ctx, cp, c, backends, "poll", "--watch-queues=false")
	if err != nil {
		return err
	}
	for i, be := range backends {
		b.addWatchedRows(be.name, watched[i], polled[i])
	}
	return nil
}

// reactionRun starts a manager with extra flags and runs the trials of each backend
// under it, in a namespace of the backend and the run's tag.
func (b *bench) reactionRun(ctx context.Context, cp *ControlPlane, c client.Client, backends []watchedBackend, tag string, extra ...string) ([]trialResult, error) {
	mgr, err := b.startManager(ctx, cp, "reaction-"+tag, extra...)
	if err != nil {
		return nil, err
	}
	defer mgr.Stop()
	res := make([]trialResult, len(backends))
	for i, be := range backends {
		ours := ourPeer(be.source, 0)
		if res[i], err = b.reactionTrials(ctx, cp, c, be.queue, ours, "rx-"+be.tag+"-"+tag, b.o.Trials); err != nil {
			return nil, fmt.Errorf("%s, %s: %w", be.name, tag, err)
		}
	}
	return res, nil
}

func (b *bench) addWatchedRows(name string, watched, polled trialResult) {
	title := sectionTitle["reaction"]
	for _, q := range []struct {
		name string
		p    float64
		goal string
	}{{"p50", 0.50, ""}, {"p99", 0.99, "≤ 1 s"}} {
		row := Row{Section: title, Unit: "s",
			Name:     fmt.Sprintf("%s: %s, default settings (every %d s, with the queue watch)", name, q.name, qjv1.DefaultProbeIntervalSeconds),
			PeerName: fmt.Sprintf("ours with --watch-queues=false (a %d s poll)", qjv1.DefaultProbeIntervalSeconds),
			Ours:     ptr.To(quantile(watched.Latencies, watched.Missed+watched.Early, q.p)),
			Peer:     ptr.To(quantile(polled.Latencies, polled.Missed+polled.Early, q.p)),
			Note:     trialNote("watched", watched) + "; " + trialNote("polled", polled),
		}
		if q.goal != "" {
			row.Goal = q.goal
			row.Met = ptr.To(*row.Ours <= 1)
		}
		b.res.add(row)
	}
}
