package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// redisTypes are the types TYPE answers that a message may name.
var redisTypes = map[string]bool{"string": true, "hash": true, "set": true, "zset": true, "stream": true, "ReJSON-RL": true}

// Options locate a Redis list.
type Options struct {
	Address, Password, Key string
	// Username is the ACL user; empty for the default user.
	Username string
	DB       int
	// TLS, if set, makes the connection use TLS with this configuration.
	TLS *tls.Config
	// Timeout bounds dialing and each command; 5s if zero.
	Timeout time.Duration
	// MaxScan bounds how many in-flight items one Reap looks at; 10000 if zero. A longer
	// in-flight list is paged through over successive calls.
	MaxScan int64
}

// Conn is a connection to a Redis list read with the rediswq protocol: the operator's
// probe and lease reaper.
type Conn struct {
	client *goredis.Client
	// release closes client, or gives it back to the SharedClients it came from.
	release func() error
	addr    string
	tls     bool
	key     string
	maxScan int64
	// Reap pages through <key>:processing from its oldest end (the tail): cursor is the
	// index, counted from the tail, where the next page starts, and cycle numbers the
	// passes over the whole list.
	cursor int64
	cycle  uint64
	// unleased holds, by value, the in-flight items seen without a lease.
	unleased map[string]sighting
}

// sighting is what Reap knows of an in-flight item it saw without a lease.
type sighting struct {
	// since is the first sighting of the item's current unbroken run of unleased
	// sightings.
	since time.Time
	// cycle is the pass of the latest sighting, and pos the item's index from the tail
	// then (of its oldest copy).
	cycle uint64
	pos   int64
}

// quietRedis keeps go-redis from printing its own connection errors to stderr: the probe
// reports them, once, in the QueueJob's status.
var quietRedis sync.Once

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// New returns a connection to the list of o on a client of its own; it connects on first
// use. The operator's probes share clients instead (NewShared).
func New(o Options) *Conn {
	client := goredis.NewClient(probeClientOptions(&o))
	return newConn(o, client, client.Close)
}

// newConn returns a connection to the list of o on client; Close calls release.
func newConn(o Options, client *goredis.Client, release func() error) *Conn {
	o.fillDefaults()
	return &Conn{
		client:   client,
		release:  release,
		addr:     o.Address,
		tls:      o.TLS != nil,
		key:      o.Key,
		maxScan:  o.MaxScan,
		unleased: map[string]sighting{},
	}
}

// fillDefaults sets the timeout and the scan bound of zero Options.
func (o *Options) fillDefaults() {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.MaxScan == 0 {
		o.MaxScan = 10000
	}
}

// probeClientOptions are the go-redis options of the operator's connections to a Redis
// server; it fills in o's defaults.
func probeClientOptions(o *Options) *goredis.Options {
	quietRedis.Do(func() { goredis.SetLogger(discardLogger{}) })
	o.fillDefaults()
	opts := &goredis.Options{
		Addr: o.Address, Username: o.Username, Password: o.Password, DB: o.DB,
		DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
		// One dial, one try: the probe, not go-redis, decides when to try again (a TLS
		// handshake that a plain-TCP server never answers takes the whole timeout).
		PoolSize: 2, MaxRetries: -1, DialerRetries: 1,
		DisableIdentity: true,
		// Small buffers: go-redis's defaults (32 KiB each way, 128 KiB each way for the
		// pipeline connection a probe uses) cost ~270 KiB a connection, and the operator
		// held one per QueueJob before they shared clients (SharedClients). Probe and Reap
		// send and receive a few hundred bytes; a longer reply takes more reads, not a
		// bigger buffer.
		ReadBufferSize: redisBufferSize, WriteBufferSize: redisBufferSize,
		PipelineReadBufferSize: redisBufferSize, PipelineWriteBufferSize: redisBufferSize,
		// Pipelines on the main pool: one socket a connection, not two.
		PipelinePoolSize: -1,
		// Nor the machinery for Redis Enterprise's maintenance push notifications
		// (~8 KiB a client, and a CLIENT command on every connection).
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if o.TLS != nil {
		opts.Dialer = queue.TLSDialer(o.TLS, o.Timeout)
	}
	return opts
}

// redisBufferSize is the read and the write buffer of each of a connection's sockets.
const redisBufferSize = 1 << 10

// Probe counts the waiting items (LLEN <key>), the in-flight ones (LLEN <key>:processing)
// and the dead-lettered ones (LLEN <key>:failed), in one round trip, and checks the first
// two keys are lists.
func (r *Conn) Probe(ctx context.Context) (queue.Counts, error) {
	proc, failed := ProcessingKey(r.key), FailedKey(r.key)
	var main, inflight *goredis.StatusCmd
	var mainLen, procLen, failedLen *goredis.IntCmd
	_, err := r.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		main = p.Type(ctx, r.key)
		inflight = p.Type(ctx, proc)
		mainLen = p.LLen(ctx, r.key)
		procLen = p.LLen(ctx, proc)
		failedLen = p.LLen(ctx, failed)
		return nil
	})
	for _, t := range []struct {
		key string
		cmd *goredis.StatusCmd
	}{{r.key, main}, {proc, inflight}} {
		if typ := t.cmd.Val(); t.cmd.Err() == nil && typ != "" && typ != "list" && typ != "none" {
			if !redisTypes[typ] {
				typ = "value of another type" // the peer's own word: not repeated
			}
			return queue.Counts{}, queue.Errorf(queue.ReasonWrongType, "Redis key %q holds a %s, not a list: point spec.queue.redis.key at a list", t.key, typ)
		}
	}
	if ferr := failedLen.Err(); ferr != nil && strings.HasPrefix(ferr.Error(), "WRONGTYPE") {
		return queue.Counts{}, queue.Errorf(queue.ReasonWrongType, "Redis at %s: key %q, where workers dead-letter items, is not a list: "+
			"rename or delete it, or point spec.queue.redis.key at another list", r.addr, failed)
	}
	deadLetteredUnknown := false
	if ferr := failedLen.Err(); ferr != nil && err == ferr && strings.HasPrefix(ferr.Error(), "NOPERM") {
		// An ACL user without access to the dead-letter list: the probe counts the
		// queue, and says that it could not count the dead letters.
		err, deadLetteredUnknown = nil, true
	}
	if err != nil {
		return queue.Counts{}, r.fail(err)
	}
	if procLen.Val() == 0 {
		// Nothing in flight: every item Reap saw without a lease has left, also those
		// seen in the pass under way.
		r.forget()
	}
	return queue.Counts{Ready: mainLen.Val(), InFlight: procLen.Val(), DeadLettered: failedLen.Val(), DeadLetteredUnknown: deadLetteredUnknown}, nil
}

// reclaimScript returns one in-flight item to the waiting list, atomically and only if
// it still has no lease and is still in flight: two reapers, or a worker that leases the
// item at the same moment, can never make it be returned twice.
var reclaimScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
`)

// reclaimHeldScript returns one in-flight item to the waiting list and deletes its lease,
// atomically and only if the lease is still the holder's: an item that a live worker
// leased since (after the reaper returned it, or a copy of the same value) stays with it.
// KEYS: processing, main, lease. ARGV: item, holder.
var reclaimHeldScript = goredis.NewScript(`
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[3])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
`)

// Reap returns in-flight items whose lease is gone to the waiting list, and at once those
// whose lease holder (the session id, the lease key's value) gone says is gone: the
// worker's pod ended, and its lease, renewed or not, holds nothing any more. A worker moves an
// item to <key>:processing and writes its lease in two steps, and must not lose the item
// in between; so an item is reclaimed only when it was seen without a lease on two scans
// at least grace apart, with no scan in between that saw it leased or saw it gone.
//
// Reap scans <key>:processing from its oldest end (the tail, where the items likeliest to
// be abandoned are), at most MaxScan items per call, each call going on where the previous
// one stopped and starting a new pass over the list after the head. A pass over L items
// takes ceil(L/MaxScan) calls; with L <= MaxScan every call is a whole pass. An item counts
// as continuously unleased only when it is seen without a lease in consecutive passes:
//
//   - an item seen leased is forgotten;
//   - an item not seen during a whole pass is forgotten (it left, or a shift hid it), and
//     so is everything when the list is seen empty, by Reap or by Probe;
//   - an item seen again at a greater index from the tail than before is a new stay:
//     rediswq only pushes at the head, so an item that stays in flight only moves towards
//     the tail (when older items leave), and one that left and was taken again (the same
//     value) comes back at the head.
//
// Workers removing items shift the others towards the tail between two calls, which can
// make a pass miss an item: that only restarts its run (a later reclaim), never an early
// one, and an abandoned item keeps sinking towards the tail, whose first page every pass
// reads. So an abandoned item is first seen within about ceil(L/MaxScan)+1 probes after its
// lease is gone, and returned within about ceil(L/MaxScan)+1 probes after grace more.
//
// What happens while no scan looks cannot be seen: an item that finishes and is taken
// again (same value) between two visits of its part of the list, still without its new
// lease at the second and no further from the tail, looks like one stay. The controller
// therefore reaps on every probe, and items should have unique values, as rediswq's shared
// lease keys already require.
func (r *Conn) Reap(ctx context.Context, now time.Time, grace time.Duration, gone queue.GoneHolders) (int, error) {
	length, items, err := r.page(ctx)
	if err != nil {
		return 0, err
	}
	if r.cursor > 0 && length <= r.cursor {
		// The list shrank below the cursor: this pass is over; start the next one.
		r.endPass()
		if length, items, err = r.page(ctx); err != nil {
			return 0, err
		}
	}
	distinct := r.distinct(items)
	holders := make([]*goredis.StringCmd, len(distinct))
	if _, err := r.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, c := range distinct {
			holders[i] = p.Get(ctx, LeaseKey(r.key, c.item))
		}
		return nil
	}); err != nil {
		// Pipelined reports the first error only: a missing lease (Nil) or a lease key of
		// another type (a reply error, see reapOne) may hide a failed connection.
		for _, h := range holders {
			var reply goredis.Error
			if err := h.Err(); err != nil && !errors.As(err, &reply) {
				return 0, r.fail(err)
			}
		}
	}
	reclaimed := 0
	for i, c := range distinct {
		n, err := r.reapOne(ctx, c, holders[i], now, grace, gone)
		reclaimed += n
		if err != nil {
			return reclaimed, r.fail(err)
		}
	}
	if r.cursor+r.maxScan >= length {
		r.endPass()
	} else {
		r.cursor += r.maxScan
	}
	return reclaimed, nil
}

// candidate is an in-flight item of a page, at the index from the tail of its oldest copy.
type candidate struct {
	item string
	pos  int64
}

// distinct returns the distinct values of a page, oldest first.
func (r *Conn) distinct(items []string) []candidate {
	seen := make(map[string]bool, len(items))
	var distinct []candidate
	for j := len(items) - 1; j >= 0; j-- {
		if it := items[j]; !seen[it] {
			seen[it] = true
			distinct = append(distinct, candidate{it, r.cursor + int64(len(items)-1-j)})
		}
	}
	return distinct
}

// reapOne returns one in-flight item to the waiting list if its lease holder (the lease
// key's value, from holder) is gone, or if it has been seen without a lease for grace
// (see Reap); it returns 1 if it did.
func (r *Conn) reapOne(ctx context.Context, c candidate, holder *goredis.StringCmd, now time.Time, grace time.Duration, gone queue.GoneHolders) (int, error) {
	keys := []string{ProcessingKey(r.key), r.key, LeaseKey(r.key, c.item)}
	h, err := holder.Result()
	if err != nil && !errors.Is(err, goredis.Nil) {
		// The lease key holds another type (GET refused it): a key that exists counts as a
		// lease, as rediswq's EXISTS would; nothing to judge its holder by.
		delete(r.unleased, c.item)
		return 0, nil
	}
	if err == nil {
		delete(r.unleased, c.item)
		if !gone.Gone(h) {
			return 0, nil
		}
		return reclaimHeldScript.Run(ctx, r.client, keys, c.item, h).Int()
	}
	s, ok := r.unleased[c.item]
	if ok && s.cycle == r.cycle {
		// Already looked at in this pass: another copy, or the item moved.
		return 0, nil
	}
	if !ok || s.cycle+1 != r.cycle || c.pos > s.pos {
		r.unleased[c.item] = sighting{since: now, cycle: r.cycle, pos: c.pos}
		return 0, nil
	}
	s.cycle, s.pos = r.cycle, c.pos
	r.unleased[c.item] = s
	if now.Sub(s.since) < grace {
		return 0, nil
	}
	// Another copy of the value needs its own run.
	delete(r.unleased, c.item)
	return reclaimScript.Run(ctx, r.client, keys, c.item).Int()
}

// page reads, atomically, the length of <key>:processing and the next page of at most
// maxScan items, counted from the tail, at the cursor.
func (r *Conn) page(ctx context.Context) (int64, []string, error) {
	proc := ProcessingKey(r.key)
	var length *goredis.IntCmd
	var items *goredis.StringSliceCmd
	if _, err := r.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		length = p.LLen(ctx, proc)
		items = p.LRange(ctx, proc, -(r.cursor + r.maxScan), -(r.cursor + 1))
		return nil
	}); err != nil {
		return 0, nil, r.fail(err)
	}
	return length.Val(), items.Val(), nil
}

// forget drops all Reap knows and starts a new pass.
func (r *Conn) forget() {
	clear(r.unleased)
	r.cycle++
	r.cursor = 0
}

// endPass ends a pass over <key>:processing: the items it did not see are forgotten, and
// the next pass starts at the tail.
func (r *Conn) endPass() {
	for it, s := range r.unleased {
		if s.cycle != r.cycle {
			delete(r.unleased, it)
		}
	}
	r.cycle++
	r.cursor = 0
}

// Close closes the connection pool.
func (r *Conn) Close() error { return r.release() }

// fail classifies an error of go-redis (see redisFailure).
func (r *Conn) fail(err error) error { return redisFailure(r.addr, r.tls, err) }
