package redis

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// writes records the keys a KeyWatch reports.
type writes struct {
	mu   sync.Mutex
	keys []string
}

// add records a key the server told of, or that the watch reported.
func (w *writes) add(k string, _ bool) {
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

// states counts a KeyWatch's activations.
type states struct{ n atomic.Int32 }

func (s *states) on(active bool, _ error) {
	if active {
		s.n.Add(1)
	}
}

// heardAfter pushes to key until a write is heard: the count of key's reports goes past
// what it was when heardAfter began. The caller takes care that no activation report
// falls in between (they come before Active is true).
func heardAfter(t *testing.T, rec *writes, key string) {
	t.Helper()
	c := redisServer.RedisClient(t)
	n := rec.count(key)
	eventually(t, "a write to "+key+" is heard", func() bool {
		if err := c.RPush(ctx(t), key, "x").Err(); err != nil {
			t.Fatal(err)
		}
		return rec.count(key) > n
	})
}

func TestKeyWatchHearsWritesToItsKeysOnly(t *testing.T) {
	key := fmt.Sprintf("kw-%d", time.Now().UnixNano())
	rec := &writes{}
	w := NewKeyWatch(Options{Address: redisServer.Addr()}, rec.add, nil)
	defer w.Close()
	w.Add(key)
	eventually(t, "the watch is active", func() bool { ok, _ := w.Active(); return ok })
	// Activation reported every key (writes may have gone unheard before it).
	if rec.count(key) == 0 {
		t.Fatal("the key was not reported on activation")
	}
	heardAfter(t, rec, key)
	// A key that merely starts with the watched one is covered by its prefix but is not
	// reported; another key is not tracked at all.
	c := redisServer.RedisClient(t)
	if err := c.RPush(ctx(t), key+":processing", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.RPush(ctx(t), "other-"+key, "x").Err(); err != nil {
		t.Fatal(err)
	}
	heardAfter(t, rec, key) // heard after the two writes above
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
	w := NewKeyWatch(Options{Address: redisServer.Addr()}, rec.add, nil)
	defer w.Close()
	// "base" is a prefix of "base2": Redis refuses overlapping prefixes, so one covers both.
	w.Add(base)
	w.Add(base + "2")
	w.Add(base + "2") // counted
	eventually(t, "the watch is active", func() bool { ok, _ := w.Active(); return ok })
	heardAfter(t, rec, base)
	heardAfter(t, rec, base+"2")
	// A key added to an active watch, not covered yet: tracked without losing the others.
	other := "other-" + base
	w.Add(other)
	heardAfter(t, rec, other)
	heardAfter(t, rec, base)
	if ok, err := w.Active(); !ok {
		t.Fatalf("the watch is not active: %v", err)
	}
	// One Remove of base2 leaves it watched; base goes; the watch stays active.
	w.Remove(base + "2")
	w.Remove(base)
	if w.Len() != 2 {
		t.Fatalf("Len = %d after the removals, want 2", w.Len())
	}
	heardAfter(t, rec, base+"2")
}

// TestKeyWatchRecoversFromKilledConnections: CLIENT KILL of the watch's connections (a
// failover, an idle timeout, an operator's hand) is noticed, and writes are heard again.
func TestKeyWatchRecoversFromKilledConnections(t *testing.T) {
	old := KeyWatchCheckInterval
	KeyWatchCheckInterval = 200 * time.Millisecond
	defer func() { KeyWatchCheckInterval = old }()
	key := fmt.Sprintf("kwk-%d", time.Now().UnixNano())
	rec := &writes{}
	st := &states{}
	w := NewKeyWatch(Options{Address: redisServer.Addr()}, rec.add, st.on)
	defer w.Close()
	w.Add(key)
	eventually(t, "the watch is active", func() bool { ok, _ := w.Active(); return ok })
	heardAfter(t, rec, key)
	c := redisServer.RedisClient(t)
	for _, kill := range []string{"tracking", "subscription"} {
		list, err := c.ClientList(ctx(t)).Result()
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, line := range strings.Split(list, "\n") {
			// The tracking connection has flag t; the subscription subscribed to one
			// channel (sub=1).
			f := fields(line)
			if (kill == "tracking" && strings.Contains(f["flags"], "t")) ||
				(kill == "subscription" && f["sub"] == "1" && strings.Contains(f["cmd"], "subscribe")) {
				ids = append(ids, f["id"])
			}
		}
		if len(ids) == 0 {
			t.Fatalf("no %s connection in CLIENT LIST:\n%s", kill, list)
		}
		activations := st.n.Load()
		for _, id := range ids {
			if err := c.Do(ctx(t), "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Fatal(err)
			}
		}
		// A killed tracking connection is a new session (a new activation); a killed
		// subscription reconnects within the session and tracks again.
		if kill == "tracking" {
			eventually(t, "the watch is active again", func() bool { return st.n.Load() > activations })
		}
		// Heard by tracking, not reported on activation: no activation in between.
		activations = st.n.Load()
		heardAfter(t, rec, key)
		heardAfter(t, rec, key)
		if st.n.Load() != activations {
			t.Errorf("the writes after the %s connection was killed were heard only by activations", kill)
		}
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
		{"no CLIENT command", []any{"~*", "&*", "+@all", "-client"}, "denied a command to the user: the user needs the ACL rules +client|id"},
		{"no channels", []any{"~*", "resetchannels", "+@all"}, "denied a command to the user: the user needs the ACL rules +client|id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redisServer.RedisClient(t)
			user := fmt.Sprintf("notrack-%d", time.Now().UnixNano())
			if err := c.Do(ctx(t), append([]any{"ACL", "SETUSER", user, "reset", "on", ">pw"}, tc.acl...)...).Err(); err != nil {
				t.Fatal(err)
			}
			defer c.Do(ctx(t), "ACL", "DELUSER", user)
			states := &writes{}
			w := NewKeyWatch(Options{Address: redisServer.Addr(), Username: user, Password: "pw"}, func(string, bool) {}, func(_ bool, err error) {
				if err != nil {
					states.add(err.Error(), false)
				}
			})
			defer w.Close()
			w.Add("k")
			eventually(t, "the watch says why it is not active", func() bool {
				ok, err := w.Active()
				return !ok && err != nil && strings.Contains(err.Error(), tc.says) && queue.ReasonOf(err) == queue.ReasonAuthFailed
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
	w := NewKeyWatch(Options{Address: redisServer.Addr(), Username: user, Password: "pw"}, rec.add, nil)
	defer w.Close()
	w.Add(key)
	eventually(t, "the watch is active", func() bool {
		ok, err := w.Active()
		if err != nil && queue.ReasonOf(err) == queue.ReasonAuthFailed {
			t.Fatal(err)
		}
		return ok
	})
	heardAfter(t, rec, key)
	// Twenty checks later it is still active.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if ok, err := w.Active(); !ok {
			t.Fatalf("the watch stopped: %v", err)
		}
	}
}

func TestCoverPrefixes(t *testing.T) {
	for _, tc := range []struct {
		keys  []string
		limit int
		want  []string
	}{
		{[]string{"b", "a"}, 32, []string{"a", "b"}},
		{[]string{"job", "job2", "jobs:x"}, 32, []string{"job"}},
		{[]string{"q-ns1", "q-ns2", "q-ns3", "r-ns1"}, 2, []string{"q-ns", "r-ns"}},
		{[]string{"q-ns1", "q-ns2", "r-ns1"}, 3, []string{"q-ns1", "q-ns2", "r-ns1"}},
		// More first bytes than the limit: one prefix a first byte.
		{[]string{"a1", "b1", "c1"}, 2, []string{"a", "b", "c"}},
		{nil, 32, nil},
	} {
		got := coverPrefixes(tc.keys, tc.limit)
		if !slices.Equal(got, tc.want) {
			t.Errorf("coverPrefixes(%q, %d) = %q, want %q", tc.keys, tc.limit, got, tc.want)
		}
		if len(covered(tc.keys, got)) != len(tc.keys) {
			t.Errorf("coverPrefixes(%q, %d) = %q leaves keys uncovered", tc.keys, tc.limit, got)
		}
	}
	// 1 000 QueueJobs' keys make at most maxPrefixes prefixes.
	var keys []string
	for i := range 1000 {
		keys = append(keys, fmt.Sprintf("jobs-team%d-%d", i%7, i))
	}
	got := coverPrefixes(keys, maxPrefixes)
	if len(got) > maxPrefixes || len(covered(keys, got)) != len(keys) {
		t.Errorf("1000 keys: %d prefixes %q", len(got), got)
	}
}

// TestKeyWatchAddsKeys: a key that no tracked prefix covers is tracked by adding a prefix,
// without turning tracking off (which loses writes); a key already covered is only
// reported; a key that overlaps a tracked prefix, or more keys than the cap, rebuild the
// prefixes; every key is heard throughout.
func TestKeyWatchAddsKeys(t *testing.T) {
	base := fmt.Sprintf("kwa%d", time.Now().UnixNano())
	rec := &writes{}
	w := NewKeyWatch(Options{Address: redisServer.Addr()}, rec.add, nil)
	defer w.Close()
	rebuilds := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.rebuilds
	}
	// added waits until an added key was reported (it is tracked then), and hears it.
	added := func(k string) {
		t.Helper()
		w.Add(k)
		eventually(t, k+" reported once tracked", func() bool { return rec.count(k) >= 1 })
		heardAfter(t, rec, k)
	}
	w.Add(base + "-a")
	eventually(t, "the watch is active", func() bool { ok, _ := w.Active(); return ok })
	r0 := rebuilds()

	added("x" + base)   // not covered: a prefix added
	added(base + "-ab") // covered by base-a already
	heardAfter(t, rec, base+"-a")
	if got := rebuilds(); got != r0 {
		t.Fatalf("%d rebuilds adding keys that overlap nothing, want none", got-r0)
	}
	added(base) // a prefix of base-a: the prefixes are rebuilt
	if rebuilds() == r0 {
		t.Error("no rebuild for a key that overlaps a tracked prefix")
	}
	for _, k := range []string{base + "-a", base + "-ab", "x" + base} {
		heardAfter(t, rec, k)
	}
	// Forty more keys: at most maxPrefixes prefixes cover them, and each is heard.
	var more []string
	for i := range 40 {
		more = append(more, fmt.Sprintf("m%02d%s", i, base))
		w.Add(more[i])
	}
	for _, k := range more {
		eventually(t, k+" reported once tracked", func() bool { return rec.count(k) >= 1 })
	}
	for _, k := range []string{more[0], more[17], more[39], base, "x" + base} {
		heardAfter(t, rec, k)
	}
	if ok, err := w.Active(); !ok {
		t.Fatalf("the watch is not active: %v", err)
	}
}
