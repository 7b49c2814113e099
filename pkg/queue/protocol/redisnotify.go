package protocol

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// invalidateChannel is where Redis sends the invalidation messages of client-side
// caching to a RESP2 connection that tracking redirects to.
const invalidateChannel = "__redis__:invalidate"

// KeyWatchCheckInterval is how often a KeyWatch checks that its tracking still reaches
// its subscription (a reconnect of either connection breaks it silently).
var KeyWatchCheckInterval = 15 * time.Second

// KeyWatch hears of writes to a set of keys on one Redis server. It uses client-side
// caching's broadcast tracking (Redis 6 and later): one connection subscribes to
// __redis__:invalidate, and a second one turns on CLIENT TRACKING ... REDIRECT <the
// first> BCAST PREFIX <key> ..., so that the server tells the first of every write to a
// key with one of those prefixes. Unlike keyspace notifications, nothing needs
// configuring on the server; the user needs the CLIENT and SUBSCRIBE commands.
//
// It is best-effort and only makes things faster: a write during a reconnect, or while
// the key set changes, is not heard of, and a server or user that does not allow
// tracking is not watched at all (Active says why). Whoever uses it still polls. After
// each (re)connection onWrite is called for every key, since writes may have gone
// unheard meanwhile.
type KeyWatch struct {
	opts    RedisOptions
	onWrite func(key string)
	onState func(active bool, err error)

	mu      sync.Mutex
	keys    map[string]int // reference counts
	err     error          // why the watch is not active, nil while it is
	active  bool
	changed chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewKeyWatch starts watching the server of o (o.Key is ignored) and calls onWrite, on
// the watch's goroutine, with each written key that was added. onState, if not nil, is
// told when the watch becomes active, and when it stops being active or fails anew
// (with why). Close stops it.
func NewKeyWatch(o RedisOptions, onWrite func(key string), onState func(active bool, err error)) *KeyWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &KeyWatch{
		opts: o, onWrite: onWrite, onState: onState,
		keys:    map[string]int{},
		err:     errors.New("not connected yet"),
		changed: make(chan struct{}, 1),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	go w.run(ctx)
	return w
}

// Add watches key too; keys are counted, and each Add takes one Remove.
func (w *KeyWatch) Add(key string) {
	w.mu.Lock()
	w.keys[key]++
	n := w.keys[key]
	w.mu.Unlock()
	if n == 1 {
		w.kick()
	}
}

// Remove undoes one Add of key.
func (w *KeyWatch) Remove(key string) {
	w.mu.Lock()
	n, ok := w.keys[key]
	if ok {
		if n <= 1 {
			delete(w.keys, key)
		} else {
			w.keys[key] = n - 1
		}
	}
	w.mu.Unlock()
	if ok && n <= 1 {
		w.kick()
	}
}

// Len is how many distinct keys are watched.
func (w *KeyWatch) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.keys)
}

// Active reports whether the server is tracking the keys now; if not, why.
func (w *KeyWatch) Active() (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active, w.err
}

// Close stops the watch and closes its connections.
func (w *KeyWatch) Close() {
	w.cancel()
	<-w.done
}

func (w *KeyWatch) kick() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *KeyWatch) setState(active bool, err error) {
	w.mu.Lock()
	changed := active != w.active || (err != nil && (w.err == nil || err.Error() != w.err.Error()))
	w.active, w.err = active, err
	w.mu.Unlock()
	if changed && w.onState != nil {
		w.onState(active, err)
	}
}

// snapshot is the watched keys and the prefixes that cover them: no prefix of the set
// may be a prefix of another (Redis refuses overlapping prefixes), so a key that starts
// with another watched key is covered by that one.
func (w *KeyWatch) snapshot() (keys, prefixes []string) {
	w.mu.Lock()
	for k := range w.keys {
		keys = append(keys, k)
	}
	w.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		if len(prefixes) > 0 && strings.HasPrefix(k, prefixes[len(prefixes)-1]) {
			continue // sorted: a covering prefix sorts just before the keys it covers
		}
		prefixes = append(prefixes, k)
	}
	return keys, prefixes
}

func (w *KeyWatch) watched(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.keys[key] > 0
}

func (w *KeyWatch) run(ctx context.Context) {
	defer close(w.done)
	backoff := time.Second
	for {
		err := w.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil && strings.Contains(err.Error(), "NOPERM") {
			err = fmt.Errorf("%w (the user needs the ACL rules +client|id +client|tracking +client|trackinginfo +subscribe &%s; or run the manager with --watch-queues=false)", err, invalidateChannel)
		}
		w.setState(false, err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// session connects, tracks and relays invalidations until an error.
func (w *KeyWatch) session(ctx context.Context) error {
	o := w.opts
	ids := make(chan int64, 1)
	subOpts := probeClientOptions(&o)
	// RESP2: the invalidations then come as messages of the subscribed channel.
	subOpts.Protocol, subOpts.PoolSize = 2, 1
	subOpts.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		id, err := cn.ClientID(ctx).Result()
		if err != nil {
			return err
		}
		select { // the latest connection's id
		case <-ids:
		default:
		}
		ids <- id
		return nil
	}
	sub := redis.NewClient(subOpts)
	defer func() { _ = sub.Close() }()
	ps := sub.Subscribe(ctx, invalidateChannel)
	defer func() { _ = ps.Close() }()
	rctx, cancel := context.WithTimeout(ctx, o.Timeout)
	_, err := ps.Receive(rctx)
	cancel()
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", invalidateChannel, err)
	}
	var id int64
	select {
	case id = <-ids:
	default:
		return errors.New("subscribed, but the connection's client id is unknown")
	}

	trkOpts := probeClientOptions(&o)
	trkOpts.Protocol, trkOpts.PoolSize = 2, 1
	trk := redis.NewClient(trkOpts)
	defer func() { _ = trk.Close() }()
	cn := trk.Conn()
	defer func() { _ = cn.Close() }()
	track := func() error {
		_, prefixes := w.snapshot()
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		// Prefixes can be added but not removed while tracking is on: start afresh.
		if err := cn.Do(cctx, "CLIENT", "TRACKING", "off").Err(); err != nil {
			return fmt.Errorf("CLIENT TRACKING off: %w", err)
		}
		if len(prefixes) == 0 {
			return nil
		}
		args := []any{"CLIENT", "TRACKING", "on", "REDIRECT", id, "BCAST"}
		for _, p := range prefixes {
			args = append(args, "PREFIX", p)
		}
		if err := cn.Do(cctx, args...).Err(); err != nil {
			return fmt.Errorf("CLIENT TRACKING on: %w", err)
		}
		return nil
	}
	if err := track(); err != nil {
		return err
	}
	w.setState(true, nil)
	// Writes while no watch was active went unheard.
	keys, _ := w.snapshot()
	for _, k := range keys {
		w.onWrite(k)
	}

	msgs := ps.Channel()
	tick := time.NewTicker(KeyWatchCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-msgs:
			if !ok {
				return errors.New("the subscription closed")
			}
			if m.Channel != invalidateChannel {
				continue
			}
			// (A flush's invalidation has no keys; go-redis drops it, and the poll finds
			// what comes after.)
			for _, k := range append(m.PayloadSlice, m.Payload) {
				if k != "" && w.watched(k) {
					w.onWrite(k)
				}
			}
		case id = <-ids:
			// The subscription reconnected: tracking must redirect to the new connection.
			if err := track(); err != nil {
				return err
			}
			keys, _ := w.snapshot()
			for _, k := range keys {
				w.onWrite(k)
			}
		case <-w.changed:
			if err := track(); err != nil {
				return err
			}
		case <-tick.C:
			select {
			case <-w.changed: // a change not yet tracked is not a lost tracking
				if err := track(); err != nil {
					return err
				}
				continue
			default:
			}
			if err := w.check(ctx, cn, id); err != nil {
				return err
			}
		}
	}
}

// check asks the server whether the tracking connection still tracks, redirecting to
// the subscription: a reconnect of the tracking connection turns it off silently.
func (w *KeyWatch) check(ctx context.Context, cn *redis.Conn, id int64) error {
	cctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	defer cancel()
	v, err := cn.Do(cctx, "CLIENT", "TRACKINGINFO").Slice()
	if err != nil {
		return fmt.Errorf("CLIENT TRACKINGINFO: %w", err)
	}
	info := map[string]any{}
	for i := 0; i+1 < len(v); i += 2 {
		if k, ok := v[i].(string); ok {
			info[k] = v[i+1]
		}
	}
	flags, _ := info["flags"].([]any)
	redirect, _ := info["redirect"].(int64)
	if w.Len() == 0 {
		return nil // nothing to track: tracking is off
	}
	if !slices.Contains(flags, any("on")) || slices.Contains(flags, any("broken_redirect")) || redirect != id {
		return fmt.Errorf("tracking was lost (flags %v, redirect %d, want %d)", flags, redirect, id)
	}
	return nil
}
