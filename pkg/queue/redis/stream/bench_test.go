package stream

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Probe latency of the Redis Streams backend against the real server TestMain starts,
// beside the raw calls the issue names (XINFO GROUPS + XPENDING, pipelined). Besides
// ns/op, each benchmark reports the median and 99th percentile of single calls.

func reportPercentiles(b *testing.B, d []time.Duration) {
	b.Helper()
	slices.Sort(d)
	at := func(p float64) float64 { return float64(d[int(float64(len(d)-1)*p)].Microseconds()) }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// timed runs call b.N times, recording each call's latency.
func timed(b *testing.B, call func(ctx context.Context) error) {
	ctx := b.Context()
	if err := call(ctx); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	d := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if err := call(ctx); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, d)
}

// BenchmarkRedisStreamProbe: the probe (TYPE and XLEN of the stream and its :failed
// stream, XINFO GROUPS, one round trip) and the raw XINFO GROUPS + XPENDING pipeline, on
// a stream of 1 000 entries, 100 of them pending for 8 consumers.
func BenchmarkRedisStreamProbe(b *testing.B) {
	o := Options{Address: redisServer.Addr(), Stream: "bench-probe", Group: "g"}
	ctx := context.Background()
	c := goredis.NewClient(&goredis.Options{Addr: redisServer.Addr(), DisableIdentity: true})
	defer c.Close()
	c.Del(ctx, o.Stream)
	c.XGroupCreateMkStream(ctx, o.Stream, o.Group, "0")
	p := c.Pipeline()
	for i := range 1000 {
		p.XAdd(ctx, &goredis.XAddArgs{Stream: o.Stream, Values: []any{FieldItem, fmt.Sprintf("item-%d", i)}})
	}
	for i := range 100 {
		p.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: o.Group, Consumer: fmt.Sprintf("c%d", i%8), Streams: []string{o.Stream, ">"}, Count: 1, Block: -1})
	}
	if _, err := p.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("probe", func(b *testing.B) {
		conn := New(o)
		defer conn.Close()
		timed(b, func(ctx context.Context) error {
			n, err := conn.Probe(ctx)
			if err == nil && (n.Ready != 900 || n.InFlight != 100) {
				err = fmt.Errorf("Probe = %+v, want 900 ready, 100 in flight", n)
			}
			return err
		})
	})
	b.Run("raw-xinfo-groups+xpending", func(b *testing.B) {
		timed(b, func(ctx context.Context) error {
			_, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
				p.XInfoGroups(ctx, o.Stream)
				p.XPending(ctx, o.Stream, o.Group)
				return nil
			})
			return err
		})
	})
}

// BenchmarkRedisStreamReap measures one reaper pass over n pending entries of 8 live
// consumers, none of them past its lease (the steady state of a busy worker pool).
func BenchmarkRedisStreamReap(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("inflight=%d", n), func(b *testing.B) {
			o := Options{Address: redisServer.Addr(), Stream: fmt.Sprintf("bench-reap-%d", n), Group: "g", LeaseTTL: time.Hour}
			ctx := context.Background()
			c := goredis.NewClient(&goredis.Options{Addr: redisServer.Addr(), DisableIdentity: true})
			defer c.Close()
			c.Del(ctx, o.Stream)
			c.XGroupCreateMkStream(ctx, o.Stream, o.Group, "0")
			p := c.Pipeline()
			for i := range n {
				p.XAdd(ctx, &goredis.XAddArgs{Stream: o.Stream, Values: []any{FieldItem, fmt.Sprintf("item-%d", i)}})
			}
			for i := range 8 {
				p.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: o.Group, Consumer: fmt.Sprintf("c%d", i), Streams: []string{o.Stream, ">"}, Count: int64(n / 8), Block: -1})
			}
			if _, err := p.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			r := New(o)
			defer r.Close()
			timed(b, func(ctx context.Context) error {
				got, err := r.Reap(ctx, time.Now(), time.Second, nil)
				if err == nil && got != 0 {
					err = fmt.Errorf("Reap = %d, want 0", got)
				}
				return err
			})
		})
	}
}
