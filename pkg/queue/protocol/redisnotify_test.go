package protocol

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// writes records the keys a KeyWatch reports.
type writes struct {
	mu   sync.Mutex
	keys []string
}

func (w *writes) add(k string) {
	w.mu.Lock()
	w.keys = append(w.keys, k)
	w.mu.Unlock()
}

func (w *writes) count(k string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, x := range w.keys {
		if x == k {
			n++
		}
	}
	return n
}

// eventually polls cond for up to a minute.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within a minute: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// activeWith waits until the watch is active and the server tracks the key: a write
// made then is heard of.
func activeWith(t *testing.T, w *KeyWatch, rec *writes, key string) {
	t.Helper()
	eventually(t, "the watch is active", func() bool { ok, _ := w.Active(); return ok })
	// After it is active, each new key is tracked once the watch's goroutine took the
	// change: write until one write is heard.
	c := redisServer.RedisClient(t)
	eventually(t, "a write to "+key+" is heard", func() bool {
		if err := c.Set(ctx(t), key+":probe-write", "x", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		return rec.count(key+":probe-write") > 0 || rec.count(key) > 0
	})
}

func TestKeyWatchHearsWritesToItsKeysOnly(t *testing.T) {
	key := fmt.Sprintf("kw-%d", time.Now().UnixNano())
	rec := &writes{}
	w := NewKeyWatch(RedisOptions{Address: redisServer.Addr()}, rec.add, nil)
	defer w.Close()
	w.Add(key)
	eventually(t, "the watch is active", func() bool { ok, _ := w.Active(); return ok })
	// Activation reports every key (writes may have gone unheard before it).
	eventually(t, "the key reported on activation", func() bool { return rec.count(key) > 0 })

	c := redisServer.RedisClient(t)
	before := rec.count(key)
	// The key may not be tracked yet if the change raced the activation: push until heard.
	eventually(t, "an RPUSH to the key is heard", func() bool {
		if err := c.RPush(ctx(t), key, "item").Err(); err != nil {
			t.Fatal(err)
		}
		return rec.count(key) > before
	})
	// A key that merely starts with the watched one is covered by its prefix but is not
	// reported; another key is not tracked at all.
	if err := c.RPush(ctx(t), key+":processing", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.RPush(ctx(t), "other-"+key, "x").Err(); err != nil {
		t.Fatal(err)
	}
	n := rec.count(key)
	if err := c.RPush(ctx(t), key, "item2").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the second RPUSH is heard", func() bool { return rec.count(key) > n })
	if got := rec.count(key + ":processing"); got != 0 {
		t.Errorf("%s:processing reported %d times; only watched keys are", key, got)
	}
	if got := rec.count("other-" + key); got != 0 {
		t.Errorf("other-%s reported %d times", key, got)
	}
}

func TestKeyWatchOverlappingKeysAndRemove(t *testing.T) {
	base := fmt.Sprintf("kwo-%d", time.Now().UnixNano())
	rec := &writes{}
	w := NewKeyWatch(RedisOptions{Address: redisServer.Addr()}, rec.add, nil)
	defer w.Close()
	// "base" is a prefix of "base2": Redis refuses overlapping prefixes, so one covers both.
	w.Add(base)
	w.Add(base + "2")
	w.Add(base + "2") // counted
	eventually(t, "the watch is active", func() bool { ok, _ := w.Active(); return ok })
	c := redisServer.RedisClient(t)
	for _, k := range []string{base, base + "2"} {
		n := rec.count(k)
		eventually(t, "a write to "+k+" is heard", func() bool {
			if err := c.RPush(ctx(t), k, "x").Err(); err != nil {
				t.Fatal(err)
			}
			return rec.count(k) > n
		})
	}
	if ok, err := w.Active(); !ok {
		t.Fatalf("the watch is not active: %v", err)
	}
	// One Remove of base2 leaves it watched; base goes; the watch stays active.
	w.Remove(base + "2")
	w.Remove(base)
	if w.Len() != 1 {
		t.Fatalf("Len = %d after the removals, want 1", w.Len())
	}
	n := rec.count(base + "2")
	eventually(t, "base2 still heard", func() bool {
		if err := c.RPush(ctx(t), base+"2", "x").Err(); err != nil {
			t.Fatal(err)
		}
		return rec.count(base+"2") > n
	})
}

// TestKeyWatchRecoversFromKilledConnections: CLIENT KILL of the watch's connections (a
// failover, an idle timeout, an operator's hand) is noticed, and writes are heard again.
func TestKeyWatchRecoversFromKilledConnections(t *testing.T) {
	old := KeyWatchCheckInterval
	KeyWatchCheckInterval = 200 * time.Millisecond
	defer func() { KeyWatchCheckInterval = old }()
	key := fmt.Sprintf("kwk-%d", time.Now().UnixNano())
	rec := &writes{}
	w := NewKeyWatch(RedisOptions{Address: redisServer.Addr()}, rec.add, nil)
	defer w.Close()
	w.Add(key)
	activeWith(t, w, rec, key)
	c := redisServer.RedisClient(t)
	for _, kill := range []string{"tracking", "subscription"} {
		list, err := c.ClientList(ctx(t)).Result()
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, line := range strings.Split(list, "\n") {
			// The tracking connection has flag t (and B); the subscription has S or P, and
			// subscribed to one channel (sub=1).
			f := fields(line)
			if (kill == "tracking" && strings.Contains(f["flags"], "t")) ||
				(kill == "subscription" && f["sub"] == "1" && strings.Contains(f["cmd"], "subscribe")) {
				ids = append(ids, f["id"])
			}
		}
		if len(ids) == 0 {
			t.Fatalf("no %s connection in CLIENT LIST:\n%s", kill, list)
		}
		for _, id := range ids {
			if err := c.Do(ctx(t), "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Fatal(err)
			}
		}
		n := rec.count(key)
		eventually(t, "a write heard after the "+kill+" connection was killed", func() bool {
			if err := c.RPush(ctx(t), key, "x").Err(); err != nil {
				t.Fatal(err)
			}
			return rec.count(key) > n
		})
		// Heard from the watch recovered, not from a report on reactivation alone: the
		// report of activation comes once, the writes keep coming.
		m := rec.count(key)
		eventually(t, "writes keep being heard after the "+kill+" connection was killed", func() bool {
			if err := c.RPush(ctx(t), key, "y").Err(); err != nil {
				t.Fatal(err)
			}
			return rec.count(key) > m+2
		})
	}
}

// TestKeyWatchWithoutTracking: a user who may not run CLIENT, or may not subscribe to
// __redis__:invalidate, gets no watch, and it says why.
func TestKeyWatchWithoutTracking(t *testing.T) {
	for _, tc := range []struct {
		name string
		acl  []any
		says string
	}{
		{"no CLIENT command", []any{"~*", "&*", "+@all", "-client"}, "client|id"},
		{"no channels", []any{"~*", "resetchannels", "+@all"}, "channels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redisServer.RedisClient(t)
			user := fmt.Sprintf("notrack-%d", time.Now().UnixNano())
			if err := c.Do(ctx(t), append([]any{"ACL", "SETUSER", user, "reset", "on", ">pw"}, tc.acl...)...).Err(); err != nil {
				t.Fatal(err)
			}
			defer c.Do(ctx(t), "ACL", "DELUSER", user)
			states := &writes{}
			w := NewKeyWatch(RedisOptions{Address: redisServer.Addr(), Username: user, Password: "pw"}, func(string) {}, func(_ bool, err error) {
				if err != nil {
					states.add(err.Error())
				}
			})
			defer w.Close()
			w.Add("k")
			eventually(t, "the watch says why it is not active", func() bool {
				ok, err := w.Active()
				return !ok && err != nil && strings.Contains(err.Error(), tc.says)
			})
			_, err := w.Active()
			t.Logf("%v", err)
			eventually(t, "onState told why", func() bool { return states.count(err.Error()) == 1 })
		})
	}
}

// fields parses a CLIENT LIST line.
func fields(line string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			out[k] = v
		}
	}
	return out
}

// TestKeyWatchWithTheNamedACLRules: the rules the error names are enough.
func TestKeyWatchWithTheNamedACLRules(t *testing.T) {
	old := KeyWatchCheckInterval
	KeyWatchCheckInterval = 50 * time.Millisecond // the checks use CLIENT TRACKINGINFO
	defer func() { KeyWatchCheckInterval = old }()
	c := redisServer.RedisClient(t)
	user := fmt.Sprintf("tracker-%d", time.Now().UnixNano())
	if err := c.Do(ctx(t), "ACL", "SETUSER", user, "reset", "on", ">pw", "~*", "+@read", "+@write", "+select", "+ping",
		"+client|id", "+client|tracking", "+client|trackinginfo", "+subscribe", "&"+invalidateChannel).Err(); err != nil {
		t.Fatal(err)
	}
	defer c.Do(ctx(t), "ACL", "DELUSER", user)
	key := fmt.Sprintf("kwacl-%d", time.Now().UnixNano())
	rec := &writes{}
	w := NewKeyWatch(RedisOptions{Address: redisServer.Addr(), Username: user, Password: "pw"}, rec.add, nil)
	defer w.Close()
	w.Add(key)
	eventually(t, "the watch is active", func() bool {
		ok, err := w.Active()
		if err != nil && strings.Contains(err.Error(), "NOPERM") {
			t.Fatal(err)
		}
		return ok
	})
	n := rec.count(key)
	eventually(t, "a write is heard", func() bool {
		if err := c.RPush(ctx(t), key, "x").Err(); err != nil {
			t.Fatal(err)
		}
		return rec.count(key) > n
	})
	// Twenty checks later it is still active.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if ok, err := w.Active(); !ok {
			t.Fatalf("the watch stopped: %v", err)
		}
	}
}
