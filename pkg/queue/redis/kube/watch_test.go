package kube

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	goredis "github.com/redis/go-redis/v9"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// TestRedisWatcher: QueueJobs on one server and user share one watch, each hears of its
// own key only, a TLS server is watched too, and the watch of a server ends with its last
// QueueJob. (An ACL user needs the CLIENT and SUBSCRIBE commands and the channel
// __redis__:invalidate: pkg/queue/redis's TestKeyWatchWithoutTracking.)
func TestRedisWatcher(t *testing.T) {
	w := NewWatcher(logr.Discard()).(*redisWatcher)
	defer w.Close()
	plain := func(k string) backends.Source {
		return backends.Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: authRedis.Addr(), Key: k, PasswordSecretRef: passwordRef}},
			Secrets: map[string]string{"redis/password": redisPassword}}
	}
	overTLS := func(k string) backends.Source {
		return backends.Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: tlsRedis.Addr(), Key: k,
			PasswordSecretRef: passwordRef, TLS: &qjv1.TLSConfig{CASecretRef: caRef}}},
			Secrets: map[string]string{"redis/password": redisPassword, "queue-ca/ca.crt": string(testCA.PEM())}}
	}
	ka, kb, kt := key(t)+"-a", key(t)+"-b", key(t)+"-t"
	var a, b, tl atomic.Int32
	stopA, err := w.Watch(plain(ka), func(bool) { a.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	stopB, err := w.Watch(plain(kb), func(bool) { b.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	stopT, err := w.Watch(overTLS(kt), func(bool) { tl.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if n := w.Servers(); n != 2 {
		t.Fatalf("%d servers watched, want 2 (one shared by two QueueJobs)", n)
	}
	// Activation reports every key before the watch is active: wait for that, so that
	// what is heard below is heard from the server.
	deadline := time.Now().Add(time.Minute)
	for {
		w.mu.Lock()
		active := 0
		for _, sw := range w.servers {
			if ok, _ := sw.watch.Active(); ok {
				active++
			}
		}
		w.mu.Unlock()
		if active == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 2 servers' watches active within a minute", active)
		}
		time.Sleep(20 * time.Millisecond)
	}
	plainC := goredis.NewClient(&goredis.Options{Addr: authRedis.Addr(), Password: redisPassword, DisableIdentity: true})
	defer plainC.Close()
	// Push to a until a write is heard (a push before the server tracked the key is not).
	heard := func(what string, c *goredis.Client, k string, n *atomic.Int32) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		before := n.Load()
		for n.Load() == before {
			if time.Now().After(deadline) {
				w.mu.Lock()
				var states []string
				for _, sw := range w.servers {
					ok, err := sw.watch.Active()
					states = append(states, fmt.Sprintf("active %v (%v)", ok, err))
				}
				w.mu.Unlock()
				t.Fatalf("no write to %s heard within a minute; the servers' watches: %s", what, strings.Join(states, "; "))
			}
			if err := c.RPush(ctx(t), k, "item").Err(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	heard("a", plainC, ka, &a)
	// Activation may have woken b once; writes to a do not.
	bBefore := b.Load()
	heard("a", plainC, ka, &a)
	heard("a", plainC, ka, &a)
	if b.Load() != bBefore {
		t.Errorf("writes to %s woke the QueueJob of %s", ka, kb)
	}
	heard("b", plainC, kb, &b)

	o, err := Options(overTLS(kt))
	if err != nil {
		t.Fatal(err)
	}
	tlsC := redis.NewClient(o, 1)
	defer tlsC.Close()
	heard("the TLS server's key", tlsC, kt, &tl)

	stopA()
	stopA() // twice is harmless
	if n := w.Servers(); n != 2 {
		t.Fatalf("%d servers watched after one of two QueueJobs of a server stopped, want 2", n)
	}
	stopB()
	stopT()
	if n := w.Servers(); n != 0 {
		t.Fatalf("%d servers watched after every QueueJob stopped, want 0", n)
	}
}

// Active says whether a source's server tracks its keys; when the server goes away, the
// watch wakes its QueueJobs reported (none waits on a watch that is down) and Active
// says false.
func TestRedisWatcherActive(t *testing.T) {
	srv, err := servers.StartRedis("")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	w := NewWatcher(logr.Discard())
	defer w.Close()
	src := backends.Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: srv.Addr(), Key: key(t)}}}
	if w.Active(src) {
		t.Fatal("active before any watch")
	}
	reported := make(chan bool, 100)
	stop, err := w.Watch(src, func(r bool) { reported <- r })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	waitFor(t, "the watch active", func() bool { return w.Active(src) })
	drain(reported)
	srv.Stop()
	select {
	case r := <-reported:
		if !r {
			t.Error("the wake of a failed watch is not reported")
		}
	case <-time.After(time.Minute):
		t.Fatal("no wake within a minute of the server's end")
	}
	waitFor(t, "the watch inactive", func() bool { return !w.Active(src) })
	if err := srv.Start(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watch active again", func() bool { return w.Active(src) })
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within a minute: %s", what)
		}
	}
}

func drain(c chan bool) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}
