package nats

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// The counts, Empty and the reaper are right only on a work-queue stream (an
// acknowledged message is deleted, so the stream's messages are the work left) read
// through a consumer that delivers every message, each until it is acknowledged, and
// counts it as pending or unacknowledged until then. Anything else is refused with
// ReasonWrongType, naming the field to fix.

// checkStream refuses a stream that is not a work queue: with limits or interest
// retention acknowledged messages stay, so that a missing consumer's count would include
// them and a consumer created anew would deliver them again.
func checkStream(o Options, cfg jetstream.StreamConfig) error {
	if cfg.Retention != jetstream.WorkQueuePolicy {
		return queue.Errorf(queue.ReasonWrongType, "stream %q has %s retention, not work-queue: its acknowledged "+
			"messages stay, and would be counted and delivered again; fix spec.queue.nats.stream to name a stream "+
			"created with --retention work (nats stream add, or qj enqueue --declare)", o.Stream, cfg.Retention)
	}
	return nil
}

// checkConsumer refuses a consumer whose messages the counts could lose: a push consumer,
// acks other than explicit, a delivery limit (a message delivered MaxDeliver times is
// neither pending nor unacknowledged, yet still in the stream), a delivery policy other
// than all, or a filter that leaves some of the stream's subjects out.
func checkConsumer(o Options, cfg jetstream.ConsumerConfig, stream jetstream.StreamConfig) error {
	why := ""
	switch {
	case cfg.DeliverSubject != "":
		why = "is a push consumer"
	case cfg.AckPolicy != jetstream.AckExplicitPolicy:
		why = "acknowledges with policy " + cfg.AckPolicy.String() + ", not explicit"
	case cfg.MaxDeliver > 0:
		why = "has MaxDeliver set (a message delivered that often would be neither pending nor in flight, and never dead-lettered)"
	case cfg.DeliverPolicy != jetstream.DeliverAllPolicy:
		why = "delivers with policy " + cfg.DeliverPolicy.String() + ", not all"
	case !filtersAll(cfg, stream.Subjects):
		why = "filters out some of the stream's subjects"
	default:
		return nil
	}
	return errBadConsumer(o, why)
}

func errBadConsumer(o Options, why string) *queue.Error {
	return queue.Errorf(queue.ReasonWrongType, "consumer %q of stream %q %s: the queue's counts would miss messages; "+
		"fix spec.queue.nats.consumer to name a durable pull consumer with explicit acks, unlimited deliveries "+
		"(MaxDeliver -1), deliver policy all and no filter leaving out a stream subject, or a name that does not exist yet (the workers create it)",
		o.Consumer, o.Stream, why)
}

// filtersAll says whether the consumer's filters, if any, let every subject of the stream
// through: each is covered by one of the filters.
func filtersAll(cfg jetstream.ConsumerConfig, subjects []string) bool {
	filters := cfg.FilterSubjects
	if cfg.FilterSubject != "" {
		filters = append(filters, cfg.FilterSubject)
	}
	if len(filters) == 0 {
		return true
	}
	for _, s := range subjects {
		if !slices.ContainsFunc(filters, func(f string) bool { return covers(f, s) }) {
			return false
		}
	}
	return true
}

// covers says whether every subject that subject s matches is matched by filter f, token
// by token: "*" matches one token, ">" one token or more. A wildcard of s is covered only
// by one at least as wide ("*" by "*" or ">", ">" by ">").
func covers(f, s string) bool {
	ft, st := strings.Split(f, "."), strings.Split(s, ".")
	for i, t := range ft {
		switch {
		case i == len(st):
			return false
		case t == ">":
			return true
		case st[i] == ">", t != "*" && t != st[i]:
			return false
		}
	}
	return len(ft) == len(st)
}

// streamCheckEvery is how long a checked stream configuration is kept: a stream deleted
// and created again while no probe saw it missing is checked again after it.
var streamCheckEvery = 5 * time.Minute

// streamCheck remembers a stream that passed checkStream, with its configuration: a probe
// checks the stream once, not at each call, and again after streamCheckEvery or once it
// was forgotten (a lookup found the stream or the consumer missing: the stream may come
// back with another configuration).
type streamCheck struct {
	mu  sync.Mutex
	cfg *jetstream.StreamConfig
	at  time.Time
}

// config is the stream's configuration, read and checked on first use.
func (sc *streamCheck) config(ctx context.Context, js jetstream.JetStream, o Options) (jetstream.StreamConfig, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.cfg != nil && time.Since(sc.at) < streamCheckEvery {
		return *sc.cfg, nil
	}
	sc.cfg = nil
	s, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return jetstream.StreamConfig{}, err
	}
	cfg := s.CachedInfo().Config
	if err := checkStream(o, cfg); err != nil {
		return jetstream.StreamConfig{}, err
	}
	sc.cfg, sc.at = &cfg, time.Now()
	return cfg, nil
}

// forgetIfMissing forgets the checked configuration if err says the stream or the
// consumer is missing.
func (sc *streamCheck) forgetIfMissing(err error) {
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		sc.mu.Lock()
		sc.cfg = nil
		sc.mu.Unlock()
	}
}

// lookupConsumer is o's consumer on the stream of configuration stream, checked
// (jetstream.ErrConsumerNotFound if it is missing).
func lookupConsumer(ctx context.Context, js jetstream.JetStream, o Options, stream jetstream.StreamConfig) (jetstream.Consumer, error) {
	cons, err := js.Consumer(ctx, o.Stream, o.Consumer)
	if errors.Is(err, jetstream.ErrNotPullConsumer) {
		return nil, errBadConsumer(o, "is a push consumer")
	}
	if err != nil {
		return nil, err
	}
	if err := checkConsumer(o, cons.CachedInfo().Config, stream); err != nil {
		return nil, err
	}
	return cons, nil
}
