package kube

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"

	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
)

// natsWatcher watches NATS streams: one nats.Watch (one connection) per stream, server
// and credentials, shared by the QueueJobs on that stream.
type natsWatcher struct {
	log     logr.Logger
	mu      sync.Mutex
	streams map[string]*natsStreamWatch
	nextID  int
	closed  bool
}

type natsStreamWatch struct {
	watch *nats.Watch
	// active is set while the watch is subscribed.
	active atomic.Bool
	// wakes holds the wake functions of the QueueJobs on the stream, by token.
	wakes map[int]func(bool)
}

// NewWatcher returns the Watcher of Backend; it logs when a stream's watch starts and
// when it fails.
func NewWatcher(log logr.Logger) backends.Watcher {
	return &natsWatcher{log: log, streams: map[string]*natsStreamWatch{}}
}

func (w *natsWatcher) Watch(src backends.Source, wake func(reported bool)) (func(), error) {
	o, err := Options(src)
	if err != nil {
		return nil, err
	}
	stream := streamOf(src)

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errors.New("the watcher is closed")
	}
	sw, ok := w.streams[stream]
	if !ok {
		sw = &natsStreamWatch{wakes: map[int]func(bool){}}
		addrs, _ := o.Addresses()
		servers, name := strings.Join(addrs, ","), o.Stream
		sw.watch = nats.NewWatch(o, func(reported bool) { w.fire(stream, reported) }, func(active bool, err error) {
			if was := sw.active.Swap(active); was && !active {
				w.fire(stream, true) // none waits on a watch that is down
			}
			if active {
				w.log.V(1).Info("Watching a NATS stream for new items", "servers", servers, "stream", name)
				return
			}
			w.log.Info("Cannot watch a NATS stream for new items: they are found by the probes alone, every probeIntervalSeconds; retrying",
				"servers", servers, "stream", name, "error", err.Error())
		})
		w.streams[stream] = sw
	}
	w.nextID++
	token := w.nextID
	sw.wakes[token] = wake
	var once sync.Once
	return func() { once.Do(func() { w.unwatch(stream, token) }) }, nil
}

// streamOf is the identity of src's stream: everything of the source but the consumer
// and the lease, credentials included.
func streamOf(src backends.Source) string {
	spec := src.Spec.DeepCopy()
	spec.NATS.Consumer, spec.NATS.AckWaitSeconds = "", nil
	return backends.Source{Spec: spec, Secrets: src.Secrets}.Fingerprint()
}

// Active is false: a NATS watch cannot tell that it hears every message its stream
// stores. It subscribes to the stream's subjects as they were when it connected (subjects
// added later go unheard), a stream fed by sources has none, and a subscription the
// server denies fails without a word to the client. So an idle NATS queue is probed at
// its interval, the watch only bringing probes forward.
func (w *natsWatcher) Active(backends.Source) bool { return false }

func (w *natsWatcher) unwatch(stream string, token int) {
	w.mu.Lock()
	sw, ok := w.streams[stream]
	if !ok {
		w.mu.Unlock()
		return
	}
	delete(sw.wakes, token)
	var closing *nats.Watch
	if len(sw.wakes) == 0 {
		delete(w.streams, stream)
		closing = sw.watch
	}
	w.mu.Unlock()
	if closing != nil {
		go closing.Close() // not under the lock: Close waits for a wake in progress
	}
}

// fire calls the wakes of a stream's QueueJobs, outside the lock.
func (w *natsWatcher) fire(stream string, reported bool) {
	w.mu.Lock()
	var wakes []func(bool)
	if sw, ok := w.streams[stream]; ok {
		for _, f := range sw.wakes {
			wakes = append(wakes, f)
		}
	}
	w.mu.Unlock()
	for _, f := range wakes {
		f(reported)
	}
}

func (w *natsWatcher) Close() {
	w.mu.Lock()
	streams := w.streams
	w.streams, w.closed = map[string]*natsStreamWatch{}, true
	w.mu.Unlock()
	for _, sw := range streams {
		sw.watch.Close()
	}
}
