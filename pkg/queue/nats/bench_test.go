package nats_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/pkg/worker"
)

// Probe latency and worker throughput against the real server TestMain starts (make
// bench-micro). Besides ns/op, the probe benchmarks report the median and 99th
// percentile of single probes.

func reportPercentiles(b *testing.B, d []time.Duration) {
	b.Helper()
	slices.Sort(d)
	at := func(p float64) float64 { return float64(d[int(float64(len(d)-1)*p)].Microseconds()) }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// benchStream creates a work-queue stream with its consumer, deleted after the benchmark.
func benchStream(b *testing.B, name string) nats.Options {
	b.Helper()
	o := options(name)
	o.Timeout = 30 * time.Second
	enqueue(b, o)
	js := rawJetStream(b)
	if _, err := nats.EnsureConsumer(b.Context(), js, o); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	return o
}

// rawJetStream is a JetStream client of the package's server, closed after the test.
func rawJetStream(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	nc, err := natsgo.Connect(natsServer.URL(), natsgo.UserInfo(natsServer.User(), natsServer.Password()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// BenchmarkNATSProbe is the operator's probe (stream info, consumer info, the dead-letter
// stream's info), next to BenchmarkNATSConsumerInfoRaw, the one call a raw client makes.
func BenchmarkNATSProbe(b *testing.B) {
	o := benchStream(b, "bench-probe")
	c := nats.New(o)
	defer func() { _ = c.Close() }()
	timed(b, func() error { _, err := c.Probe(b.Context()); return err })
}

func BenchmarkNATSConsumerInfoRaw(b *testing.B) {
	o := benchStream(b, "bench-info")
	cons, err := rawJetStream(b).Consumer(b.Context(), o.Stream, o.Consumer)
	if err != nil {
		b.Fatal(err)
	}
	timed(b, func() error { _, err := cons.Info(b.Context()); return err })
}

func timed(b *testing.B, f func() error) {
	if err := f(); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	d := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, d)
}

// BenchmarkNATSThroughput measures items/s through the worker library (Worker.Run with a
// handler that does nothing: a pull of one message, a confirmed ack) with 1 and 8
// workers, each with a connection of its own as in separate pods, next to a raw pull
// loop (Fetch 1, then an ack without waiting for the server's answer) with as many
// connections, each rate also as a share of the raw one (%-of-raw).
func BenchmarkNATSThroughput(b *testing.B) {
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			share := func(i int) int {
				n := b.N / workers
				if i < b.N%workers {
					n++
				}
				return n
			}
			raw := drain(b, fmt.Sprintf("bench-raw-%d", workers), workers, share, rawLoop)
			lib := drain(b, fmt.Sprintf("bench-lib-%d", workers), workers, share, libLoop)
			b.ReportMetric(lib, "run-items/s")
			b.ReportMetric(raw, "raw-pull-items/s")
			b.ReportMetric(100*lib/raw, "run-%-of-raw")
		})
	}
}

// drain fills a fresh stream with b.N items and returns the items/s of workers loops.
func drain(b *testing.B, stream string, workers int, share func(int) int, loop func(b *testing.B, o nats.Options, n int)) float64 {
	b.StopTimer()
	o := benchStream(b, stream)
	items := make([]string, b.N)
	for i := range items {
		items[i] = fmt.Sprintf("item-%09d", i)
	}
	enqueue(b, o, items...)
	b.StartTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range workers {
		if share(i) > 0 {
			wg.Go(func() { loop(b, o, share(i)) })
		}
	}
	wg.Wait()
	rate := float64(b.N) / time.Since(start).Seconds()
	b.StopTimer()
	return rate
}

func rawLoop(b *testing.B, o nats.Options, n int) {
	cons, err := rawJetStream(b).Consumer(context.Background(), o.Stream, o.Consumer)
	if err != nil {
		b.Error(err)
		return
	}
	for got := 0; got < n; {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Error(err)
			return
		}
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				b.Error(err)
				return
			}
			got++
		}
	}
}

func libLoop(b *testing.B, o nats.Options, n int) {
	w, err := worker.New(context.Background(), worker.Options{Backend: worker.BackendNATS, NATS: o, LeaseTTL: 30 * time.Second})
	if err != nil {
		b.Error(err)
		return
	}
	defer func() { _ = w.Close() }()
	if _, err := w.Run(context.Background(), func(context.Context, *worker.Item) error { return nil }, worker.RunOptions{Items: n}); err != nil {
		b.Error(err)
	}
}
