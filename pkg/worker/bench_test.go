package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// BenchmarkRedisThroughput measures items/s through the library with 1 and 8 concurrent
// workers, each a Worker of its own as in separate pods, next to a raw LMOVE loop with as
// many clients on the same server in the same run, each rate as a share of the raw one
// (%-of-raw). run: Worker.Run with a handler that does nothing (2 round trips an item: the
// complete script pipelined with the next LMOVE, then the claim script).
// lease+complete: a loop of Worker.Lease and Item.Complete (3 round trips: LMOVE, claim,
// complete). Every item gets its lease, its attempt count and its keeper goroutine. An op
// is one item of each of the three loops.
func BenchmarkRedisThroughput(b *testing.B) {
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			k := fmt.Sprintf("bench-throughput-%d", workers)
			ctx := context.Background()
			c := goredis.NewClient(&goredis.Options{Addr: redisServer.Addr(), DisableIdentity: true})
			defer c.Close()
			fill := func() {
				b.StopTimer()
				c.Del(ctx, k, redis.ProcessingKey(k), redis.AttemptsKey(k))
				p := c.Pipeline()
				for i := range b.N {
					p.LPush(ctx, k, fmt.Sprintf("item-%09d", i))
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

			// The raw loop: LMOVE only, one client per worker.
			clients := make([]*goredis.Client, workers)
			for i := range clients {
				clients[i] = goredis.NewClient(&goredis.Options{Addr: redisServer.Addr(), DisableIdentity: true})
				defer clients[i].Close()
				clients[i].Ping(ctx)
			}
			fill()
			start := time.Now()
			var wg sync.WaitGroup
			for i, rc := range clients {
				wg.Go(func() {
					for range share(i) {
						if err := rc.LMove(ctx, k, redis.ProcessingKey(k), "RIGHT", "LEFT").Err(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			raw := float64(b.N) / time.Since(start).Seconds()

			// The library's loop: Run, which completes an item and takes the next in one
			// round trip, then claims it.
			ws := make([]*Worker, workers)
			for i := range ws {
				ws[i] = newRedisWorker(b, k, Options{})
			}
			fill()
			start = time.Now()
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

			// The API a worker writes its own loop with: Lease, then Complete.
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
			if n := c.LLen(ctx, redis.ProcessingKey(k)).Val(); n != 0 {
				b.Errorf("%d items left in flight", n)
			}
			b.ReportMetric(lib, "run-items/s")
			b.ReportMetric(api, "lease+complete-items/s")
			b.ReportMetric(raw, "raw-lmove-items/s")
			b.ReportMetric(100*lib/raw, "run-%-of-raw")
			b.ReportMetric(100*api/raw, "lease+complete-%-of-raw")
		})
	}
}
