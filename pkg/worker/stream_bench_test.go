package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
)

// BenchmarkRedisStreamThroughput measures items/s through the library on a Redis stream
// with 1 and 8 concurrent workers, each a Worker of its own as in separate pods, next to
// a raw XREADGROUP + XACK loop with as many clients (each its own consumer) on the same
// server in the same run, each rate as a share of the raw one (%-of-raw). run: Worker.Run
// with a handler that does nothing (1 round trip an item: XACK + XDEL and the next
// XREADGROUP in one MULTI). lease+complete: Worker.Lease and Item.Complete (2 round trips:
// XREADGROUP, then XACK + XDEL). An op is one item of each of the three loops.
func BenchmarkRedisStreamThroughput(b *testing.B) {
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			o := stream.Options{Address: redisServer.Addr(), Stream: fmt.Sprintf("bench-stream-%d", workers), Group: "g"}
			ctx := context.Background()
			c := goredis.NewClient(&goredis.Options{Addr: redisServer.Addr(), DisableIdentity: true})
			defer c.Close()
			fill := func() {
				b.StopTimer()
				c.Del(ctx, o.Stream)
				c.XGroupCreateMkStream(ctx, o.Stream, o.Group, "0")
				p := c.Pipeline()
				for i := range b.N {
					p.XAdd(ctx, &goredis.XAddArgs{Stream: o.Stream, Values: []any{stream.FieldItem, fmt.Sprintf("item-%09d", i)}})
				}
				if _, err := p.Exec(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			share := func(i int) int {
				n := b.N / workers
				if i < b.N%workers {
					n++
				}
				return n
			}
			raw := streamRaw(b, o, workers, share, fill)

			ws := make([]*Worker, workers)
			for i := range ws {
				ws[i] = newWorker(b, Options{Backend: BackendRedisStream, RedisStream: o})
			}
			fill()
			start := time.Now()
			var wg sync.WaitGroup
			for i, w := range ws {
				if share(i) == 0 {
					continue // Items 0 would mean "until the queue is empty"
				}
				wg.Go(func() {
					if _, err := w.Run(ctx, func(context.Context, *Item) error { return nil }, RunOptions{Items: share(i)}); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
			lib := float64(b.N) / time.Since(start).Seconds()

			fill()
			start = time.Now()
			for i, w := range ws {
				wg.Go(func() {
					for range share(i) {
						it, err := w.Lease(ctx)
						if err != nil {
							b.Error(err)
							return
						}
						if err := it.Complete(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			api := float64(b.N) / time.Since(start).Seconds()
			b.StopTimer()
			if n := c.XLen(ctx, o.Stream).Val(); n != 0 {
				b.Errorf("%d entries left in the stream", n)
			}
			b.ReportMetric(lib, "run-items/s")
			b.ReportMetric(api, "lease+complete-items/s")
			b.ReportMetric(raw, "raw-xreadgroup+xack-items/s")
			b.ReportMetric(100*lib/raw, "run-%-of-raw")
			b.ReportMetric(100*api/raw, "lease+complete-%-of-raw")
		})
	}
}

// streamRaw is the items/s of the raw loop: XREADGROUP COUNT 1, then XACK, one client
// and consumer per worker.
func streamRaw(b *testing.B, o stream.Options, workers int, share func(int) int, fill func()) float64 {
	ctx := context.Background()
	clients := make([]*goredis.Client, workers)
	for i := range clients {
		clients[i] = goredis.NewClient(&goredis.Options{Addr: o.Address, DisableIdentity: true})
		defer clients[i].Close()
		clients[i].Ping(ctx)
	}
	fill()
	start := time.Now()
	var wg sync.WaitGroup
	for i, rc := range clients {
		wg.Go(func() {
			args := &goredis.XReadGroupArgs{Group: o.Group, Consumer: fmt.Sprintf("raw-%d", i), Streams: []string{o.Stream, ">"}, Count: 1, Block: -1}
			for range share(i) {
				res, err := rc.XReadGroup(ctx, args).Result()
				if err != nil {
					b.Error(err)
					return
				}
				if err := rc.XAck(ctx, o.Stream, o.Group, res[0].Messages[0].ID).Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(b.N) / time.Since(start).Seconds()
}
