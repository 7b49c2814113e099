package stream

import (
	"cmp"
	"context"
	"errors"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

var _ queue.Reaper = (*Conn)(nil)

// Conn is the operator's connection to a stream: its probe and its reaper. It never
// creates the stream or the group.
type Conn struct {
	o      Options
	client *goredis.Client
	// release closes client, or gives it back to the SharedClients it came from.
	release func() error
}

// New returns a connection to the stream of o on a client of its own; it connects on
// first use. The operator's probes share clients instead (NewShared).
func New(o Options) *Conn {
	o = o.withDefaults()
	client := redis.NewProbeClient(o.Server())
	return &Conn{o: o, client: client, release: client.Close}
}

// NewShared returns a connection to the stream of o on the shared client of id (see
// redis.SharedClients.Get); Close releases the client.
func NewShared(clients *redis.SharedClients, id string, o Options) *Conn {
	o = o.withDefaults()
	client, release := clients.Get(id, o.Server())
	return &Conn{o: o, client: client, release: release}
}

// Close closes the client, or releases the shared one.
func (c *Conn) Close() error { return c.release() }

// fail classifies an error of go-redis (see failure).
func (c *Conn) fail(err error) error { return failure(c.o, err) }

// streamTypes are the types TYPE answers that a message may name.
var streamTypes = map[string]bool{"string": true, "hash": true, "set": true, "zset": true, "list": true, "ReJSON-RL": true}

// Probe counts the stream in one round trip (TYPE and XLEN of the stream and of its
// :failed stream, XINFO GROUPS of the stream):
//
//   - ready is the group's lag, the entries not yet delivered to it. Redis cannot always
//     tell the lag after deletions (XINFO GROUPS says nil): then ready is XLEN minus the
//     group's pending entries, exact as long as every finished entry is deleted, as this
//     backend's workers do (an entry someone else deletes while it is pending makes it
//     smaller, never below 0). Without the group, ready is XLEN.
//   - in flight is the group's pending entries (XINFO GROUPS' pending, XPENDING's count);
//   - dead-lettered is XLEN of <stream>:failed.
//
// A missing stream is an empty queue, as a missing list is.
func (c *Conn) Probe(ctx context.Context) (queue.Counts, error) {
	failed := FailedKey(c.o.Stream)
	var typ, ftyp *goredis.StatusCmd
	var xlen, flen *goredis.IntCmd
	var groups *goredis.Cmd
	_, perr := c.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		typ = p.Type(ctx, c.o.Stream)
		ftyp = p.Type(ctx, failed)
		xlen = p.XLen(ctx, c.o.Stream)
		flen = p.XLen(ctx, failed)
		// Raw, not XInfoGroups: go-redis reads a missing lag field (Redis before 7.0)
		// as a lag of 0, an empty queue.
		groups = p.Do(ctx, "XINFO", "GROUPS", c.o.Stream)
		return nil
	})
	if err := typ.Err(); err != nil || typ.Val() == "" {
		// No answer at all (a connection that failed, or refused credentials) leaves
		// the commands without a reply: the pipeline's error says why.
		if err == nil {
			err = perr
		}
		return queue.Counts{}, c.fail(err)
	}
	if err := c.checkTypes(typ.Val(), ftyp); err != nil {
		return queue.Counts{}, err
	}
	var counts queue.Counts
	switch err := flen.Err(); {
	case err != nil && strings.HasPrefix(err.Error(), "NOPERM"):
		// An ACL user without access to the dead-letter stream: the probe counts the
		// queue, and says that it could not count the dead letters.
		counts.DeadLetteredUnknown = true
	case err != nil:
		return queue.Counts{}, c.fail(err)
	default:
		counts.DeadLettered = flen.Val()
	}
	if typ.Val() == "none" {
		return counts, nil
	}
	if err := xlen.Err(); err != nil {
		return queue.Counts{}, c.fail(err)
	}
	if err := groups.Err(); err != nil {
		return queue.Counts{}, c.fail(err)
	}
	counts.Ready = xlen.Val()
	if g, ok := groupOf(groups.Val(), c.o.Group); ok {
		counts.InFlight = g.pending
		counts.Ready = g.ready(xlen.Val())
	}
	return counts, nil
}

// groupInfo is what the probe reads of a group in XINFO GROUPS.
type groupInfo struct {
	pending int64
	// lag is the entries not yet delivered; hasLag is false if Redis did not tell it
	// (nil after deletions, or no lag field before Redis 7.0).
	lag    int64
	hasLag bool
}

// ready is the group's ready entries (see Probe): its lag, or if Redis did not tell
// it, XLEN minus the pending entries.
func (g groupInfo) ready(xlen int64) int64 {
	if g.hasLag {
		return g.lag
	}
	return max(xlen-g.pending, 0)
}

// groupOf finds the group name in a raw XINFO GROUPS reply: an array with, for each group,
// a map (RESP3) or a flat list of fields and values (RESP2).
func groupOf(reply any, name string) (groupInfo, bool) {
	groups, _ := reply.([]any)
	for _, g := range groups {
		fields := map[string]any{}
		switch g := g.(type) {
		case map[any]any:
			for k, v := range g {
				if ks, ok := k.(string); ok {
					fields[ks] = v
				}
			}
		case []any:
			for i := 0; i+1 < len(g); i += 2 {
				if ks, ok := g[i].(string); ok {
					fields[ks] = g[i+1]
				}
			}
		}
		if fields["name"] != name {
			continue
		}
		var info groupInfo
		info.pending, _ = fields["pending"].(int64)
		info.lag, info.hasLag = fields["lag"].(int64)
		return info, true
	}
	return groupInfo{}, false
}

// checkTypes checks that the stream (of type typ) and its :failed key are streams, or
// missing.
func (c *Conn) checkTypes(typ string, ftyp *goredis.StatusCmd) error {
	if typ != "stream" && typ != "none" {
		if !streamTypes[typ] {
			typ = "value of another type" // the peer's own word: not repeated
		}
		return queue.Errorf(queue.ReasonWrongType, "Redis key %q holds a %s, not a stream: point spec.queue.redisStream.stream at a stream", c.o.Stream, typ)
	}
	if t := ftyp.Val(); ftyp.Err() == nil && t != "stream" && t != "none" {
		return queue.Errorf(queue.ReasonWrongType, "Redis at %s: key %q, where workers dead-letter items, is not a stream: "+
			"rename or delete it, or point spec.queue.redisStream.stream at another stream", c.o.Address, FailedKey(c.o.Stream))
	}
	return nil
}

// Reap returns to the queue the entries pending longer than the lease plus grace (their
// worker stopped renewing: it crashed, or its pod is gone), each at the end of the
// stream with an attempt counted, and deletes the group's consumers that hold nothing
// and have been idle as long (workers that are gone, whose Close did not delete their
// consumer: a live worker's consumer is created again by its next read, so deleting one
// costs nothing). The pending entries and the consumers are read in one round trip. Each
// entry is returned by a script that checks its idle time again, so that a renewal in
// between keeps it where it is: an entry a live worker renews is never taken from it. A
// missing stream or group has nothing to reap. Of grace it adds at most 10 s
// (maxReapGrace): the server keeps the idle times, so no second sighting is needed, and
// a long probe interval must not keep a crashed worker's entry for hours.
//
// The entries of a consumer gone says is gone (the consumer is named by the worker's
// session, and its pod ended) are returned at once, whatever their idle time, and the
// consumer deleted: a live worker never reads as a gone pod's consumer.
func (c *Conn) Reap(ctx context.Context, now time.Time, grace time.Duration, gone queue.GoneHolders) (int, error) {
	minIdle := reapAfter(c.o.LeaseTTL, grace)
	var pending *goredis.XPendingExtCmd
	var consumers *goredis.XInfoConsumersCmd
	_, err := c.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		pending = p.XPendingExt(ctx, &goredis.XPendingExtArgs{
			Stream: c.o.Stream, Group: c.o.Group, Idle: minIdle, Start: "-", End: "+", Count: c.o.MaxScan,
		})
		consumers = p.XInfoConsumers(ctx, c.o.Stream, c.o.Group)
		return nil
	})
	if isNoGroup(pending.Err()) || isNoGroup(consumers.Err()) {
		return 0, nil
	}
	if err != nil {
		return 0, c.fail(err)
	}
	reclaimed, stuck, err := c.reapGone(ctx, consumers.Val(), gone)
	if err != nil {
		return reclaimed, err
	}
	n, refused, err := c.reclaimAll(ctx, pending.Val(), "", minIdle)
	reclaimed += n
	if err != nil {
		return reclaimed, err
	}
	stuck = cmp.Or(refused, stuck)
	if err := c.deleteStranded(ctx, consumers.Val(), minIdle); err != nil {
		return reclaimed, err
	}
	if stuck != nil {
		return reclaimed, c.fail(stuck)
	}
	return reclaimed, nil
}

// unmovable is the error a reaper dead-letters an entry with when it could not return
// it with its fields.
const unmovable = "the reaper could not return the entry to the stream with its fields (too many fields?): " +
	"dead-lettered with its item field alone"

// reclaim returns the entry id, pending at least minIdle, to the end of the stream with
// an attempt counted (returned is true). If the server refuses its copy (an entry of
// thousands of fields), it dead-letters the entry with its item field alone instead, so
// that one entry never stays pending for good; only if that is refused too (a server
// out of memory) is the error returned, the entry left pending as it was.
func (c *Conn) reclaim(ctx context.Context, id, consumer string, minIdle time.Duration) (returned bool, err error) {
	n, err := moveScript.Run(ctx, c.client, []string{c.o.Stream, c.o.Stream},
		c.o.Group, id, consumer, minIdle.Milliseconds(), 1, "").Int()
	var reply goredis.Error
	if !errors.As(err, &reply) {
		return err == nil && n >= 0, err
	}
	return false, moveScript.Run(ctx, c.client, []string{c.o.Stream, FailedKey(c.o.Stream)},
		c.o.Group, id, consumer, minIdle.Milliseconds(), 1, unmovable, "1").Err()
}

// reclaimAll returns the pending entries to the stream (reclaim), those of consumer if
// it is not empty, pending at least minIdle, and counts them. An entry the server refuses
// to move is left, and the last refusal is refused; err is a failed connection, which
// would fail the next entry too.
func (c *Conn) reclaimAll(ctx context.Context, entries []goredis.XPendingExt, consumer string, minIdle time.Duration) (reclaimed int, refused, err error) {
	for _, p := range entries {
		returned, err := c.reclaim(ctx, p.ID, consumer, minIdle)
		var reply goredis.Error
		if err != nil && !errors.As(err, &reply) {
			return reclaimed, refused, c.fail(err)
		}
		if err != nil {
			refused = err // the server refused this entry's moves: go on to the next
		}
		if returned {
			reclaimed++
		}
	}
	return reclaimed, refused, nil
}

// reapGone returns the entries pending for the consumers gone says are gone, at most
// MaxScan of each per call, and deletes those consumers once they hold none. An entry
// the server refuses to move (and to dead-letter) stays pending, for the reaper's next
// call: its refusal is stuck, which Reap returns once it has done the rest; err is a
// failed connection.
func (c *Conn) reapGone(ctx context.Context, consumers []goredis.XInfoConsumer, gone queue.GoneHolders) (reclaimed int, stuck, err error) {
	for _, cs := range consumers {
		if cs.Pending == 0 || !gone.Gone(cs.Name) {
			continue
		}
		pending, err := c.client.XPendingExt(ctx, &goredis.XPendingExtArgs{
			Stream: c.o.Stream, Group: c.o.Group, Start: "-", End: "+", Count: c.o.MaxScan, Consumer: cs.Name,
		}).Result()
		if err != nil {
			return reclaimed, stuck, c.fail(err)
		}
		n, refused, err := c.reclaimAll(ctx, pending, cs.Name, 0)
		reclaimed += n
		if err != nil {
			return reclaimed, stuck, err
		}
		stuck = cmp.Or(refused, stuck)
		if err := deleteConsumerScript.Run(ctx, c.client, []string{c.o.Stream}, c.o.Group, cs.Name).Err(); err != nil {
			return reclaimed, stuck, c.fail(err)
		}
	}
	return reclaimed, stuck, nil
}

// maxReapGrace bounds the grace Reap adds to the lease. The controller's grace,
// max(10 s, 2 × probeIntervalSeconds), is for the list backend's reaper, which must see
// a lease gone in two probes; a stream's idle times are kept by the server, so a long
// probe interval needs no longer grace, and must not keep a crashed worker's entry (and
// the wave that waits for it) for hours.
const maxReapGrace = 10 * time.Second

// reapAfter is how long an entry stays pending without a renewal before Reap returns it:
// the lease plus the grace, at most maxReapGrace of it.
func reapAfter(lease, grace time.Duration) time.Duration {
	return lease + min(grace, maxReapGrace)
}

// deleteStranded deletes the consumers idle for longer than idle that hold no pending
// entry (the script checks; the consumers' pending counts were read before the entries
// were reclaimed, so a killed worker's consumer goes in the pass that returns its entry).
func (c *Conn) deleteStranded(ctx context.Context, consumers []goredis.XInfoConsumer, idle time.Duration) error {
	for _, cs := range consumers {
		if cs.Idle < idle {
			continue
		}
		if err := deleteConsumerScript.Run(ctx, c.client, []string{c.o.Stream}, c.o.Group, cs.Name).Err(); err != nil {
			return c.fail(err)
		}
	}
	return nil
}
