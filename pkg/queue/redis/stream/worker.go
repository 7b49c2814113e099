package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

var (
	_ queue.Consumer      = (*Consumer)(nil)
	_ queue.CompleteTaker = (*Consumer)(nil)
)

// Consumer is the worker side of a stream: it reads as the consumer named by its session,
// renews, completes, fails, dead-letters and gives back. pkg/worker drives it.
type Consumer struct {
	o      Options
	co     queue.ConsumerOptions
	client *goredis.Client
	// probe counts the stream as the operator does.
	probe *Conn
	// reads lets the reads of new entries run together, and a read of the session's own
	// pending entries (recover) alone: one of them could deliver an entry not yet held.
	reads sync.RWMutex
	// mu guards unsure and held.
	mu sync.Mutex
	// unsure is set by a read that failed: it may have run on the server, its reply
	// lost, leaving an entry pending for the session that no lease holds.
	unsure bool
	// held are the ids of the entries the session's reads delivered and its leases have
	// not finished (a lease lost to the reaper and never finished stays: its id is never
	// pending for the session again).
	held map[string]bool
}

// NewConsumer connects to the stream of o at once and creates its group if missing, so
// that a wrong address, password or certificate fails here with a message that says
// what to fix. Its lease is the shorter of co.LeaseTTL and o.LeaseTTL (the reaper's).
func NewConsumer(ctx context.Context, o Options, co queue.ConsumerOptions) (*Consumer, error) {
	o = o.withDefaults()
	co = co.WithDefaults()
	co.LeaseTTL = min(co.LeaseTTL, o.LeaseTTL)
	c := &Consumer{o: o, co: co, client: redis.NewClient(o.Server(), 0), probe: New(o), held: map[string]bool{}}
	if err := ensureGroup(ctx, c.client, o); err != nil {
		_ = c.Close()
		return nil, c.err(ctx, err)
	}
	return c, nil
}

// err explains an error of go-redis; the context's own error stays as it is.
func (c *Consumer) err(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("worker: %w", ClientError(c.o, err))
}

// read reads the next entry for the session, waiting up to block (not at all if < 0); nil
// if none came. A missing group (the stream was deleted) is created again.
func (c *Consumer) read(ctx context.Context, block time.Duration) (*goredis.XMessage, error) {
	args := &goredis.XReadGroupArgs{Group: c.o.Group, Consumer: c.co.Session, Streams: []string{c.o.Stream, ">"}, Count: 1, Block: block}
	res, err := c.client.XReadGroup(ctx, args).Result()
	if isNoGroup(err) {
		if err := ensureGroup(ctx, c.client, c.o); err != nil {
			return nil, err
		}
		res, err = c.client.XReadGroup(ctx, args).Result()
	}
	if errors.Is(err, goredis.Nil) {
		return nil, nil
	}
	if err != nil || len(res) == 0 || len(res[0].Messages) == 0 {
		return nil, err
	}
	return &res[0].Messages[0], nil
}

// readNew reads the next new entry (read), noting what it delivered or that it failed.
func (c *Consumer) readNew(ctx context.Context, block time.Duration) (*goredis.XMessage, error) {
	c.reads.RLock()
	defer c.reads.RUnlock()
	m, err := c.read(ctx, block)
	c.noteRead(m, err)
	return m, err
}

// noteRead notes an entry a read delivered (m), or that it failed (err): its reply may
// have been lost after the server delivered an entry.
func (c *Consumer) noteRead(m *goredis.XMessage, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.unsure = true
	}
	if m != nil {
		c.held[m.ID] = true
	}
}

// finished forgets an entry a lease held.
func (c *Consumer) finished(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.held, id)
}

// recover, after a read failed, lists the session's own pending entries (XPENDING with
// the consumer, which leaves their idle times and delivery counts alone; no new entries
// are read meanwhile) and returns the oldest that no lease holds (a delivery whose reply
// was lost), its idle time reset (a lease from now on); nil once there is none. The
// entries its leases hold are not touched: a scan must not renew an entry whose lease
// failed to finish it, nor charge it a delivery.
func (c *Consumer) recover(ctx context.Context) (*goredis.XMessage, error) {
	c.mu.Lock()
	unsure := c.unsure
	c.mu.Unlock()
	if !unsure {
		return nil, nil
	}
	c.reads.Lock()
	defer c.reads.Unlock()
	for from := "-"; ; {
		pending, err := c.client.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: c.o.Stream, Group: c.o.Group,
			Start: from, End: "+", Count: 100, Consumer: c.co.Session}).Result()
		if err != nil && !isNoGroup(err) {
			return nil, err
		}
		if len(pending) == 0 {
			c.mu.Lock()
			c.unsure = false
			c.mu.Unlock()
			return nil, nil
		}
		for _, p := range pending {
			if got, err := c.orphan(ctx, p.ID); got != nil || err != nil {
				return got, err
			}
		}
		from = "(" + pending[len(pending)-1].ID
	}
}

// orphan returns the entry id, pending for the session, if no lease holds it: its idle
// time reset and noted held (nil if it is not pending for the session any more). An
// entry deleted from the stream meanwhile comes without fields (claim dead-letters it,
// which acknowledges it: there is nothing to move), as XREADGROUP would return it.
func (c *Consumer) orphan(ctx context.Context, id string) (*goredis.XMessage, error) {
	c.mu.Lock()
	held := c.held[id]
	c.mu.Unlock()
	if held {
		return nil, nil
	}
	n, err := renewScript.Run(ctx, c.client, []string{c.o.Stream}, c.o.Group, id, c.co.Session).Int()
	if err != nil || n == 0 {
		return nil, err
	}
	entries, err := c.client.XRange(ctx, c.o.Stream, id, id).Result()
	if err != nil {
		return nil, err
	}
	m := goredis.XMessage{ID: id, Values: map[string]any{}}
	if len(entries) == 1 {
		m = entries[0]
	}
	c.noteRead(&m, nil)
	return &m, nil
}

// Take waits up to wait for an entry and leases it; nil if none came. After a read that
// failed it first hands out the session's pending entries that no lease holds (recover).
func (c *Consumer) Take(ctx context.Context, wait time.Duration) (queue.Lease, error) {
	block := wait
	if wait <= 0 {
		block = -1 // no BLOCK: BLOCK 0 waits for ever
	}
	for {
		sent := time.Now()
		m, err := c.recover(ctx)
		if m == nil && err == nil {
			sent = time.Now()
			m, err = c.readNew(ctx, block)
		}
		if err != nil {
			return nil, c.err(ctx, err)
		}
		if m == nil {
			return nil, nil
		}
		l, err := c.claim(ctx, m, queue.LeaseStart(sent, time.Now(), c.co.LeaseTTL))
		if l != nil || err != nil {
			return l, err
		}
		// Dead-lettered: take another.
	}
}

// claim leases an entry just read, its lease started at start: its attempt is its
// attempts field plus one. An entry without an item field, or over its attempts, is
// dead-lettered instead (nil).
func (c *Consumer) claim(ctx context.Context, m *goredis.XMessage, start time.Time) (queue.Lease, error) {
	attempts := 0
	if v, ok := m.Values[FieldAttempts].(string); ok {
		attempts, _ = strconv.Atoi(v)
	}
	item, ok := m.Values[FieldItem].(string)
	why := ""
	switch {
	case !ok:
		why = "the entry has no " + FieldItem + " field"
	case c.co.MaxAttempts > 0 && attempts >= c.co.MaxAttempts:
		why = "its workers never finished it (they crashed, or their leases ran out)"
	default:
		return &lease{c: c, id: m.ID, item: item, n: attempts + 1, renewed: start}, nil
	}
	// The entry is pending for the session: dead-letter it even if ctx is being
	// cancelled (else the reaper returns it after the lease).
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queue.FinishTimeout)
	defer cancel()
	n, err := c.move(cctx, m.ID, FailedKey(c.o.Stream), 0, why)
	if err == nil {
		c.finished(m.ID)
	}
	if err != nil {
		return nil, c.err(ctx, err)
	}
	if n >= 0 {
		c.co.Logger.Warn("Dead-lettered an entry: "+why, "id", m.ID, "attempts", attempts, "stream", FailedKey(c.o.Stream))
	}
	return nil, nil
}

// move runs moveScript on an entry pending for the session; -1 if it was not.
func (c *Consumer) move(ctx context.Context, id, dest string, delta int, why string) (int, error) {
	return moveScript.Run(ctx, c.client, []string{c.o.Stream, dest}, c.o.Group, id, c.co.Session, 0, delta, why).Int()
}

// CompleteAndTake completes l and reads the next entry (without waiting) in one MULTI:
// one round trip less per item. next is nil if none was waiting.
func (c *Consumer) CompleteAndTake(ctx context.Context, l queue.Lease) (next queue.Lease, completeErr, err error) {
	r := l.(*lease)
	if r.expired() {
		return nil, queue.ErrLeaseLost, nil
	}
	var ack *goredis.IntCmd
	var read *goredis.XStreamSliceCmd
	sent := time.Now()
	c.reads.RLock()
	_, err = c.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		ack = p.XAck(ctx, c.o.Stream, c.o.Group, r.id)
		p.XDel(ctx, c.o.Stream, r.id)
		read = p.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: c.o.Group, Consumer: c.co.Session,
			Streams: []string{c.o.Stream, ">"}, Count: 1, Block: -1})
		return nil
	})
	c.noteMulti(read, err)
	c.reads.RUnlock()
	c.finished(r.id)
	switch {
	case isNoGroup(ack.Err()):
		completeErr = queue.ErrLeaseLost // the group was deleted, and the entry's lease with it
	case ack.Err() != nil:
		return nil, nil, c.err(ctx, ack.Err())
	default:
		completeErr = r.acked(ack.Val())
	}
	res, rerr := read.Result()
	switch {
	case errors.Is(rerr, goredis.Nil), isNoGroup(rerr):
		// Nothing waiting (the next Take creates a missing group again).
		return nil, completeErr, nil
	case rerr != nil:
		return nil, completeErr, c.err(ctx, rerr)
	case err != nil && !errors.Is(err, goredis.Nil):
		return nil, completeErr, c.err(ctx, err)
	case len(res) == 0 || len(res[0].Messages) == 0:
		return nil, completeErr, nil
	}
	next, err = c.claim(ctx, &res[0].Messages[0], sent)
	return next, completeErr, err
}

// noteMulti notes what the read of CompleteAndTake's MULTI delivered, or that the MULTI
// failed (err, other than nothing to read): it may have run, its reply lost.
func (c *Consumer) noteMulti(read *goredis.XStreamSliceCmd, err error) {
	if err != nil && !errors.Is(err, goredis.Nil) {
		c.noteRead(nil, err)
		return
	}
	if res, rerr := read.Result(); rerr == nil && len(res) > 0 && len(res[0].Messages) > 0 {
		c.noteRead(&res[0].Messages[0], nil)
	}
}

// Empty counts the stream with the operator's probe: nothing ready, nothing in flight.
func (c *Consumer) Empty(ctx context.Context) (bool, error) {
	n, err := c.probe.Probe(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("worker: %w", err)
	}
	return n.Ready == 0 && n.InFlight == 0, nil
}

// Failed lists the items of <stream>:failed, oldest first.
func (c *Consumer) Failed(ctx context.Context) ([][]byte, error) {
	entries, err := c.client.XRange(ctx, FailedKey(c.o.Stream), "-", "+").Result()
	if err != nil {
		return nil, c.err(ctx, err)
	}
	var out [][]byte
	for _, e := range entries {
		if v, ok := e.Values[FieldItem].(string); ok {
			out = append(out, []byte(v))
		}
	}
	return out, nil
}

// requeueBatch bounds the entries one requeue script moves, so that it never blocks the
// server long.
const requeueBatch = 1000

// RequeueFailed moves up to n entries of <stream>:failed (all if n <= 0), oldest first,
// to the end of the stream with a fresh count of attempts, each atomically.
func (c *Consumer) RequeueFailed(ctx context.Context, n int) (int, error) {
	moved := 0
	for n <= 0 || moved < n {
		batch := requeueBatch
		if n > 0 {
			batch = min(batch, n-moved)
		}
		m, err := requeueScript.Run(ctx, c.client, []string{FailedKey(c.o.Stream), c.o.Stream}, batch).Int()
		moved += m
		if err != nil {
			return moved, c.err(ctx, err)
		}
		if m < batch {
			break
		}
	}
	return moved, nil
}

// StopTaking does nothing: a stream's worker takes nothing it did not ask for.
func (c *Consumer) StopTaking() {}

// Close deletes the session's consumer if it holds no entry (best effort: the reaper
// deletes it otherwise), and closes the connections; entries still pending stay so until
// the reaper returns them.
func (c *Consumer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.o.Timeout)
	_ = deleteConsumerScript.Run(ctx, c.client, []string{c.o.Stream}, c.o.Group, c.co.Session).Err()
	cancel()
	return errors.Join(c.client.Close(), c.probe.Close())
}

// lease is an entry pending for the consumer's session.
type lease struct {
	c    *Consumer
	id   string
	item string
	n    int

	mu sync.Mutex
	// renewed is when the lease started or was last renewed, at the earliest.
	renewed time.Time
}

func (l *lease) Data() []byte              { return []byte(l.item) }
func (l *lease) Attempt() int              { return l.n }
func (l *lease) RenewEvery() time.Duration { return l.c.co.LeaseTTL / 3 }

// expired says whether the lease, less the margin, passed since the lease started or was
// last renewed (measured from before the request): the reaper may have returned the
// entry, and another worker may run it. A lease that expired acts no more: its entry
// stays pending (and held: the session's scan leaves it) until the reaper returns it.
func (l *lease) expired() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return queue.LeaseExpired(l.renewed, l.c.co.LeaseTTL)
}

// Renew resets the entry's idle time; false if it is no longer pending for the session,
// or if its lease expired here first (expired).
func (l *lease) Renew(ctx context.Context) (bool, error) {
	if l.expired() {
		return false, nil
	}
	sent := time.Now()
	n, err := renewScript.Run(ctx, l.c.client, []string{l.c.o.Stream}, l.c.o.Group, l.id, l.c.co.Session).Int()
	if isNoGroup(err) {
		return false, nil // the stream or its group was deleted: so was the entry
	}
	if err != nil {
		return false, l.c.err(ctx, err)
	}
	if n == 1 {
		l.mu.Lock()
		l.renewed = sent
		l.mu.Unlock()
	}
	return n == 1, nil
}

// Complete acknowledges and deletes the entry, in one MULTI.
func (l *lease) Complete(ctx context.Context) error {
	if l.expired() {
		return queue.ErrLeaseLost
	}
	var ack *goredis.IntCmd
	_, err := l.c.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		ack = p.XAck(ctx, l.c.o.Stream, l.c.o.Group, l.id)
		p.XDel(ctx, l.c.o.Stream, l.id)
		return nil
	})
	if isNoGroup(ack.Err()) {
		l.c.finished(l.id)
		return queue.ErrLeaseLost // the stream or its group was deleted: so was the entry
	}
	if err != nil {
		return l.c.err(ctx, err)
	}
	l.c.finished(l.id)
	return l.acked(ack.Val())
}

// acked is the result of a completion that XACK acknowledged n entries of.
func (l *lease) acked(n int64) error {
	if n == 0 {
		return queue.ErrLeaseLost
	}
	return nil
}

// Fail returns the entry to the end of the stream with its attempt counted, or after its
// MaxAttempts-th attempt moves it to <stream>:failed with the cause's text.
func (l *lease) Fail(ctx context.Context, cause error) (bool, error) {
	if l.expired() {
		return false, queue.ErrLeaseLost
	}
	dead := l.c.co.MaxAttempts > 0 && l.n >= l.c.co.MaxAttempts
	dest, why := l.c.o.Stream, ""
	if dead {
		dest, why = FailedKey(l.c.o.Stream), queue.CauseText(cause)
		if why == "" {
			why = "failed"
		}
	}
	n, err := l.c.move(ctx, l.id, dest, 1, why)
	if err = l.moved(ctx, n, err); err != nil {
		return false, err
	}
	return dead, nil
}

// Release returns the entry to the end of the stream without counting the attempt.
func (l *lease) Release(ctx context.Context) error {
	if l.expired() {
		return queue.ErrLeaseLost
	}
	n, err := l.c.move(ctx, l.id, l.c.o.Stream, 0, "")
	return l.moved(ctx, n, err)
}

// moved is the result of a move of the entry that moveScript answered n to.
func (l *lease) moved(ctx context.Context, n int, err error) error {
	switch {
	case n == -1, isNoGroup(err):
		l.c.finished(l.id)
		return queue.ErrLeaseLost
	case err != nil:
		return l.c.err(ctx, err)
	}
	l.c.finished(l.id)
	return nil
}
