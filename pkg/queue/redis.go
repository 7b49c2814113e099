package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
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

// Environment variables of Redis workers.
const (
	EnvRedisAddress  = "QUEUEJOB_REDIS_ADDRESS"
	EnvRedisKey      = "QUEUEJOB_REDIS_KEY"
	EnvRedisDB       = "QUEUEJOB_REDIS_DB"
	EnvRedisPassword = "QUEUEJOB_REDIS_PASSWORD"
)

// RedisKind is the Redis list backend.
var RedisKind = Kind{
	Name:     "redis",
	Selected: func(s *qjv1.QueueSource) bool { return s.Redis != nil },
	SecretRefs: func(s *qjv1.QueueSource) []*corev1.SecretKeySelector {
		if s.Redis.PasswordSecretRef == nil {
			return nil
		}
		return []*corev1.SecretKeySelector{s.Redis.PasswordSecretRef}
	},
	Open: func(src Source) (Backend, error) {
		r := src.Spec.Redis
		return NewRedis(RedisOptions{
			Address:  r.Address,
			DB:       int(derefInt32(r.DB)),
			Password: src.Secret(r.PasswordSecretRef),
			Key:      r.Key,
		}), nil
	},
	WorkerEnv: func(s *qjv1.QueueSource) []corev1.EnvVar {
		r := s.Redis
		env := []corev1.EnvVar{
			{Name: EnvRedisAddress, Value: r.Address},
			{Name: EnvRedisKey, Value: r.Key},
			{Name: EnvRedisDB, Value: strconv.Itoa(int(derefInt32(r.DB)))},
		}
		if r.PasswordSecretRef != nil {
			env = append(env, corev1.EnvVar{Name: EnvRedisPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: r.PasswordSecretRef.DeepCopy()}})
		}
		return env
	},
}

// RedisOptions locate a Redis list.
type RedisOptions struct {
	Address, Password, Key string
	DB                     int
	// Timeout bounds dialing and each command; 5s if zero.
	Timeout time.Duration
	// MaxScan bounds how many in-flight items one Reap looks at; 10000 if zero.
	MaxScan int64
}

// Redis is a Redis list read with the rediswq protocol.
type Redis struct {
	client  *redis.Client
	key     string
	maxScan int64
	// unleased remembers when Reap first saw an in-flight item without a lease.
	unleased map[string]time.Time
}

// quietRedis keeps go-redis from printing its own connection errors to stderr: the probe
// reports them, once, in the QueueJob's status.
var quietRedis sync.Once

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// NewRedis returns a Redis backend; it connects on first use.
func NewRedis(o RedisOptions) *Redis {
	quietRedis.Do(func() { redis.SetLogger(discardLogger{}) })
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.MaxScan == 0 {
		o.MaxScan = 10000
	}
	return &Redis{
		client: redis.NewClient(&redis.Options{
			Addr: o.Address, Password: o.Password, DB: o.DB,
			DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
			PoolSize: 2, MaxRetries: -1,
			// The probe, not go-redis, decides when to try again.
			DisableIdentity: true,
		}),
		key:      o.Key,
		maxScan:  o.MaxScan,
		unleased: map[string]time.Time{},
	}
}

// Probe counts the waiting items (LLEN <key>) and the in-flight ones
// (LLEN <key>:processing), and checks both keys are lists.
func (r *Redis) Probe(ctx context.Context) (Counts, error) {
	proc := ProcessingKey(r.key)
	var main, inflight *redis.StatusCmd
	var mainLen, procLen *redis.IntCmd
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		main = p.Type(ctx, r.key)
		inflight = p.Type(ctx, proc)
		mainLen = p.LLen(ctx, r.key)
		procLen = p.LLen(ctx, proc)
		return nil
	})
	for _, t := range []struct {
		key string
		cmd *redis.StatusCmd
	}{{r.key, main}, {proc, inflight}} {
		if typ := t.cmd.Val(); t.cmd.Err() == nil && typ != "" && typ != "list" && typ != "none" {
			return Counts{}, Errorf(ReasonWrongType, "Redis key %q holds a %s, not a list: point spec.queue.redis.key at a list", t.key, typ)
		}
	}
	if err != nil {
		return Counts{}, redisError(err)
	}
	return Counts{Ready: mainLen.Val(), InFlight: procLen.Val()}, nil
}

// reclaimScript returns one in-flight item to the waiting list, atomically and only if
// it still has no lease and is still in flight: two reapers, or a worker that leases the
// item at the same moment, can never make it be returned twice.
var reclaimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
`)

// Reap returns in-flight items whose lease is gone to the waiting list. An item is
// reclaimed only when it was already seen without a lease by a call at least grace
// before this one: a worker moves an item to <key>:processing and writes its lease in two
// steps, and must not lose the item in between.
func (r *Redis) Reap(ctx context.Context, now time.Time, grace time.Duration) (int, error) {
	proc := ProcessingKey(r.key)
	items, err := r.client.LRange(ctx, proc, 0, r.maxScan-1).Result()
	if err != nil {
		return 0, redisError(err)
	}
	seen := make(map[string]bool, len(items))
	var distinct []string
	for _, it := range items {
		if !seen[it] {
			seen[it] = true
			distinct = append(distinct, it)
		}
	}
	for it := range r.unleased {
		if !seen[it] {
			delete(r.unleased, it)
		}
	}
	exists := make([]*redis.IntCmd, len(distinct))
	if _, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, it := range distinct {
			exists[i] = p.Exists(ctx, LeaseKey(r.key, it))
		}
		return nil
	}); err != nil {
		return 0, redisError(err)
	}
	reclaimed := 0
	for i, it := range distinct {
		if exists[i].Val() == 1 {
			delete(r.unleased, it)
			continue
		}
		first, ok := r.unleased[it]
		if !ok {
			r.unleased[it] = now
			continue
		}
		if now.Sub(first) < grace {
			continue
		}
		n, err := reclaimScript.Run(ctx, r.client, []string{proc, r.key, LeaseKey(r.key, it)}, it).Int()
		if err != nil {
			return reclaimed, redisError(err)
		}
		delete(r.unleased, it)
		reclaimed += n
	}
	return reclaimed, nil
}

// Close closes the connection pool.
func (r *Redis) Close() error { return r.client.Close() }

// redisError classifies an error of go-redis. Its messages carry no credentials: go-redis
// reports addresses and server replies, never the password.
func redisError(err error) error {
	msg := err.Error()
	var netErr net.Error
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "invalid password"),
		strings.Contains(msg, "AUTH <password> called without any password"):
		return Errorf(ReasonAuthFailed, "Redis refused the credentials (%s): check the Secret of spec.queue.redis.passwordSecretRef", firstLine(msg))
	case strings.HasPrefix(msg, "WRONGTYPE"):
		return Errorf(ReasonWrongType, "Redis: %s: point spec.queue.redis.key at a list", firstLine(msg))
	case errors.As(err, &netErr), errors.Is(err, context.DeadlineExceeded), errors.Is(err, redis.ErrClosed):
		return Errorf(ReasonConnectionFailed, "cannot reach Redis: %s", firstLine(msg))
	default:
		return Errorf(ReasonConnectionFailed, "Redis: %s", firstLine(msg))
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func derefInt32(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}
