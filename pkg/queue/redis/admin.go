package redis

import (
	"context"
	"errors"
	"io"
	"slices"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	goredis "github.com/redis/go-redis/v9"
)

var (
	_ queue.Admin     = (*Admin)(nil)
	_ queue.ItemAdmin = (*Admin)(nil)
)

// Batching of Admin.Enqueue: each RPUSH/LPUSH carries up to enqueueBatch items, and up to
// enqueueDepth of them go in one pipeline (one round trip).
const (
	enqueueBatch = 1000
	enqueueDepth = 16
)

// Admin is qj's side of a Redis list: enqueue, inspect, count the dead-lettered items.
type Admin struct {
	o       Options
	timeout time.Duration
	// client is go-redis's, made on first use; it connects on first use.
	client *goredis.Client
}

// NewAdmin returns qj's side of the list of o, each call bounded by timeout. It connects
// on first use.
func NewAdmin(o Options, timeout time.Duration) *Admin {
	return &Admin{o: o, timeout: timeout}
}

// Probe checks that the list can be reached and read, with the operator's probe
// (connection, TLS, credentials, the keys' types), and returns its counts.
func (a *Admin) Probe(ctx context.Context, _ bool) (queue.Counts, error) {
	o := a.o
	o.Timeout = a.timeout
	p := New(o)
	defer func() { _ = p.Close() }()
	return p.Probe(ctx)
}

// Open makes the client; it connects on first use.
func (a *Admin) Open(context.Context) error {
	a.redis()
	return nil
}

// redis is the go-redis client, made on first use: NewClient's, as a worker's, with
// timeouts of a.timeout and two connections.
func (a *Admin) redis() *goredis.Client {
	if a.client == nil {
		o := a.o
		o.Timeout = a.timeout
		a.client = NewClient(o, 2)
	}
	return a.client
}

// Close closes the client.
func (a *Admin) Close() error {
	if a.client == nil {
		return nil
	}
	return a.client.Close()
}

// Enqueue pushes the items onto the list in pipelined batches: RPUSH at the tail, as the
// Kubernetes docs' producer does (rediswq workers take from the tail, so the last item
// pushed is taken first), or with o.FIFO LPUSH at the head (items are taken in the order
// given, after those already waiting).
func (a *Admin) Enqueue(ctx context.Context, next func() (string, error), added func(int64), o queue.EnqueueOptions) (pushed, unsure int64, err error) {
	rc, key := a.redis(), a.o.Key
	batch := make([][]any, 0, enqueueDepth)
	cur := make([]any, 0, enqueueBatch)
	flush := func() error {
		if len(cur) > 0 {
			batch = append(batch, cur)
			cur = make([]any, 0, enqueueBatch)
		}
		if len(batch) == 0 {
			return nil
		}
		cmds, err := rc.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, b := range batch {
				if o.FIFO {
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
				added(n)
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
		item, rerr := next()
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
		if len(cur) == enqueueBatch {
			batch = append(batch, cur)
			cur = make([]any, 0, enqueueBatch)
			if len(batch) == enqueueDepth {
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

// CountFailed counts <key>:failed.
func (a *Admin) CountFailed(ctx context.Context) (int64, string, error) {
	failed := FailedKey(a.o.Key)
	n, err := a.redis().LLen(ctx, failed).Result()
	return n, failed, err
}

// RequeueItem moves one dead-lettered copy of item back into the list (WQ.RequeueItem).
func (a *Admin) RequeueItem(ctx context.Context, item string) (bool, error) {
	ok, err := WQ{Client: a.redis(), Key: a.o.Key}.RequeueItem(ctx, item)
	if err != nil {
		return false, ClientError(a.o, err)
	}
	return ok, nil
}

// DropItem deletes one waiting copy of item, ready or dead-lettered (WQ.DropItem).
func (a *Admin) DropItem(ctx context.Context, item string) (string, error) {
	from, err := WQ{Client: a.redis(), Key: a.o.Key}.DropItem(ctx, item)
	if err != nil {
		return "", ClientError(a.o, err)
	}
	return from, nil
}

// InFlightItem is an in-flight item with its lease.
type InFlightItem struct {
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

// Inspection is what qj inspect shows of a Redis queue.
type Inspection struct {
	Key string `json:"key"`
	// Ready counts the waiting items; Next are the first of them in the order workers take
	// them (from the list's tail).
	Ready int64    `json:"ready"`
	Next  []string `json:"next"`
	// InFlight counts <key>:processing; Leases are its oldest items (the tail) first.
	InFlight int64          `json:"inFlight"`
	Leases   []InFlightItem `json:"leases"`
	// Failed counts <key>:failed, the dead-lettered items; FailedItems are its first ones.
	Failed      int64    `json:"failed"`
	FailedItems []string `json:"failedItems"`
}

// Inspect reads the counts and the first limit items of the list, <key>:processing (with
// their leases) and <key>:failed, in one MULTI: counts and items of one moment. It returns
// an *Inspection.
func (a *Admin) Inspect(ctx context.Context, limit int64, _ queue.Counts) (any, error) {
	rc, key := a.redis(), a.o.Key
	proc, failed := ProcessingKey(key), FailedKey(key)
	var readyLen, procLen, failedLen *goredis.IntCmd
	var next, inflight, dead *goredis.StringSliceCmd
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
	in := &Inspection{
		Key:   key,
		Ready: readyLen.Val(), Next: next.Val(),
		InFlight: procLen.Val(),
		Failed:   failedLen.Val(), FailedItems: dead.Val(),
	}
	// Workers take from the tail: the next item is the list's last.
	slices.Reverse(in.Next)
	items := inflight.Val()
	slices.Reverse(items)
	var err error
	if in.Leases, err = a.leases(ctx, items); err != nil {
		return nil, err
	}
	if in.Next == nil {
		in.Next = []string{}
	}
	if in.FailedItems == nil {
		in.FailedItems = []string{}
	}
	return in, nil
}

// leases reads the lease of each in-flight item.
func (a *Admin) leases(ctx context.Context, items []string) ([]InFlightItem, error) {
	rc, key := a.redis(), a.o.Key
	holders := make([]*goredis.StringCmd, len(items))
	ttls := make([]*goredis.DurationCmd, len(items))
	if len(items) > 0 {
		if _, err := rc.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, it := range items {
				holders[i] = p.Get(ctx, LeaseKey(key, it))
				ttls[i] = p.PTTL(ctx, LeaseKey(key, it))
			}
			return nil
		}); err != nil && !errors.Is(err, goredis.Nil) {
			return nil, err
		}
	}
	leases := []InFlightItem{}
	for i, it := range items {
		l := InFlightItem{Item: it, Holder: holders[i].Val()}
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
		leases = append(leases, l)
	}
	return leases, nil
}
