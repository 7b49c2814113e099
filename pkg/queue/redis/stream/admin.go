package stream

import (
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

var _ queue.Admin = (*Admin)(nil)

// enqueueBatch is how many XADDs go in one pipeline (one round trip) of Admin.Enqueue.
const enqueueBatch = 1000

// Admin is qj's side of a stream: enqueue, inspect, count the dead-lettered items.
type Admin struct {
	o       Options
	timeout time.Duration
	// client is go-redis's, made on first use; it connects on first use.
	client *goredis.Client
}

// NewAdmin returns qj's side of the stream of o, each call bounded by timeout. It
// connects on first use.
func NewAdmin(o Options, timeout time.Duration) *Admin {
	o.Timeout = timeout
	return &Admin{o: o.withDefaults(), timeout: timeout}
}

// Probe counts the stream with the operator's probe.
func (a *Admin) Probe(ctx context.Context, _ bool) (queue.Counts, error) {
	p := New(a.o)
	defer func() { _ = p.Close() }()
	return p.Probe(ctx)
}

// Open makes the client; it connects on first use.
func (a *Admin) Open(context.Context) error {
	a.redis()
	return nil
}

func (a *Admin) redis() *goredis.Client {
	if a.client == nil {
		a.client = redis.NewClient(a.o.Server(), 2)
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

// Enqueue creates the group if missing, then adds each item as an entry (XADD <stream> *
// item <bytes>) in pipelined batches. A stream is first in, first out: the items are
// taken in the order given, after those waiting, with or without o.FIFO.
func (a *Admin) Enqueue(ctx context.Context, next func() (string, error), added func(int64), _ queue.EnqueueOptions) (pushed, unsure int64, err error) {
	rc := a.redis()
	if err := ensureGroup(ctx, rc, a.o); err != nil {
		return 0, 0, err
	}
	batch := make([]string, 0, enqueueBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		cmds, err := rc.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, it := range batch {
				p.XAdd(ctx, &goredis.XAddArgs{Stream: a.o.Stream, Values: []any{FieldItem, it}})
			}
			return nil
		})
		var ok int64
		for _, c := range cmds {
			var reply goredis.Error
			switch {
			case c.Err() == nil:
				ok++
			case !errors.As(c.Err(), &reply):
				unsure++
			}
		}
		pushed += ok
		if ok > 0 {
			added(ok)
		}
		batch = batch[:0]
		return err
	}
	for {
		item, rerr := next()
		if errors.Is(rerr, io.EOF) {
			return pushed, unsure, flush()
		}
		if rerr != nil {
			if err := flush(); err != nil {
				return pushed, unsure, err
			}
			return pushed, unsure, rerr
		}
		if batch = append(batch, item); len(batch) == enqueueBatch {
			if err := flush(); err != nil {
				return pushed, unsure, err
			}
		}
	}
}

// CountFailed counts <stream>:failed.
func (a *Admin) CountFailed(ctx context.Context) (int64, string, error) {
	failed := FailedKey(a.o.Stream)
	n, err := a.redis().XLen(ctx, failed).Result()
	return n, failed, err
}

// Entry is an entry of the stream or of its :failed stream.
type Entry struct {
	ID       string `json:"id"`
	Item     string `json:"item"`
	Attempts int    `json:"attempts"`
	// Error is why its last attempt failed (dead letters only).
	Error string `json:"error,omitempty"`
}

// PendingEntry is an entry delivered to a consumer and not yet acknowledged.
type PendingEntry struct {
	Entry
	// Consumer holds it: a worker's session (its pod's name and a suffix).
	Consumer string `json:"consumer"`
	// IdleSeconds is the time since its consumer took or renewed it; past the lease,
	// the operator's reaper returns it to the queue.
	IdleSeconds float64 `json:"idleSeconds"`
	// Deliveries is Redis's delivery count.
	Deliveries int64 `json:"deliveries"`
}

// ConsumerInfo is a consumer of the group.
type ConsumerInfo struct {
	Name        string  `json:"name"`
	Pending     int64   `json:"pending"`
	IdleSeconds float64 `json:"idleSeconds"`
}

// Inspection is what qj inspect shows of a stream.
type Inspection struct {
	Stream string `json:"stream"`
	Group  string `json:"group"`
	// Ready counts the entries not yet delivered; Next are the first of them.
	Ready int64   `json:"ready"`
	Next  []Entry `json:"next"`
	// InFlight counts the pending entries; Pending are the oldest of them.
	InFlight  int64          `json:"inFlight"`
	Pending   []PendingEntry `json:"pending"`
	Consumers []ConsumerInfo `json:"consumers"`
	// Failed counts <stream>:failed; FailedItems are its oldest entries.
	Failed      int64   `json:"failed"`
	FailedItems []Entry `json:"failedItems"`
}

// Inspect reads, given the probe's counts, the group's consumers, its oldest pending
// entries (with their consumer, idle time and delivery count), the next entries to be
// delivered and the oldest dead letters, at most limit of each. It returns an
// *Inspection.
func (a *Admin) Inspect(ctx context.Context, limit int64, counts queue.Counts) (any, error) {
	in := &Inspection{Stream: a.o.Stream, Group: a.o.Group, Ready: counts.Ready, InFlight: counts.InFlight,
		Failed: counts.DeadLettered, Next: []Entry{}, Pending: []PendingEntry{}, Consumers: []ConsumerInfo{}}
	rc := a.redis()
	dead, err := rc.XRangeN(ctx, FailedKey(a.o.Stream), "-", "+", limit).Result()
	if err != nil {
		return nil, err
	}
	in.FailedItems = entries(dead)
	groups, err := rc.XInfoGroups(ctx, a.o.Stream).Result()
	if isNoGroup(err) {
		return in, nil
	}
	if err != nil {
		return nil, err
	}
	last := ""
	for _, g := range groups {
		if g.Name == a.o.Group {
			last = g.LastDeliveredID
		}
	}
	if last == "" {
		// No group yet: every entry is ready.
		next, err := rc.XRangeN(ctx, a.o.Stream, "-", "+", limit).Result()
		in.Next = entries(next)
		return in, err
	}
	if err := a.inspectGroup(ctx, in, last, limit); err != nil {
		return nil, err
	}
	return in, nil
}

// inspectGroup reads the group's consumers, pending entries and next entries.
func (a *Admin) inspectGroup(ctx context.Context, in *Inspection, last string, limit int64) error {
	rc := a.redis()
	next, err := rc.XRangeN(ctx, a.o.Stream, "("+last, "+", limit).Result()
	if err != nil {
		return err
	}
	in.Next = entries(next)
	consumers, err := rc.XInfoConsumers(ctx, a.o.Stream, a.o.Group).Result()
	if err != nil {
		return err
	}
	for _, c := range consumers {
		in.Consumers = append(in.Consumers, ConsumerInfo{Name: c.Name, Pending: c.Pending, IdleSeconds: c.Idle.Seconds()})
	}
	pending, err := rc.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: a.o.Stream, Group: a.o.Group,
		Start: "-", End: "+", Count: limit}).Result()
	if err != nil {
		return err
	}
	for _, p := range pending {
		pe := PendingEntry{Entry: Entry{ID: p.ID}, Consumer: p.Consumer, IdleSeconds: p.Idle.Seconds(), Deliveries: p.RetryCount}
		if e, err := rc.XRangeN(ctx, a.o.Stream, p.ID, p.ID, 1).Result(); err == nil && len(e) == 1 {
			pe.Entry = entries(e)[0]
		}
		in.Pending = append(in.Pending, pe)
	}
	return nil
}

// entries are the Entries of go-redis's messages.
func entries(ms []goredis.XMessage) []Entry {
	out := []Entry{}
	for _, m := range ms {
		e := Entry{ID: m.ID}
		e.Item, _ = m.Values[FieldItem].(string)
		e.Error, _ = m.Values[FieldError].(string)
		if v, ok := m.Values[FieldAttempts].(string); ok {
			e.Attempts, _ = strconv.Atoi(v)
		}
		out = append(out, e)
	}
	return out
}
