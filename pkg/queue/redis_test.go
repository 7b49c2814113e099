package queue

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// rdb is a plain client for the test to play producer and rediswq worker.
func rdb(t *testing.T) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redisServer.Addr(), DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// key is a fresh list name per test.
func key(t *testing.T) string { return "q-" + strings.ReplaceAll(t.Name(), "/", "-") }

func newRedis(t *testing.T, k string) *Redis {
	t.Helper()
	r := NewRedis(RedisOptions{Address: redisServer.Addr(), Key: k})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// rediswqLease does what rediswq.py's lease() does: RPOPLPUSH into the processing list,
// then SETEX the lease key named after the item's sha224.
func rediswqLease(t *testing.T, c *redis.Client, k string, secs time.Duration) string {
	t.Helper()
	item, err := c.RPopLPush(ctx(t), k, k+":processing").Result()
	if err != nil {
		t.Fatalf("RPOPLPUSH: %v", err)
	}
	if err := c.SetEx(ctx(t), LeaseKey(k, item), "session-1", secs).Err(); err != nil {
		t.Fatal(err)
	}
	return item
}

func TestLeaseKeyIsRediswqs(t *testing.T) {
	// hashlib.sha224(b"apple").hexdigest(), computed by Python: the key rediswq.py writes.
	want := "job2:leased_by_session:b7bbfdf1a1012999b3c466fdeb906a629caa5e3e022428d1eb702281"
	if got := LeaseKey("job2", "apple"); got != want {
		t.Errorf("LeaseKey = %q, want %q", got, want)
	}
	if got, want := LeaseKey("k", "ü-item"), "k:leased_by_session:1c5f33a1fd04610467a3a6d2ada15aec5f20a9e4fca01d9309589ac2"; got != want {
		t.Errorf("LeaseKey of a UTF-8 item = %q, want %q", got, want)
	}
	if got := ProcessingKey("job2"); got != "job2:processing" {
		t.Errorf("ProcessingKey = %q", got)
	}
}

func TestRedisProbe(t *testing.T) {
	c := rdb(t)
	cases := []struct {
		name   string
		setup  func(k string)
		want   Counts
		reason string
	}{
		{name: "missing list is empty", setup: func(string) {}, want: Counts{}},
		{name: "waiting items", setup: func(k string) { c.RPush(ctx(t), k, "a", "b", "c") }, want: Counts{Ready: 3}},
		{name: "waiting and in-flight items", setup: func(k string) {
			c.RPush(ctx(t), k, "apple", "banana", "cherry", "date", "fig")
			rediswqLease(t, c, k, time.Minute)
			rediswqLease(t, c, k, time.Minute)
		}, want: Counts{Ready: 3, InFlight: 2}},
		{name: "a string where the list should be", setup: func(k string) { c.Set(ctx(t), k, "x", 0) }, reason: ReasonWrongType},
		{name: "a hash where the processing list should be", setup: func(k string) {
			c.RPush(ctx(t), k, "a")
			c.HSet(ctx(t), k+":processing", "f", "v")
		}, reason: ReasonWrongType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := key(t)
			tc.setup(k)
			got, err := newRedis(t, k).Probe(ctx(t))
			if tc.reason != "" {
				if ReasonOf(err) != tc.reason || err == nil {
					t.Fatalf("Probe error = %v (reason %s), want reason %s", err, ReasonOf(err), tc.reason)
				}
				if !strings.Contains(err.Error(), "spec.queue.redis.key") {
					t.Errorf("error %q does not say which field to fix", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Probe (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRedisProbeErrors(t *testing.T) {
	cases := []struct {
		name   string
		opts   RedisOptions
		reason string
	}{
		{name: "right password", opts: RedisOptions{Address: authRedis.Addr(), Password: redisPassword}},
		{name: "wrong password", opts: RedisOptions{Address: authRedis.Addr(), Password: "wrong-pass-xyz"}, reason: ReasonAuthFailed},
		{name: "no password", opts: RedisOptions{Address: authRedis.Addr()}, reason: ReasonAuthFailed},
		{name: "nothing listening", opts: RedisOptions{Address: closedPort(t)}, reason: ReasonConnectionFailed},
		{name: "a server that never answers", opts: RedisOptions{Address: silentServer(t), Timeout: 500 * time.Millisecond}, reason: ReasonConnectionFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Key = "k"
			r := NewRedis(tc.opts)
			defer r.Close()
			start := time.Now()
			_, err := r.Probe(ctx(t))
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("Probe took %s: it must not hang", took)
			}
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Probe: %v", err)
				}
				return
			}
			var qe *Error
			if !errors.As(err, &qe) || qe.Reason != tc.reason {
				t.Fatalf("Probe error = %v, want reason %s", err, tc.reason)
			}
			for _, secret := range []string{redisPassword, "wrong-pass-xyz"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains the password", err)
				}
			}
		})
	}
}

func TestRedisReap(t *testing.T) {
	c := rdb(t)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	const grace = 10 * time.Second
	lrange := func(k string) []string {
		v, err := c.LRange(ctx(t), k, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(v)
		return v
	}

	t.Run("a live lease is never stolen", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "apple")
		rediswqLease(t, c, k, time.Hour)
		r := newRedis(t, k)
		for i := range 5 {
			n, err := r.Reap(ctx(t), t0.Add(time.Duration(i)*time.Hour), grace)
			if err != nil || n != 0 {
				t.Fatalf("Reap = %d, %v; want 0, nil", n, err)
			}
		}
		if got := lrange(k + ":processing"); !slices.Equal(got, []string{"apple"}) {
			t.Errorf("processing = %v", got)
		}
	})

	t.Run("an abandoned item comes back once, after the grace and not before", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "apple", "banana")
		item := rediswqLease(t, c, k, time.Hour)
		c.Del(ctx(t), LeaseKey(k, item)) // the lease expired: its worker is gone
		r := newRedis(t, k)
		for _, step := range []struct {
			at   time.Duration
			want int
		}{{0, 0}, {grace - time.Second, 0}, {grace, 1}, {2 * grace, 0}} {
			n, err := r.Reap(ctx(t), t0.Add(step.at), grace)
			if err != nil || n != step.want {
				t.Fatalf("Reap at +%s = %d, %v; want %d", step.at, n, err, step.want)
			}
		}
		if got := lrange(k); !slices.Equal(got, []string{"apple", "banana"}) {
			t.Errorf("waiting = %v, want both items back", got)
		}
		if got := lrange(k + ":processing"); len(got) != 0 {
			t.Errorf("processing = %v, want empty", got)
		}
	})

	t.Run("an item leased between two reaps is left alone", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "apple")
		// The worker has moved the item and not yet written its lease.
		item := c.RPopLPush(ctx(t), k, k+":processing").Val()
		r := newRedis(t, k)
		if n, _ := r.Reap(ctx(t), t0, grace); n != 0 {
			t.Fatalf("first Reap reclaimed %d", n)
		}
		c.SetEx(ctx(t), LeaseKey(k, item), "session-1", time.Hour)
		if n, err := r.Reap(ctx(t), t0.Add(time.Hour), grace); n != 0 || err != nil {
			t.Fatalf("Reap after the lease was written = %d, %v; want 0", n, err)
		}
		if got := lrange(k + ":processing"); !slices.Equal(got, []string{"apple"}) {
			t.Errorf("processing = %v", got)
		}
	})

	t.Run("two reapers return an item exactly once", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "apple")
		c.RPopLPush(ctx(t), k, k+":processing")
		a, b := newRedis(t, k), newRedis(t, k)
		for _, r := range []*Redis{a, b} {
			if n, _ := r.Reap(ctx(t), t0, grace); n != 0 {
				t.Fatal("reclaimed before the grace")
			}
		}
		na, errA := a.Reap(ctx(t), t0.Add(grace), grace)
		nb, errB := b.Reap(ctx(t), t0.Add(grace), grace)
		if errA != nil || errB != nil || na+nb != 1 {
			t.Fatalf("reclaimed %d+%d (%v, %v), want exactly 1", na, nb, errA, errB)
		}
		if got := lrange(k); !slices.Equal(got, []string{"apple"}) {
			t.Errorf("waiting = %v, want one apple", got)
		}
	})

	t.Run("duplicate values all come back", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "same", "same")
		c.RPopLPush(ctx(t), k, k+":processing")
		c.RPopLPush(ctx(t), k, k+":processing")
		r := newRedis(t, k)
		total := 0
		for i := range 6 {
			n, err := r.Reap(ctx(t), t0.Add(time.Duration(i)*grace), grace)
			if err != nil {
				t.Fatal(err)
			}
			total += n
		}
		if total != 2 || !slices.Equal(lrange(k), []string{"same", "same"}) {
			t.Errorf("reclaimed %d, waiting %v; want both copies back", total, lrange(k))
		}
	})

	t.Run("a completed item is not returned", func(t *testing.T) {
		k := key(t)
		c.RPush(ctx(t), k, "apple")
		item := c.RPopLPush(ctx(t), k, k+":processing").Val()
		r := newRedis(t, k)
		_, _ = r.Reap(ctx(t), t0, grace)
		// rediswq's complete(): LREM, then DEL of the lease key.
		c.LRem(ctx(t), k+":processing", 0, item)
		if n, _ := r.Reap(ctx(t), t0.Add(grace), grace); n != 0 {
			t.Fatalf("reclaimed a completed item")
		}
		if got := lrange(k); len(got) != 0 {
			t.Errorf("waiting = %v, want empty", got)
		}
	})
}

func TestRedisKind(t *testing.T) {
	ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "password"}
	src := &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6379", Key: "job2", DB: ptr.To[int32](3), PasswordSecretRef: ref}}
	want := []corev1.EnvVar{
		{Name: EnvRedisAddress, Value: "redis:6379"},
		{Name: EnvRedisKey, Value: "job2"},
		{Name: EnvRedisDB, Value: "3"},
		{Name: EnvRedisPassword, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref}},
	}
	if diff := cmp.Diff(want, RedisKind.WorkerEnv(src)); diff != "" {
		t.Errorf("WorkerEnv (-want +got):\n%s", diff)
	}
	if got := RedisKind.SecretRefs(src); len(got) != 1 || got[0].Name != "redis" {
		t.Errorf("SecretRefs = %v", got)
	}
	kind, err := DefaultRegistry().For(src)
	if err != nil || kind.Name != "redis" {
		t.Errorf("registry chose %v, %v", kind, err)
	}

	b, err := RedisKind.Open(Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: authRedis.Addr(), Key: "k", PasswordSecretRef: ref}},
		Secrets: map[string]string{"redis/password": redisPassword}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Probe(ctx(t)); err != nil {
		t.Errorf("Probe with the password from the Secret: %v", err)
	}
}
