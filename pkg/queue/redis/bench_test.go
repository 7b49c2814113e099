package redis

import (
	"context"
	"fmt"
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

func BenchmarkRedisProbe(b *testing.B) {
	c := New(Options{Address: redisServer.Addr(), Key: "bench"})
	defer c.Close()
	benchProbe(b, c)
}

// BenchmarkRedisReap measures one reaper pass over n in-flight items that all hold a
// lease (the steady state of a busy worker pool).
func BenchmarkRedisReap(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("inflight=%d", n), func(b *testing.B) {
			k := fmt.Sprintf("bench-reap-%d", n)
			r := New(Options{Address: redisServer.Addr(), Key: k})
			defer r.Close()
			ctx := b.Context()
			r.client.Del(ctx, k, ProcessingKey(k))
			pipe := r.client.Pipeline()
			for i := range n {
				item := fmt.Sprintf("item-%d", i)
				pipe.RPush(ctx, ProcessingKey(k), item)
				pipe.Set(ctx, LeaseKey(k, item), "s", time.Hour)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			d := make([]time.Duration, 0, b.N)
			now := time.Now()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if got, err := r.Reap(ctx, now, time.Second, nil); err != nil || got != 0 {
					b.Fatalf("Reap = %d, %v", got, err)
				}
				d = append(d, time.Since(start))
			}
			b.StopTimer()
			reportPercentiles(b, d)
		})
	}
}
