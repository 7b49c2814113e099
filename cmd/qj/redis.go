package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// failedKey is the dead-letter list of a Redis queue: items that failed maxAttempts times.
func failedKey(key string) string { return redis.FailedKey(key) }

// Redis batching: each RPUSH/LPUSH carries up to redisBatch items, and up to redisDepth of
// them go in one pipeline (one round trip).
const (
	redisBatch = 1000
	redisDepth = 16
)

// redisClient opens a go-redis client for the target; it connects on first use.
func redisClient(o *redis.Options, timeout time.Duration) *goredis.Client {
	return goredis.NewClient(&goredis.Options{
		Addr: o.Address, Username: o.Username, Password: o.Password, DB: o.DB,
		TLSConfig:   o.TLS,
		DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
		PoolSize: 2, MaxRetries: -1, DisableIdentity: true,
	})
}

// redisPreflight checks that the list can be reached and read, with pkg/queue's probe
// (the operator's own checks: connection, TLS, credentials, the keys' types), and returns
// its counts.
func redisPreflight(ctx context.Context, t *target, timeout time.Duration) (queue.Counts, error) {
	o := *t.Redis
	o.Timeout = timeout
	b := redis.New(o)
	defer func() { _ = b.Close() }()
	counts, err := b.Probe(ctx)
	if err != nil {
		return counts, fmt.Errorf("%s: %w", t.where(), t.explain(err))
	}
	return counts, nil
}

// redisEnqueue pushes the items onto the list in pipelined batches: RPUSH at the tail, as
// the Kubernetes docs' producer does (rediswq workers take from the tail, so the last item
// pushed is taken first), or with fifo LPUSH at the head (items are taken in the order
// given, after those already waiting). It returns how many items were pushed for sure,
// and, after an error, how many more may have been (their replies were lost).
func redisEnqueue(ctx context.Context, rc *goredis.Client, key string, fifo bool, items itemSource, prog *progress) (pushed, unsure int64, err error) {
	batch := make([][]any, 0, redisDepth)
	cur := make([]any, 0, redisBatch)
	flush := func() error {
		if len(cur) > 0 {
			batch = append(batch, cur)
			cur = make([]any, 0, redisBatch)
		}
		if len(batch) == 0 {
			return nil
		}
		cmds, err := rc.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, b := range batch {
				if fifo {
					p.LPush(ctx, key, b...)
				} else {
					p.RPush(ctx, key, b...)
				}
			}
			return nil
		})
		for i, c := range cmds {
			n := int64(len(batch[i]))
			switch {
			case c.Err() == nil:
				pushed += n
				prog.add(n)
			case !errors.Is(c.Err(), goredis.Nil) && isReplyError(c.Err()):
				// The server answered with an error: not pushed.
			default:
				unsure += n
			}
		}
		batch = batch[:0]
		return err
	}
	for {
		item, rerr := items.Next()
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			if err := flush(); err != nil {
				return pushed, unsure, err
			}
			return pushed, unsure, rerr
		}
		cur = append(cur, item)
		if len(cur) == redisBatch {
			batch = append(batch, cur)
			cur = make([]any, 0, redisBatch)
			if len(batch) == redisDepth {
				if err := flush(); err != nil {
					return pushed, unsure, err
				}
			}
		}
	}
	return pushed, unsure, flush()
}

// isReplyError reports whether the server answered the command with an error (so it did
// nothing), rather than the reply being lost.
func isReplyError(err error) bool {
	var re goredis.Error
	return errors.As(err, &re)
}

// redisLease is an in-flight item with its lease.
type redisLease struct {
	Item string `json:"item"`
	// Holder is the lease key's value: the worker's session id in rediswq.
	Holder string `json:"holder,omitempty"`
	// TTLSeconds is the lease's time left; null when the lease key is gone (the worker
	// died, or has not written it yet: the operator's reaper returns such an item) or
	// never expires.
	TTLSeconds *float64 `json:"ttlSeconds,omitempty"`
	// State: "leased", "no lease" (gone: the reaper returns the item), or "no expiry".
	State string `json:"state"`
}

// redisInspection is what inspect shows of a Redis queue.
type redisInspection struct {
	Key string `json:"key"`
	// Ready counts the waiting items; Next are the first of them in the order workers take
	// them (from the list's tail).
	Ready int64    `json:"ready"`
	Next  []string `json:"next"`
	// InFlight counts <key>:processing; Leases are its oldest items (the tail) first.
	InFlight int64        `json:"inFlight"`
	Leases   []redisLease `json:"leases"`
	// Failed counts <key>:failed, the dead-lettered items; FailedItems are its first ones.
	Failed      int64    `json:"failed"`
	FailedItems []string `json:"failedItems"`
}

func redisInspect(ctx context.Context, rc *goredis.Client, key string, limit int64) (*redisInspection, error) {
	proc, failed := redis.ProcessingKey(key), failedKey(key)
	var readyLen, procLen, failedLen *goredis.IntCmd
	var next, inflight, dead *goredis.StringSliceCmd
	// One MULTI: counts and items of one moment.
	if _, err := rc.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		readyLen = p.LLen(ctx, key)
		next = p.LRange(ctx, key, -limit, -1)
		procLen = p.LLen(ctx, proc)
		inflight = p.LRange(ctx, proc, -limit, -1)
		failedLen = p.LLen(ctx, failed)
		dead = p.LRange(ctx, failed, 0, limit-1)
		return nil
	}); err != nil {
		return nil, err
	}
	in := &redisInspection{
		Key:   key,
		Ready: readyLen.Val(), Next: next.Val(),
		InFlight: procLen.Val(),
		Failed:   failedLen.Val(), FailedItems: dead.Val(),
	}
	// Workers take from the tail: the next item is the list's last.
	slices.Reverse(in.Next)
	items := inflight.Val()
	slices.Reverse(items)
	holders := make([]*goredis.StringCmd, len(items))
	ttls := make([]*goredis.DurationCmd, len(items))
	if len(items) > 0 {
		if _, err := rc.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, it := range items {
				holders[i] = p.Get(ctx, redis.LeaseKey(key, it))
				ttls[i] = p.PTTL(ctx, redis.LeaseKey(key, it))
			}
			return nil
		}); err != nil && !errors.Is(err, goredis.Nil) {
			return nil, err
		}
	}
	for i, it := range items {
		l := redisLease{Item: it, Holder: holders[i].Val()}
		switch ttl := ttls[i].Val(); {
		case ttl == -2 || holders[i].Err() != nil:
			// -2: no such key.
			l.State = "no lease"
		case ttl == -1:
			l.State = "no expiry"
		default:
			s := ttl.Seconds()
			l.TTLSeconds = &s
			l.State = "leased"
		}
		in.Leases = append(in.Leases, l)
	}
	if in.Next == nil {
		in.Next = []string{}
	}
	if in.Leases == nil {
		in.Leases = []redisLease{}
	}
	if in.FailedItems == nil {
		in.FailedItems = []string{}
	}
	return in, nil
}
