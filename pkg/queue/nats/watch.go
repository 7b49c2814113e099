package nats

import (
	"context"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// Watch tells of messages published to a stream's subjects, through a core NATS
// subscription to each of them (the stream's subjects as they were when the watch
// connected): the manager hears of new items at once instead of at its next probe, and
// once more WatchSettle after the last one heard (JetStream may not have stored it at the
// first). Every
// message published to them reaches the manager, payload and all (a subscription cannot
// ask for less), so a busy stream costs the manager its traffic; wakes are coalesced.
// The user needs permission to subscribe to the stream's subjects.
type Watch struct {
	o      Options
	wake   func(reported bool)
	status func(active bool, err error)
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// watchRetry bounds the wait before a watch that failed connects again.
const watchRetry = 30 * time.Second

// WatchSettle is how long after a publish the watch wakes a second time: a core
// subscriber may hear a message before JetStream has stored it, and a probe at the first
// wake then counts it not yet.
const WatchSettle = 250 * time.Millisecond

// NewWatch starts watching o's stream. wake is called with reported false after messages
// were published, and with reported true once the watch is (again) subscribed: messages
// published while it was not may have gone unheard. status tells when the watch starts and
// why it failed (it retries, backing off up to 30 s).
func NewWatch(o Options, wake func(reported bool), status func(active bool, err error)) *Watch {
	w := &Watch{o: o, wake: wake, status: status, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *Watch) run() {
	defer close(w.done)
	backoff := time.Second
	for {
		err := w.watchOnce()
		select {
		case <-w.stop:
			return
		default:
		}
		w.status(false, err)
		t := time.NewTimer(backoff)
		select {
		case <-w.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, watchRetry)
	}
}

// watchOnce connects, subscribes to the stream's subjects and wakes until the connection
// closes or the watch stops.
func (w *Watch) watchOnce() error {
	nc, js, err := dial(w.o, "queuejob-operator watch")
	if err != nil {
		return err
	}
	defer nc.Close()
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*natsgo.Conn) { close(closed) })
	ctx, cancel := w.o.callCtx(context.Background())
	s, err := js.Stream(ctx, w.o.Stream)
	cancel()
	if err != nil {
		return natsFailure(w.o, err)
	}
	written := make(chan struct{}, 1)
	for _, subject := range s.CachedInfo().Config.Subjects {
		if _, err := nc.Subscribe(subject, func(*natsgo.Msg) {
			select {
			case written <- struct{}{}:
			default:
			}
		}); err != nil {
			return natsFailure(w.o, err)
		}
	}
	if err := nc.FlushTimeout(w.o.timeout()); err != nil {
		return natsFailure(w.o, err)
	}
	w.status(true, nil)
	w.wake(true)
	// settle wakes once more WatchSettle after the last publish heard, for a probe that
	// came before JetStream had stored it.
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-written:
			w.wake(false)
			settle.Reset(WatchSettle)
		case <-settle.C:
			w.wake(false)
		case <-closed:
			if err := nc.LastError(); err != nil {
				return natsFailure(w.o, err)
			}
			return natsFailure(w.o, natsgo.ErrConnectionClosed)
		case <-w.stop:
			return nil
		}
	}
}

// Close stops the watch and waits for its last wake to return.
func (w *Watch) Close() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}
