package kube

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"

	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
)

// redisWatcher watches Redis keys: one KeyWatch (two connections) per server and
// credentials, shared by all the QueueJobs on that server.
type redisWatcher struct {
	log     logr.Logger
	locate  Locate
	wording redis.Wording
	mu      sync.Mutex
	servers map[string]*redisServerWatch
	nextID  int
	closed  bool
}

type redisServerWatch struct {
	watch *redis.KeyWatch
	// active is set while the server tracks the keys (the last state the watch told).
	active atomic.Bool
	// wakes holds, by key, the wake functions of the QueueJobs on that key, by token.
	wakes map[string]map[int]func(bool)
}

// Locate says where a source's queue is for a watch: the server's options with the key
// to watch in Key, and the server's identity (a fingerprint of everything of the source
// but the key and the database, credentials included: tracking is server-wide, whatever
// the database; a write to the same key name in another database wakes too, which costs
// one probe).
type Locate func(src backends.Source) (o redis.Options, server string, err error)

// NewWatcher returns the Watcher of Backend; it logs when a server's watch starts
// and when it fails.
func NewWatcher(log logr.Logger) backends.Watcher {
	return NewWatcherOf(log, locateList, redis.ListWording)
}

// NewWatcherOf returns a Watcher of the Redis keys that locate finds, for a backend on a
// Redis server (the list backend's, or pkg/queue/redis/stream/kube's), whose failures
// name its settings in wording's words.
func NewWatcherOf(log logr.Logger, locate Locate, wording redis.Wording) backends.Watcher {
	return &redisWatcher{log: log, locate: locate, wording: wording, servers: map[string]*redisServerWatch{}}
}

// locateList is Locate of the list backend: its key.
func locateList(src backends.Source) (redis.Options, string, error) {
	o, err := Options(src)
	if err != nil {
		return o, "", err
	}
	spec := src.Spec.DeepCopy()
	spec.Redis.Key, spec.Redis.DB = "", nil
	return o, backends.Source{Spec: spec, Secrets: src.Secrets}.Fingerprint(), nil
}

func (w *redisWatcher) Watch(src backends.Source, wake func(reported bool)) (func(), error) {
	o, server, err := w.locate(src)
	if err != nil {
		return nil, err
	}
	key := o.Key

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errors.New("the watcher is closed")
	}
	sw, ok := w.servers[server]
	if !ok {
		sw = &redisServerWatch{wakes: map[string]map[int]func(bool){}}
		addr, user := o.Address, o.Username
		sw.watch = redis.NewKeyWatchIn(w.wording, o, func(k string, reported bool) { w.fire(server, k, reported) }, func(active bool, err error) {
			if was := sw.active.Swap(active); was && !active {
				w.fireAll(server) // none waits on a watch that is down
			}
			if active {
				w.log.V(1).Info("Watching a Redis server for new items", "address", addr, "username", user)
				return
			}
			w.log.Info("Cannot watch a Redis server for new items: they are found by the probes alone, every probeIntervalSeconds; retrying",
				"address", addr, "username", user, "error", err.Error())
		})
		w.servers[server] = sw
	}
	w.nextID++
	token := w.nextID
	if sw.wakes[key] == nil {
		sw.wakes[key] = map[int]func(bool){}
	}
	sw.wakes[key][token] = wake
	sw.watch.Add(key)
	var once sync.Once
	return func() { once.Do(func() { w.unwatch(server, key, token) }) }, nil
}

func (w *redisWatcher) unwatch(server, key string, token int) {
	w.mu.Lock()
	sw, ok := w.servers[server]
	if !ok {
		w.mu.Unlock()
		return
	}
	delete(sw.wakes[key], token)
	if len(sw.wakes[key]) == 0 {
		delete(sw.wakes, key)
	}
	sw.watch.Remove(key)
	var closing *redis.KeyWatch
	if len(sw.wakes) == 0 {
		delete(w.servers, server)
		closing = sw.watch
	}
	w.mu.Unlock()
	if closing != nil {
		go closing.Close() // not under the lock: Close waits for a wake in progress
	}
}

// fire calls the wakes of a written key, outside the lock.
func (w *redisWatcher) fire(server, key string, reported bool) { w.wake(server, key, false, reported) }

// fireAll wakes every QueueJob on a server, with reported true.
func (w *redisWatcher) fireAll(server string) { w.wake(server, "", true, true) }

// wake calls, outside the lock, the wakes of the QueueJobs on a server's key, or on all
// its keys.
func (w *redisWatcher) wake(server, key string, all, reported bool) {
	w.mu.Lock()
	var wakes []func(bool)
	collect := func(byToken map[int]func(bool)) {
		for _, f := range byToken {
			wakes = append(wakes, f)
		}
	}
	if sw, ok := w.servers[server]; ok && all {
		for _, byToken := range sw.wakes {
			collect(byToken)
		}
	} else if ok {
		collect(sw.wakes[key]) // a write: one key, found, not searched for
	}
	w.mu.Unlock()
	for _, f := range wakes {
		f(reported)
	}
}

// Active reports whether the server of src is tracking the watched keys now.
func (w *redisWatcher) Active(src backends.Source) bool {
	_, server, err := w.locate(src)
	if err != nil {
		return false
	}
	w.mu.Lock()
	sw, ok := w.servers[server]
	w.mu.Unlock()
	if !ok {
		return false
	}
	active, _ := sw.watch.Active()
	return active
}

func (w *redisWatcher) Close() {
	w.mu.Lock()
	servers := w.servers
	w.servers, w.closed = map[string]*redisServerWatch{}, true
	w.mu.Unlock()
	for _, sw := range servers {
		sw.watch.Close()
	}
}

// Servers is how many servers are watched (for tests and metrics).
func (w *redisWatcher) Servers() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.servers)
}
