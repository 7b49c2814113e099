package rabbitmq

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// Probe latency per backend against the real servers TestMain starts. Besides ns/op,
// each benchmark reports the median and 99th percentile of single probes.

func reportPercentiles(b *testing.B, d []time.Duration) {
	b.Helper()
	slices.Sort(d)
	at := func(p float64) float64 { return float64(d[int(float64(len(d)-1)*p)].Microseconds()) }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

func benchProbe(b *testing.B, backend interface {
	Probe(context.Context) (queue.Counts, error)
}) {
	ctx := b.Context()
	if _, err := backend.Probe(ctx); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	d := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if _, err := backend.Probe(ctx); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, d)
}

func BenchmarkRabbitMQProbe(b *testing.B) {
	publish(b, "bench")
	r := New(Options{URL: rabbitServer.URL(), Queue: "bench"})
	defer r.Close()
	benchProbe(b, r)
}
