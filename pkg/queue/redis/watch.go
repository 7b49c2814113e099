package redis

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
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
// tracking is not watched at all (Active says why). Whoever uses it still polls. Each
// time tracking is (re)started, onWrite is called for every key before Active reports
// true, since writes may have gone unheard meanwhile; after a key is added, for that key
// once the server tracks it.
type KeyWatch struct {
	opts Options
	// wording is how its failures name the settings (ListWording unless NewKeyWatchIn
	// says otherwise).
	wording Wording
	onWrite func(key string, reported bool)
	onState func(active bool, err error)

	mu      sync.Mutex
	keys    map[string]int // reference counts
	err     error          // why the watch is not active, nil while it is
	active  bool
	checked bool // the session passed a check
	// rebuilds counts the times tracking was turned off and on again (for tests).
	rebuilds int
	changed  chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}
}

// NewKeyWatch starts watching the server of o (o.Key is ignored) and calls onWrite, on
// the watch's goroutine, with each written key that was added: reported is false for a
// write the server told of, true for a key reported because a write may have gone
// unheard (see KeyWatch). onState, if not nil, is
// told when the watch becomes active, and when it stops being active or fails anew
// (with why). Close stops it.
func NewKeyWatch(o Options, onWrite func(key string, reported bool), onState func(active bool, err error)) *KeyWatch {
	return NewKeyWatchIn(ListWording, o, onWrite, onState)
}

// NewKeyWatchIn is NewKeyWatch for another backend on a Redis server, whose failures
// name its settings in words.
func NewKeyWatchIn(words Wording, o Options, onWrite func(key string, reported bool), onState func(active bool, err error)) *KeyWatch {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &KeyWatch{
		opts: o, wording: words, onWrite: onWrite, onState: onState,
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

// maxPrefixes bounds the prefixes a KeyWatch asks the server to track. While any client
// tracks in broadcast mode, Redis compares every key written, by anyone, with every
// tracked prefix of every such client: a prefix a QueueJob would cost each write of a
// busy server 1 000 comparisons at 1 000 QueueJobs.
const maxPrefixes = 32

// keysSorted is the watched keys, sorted.
func (w *KeyWatch) keysSorted() []string {
	w.mu.Lock()
	keys := make([]string, 0, len(w.keys))
	for k := range w.keys {
		keys = append(keys, k)
	}
	w.mu.Unlock()
	sort.Strings(keys)
	return keys
}

// coverPrefixes is a set of at most limit prefixes (unless more keys differ in their
// first byte) that covers keys, none a prefix of another (Redis refuses overlapping
// prefixes): the keys themselves if they are few, else the keys cut to the longest length
// at which they make limit prefixes or fewer. A write to a key that a prefix covers but
// that is not watched is dropped on arrival.
func coverPrefixes(keys []string, limit int) []string {
	longest := 0
	for _, k := range keys {
		longest = max(longest, len(k))
	}
	var set []string
	for n := longest; n >= 1; n-- {
		set = set[:0]
		for _, k := range keys {
			if len(k) > n {
				k = k[:n]
			}
			set = append(set, k)
		}
		set = minimalPrefixes(set)
		if len(set) <= limit {
			break
		}
	}
	return set
}

// minimalPrefixes drops from prefixes those that another one covers, and duplicates.
func minimalPrefixes(prefixes []string) []string {
	sorted := slices.Clone(prefixes)
	sort.Strings(sorted)
	var out []string
	for _, p := range sorted {
		// Sorted: a covering prefix sorts just before the strings it covers.
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// covered is the keys that one of prefixes covers.
func covered(keys, prefixes []string) []string {
	var out []string
	for _, k := range keys {
		if hasPrefixIn(k, prefixes) {
			out = append(out, k)
		}
	}
	return out
}

// hasPrefixIn reports whether one of prefixes is a prefix of s.
func hasPrefixIn(s string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(s, p) })
}

// overlap reports whether a prefix of one set is a prefix of one of the other.
func overlap(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if strings.HasPrefix(x, y) || strings.HasPrefix(y, x) {
				return true
			}
		}
	}
	return false
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
		w.mu.Lock()
		checked := w.checked
		w.checked = false
		w.mu.Unlock()
		if checked {
			backoff = time.Second // it passed a check: a new failure starts afresh
		}
		w.setState(false, w.failure(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// session is one connection of a KeyWatch to its server, from connecting until an error:
// the subscription that receives the invalidations, the connection that turns tracking
// on with a redirect to it, and what the server tracks.
type session struct {
	w   *KeyWatch
	ctx context.Context
	// ids gets the client id of each connection of the subscription (the latest only);
	// id is the one tracking redirects to.
	ids chan int64
	id  int64
	sub *goredis.Client
	ps  *goredis.PubSub
	trk *goredis.Client
	cn  *goredis.Conn
	// tracked is what the server tracks. Prefixes can be added while tracking is on
	// without losing a write; taking one away takes turning tracking off and on again,
	// and the writes in between go unheard: that is done only when needed (a new prefix
	// that overlaps a tracked one, or many tracked prefixes covering no key any more),
	// and every key is reported after it.
	tracked []string
	// known is the keys reported since tracking covered them.
	known map[string]bool
	// canCheck is false on a server without CLIENT TRACKINGINFO (Redis 6.0).
	canCheck bool
}

// session connects, tracks and relays invalidations until an error.
func (w *KeyWatch) session(ctx context.Context) error {
	s := &session{w: w, ctx: ctx, ids: make(chan int64, 1), known: map[string]bool{}, canCheck: true}
	defer s.close()
	if err := s.subscribe(); err != nil {
		return err
	}
	s.openTracking()
	if err := s.rebuild(w.keysSorted()); err != nil {
		return err
	}
	w.setState(true, nil)
	return s.relay()
}

// subscribe subscribes a connection to the invalidations, and learns its client id.
func (s *session) subscribe() error {
	o := s.w.opts
	subOpts := probeClientOptions(&o)
	// RESP2: the invalidations then come as messages of the subscribed channel.
	subOpts.Protocol, subOpts.PoolSize = 2, 1
	subOpts.OnConnect = func(ctx context.Context, cn *goredis.Conn) error {
		id, err := cn.ClientID(ctx).Result()
		if err != nil {
			return err
		}
		select { // the latest connection's id
		case <-s.ids:
		default:
		}
		s.ids <- id
		return nil
	}
	s.sub = goredis.NewClient(subOpts)
	s.ps = s.sub.Subscribe(s.ctx, invalidateChannel)
	rctx, cancel := context.WithTimeout(s.ctx, o.Timeout)
	_, err := s.ps.Receive(rctx)
	cancel()
	if err != nil {
		return &watchStep{"subscribing to " + invalidateChannel, err}
	}
	select {
	case s.id = <-s.ids:
		return nil
	default:
		return queue.Errorf(queue.ReasonConnectionFailed, "subscribed, but the connection's client id is unknown")
	}
}

// openTracking opens the connection that turns tracking on; it connects on first use.
func (s *session) openTracking() {
	o := s.w.opts
	trkOpts := probeClientOptions(&o)
	trkOpts.Protocol, trkOpts.PoolSize = 2, 1
	s.trk = goredis.NewClient(trkOpts)
	s.cn = s.trk.Conn()
}

// close closes the session's connections, the tracking one first.
func (s *session) close() {
	if s.cn != nil {
		_ = s.cn.Close()
	}
	if s.trk != nil {
		_ = s.trk.Close()
	}
	if s.ps != nil {
		_ = s.ps.Close()
	}
	if s.sub != nil {
		_ = s.sub.Close()
	}
}

// do sends a command on the tracking connection, bounded by the timeout.
func (s *session) do(args ...any) error {
	cctx, cancel := context.WithTimeout(s.ctx, s.w.opts.Timeout)
	defer cancel()
	return s.cn.Do(cctx, args...).Err()
}

// on turns tracking on for prefixes (adding them to those tracked already).
func (s *session) on(prefixes []string) error {
	args := []any{"CLIENT", "TRACKING", "on", "REDIRECT", s.id, "BCAST"}
	for _, p := range prefixes {
		args = append(args, "PREFIX", p)
	}
	if err := s.do(args...); err != nil {
		return &watchStep{"CLIENT TRACKING on", err}
	}
	return nil
}

// rebuild turns tracking off and on again for keys, and reports every key: a write in
// between went unheard.
func (s *session) rebuild(keys []string) error {
	s.w.mu.Lock()
	s.w.rebuilds++
	s.w.mu.Unlock()
	if err := s.do("CLIENT", "TRACKING", "off"); err != nil {
		return &watchStep{"CLIENT TRACKING off", err}
	}
	s.tracked, s.known = nil, map[string]bool{}
	if len(keys) == 0 {
		return nil
	}
	// Half the cap: room for the prefixes of keys added later, without a rebuild.
	want := coverPrefixes(keys, maxPrefixes/2)
	if err := s.on(want); err != nil {
		return err
	}
	s.tracked = want
	for _, k := range keys {
		s.known[k] = true
		s.w.onWrite(k, true)
	}
	return nil
}

// syncKeys brings the tracked prefixes up to the watched keys, and reports the keys it
// newly covers (a write before that went unheard).
func (s *session) syncKeys() error {
	keys := s.w.keysSorted()
	if len(keys) == 0 {
		if len(s.tracked) == 0 {
			return nil
		}
		return s.rebuild(nil)
	}
	unused := 0 // tracked prefixes that cover no watched key any more
	for _, p := range s.tracked {
		if !slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, p) }) {
			unused++
		}
	}
	var uncovered []string
	for _, k := range keys {
		if !hasPrefixIn(k, s.tracked) {
			uncovered = append(uncovered, k)
		}
	}
	switch {
	case len(uncovered) == 0 && unused > max(4, len(s.tracked)/2):
		return s.rebuild(keys)
	case len(uncovered) > 0:
		add := coverPrefixes(uncovered, maxPrefixes)
		if overlap(add, s.tracked) || len(s.tracked)+len(add) > maxPrefixes {
			return s.rebuild(keys)
		}
		if err := s.on(add); err != nil {
			return err
		}
		s.tracked = append(s.tracked, add...)
	}
	s.reportNew(keys)
	return nil
}

// reportNew reports every key added since the last report, newly covered or covered
// already: a write between its probe and now went unheard.
func (s *session) reportNew(keys []string) {
	now := map[string]bool{}
	for _, k := range keys {
		now[k] = true
		if !s.known[k] {
			s.w.onWrite(k, true)
		}
	}
	s.known = now
}

// relay passes the invalidations of watched keys on, follows changes of the keys and of
// the subscription's connection, and checks the tracking every KeyWatchCheckInterval,
// until an error.
func (s *session) relay() error {
	msgs := s.ps.Channel()
	tick := time.NewTicker(KeyWatchCheckInterval)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case m, ok := <-msgs:
			if !ok {
				return queue.Errorf(queue.ReasonConnectionFailed, "the subscription closed")
			}
			s.invalidated(m)
		case s.id = <-s.ids:
			// The subscription reconnected: tracking must redirect to the new connection.
			err = s.rebuild(s.w.keysSorted())
		case <-s.w.changed:
			err = s.syncKeys()
		case <-tick.C:
			select {
			case <-s.w.changed: // a change not yet tracked is not a lost tracking
				err = s.syncKeys()
			default:
				err = s.check(len(s.tracked) > 0)
			}
		}
		if err != nil {
			return err
		}
	}
}

// invalidated reports the watched keys of an invalidation message.
func (s *session) invalidated(m *goredis.Message) {
	if m.Channel != invalidateChannel {
		return
	}
	// (A flush's invalidation has no keys; go-redis drops it, and the poll finds what
	// comes after.)
	for _, k := range append(m.PayloadSlice, m.Payload) {
		if k != "" && s.w.watched(k) {
			s.w.onWrite(k, false)
		}
	}
}

// check asks the server whether the tracking connection still tracks, redirecting to
// the subscription: a reconnect of the tracking connection turns it off silently. Redis
// 6.0 has no CLIENT TRACKINGINFO: there, check only sees that the connection still
// answers (a new connection fails the next command, go-redis does not dial again).
func (s *session) check(tracking bool) error {
	cctx, cancel := context.WithTimeout(s.ctx, s.w.opts.Timeout)
	defer cancel()
	if !s.canCheck {
		if err := s.cn.Ping(cctx).Err(); err != nil {
			return &watchStep{"PING", err}
		}
		s.w.passed()
		return nil
	}
	v, err := s.cn.Do(cctx, "CLIENT", "TRACKINGINFO").Slice()
	if err != nil && strings.Contains(strings.ToLower(err.Error()), "unknown subcommand") {
		s.canCheck = false
		return s.check(tracking)
	}
	if err != nil {
		return &watchStep{"CLIENT TRACKINGINFO", err}
	}
	if !tracking {
		s.w.passed()
		return nil // nothing to track: tracking is off
	}
	info := map[string]any{}
	for i := 0; i+1 < len(v); i += 2 {
		if k, ok := v[i].(string); ok {
			info[k] = v[i+1]
		}
	}
	flags, _ := info["flags"].([]any)
	redirect, _ := info["redirect"].(int64)
	if !slices.Contains(flags, any("on")) || slices.Contains(flags, any("broken_redirect")) || redirect != s.id {
		return queue.Errorf(queue.ReasonConnectionFailed, "tracking was lost: the server no longer sends the invalidations to the subscription")
	}
	s.w.passed()
	return nil
}

func (w *KeyWatch) passed() {
	w.mu.Lock()
	w.checked = true
	w.mu.Unlock()
}

// watchStep is an error of go-redis and what the watch was doing when it came.
type watchStep struct {
	step string
	err  error
}

func (e *watchStep) Error() string { return e.step + ": " + e.err.Error() }
func (e *watchStep) Unwrap() error { return e.err }

// failure is why a session of the watch ended, in the fixed words of the probe's errors
// (the manager logs it): a server that passed the probe may still answer the watch's
// commands with words of its own.
func (w *KeyWatch) failure(err error) error {
	var qe *queue.Error
	if err == nil || errors.As(err, &qe) {
		return err
	}
	step := ""
	var s *watchStep
	if errors.As(err, &s) {
		step = s.step + ": "
	}
	if goredis.HasErrorPrefix(err, "NOPERM") {
		return queue.Errorf(queue.ReasonAuthFailed, "%sRedis at %s denied a command to the user: the user needs the ACL rules "+
			"+client|id +client|tracking +client|trackinginfo +subscribe &%s; or run the manager with "+
			"--watch-queues=false", step, w.opts.Address, invalidateChannel)
	}
	qe = Failure(w.wording, w.opts.Address, w.opts.TLS != nil, err)
	return &queue.Error{Reason: qe.Reason, Message: step + qe.Message}
}
