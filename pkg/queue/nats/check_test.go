package nats_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
)

// refused says whether err is ReasonWrongType naming field.
func refused(err error, field string) bool {
	return queue.ReasonOf(err) == queue.ReasonWrongType && strings.Contains(fmt.Sprint(err), field)
}

// A consumer whose messages the counts could miss (a delivery limit: a message whose
// workers crashed MaxDeliver times is neither pending nor in flight, yet still in the
// stream; push; a filter that leaves subjects out) is refused by the probe, the workers and qj enqueue, naming
// spec.queue.nats.consumer; one like the workers create, filtered on the stream's subject,
// is used. (A work-queue stream itself refuses consumers with acks other than explicit or
// a deliver policy other than all, and other streams are refused.)
func TestRefusesConsumersTheCountsCannotTrust(t *testing.T) {
	o := options("consumer-check")
	enqueue(t, o, "a")
	js := rawJetStream(t)
	for _, tc := range []struct {
		name string
		cfg  jetstream.ConsumerConfig
		ok   bool
	}{
		{name: "MaxDeliver 2", cfg: jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 2}},
		{name: "push", cfg: jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, DeliverSubject: "push.consumer-check"}},
		{name: "a filter that leaves a subject out", cfg: jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "consumer-check.none"}},
		{name: "filtered on the stream's subject", cfg: jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: o.Stream}, ok: true},
		{name: "unlimited deliveries", cfg: jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1}, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := js.DeleteConsumer(ctx(t), o.Stream, o.Consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Fatal(err)
			}
			tc.cfg.Durable = o.Consumer
			if _, err := js.CreateOrUpdateConsumer(ctx(t), o.Stream, tc.cfg); err != nil {
				t.Fatal(err)
			}
			p := nats.New(o)
			defer func() { _ = p.Close() }()
			_, perr := p.Probe(ctx(t))
			c, cerr := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{})
			if cerr == nil {
				_ = c.Close()
			}
			a := nats.NewAdmin(o, 10*time.Second)
			defer func() { _ = a.Close() }()
			_, _, eerr := a.Enqueue(ctx(t), func() (string, error) { return "", io.EOF }, func(int64) {}, queue.EnqueueOptions{})
			for name, err := range map[string]error{"Probe": perr, "NewConsumer": cerr, "Admin.Enqueue": eerr} {
				if tc.ok && err != nil {
					t.Errorf("%s = %v, want it used", name, err)
				}
				if !tc.ok && !refused(err, "spec.queue.nats.consumer") {
					t.Errorf("%s = %v (reason %s), want WrongType naming spec.queue.nats.consumer", name, err, queue.ReasonOf(err))
				}
			}
		})
	}
}

// A stream that is not a work queue (limits or interest retention) keeps acknowledged
// messages: the probe (with or without the consumer), the workers and qj enqueue refuse
// it, naming spec.queue.nats.stream.
func TestRefusesStreamsThatAreNotWorkQueues(t *testing.T) {
	js := rawJetStream(t)
	for _, tc := range []struct {
		name      string
		retention jetstream.RetentionPolicy
		consumer  bool
	}{
		{name: "limits", retention: jetstream.LimitsPolicy},
		{name: "limits, the consumer exists", retention: jetstream.LimitsPolicy, consumer: true},
		{name: "interest", retention: jetstream.InterestPolicy, consumer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := options("retention-" + fmt.Sprint(int(tc.retention)) + fmt.Sprint(tc.consumer))
			_ = js.DeleteStream(ctx(t), o.Stream)
			if _, err := js.CreateStream(ctx(t), jetstream.StreamConfig{Name: o.Stream, Subjects: []string{o.Stream},
				Retention: tc.retention}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = js.DeleteStream(ctx(t), o.Stream) })
			if _, err := js.Publish(ctx(t), o.Stream, []byte("a")); err != nil {
				t.Fatal(err)
			}
			if tc.consumer {
				if _, err := js.CreateConsumer(ctx(t), o.Stream, jetstream.ConsumerConfig{Durable: o.Consumer,
					AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
					t.Fatal(err)
				}
			}
			p := nats.New(o)
			defer func() { _ = p.Close() }()
			_, perr := p.Probe(ctx(t))
			_, rerr := p.Reap(ctx(t), time.Now(), 0, nil)
			c, cerr := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{})
			if cerr == nil {
				_ = c.Close()
			}
			a := nats.NewAdmin(o, 10*time.Second)
			defer func() { _ = a.Close() }()
			_, _, eerr := a.Enqueue(ctx(t), func() (string, error) { return "", io.EOF }, func(int64) {}, queue.EnqueueOptions{})
			for name, err := range map[string]error{"Probe": perr, "Reap": rerr, "NewConsumer": cerr, "Admin.Enqueue": eerr} {
				if !refused(err, "spec.queue.nats.stream") {
					t.Errorf("%s = %v (reason %s), want WrongType naming spec.queue.nats.stream", name, err, queue.ReasonOf(err))
				}
			}
		})
	}
}

// recreate deletes o's stream, if it exists, and creates it again with cfg (named
// o.Stream), and a consumer of o with filter, if not empty.
func recreate(t *testing.T, o nats.Options, cfg jetstream.StreamConfig, filter string) {
	t.Helper()
	js := rawJetStream(t)
	if err := js.DeleteStream(ctx(t), o.Stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatal(err)
	}
	cfg.Name = o.Stream
	if _, err := js.CreateStream(ctx(t), cfg); err != nil {
		t.Fatal(err)
	}
	if filter != "" {
		if _, err := js.CreateConsumer(ctx(t), o.Stream, jetstream.ConsumerConfig{Durable: o.Consumer,
			AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: filter}); err != nil {
			t.Fatal(err)
		}
	}
}

// A probe that finds the stream gone checks the stream again once it is back: a stream
// re-created with limits retention is refused, not counted with its old checked
// configuration.
func TestProbeChecksAStreamCreatedAgain(t *testing.T) {
	o := options("check-recreated")
	enqueue(t, o, "a")
	t.Cleanup(func() { _ = rawJetStream(t).DeleteStream(context.Background(), o.Stream) })
	p := nats.New(o)
	defer func() { _ = p.Close() }()
	if _, err := p.Probe(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := rawJetStream(t).DeleteStream(ctx(t), o.Stream); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Probe(ctx(t)); queue.ReasonOf(err) != queue.ReasonQueueNotFound {
		t.Fatalf("Probe of a deleted stream = %v, want QueueNotFound", err)
	}
	recreate(t, o, jetstream.StreamConfig{Subjects: []string{o.Stream}, Retention: jetstream.LimitsPolicy}, "")
	if _, err := p.Probe(ctx(t)); !refused(err, "spec.queue.nats.stream") {
		t.Errorf("Probe of the stream created again with limits retention = %v (reason %s), want WrongType naming spec.queue.nats.stream",
			err, queue.ReasonOf(err))
	}
}

// A stream re-created with new subjects between two probes, its consumer too (the probe
// never saw them missing), is checked again after nats.StreamCheckEvery: a consumer
// filtered on the old subject only is refused.
func TestProbeChecksTheStreamAgainAfterAWhile(t *testing.T) {
	defer nats.SetStreamCheckEvery(100 * time.Millisecond)()
	o := options("check-every")
	first := jetstream.StreamConfig{Name: o.Stream, Subjects: []string{o.Stream}, Retention: jetstream.WorkQueuePolicy}
	js := rawJetStream(t)
	_ = js.DeleteStream(ctx(t), o.Stream)
	if _, err := js.CreateStream(ctx(t), first); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rawJetStream(t).DeleteStream(context.Background(), o.Stream) })
	if _, err := js.CreateConsumer(ctx(t), o.Stream, jetstream.ConsumerConfig{Durable: o.Consumer,
		AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: o.Stream}); err != nil {
		t.Fatal(err)
	}
	p := nats.New(o)
	defer func() { _ = p.Close() }()
	if _, err := p.Probe(ctx(t)); err != nil {
		t.Fatal(err)
	}
	recreate(t, o, jetstream.StreamConfig{Subjects: []string{o.Stream, o.Stream + ".b"},
		Retention: jetstream.WorkQueuePolicy}, o.Stream)
	time.Sleep(200 * time.Millisecond) // past StreamCheckEvery: the client's clock, not a sync
	if _, err := p.Probe(ctx(t)); !refused(err, "spec.queue.nats.consumer") {
		t.Errorf("Probe of the stream created again with a subject its consumer filters out = %v (reason %s), "+
			"want WrongType naming spec.queue.nats.consumer", err, queue.ReasonOf(err))
	}
}

// A consumer's filters let the whole stream through when each of the stream's subjects is
// matched by a filter: "*" matches one token, ">" the rest (one token or more); a stream
// subject that is itself a wildcard is covered only by a filter at least as wide.
func TestFiltersAll(t *testing.T) {
	for _, tc := range []struct {
		filters, subjects []string
		want              bool
	}{
		{filters: nil, subjects: []string{"jobs"}, want: true},
		{filters: []string{">"}, subjects: []string{"jobs", "a.b"}, want: true},
		{filters: []string{"jobs"}, subjects: []string{"jobs"}, want: true},
		{filters: []string{"jobs"}, subjects: []string{"jobs", "more"}},
		{filters: []string{"jobs.*"}, subjects: []string{"jobs.a", "jobs.b"}, want: true},
		{filters: []string{"jobs.>"}, subjects: []string{"jobs.a", "jobs.b.c"}, want: true},
		{filters: []string{"jobs.*"}, subjects: []string{"jobs.a", "jobs.b.c"}},
		{filters: []string{"jobs.>"}, subjects: []string{"jobs"}},
		{filters: []string{"jobs.*"}, subjects: []string{"jobs.*"}, want: true},
		{filters: []string{"jobs.>"}, subjects: []string{"jobs.*", "jobs.>"}, want: true},
		{filters: []string{"jobs.*"}, subjects: []string{"jobs.>"}},
		{filters: []string{"jobs.a"}, subjects: []string{"jobs.*"}},
		{filters: []string{"*.a"}, subjects: []string{"jobs.a", "more.a"}, want: true},
		{filters: []string{"*.a"}, subjects: []string{"jobs.b"}},
		{filters: []string{"*"}, subjects: []string{"jobs"}, want: true},
		{filters: []string{"*"}, subjects: []string{">"}},
		{filters: []string{"jobs.a", "other.>"}, subjects: []string{"jobs.a", "other.x.y"}, want: true},
		{filters: []string{"jobs.a", "other.>"}, subjects: []string{"jobs.a", "jobs.b"}},
	} {
		cfg := jetstream.ConsumerConfig{FilterSubjects: tc.filters}
		if got := nats.FiltersAll(cfg, tc.subjects); got != tc.want {
			t.Errorf("filters %q on subjects %q: FiltersAll = %t, want %t", tc.filters, tc.subjects, got, tc.want)
		}
		if len(tc.filters) == 1 {
			cfg = jetstream.ConsumerConfig{FilterSubject: tc.filters[0]}
			if got := nats.FiltersAll(cfg, tc.subjects); got != tc.want {
				t.Errorf("FilterSubject %q on subjects %q: FiltersAll = %t, want %t", tc.filters[0], tc.subjects, got, tc.want)
			}
		}
	}
}
