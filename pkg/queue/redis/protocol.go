// Package redis is everything on Redis's wire, without Kubernetes: the rediswq protocol's
// key names and scripts (protocol.go), the operator's probe and lease reaper (conn.go),
// the keyspace watch (watch.go), the worker's read-back of its QUEUEJOB_REDIS_* variables
// (env.go), a client for workers and tools (client.go) and the fixed words its errors
// are classified in (errors.go). go-redis is imported as goredis. The Kubernetes side
// (spec.queue.redis -> Options) is pkg/queue/redis/kube.
package redis

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// The Redis protocol is the one of the Kubernetes docs' rediswq.py ("Fine Parallel
// Processing Using a Work Queue"), so that workers written against it work unchanged:
//
//   - <key> is the list of waiting items; workers take from its tail (RPOPLPUSH or
//     BRPOPLPUSH) into <key>:processing;
//   - the worker then writes <key>:leased_by_session:<hex sha224 of the item> with its
//     session id and an expiry (SETEX);
//   - when done it removes the item from <key>:processing (LREM) and deletes the lease key.
//
// rediswq leaves returning the items of crashed workers as a TODO; Reap does it.

// ProcessingKey is the list of items taken by workers.
func ProcessingKey(key string) string { return key + ":processing" }

// LeaseKey is the key whose existence says a worker holds the item.
func LeaseKey(key, item string) string {
	sum := sha256.Sum224([]byte(item))
	return key + ":leased_by_session:" + hex.EncodeToString(sum[:])
}

// The worker side of the Redis protocol (above: the rediswq protocol the controller counts
// and reaps, conn.go). Workers of pkg/worker, the qj CLI and the controller share
// these keys and scripts; nothing else restates them. On top of rediswq.py's keys, which a
// rediswq.py worker keeps using unchanged, the worker library adds:
//
//   - <key>:attempts, a hash from the item's digest (ItemDigest, the hex sha224 of the
//     lease key) to the number of times the item was leased and not completed. It lives in
//     Redis, so a worker that crashes on an item again and again cannot reset it: an item
//     counts an attempt when it is leased (WQ.Claim), so a lease the reaper reclaims
//     from a crashed worker has counted; Complete drops the count, Release (a worker that
//     shuts down) gives the attempt back.
//   - <key>:failed, the dead-letter list: an item whose maxAttempts-th attempt fails, or
//     that is leased once more after maxAttempts attempts, goes there (newest at the head)
//     instead of back to <key>, and its count is dropped. RequeueFailed puts items back.
//
// rediswq.py workers do not count attempts; their items are never dead-lettered.

// FailedKey is the dead-letter list of items that failed their attempts.
func FailedKey(key string) string { return key + ":failed" }

// AttemptsKey is the hash from ItemDigest to the number of attempts the item has had.
func AttemptsKey(key string) string { return key + ":attempts" }

// ItemDigest is the hex sha224 of an item, as in its lease key (LeaseKey) and as the field
// of AttemptsKey.
func ItemDigest(item string) string {
	sum := sha256.Sum224([]byte(item))
	return hex.EncodeToString(sum[:])
}

// WQ is the worker side of the protocol on one list: what a worker does to take,
// hold and finish an item, and what the CLI does with the dead-letter list. Its methods
// take the item's value and the lease holder's session id (the value of the lease key).
// It is safe for concurrent use as far as its client is.
type WQ struct {
	Client goredis.UniversalClient
	// Key is the list of waiting items.
	Key string
}

// ErrNoItem says Take found nothing waiting.
var ErrNoItem = errors.New("no item waiting")

// Take moves the oldest waiting item to <key>:processing, as rediswq's lease does
// (RPOPLPUSH: the tail of <key> to the head of <key>:processing), waiting up to block for
// one (not at all if block is 0). It returns ErrNoItem if none came. The item has no lease
// yet: Claim must follow at once (the reaper leaves an unleased item alone for its grace).
func (q WQ) Take(ctx context.Context, block time.Duration) (string, error) {
	var item string
	var err error
	if block <= 0 {
		item, err = q.Client.LMove(ctx, q.Key, ProcessingKey(q.Key), "RIGHT", "LEFT").Result()
	} else {
		item, err = q.Client.BLMove(ctx, q.Key, ProcessingKey(q.Key), "RIGHT", "LEFT", block).Result()
	}
	if errors.Is(err, goredis.Nil) {
		return "", ErrNoItem
	}
	return item, err
}

// Claim outcomes.
const (
	// ClaimLost: the item is no longer in <key>:processing (the reaper returned it, or a
	// Take long ago); the worker must not work on it.
	ClaimLost = iota
	// ClaimLeased: the lease is written; the attempt count says which attempt this is.
	ClaimLeased
	// ClaimDeadLettered: the item had had maxAttempts attempts already (its workers
	// crashed, or their leases ran out): it went to <key>:failed instead.
	ClaimDeadLettered
)

// deadLetterClaimedScript dead-letters an item Claim found over its attempts, if it is
// still in flight. KEYS: processing, lease, attempts, failed. ARGV: item, digest.
var deadLetterClaimedScript = goredis.NewScript(`
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('LPUSH', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
`)

// Claim writes the lease of an item that Take moved (SET of the lease key with session and
// ttl, as rediswq's SETEX) and counts the attempt (HINCRBY of its field in
// <key>:attempts), in one round trip of plain commands: the hot path of every item, where
// a script would cost the server several times as much. Neither step can do harm alone:
// a worker that dies between them leaves a counted item without a lease, which the reaper
// returns. With maxAttempts > 0, an item that has had maxAttempts attempts already is
// dead-lettered instead, atomically. It returns the outcome (ClaimLost, ClaimLeased,
// ClaimDeadLettered) and the attempt number (for ClaimDeadLettered, the attempts it had).
func (q WQ) Claim(ctx context.Context, item, session string, ttl time.Duration, maxAttempts int) (outcome, attempt int, err error) {
	digest := ItemDigest(item)
	lease := LeaseKey(q.Key, item)
	var n *goredis.IntCmd
	if _, err := q.Client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		n = p.HIncrBy(ctx, AttemptsKey(q.Key), digest, 1)
		p.Set(ctx, lease, session, ttl)
		return nil
	}); err != nil {
		return 0, 0, err
	}
	if maxAttempts <= 0 || int(n.Val()) <= maxAttempts {
		return ClaimLeased, int(n.Val()), nil
	}
	moved, err := deadLetterClaimedScript.Run(ctx, q.Client,
		[]string{ProcessingKey(q.Key), lease, AttemptsKey(q.Key), FailedKey(q.Key)}, item, digest).Int()
	if err != nil {
		return 0, 0, err
	}
	if moved == 0 {
		return ClaimLost, 0, nil
	}
	return ClaimDeadLettered, int(n.Val()) - 1, nil
}

// renewScript extends a lease the session holds. A lease that expired while its item is
// still in flight (not yet reclaimed) is written again; one another session holds, or of
// an item no longer in flight, is lost.
// KEYS: processing, lease. ARGV: item, session, ttl ms.
var renewScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[2])
if v == ARGV[2] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
if v then return 0 end
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
`)

// Renew sets the lease's expiry to ttl from now. It reports false if the session lost the
// lease: another holds it, or the item is no longer in flight.
func (q WQ) Renew(ctx context.Context, item, session string, ttl time.Duration) (bool, error) {
	n, err := renewScript.Run(ctx, q.Client, []string{ProcessingKey(q.Key), LeaseKey(q.Key, item)},
		item, session, ttl.Milliseconds()).Int()
	return n == 1, err
}

// completeScript finishes an item: out of <key>:processing, its lease and count dropped.
// KEYS: processing, lease, attempts. ARGV: item, session, digest.
var completeScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[2])
if v and v ~= ARGV[2] then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if v then redis.call('DEL', KEYS[2]) end
redis.call('HDEL', KEYS[3], ARGV[3])
return 1
`)

// Complete removes a finished item from <key>:processing (rediswq's LREM), deletes its
// lease (DEL) and drops its attempt count, atomically. It reports false, and changes
// nothing, if the session lost the item: another session holds its lease, or it is no
// longer in flight (the reaper returned it to <key>, where it will run again).
func (q WQ) Complete(ctx context.Context, item, session string) (bool, error) {
	n, err := completeScript.Run(ctx, q.Client,
		[]string{ProcessingKey(q.Key), LeaseKey(q.Key, item), AttemptsKey(q.Key)},
		item, session, ItemDigest(item)).Int()
	return n == 1, err
}

// releaseScript returns an item to the front of <key> and gives its attempt back.
// KEYS: processing, main, lease, attempts. ARGV: item, session, digest.
var releaseScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[3])
if v and v ~= ARGV[2] then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if v then redis.call('DEL', KEYS[3]) end
redis.call('RPUSH', KEYS[2], ARGV[1])
if redis.call('HINCRBY', KEYS[4], ARGV[3], -1) <= 0 then redis.call('HDEL', KEYS[4], ARGV[3]) end
return 1
`)

// Release returns an item the worker will not finish (it is shutting down) to <key> at
// once, where it is the next to be taken (the tail, as the reaper returns items), deletes
// its lease and gives its attempt back: a shutdown is not the item's failure. It reports
// false, and changes nothing, if the session lost the item.
func (q WQ) Release(ctx context.Context, item, session string) (bool, error) {
	n, err := releaseScript.Run(ctx, q.Client,
		[]string{ProcessingKey(q.Key), q.Key, LeaseKey(q.Key, item), AttemptsKey(q.Key)},
		item, session, ItemDigest(item)).Int()
	return n == 1, err
}

// failScript returns a failed item to the back of <key>, or dead-letters it after its
// last attempt. KEYS: processing, main, lease, attempts, failed. ARGV: item, session,
// digest, max.
var failScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[3])
if v and v ~= ARGV[2] then return {0, 0} end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return {0, 0} end
if v then redis.call('DEL', KEYS[3]) end
local n = tonumber(redis.call('HGET', KEYS[4], ARGV[3]) or '0')
local max = tonumber(ARGV[4])
if max > 0 and n >= max then
  redis.call('LPUSH', KEYS[5], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[3])
  return {2, n}
end
redis.call('LPUSH', KEYS[2], ARGV[1])
return {1, n}
`)

// Fail outcomes.
const (
	// FailLost: the session had lost the item; nothing changed.
	FailLost = iota
	// FailRetry: the item went back to the head of <key> (the end of the line) for
	// another attempt.
	FailRetry
	// FailDeadLettered: that was its maxAttempts-th attempt: it went to <key>:failed.
	FailDeadLettered
)

// Fail finishes an attempt that failed, atomically: the item leaves <key>:processing and
// its lease is deleted; if it has had maxAttempts attempts (maxAttempts > 0) it goes to
// <key>:failed and its count is dropped, otherwise it goes back to <key> behind the
// waiting items. It returns the outcome (FailLost, FailRetry, FailDeadLettered) and the
// attempts the item has had.
func (q WQ) Fail(ctx context.Context, item, session string, maxAttempts int) (outcome, attempts int, err error) {
	res, err := failScript.Run(ctx, q.Client,
		[]string{ProcessingKey(q.Key), q.Key, LeaseKey(q.Key, item), AttemptsKey(q.Key), FailedKey(q.Key)},
		item, session, ItemDigest(item), maxAttempts).Int64Slice()
	if err != nil {
		return 0, 0, err
	}
	return int(res[0]), int(res[1]), nil
}

// Attempts is how many attempts an item has had so far (leases not completed).
func (q WQ) Attempts(ctx context.Context, item string) (int, error) {
	n, err := q.Client.HGet(ctx, AttemptsKey(q.Key), ItemDigest(item)).Int()
	if errors.Is(err, goredis.Nil) {
		return 0, nil
	}
	return n, err
}

// Failed lists the dead-lettered items, newest first, at most limit of them (all if
// limit <= 0).
func (q WQ) Failed(ctx context.Context, limit int64) ([]string, error) {
	return q.Client.LRange(ctx, FailedKey(q.Key), 0, max(limit, 0)-1).Result()
}

// requeueScript moves up to ARGV[1] items from the tail of <key>:failed (the oldest) to
// the head of <key>. KEYS: failed, main.
var requeueScript = goredis.NewScript(`
local moved = 0
for i = 1, tonumber(ARGV[1]) do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') then break end
  moved = moved + 1
end
return moved
`)

// requeueBatch bounds the items one requeue script moves, so that it never blocks the
// server long.
const requeueBatch = 1000

// RequeueFailed moves up to n dead-lettered items (all if n <= 0), oldest first, back to
// <key>, behind the waiting items, each with a fresh count of attempts. Each item moves
// atomically; it returns how many moved.
func (q WQ) RequeueFailed(ctx context.Context, n int) (int, error) {
	moved := 0
	for n <= 0 || moved < n {
		batch := requeueBatch
		if n > 0 {
			batch = min(batch, n-moved)
		}
		m, err := requeueScript.Run(ctx, q.Client, []string{FailedKey(q.Key), q.Key}, batch).Int()
		moved += m
		if err != nil {
			return moved, fmt.Errorf("requeueing dead-lettered items: %w", err)
		}
		if m < batch {
			break
		}
	}
	return moved, nil
}

// requeueItemScript moves one copy of ARGV[1] (the newest) from <key>:failed to the head
// of <key>, where requeueScript puts the items it moves. KEYS: failed, main.
var requeueItemScript = goredis.NewScript(`
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
`)

// RequeueItem moves one dead-lettered copy of item back to <key>, behind the waiting
// items, atomically; false if <key>:failed does not hold it. Its count of attempts was
// dropped when it was dead-lettered.
func (q WQ) RequeueItem(ctx context.Context, item string) (bool, error) {
	n, err := requeueItemScript.Run(ctx, q.Client, []string{FailedKey(q.Key), q.Key}, item).Int()
	if err != nil {
		return false, fmt.Errorf("requeueing a dead-lettered item: %w", err)
	}
	return n == 1, nil
}

// dropItemScript deletes one copy of ARGV[1] from <key> (the next one workers would take),
// else from <key>:failed, and drops its count of attempts once no copy is left in the
// queue, in flight or dead-lettered. It returns 1 (from <key>), 2 (from <key>:failed) or 0.
// KEYS: main, failed, processing, attempts. ARGV: item, digest.
var dropItemScript = goredis.NewScript(`
local from = 0
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then from = 1
elseif redis.call('LREM', KEYS[2], 1, ARGV[1]) == 1 then from = 2
else return 0 end
if not redis.call('LPOS', KEYS[1], ARGV[1]) and not redis.call('LPOS', KEYS[2], ARGV[1])
   and not redis.call('LPOS', KEYS[3], ARGV[1]) then
  redis.call('HDEL', KEYS[4], ARGV[2])
end
return from
`)

// DropItem deletes one waiting copy of item, atomically: from <key> if it holds one
// (never an item in flight), else from <key>:failed. It returns the key it was deleted
// from, "" if neither holds it.
func (q WQ) DropItem(ctx context.Context, item string) (string, error) {
	from, err := dropItemScript.Run(ctx, q.Client,
		[]string{q.Key, FailedKey(q.Key), ProcessingKey(q.Key), AttemptsKey(q.Key)}, item, ItemDigest(item)).Int()
	switch {
	case err != nil:
		return "", fmt.Errorf("dropping an item: %w", err)
	case from == 1:
		return q.Key, nil
	case from == 2:
		return FailedKey(q.Key), nil
	}
	return "", nil
}

// CompleteAndTake completes an item (as Complete) and takes the next one (as Take,
// without waiting) in one round trip: the way a worker that goes on after an item
// spends one round trip less per item. next is "" with ErrNoItem if nothing was waiting;
// the next item, as after Take, must be claimed at once.
func (q WQ) CompleteAndTake(ctx context.Context, item, session string) (completed bool, next string, err error) {
	keys := []string{ProcessingKey(q.Key), LeaseKey(q.Key, item), AttemptsKey(q.Key)}
	args := []any{item, session, ItemDigest(item)}
	var done *goredis.Cmd
	var move *goredis.StringCmd
	_, err = q.Client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		done = completeScript.EvalSha(ctx, p, keys, args...)
		move = p.LMove(ctx, q.Key, ProcessingKey(q.Key), "RIGHT", "LEFT")
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) && !goredis.HasErrorPrefix(done.Err(), "NOSCRIPT") {
		return false, "", err
	}
	if goredis.HasErrorPrefix(done.Err(), "NOSCRIPT") {
		// The server does not have the script (yet): complete the slow way; the LMOVE
		// after it ran anyway.
		if completed, err = q.Complete(ctx, item, session); err != nil {
			return false, "", err
		}
	} else {
		n, err := done.Int()
		if err != nil {
			return false, "", err
		}
		completed = n == 1
	}
	next, err = move.Result()
	if errors.Is(err, goredis.Nil) {
		return completed, "", ErrNoItem
	}
	return completed, next, err
}
