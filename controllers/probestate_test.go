package controllers

import (
	"context"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"k8s.io/apimachinery/pkg/types"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
)

// size is the number of open connections.
func (p *probeStates) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, e := range p.entries {
		if e.conn.conn != nil {
			n++
		}
	}
	return n
}

// has reports whether a QueueJob has an open connection.
func (p *probeStates) has(key types.NamespacedName) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.entries[key]
	return ok && e.conn.conn != nil
}

// wakeState is whether a QueueJob waits for a write, and how many writes were heard.
func (p *probeStates) wakeState(key types.NamespacedName, uid types.UID) (waiting bool, writes uint64) {
	p.with(key, uid, func(e *probeState) { waiting, writes = e.wake.waiting, e.wake.writes })
	return waiting, writes
}

func TestProbeStates(t *testing.T) {
	var opened []*fakeBackend
	backend := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) {
		b := &fakeBackend{}
		opened = append(opened, b)
		return b, nil
	}}
	spec := &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "r:6379", Key: "k"}}
	src := func(password string) backends.Source {
		return backends.Source{Spec: spec, Secrets: map[string]string{"redis/password": password}}
	}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	var p probeStates

	a, _ := p.get(key, "uid-1", backend, src("one"))
	b, _ := p.get(key, "uid-1", backend, src("one"))
	if a != b || len(opened) != 1 {
		t.Fatalf("the same source opened %d connections", len(opened))
	}
	c, _ := p.get(key, "uid-1", backend, src("rotated"))
	if c == a || !closedOnce(opened[0]) {
		t.Fatalf("a rotated Secret must replace the connection (closed %d)", opened[0].closed.Load())
	}
	d, _ := p.get(key, "uid-2", backend, src("rotated"))
	if d == c || !closedOnce(opened[1]) {
		t.Fatalf("a recreated QueueJob must get a new connection (closed %d)", opened[1].closed.Load())
	}
	p.drop(key)
	if !closedOnce(opened[2]) || p.size() != 0 {
		t.Fatalf("drop left %d connections, closed %d", p.size(), opened[2].closed.Load())
	}
	p.drop(key) // dropping twice is harmless
}

func TestProbeStatesSchedule(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	backend := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	var p probeStates
	if d := p.untilDue(key, "uid-1", now); d != 0 {
		t.Fatalf("a QueueJob never probed is due now, got %s", d)
	}
	p.probed(key, "uid-1", now, now.Add(time.Second), time.Second, nil) // no connection yet: nothing to remember
	if d := p.untilDue(key, "uid-1", now); d != 0 {
		t.Fatalf("untilDue = %s without a connection", d)
	}
	if _, err := p.get(key, "uid-1", backend, backends.Source{Spec: &qjv1.QueueSource{}}); err != nil {
		t.Fatal(err)
	}
	p.probed(key, "uid-1", now, now.Add(2*time.Second), 2*time.Second, nil)
	if d := p.untilDue(key, "uid-1", now.Add(500*time.Millisecond)); d != 1500*time.Millisecond {
		t.Errorf("untilDue = %s, want 1.5s", d)
	}
	if d := p.untilDue(key, "uid-1", now.Add(3*time.Second)); d != 0 {
		t.Errorf("untilDue after the due time = %s, want 0", d)
	}
	if d := p.untilDue(key, "uid-2", now); d != 0 {
		t.Errorf("a recreated QueueJob is due at once, got %s", d)
	}
}

// TestProbeStatesIdle: a QueueJob whose queue is idle and watched is probed later with
// each such probe (the interval doubled, up to maxIdleGap); a write still brings the
// probe forward; any probe that is not idle, or a write heard while one ran, ends it; a
// new connection (a rotated Secret) is not put off.
func TestProbeStatesIdle(t *testing.T) {
	now := time.Date(2026, 12, 8, 12, 0, 0, 0, time.UTC)
	backend := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	var p probeStates
	if _, err := p.get(key, "uid-1", backend, backends.Source{Spec: &qjv1.QueueSource{}}); err != nil {
		t.Fatal(err)
	}
	const iv = 2 * time.Second
	// probe records a probe at the interval and returns the wait until the next one.
	probe := func(waiting, idle bool) time.Duration {
		before := p.writesHeard(key, "uid-1")
		now = now.Add(p.untilDue(key, "uid-1", now))
		p.probed(key, "uid-1", now, now.Add(iv), iv, nil)
		p.armWake(key, "uid-1", 1, waiting, idle, before)
		return p.untilDue(key, "uid-1", now)
	}
	var gaps []time.Duration
	for range 8 {
		gaps = append(gaps, probe(true, true))
	}
	if want := []time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute, time.Minute, time.Minute}; !slices.Equal(gaps, want) {
		t.Errorf("gaps of idle probes %v, want %v", gaps, want)
	}
	if wake, after := p.heard(key, "uid-1", now.Add(time.Second), false); !wake || after != 0 {
		t.Errorf("a write to the idle queue a second after the probe: wake %v after %s, want at once", wake, after)
	}
	for name, tc := range map[string]struct{ waiting, idle bool }{
		"items in flight, or the watch down": {waiting: true},
		"a wave runs":                        {},
	} {
		probe(true, true)
		probe(true, true)
		if got := probe(tc.waiting, tc.idle); got != iv {
			t.Errorf("%s: the next probe in %s, want the interval %s", name, got, iv)
		}
		if got := probe(true, true); got != 2*iv {
			t.Errorf("%s, then idle again: the next probe in %s, want %s (the doubling starts afresh)", name, got, 2*iv)
		}
	}
	// A write heard while the probe ran: the probe may have counted before it.
	probe(true, true)
	before := p.writesHeard(key, "uid-1")
	p.probed(key, "uid-1", now, now.Add(iv), iv, nil)
	p.heard(key, "uid-1", now, false)
	if !p.armWake(key, "uid-1", 1, true, true, before) || p.untilDue(key, "uid-1", now) != minWakeGap {
		t.Errorf("a write heard during an idle probe: next probe in %s, want %s", p.untilDue(key, "uid-1", now), minWakeGap)
	}
	// A changed spec (another generation) is probed an interval after the last probe,
	// and its idle probes start afresh; the same generation changes nothing.
	for range 4 {
		probe(true, true)
	}
	putOff := p.untilDue(key, "uid-1", now)
	p.specChanged(key, "uid-1", 1)
	if got := p.untilDue(key, "uid-1", now); got != putOff || got <= iv {
		t.Errorf("the same generation: next probe in %s, want it put off as before (%s)", got, putOff)
	}
	p.specChanged(key, "uid-1", 2)
	if got := p.untilDue(key, "uid-1", now); got != iv {
		t.Errorf("a changed spec: next probe in %s, want the interval %s", got, iv)
	}
	if got := probe(true, true); got != 2*iv {
		t.Errorf("the first idle probe after a changed spec: next in %s, want %s", got, 2*iv)
	}
	for range 4 {
		probe(true, true)
	}
	if _, err := p.get(key, "uid-1", backend, backends.Source{Spec: &qjv1.QueueSource{}, Secrets: map[string]string{"s/k": "rotated"}}); err != nil {
		t.Fatal(err)
	}
	if got := p.untilDue(key, "uid-1", now); got != iv {
		t.Errorf("a new connection after idle probes: next probe in %s, want the interval %s", got, iv)
	}
}

// TestProbeStatesWake: a write to the queue makes the probe of a QueueJob that waits for
// items due, once per probe, no sooner than minWakeGap after the last probe; a QueueJob
// that runs a wave is not woken; a write heard while a probe ran is not lost.
func TestProbeStatesWake(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	backend := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	var p probeStates
	if wake, _ := p.heard(key, "uid-1", now, false); wake {
		t.Fatal("woke a QueueJob without an entry")
	}
	if _, err := p.get(key, "uid-1", backend, backends.Source{Spec: &qjv1.QueueSource{}}); err != nil {
		t.Fatal(err)
	}
	probe := func(at time.Time, waiting bool) (probeAgain bool) {
		before := p.writesHeard(key, "uid-1")
		p.probed(key, "uid-1", at, at.Add(2*time.Second), 2*time.Second, nil)
		return p.armWake(key, "uid-1", 1, waiting, false, before)
	}
	// A wave runs: the probes at their interval decide.
	if probe(now, false) {
		t.Fatal("probe again without a write")
	}
	if wake, _ := p.heard(key, "uid-1", now.Add(time.Second), false); wake || p.untilDue(key, "uid-1", now.Add(time.Second)) == 0 {
		t.Fatal("a write woke a QueueJob that runs a wave")
	}
	// Waiting for items: the first write makes the probe due, later ones until the next
	// probe do nothing.
	probe(now, true)
	wake, after := p.heard(key, "uid-1", now.Add(time.Second), false)
	if !wake || after != 0 || p.untilDue(key, "uid-1", now.Add(time.Second)) != 0 {
		t.Fatalf("a write to the empty queue: wake %v after %s, due in %s", wake, after, p.untilDue(key, "uid-1", now.Add(time.Second)))
	}
	if wake, _ := p.heard(key, "uid-1", now.Add(time.Second), false); wake {
		t.Error("a second write before the probe woke the QueueJob again")
	}
	if wake, _ := p.heard(key, "uid-2", now, false); wake {
		t.Error("woke the entry of another UID")
	}
	// A write just after a probe at its time: the next one comes minWakeGap after it.
	probe(now, true) // the probe the write above brought forward
	probe(now, true) // a probe at its time
	if wake, after := p.heard(key, "uid-1", now.Add(50*time.Millisecond), false); !wake || after != minWakeGap-50*time.Millisecond {
		t.Errorf("a write 50ms after the probe: wake %v after %s, want after %s", wake, after, minWakeGap-50*time.Millisecond)
	}
	// Writes that bring forward probes that find nothing (another consumer keeps the list
	// empty): the gap doubles each time, up to the interval; a probe with items resets it.
	probe(now, false)
	probe(now, true)
	var gaps []time.Duration
	for range 5 {
		wake, after := p.heard(key, "uid-1", now, false)
		if !wake {
			t.Fatal("no wake")
		}
		gaps = append(gaps, after)
		probe(now, true) // the brought-forward probe: still nothing
	}
	if want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 2 * time.Second}; !slices.Equal(gaps, want) {
		t.Errorf("gaps after empty wakes %v, want %v", gaps, want)
	}
	probe(now, true) // at its time: nothing, but not brought forward
	if _, after := p.heard(key, "uid-1", now, false); after != minWakeGap {
		t.Errorf("gap after a probe at its time %s, want %s", after, minWakeGap)
	}
	// Reports (the watch started: a write may have gone unheard) bring probes forward
	// without doubling the gap.
	probe(now, true) // the probe the write above brought forward
	probe(now, true) // a probe at its time
	for range 3 {
		if wake, after := p.heard(key, "uid-1", now, true); !wake || after != minWakeGap {
			t.Fatalf("a report: wake %v after %s, want after %s", wake, after, minWakeGap)
		}
		probe(now, true) // the probe the report brought forward: nothing
	}
	// A write heard while a probe ran, whatever the probe before it found: the probe may
	// have counted before it.
	probe(now, false)
	before := p.writesHeard(key, "uid-1")
	p.probed(key, "uid-1", now, now.Add(2*time.Second), 2*time.Second, nil)
	if wake, _ := p.heard(key, "uid-1", now.Add(10*time.Millisecond), false); wake {
		t.Fatal("woke during the probe")
	}
	if !p.armWake(key, "uid-1", 1, true, false, before) || p.untilDue(key, "uid-1", now.Add(minWakeGap)) != 0 {
		t.Error("a write heard during the probe was lost")
	}
	// The watch ends with the entry.
	stopped := make(chan struct{})
	if !p.setUnwatch(key, "uid-1", func() { close(stopped) }) || !p.watching(key, "uid-1") {
		t.Fatal("the watch was not recorded")
	}
	if p.setUnwatch(key, "uid-1", func() {}) {
		t.Error("a second watch was recorded")
	}
	p.drop(key)
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("drop did not end the watch")
	}
}

// A QueueJob turned away by its server's gate is probed at once when the server answers
// again, whether the wake comes before or after the turned-away probe records its end.
func TestProbeStatesServerWake(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	backend := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	for _, wakeFirst := range []bool{true, false} {
		var p probeStates
		if _, err := p.get(key, "uid-1", backend, backends.Source{Spec: &qjv1.QueueSource{}}); err != nil {
			t.Fatal(err)
		}
		if wakeFirst {
			p.makeDue(key)
		}
		p.probed(key, "uid-1", now, now.Add(time.Minute), 2*time.Second, nil) // turned away: backoff
		if !wakeFirst {
			p.makeDue(key)
		}
		if d := p.untilDue(key, "uid-1", now); d != 0 {
			t.Errorf("wake first %v: the probe is due in %s, want at once", wakeFirst, d)
		}
		p.begin(key, "uid-1")
		p.probed(key, "uid-1", now, now.Add(2*time.Second), 2*time.Second, nil)
		if d := p.untilDue(key, "uid-1", now); d != 2*time.Second {
			t.Errorf("wake first %v: the probe after the wake is due in %s, want its interval", wakeFirst, d)
		}
	}
}

// The end of a running pod brings the next probe forward to minWakeGap after the last
// one's start, also when it ends while a probe runs; a probe that began after it is not.
func TestProbeStatesPodEnded(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	backend := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	var p probeStates
	p.podEnded(key) // no entry yet: nothing to do, nothing made
	if p.untilDue(key, "uid-1", now) != 0 || p.has(key) {
		t.Fatal("podEnded made an entry")
	}
	if _, err := p.get(key, "uid-1", backend, backends.Source{Spec: &qjv1.QueueSource{}}); err != nil {
		t.Fatal(err)
	}
	p.begin(key, "uid-1")
	p.probed(key, "uid-1", now, now.Add(time.Hour), time.Hour, nil)
	p.podEnded(key)
	if d := p.untilDue(key, "uid-1", now); d != minWakeGap {
		t.Errorf("after a pod ended, the probe is due in %s, want %s", d, minWakeGap)
	}
	later := now.Add(time.Second)
	p.begin(key, "uid-1")
	p.podEnded(key) // while the probe runs
	p.probed(key, "uid-1", later, later.Add(time.Hour), time.Hour, nil)
	if d := p.untilDue(key, "uid-1", later); d != 2*minWakeGap {
		t.Errorf("after a pod ended during a probe, the next is due in %s, want %s (the gap doubled)", d, 2*minWakeGap)
	}
	p.podEnded(key) // before the next probe begins: that probe sees the pod
	p.begin(key, "uid-1")
	p.probed(key, "uid-1", later, later.Add(time.Hour), time.Hour, nil)
	if d := p.untilDue(key, "uid-1", later); d != time.Hour {
		t.Errorf("the probe after it is due in %s, want its interval", d)
	}
}

// A rotated Secret gives a QueueJob a new connection in the same entry (get): the entry
// keeps when the QueueJob was and may next be probed, the writes heard to its queue and
// what it owes its status, and starts the rest afresh. Every field of the entry is set
// before the rotation and named here, carried or reset, so that a field added to
// probeState, probeSchedule or writeWake must be placed on one side or the other.
func TestProbeStatesRotationCarries(t *testing.T) {
	carried := map[string]bool{
		"schedule.due": true, "schedule.probedAt": true, "wake.writes": true, "goneWave": true, "reclaimed": true,
		"schedule.interval": false, "schedule.running": false, "schedule.result": false, "schedule.serverWoke": false, "schedule.podEnded": false, "schedule.podWakes": false,
		"wake.waiting": false, "wake.woken": false, "wake.emptyWakes": false, "wake.idleProbes": false, "wake.idleGen": false,
	}
	backend := &backends.Backend{Name: "fake", Open: func(backends.Source) (queue.Conn, error) { return &fakeBackend{}, nil }}
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	withSecret := func(v string) backends.Source {
		return backends.Source{Spec: &qjv1.QueueSource{}, Secrets: map[string]string{"redis/password": v}}
	}
	var p probeStates
	first, err := p.get(key, "uid-1", backend, withSecret("one"))
	if err != nil {
		t.Fatal(err)
	}
	var before probeState
	p.with(key, "uid-1", func(e *probeState) {
		fillEveryField(t, reflect.ValueOf(&e.schedule).Elem())
		fillEveryField(t, reflect.ValueOf(&e.wake).Elem())
		e.goneWave, e.reclaimed = 4, 9
		e.conn.reached, e.conn.unwatch = true, func() {}
		before = *e
	})
	rotated, err := p.get(key, "uid-1", backend, withSecret("rotated"))
	if err != nil {
		t.Fatal(err)
	}
	if rotated == first {
		t.Fatal("a rotated Secret kept the connection")
	}
	var after probeState
	p.with(key, "uid-1", func(e *probeState) { after = *e })
	if after.conn.conn != rotated || after.conn.reached || after.conn.unwatch != nil {
		t.Errorf("the new connection's state is carried over: %+v", after.conn)
	}
	named := map[string]bool{}
	for name, was := range fieldsOf(reflect.ValueOf(&before).Elem(), "") {
		now := fieldsOf(reflect.ValueOf(&after).Elem(), "")[name]
		switch carry, ok := carried[name]; {
		case name == "uid" || strings.HasPrefix(name, "conn."):
			continue
		case !ok:
			t.Errorf("probeState.%s: say whether a rotated Secret carries it over (TestProbeStatesRotationCarries, probeStates.get)", name)
		case carry && !reflect.DeepEqual(now.Interface(), was.Interface()):
			t.Errorf("%s = %v after a rotated Secret, want it carried over: %v", name, now, was)
		case !carry && !now.IsZero():
			t.Errorf("%s = %v after a rotated Secret, want it reset", name, now)
		}
		named[name] = true
	}
	for name := range carried {
		if !named[name] {
			t.Errorf("%s is no field of probeState", name)
		}
	}
}

// fieldsOf maps the fields of the struct v, and of the structs it holds (not time.Time),
// by their path, readable whether exported or not. v must be addressable.
func fieldsOf(v reflect.Value, prefix string) map[string]reflect.Value {
	fields := map[string]reflect.Value{}
	for i := range v.NumField() {
		f := reflect.NewAt(v.Field(i).Type(), unsafe.Pointer(v.Field(i).UnsafeAddr())).Elem()
		name := prefix + v.Type().Field(i).Name
		if f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(time.Time{}) {
			maps.Copy(fields, fieldsOf(f, name+"."))
			continue
		}
		fields[name] = f
	}
	return fields
}

// fillEveryField sets every field of the struct v to a value that is not its zero.
func fillEveryField(t *testing.T, v reflect.Value) {
	t.Helper()
	for name, f := range fieldsOf(v, "") {
		switch f.Kind() {
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int32, reflect.Int64:
			f.SetInt(7)
		case reflect.Uint, reflect.Uint32, reflect.Uint64:
			f.SetUint(7)
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		case reflect.Struct: // time.Time
			f.Set(reflect.ValueOf(time.Unix(1000, 0)))
		default:
			t.Fatalf("fillEveryField: cannot fill %s (a %s)", name, f.Type())
		}
	}
}

// TestLimiter: forgetProbes slots at once; the next waits for a release, or gives up when
// its context ends.
func TestLimiter(t *testing.T) {
	var l limiter
	var releases []func()
	for i := range forgetProbes {
		release, ok := l.acquire(context.Background())
		if !ok {
			t.Fatalf("slot %d refused", i)
		}
		releases = append(releases, release)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, ok := l.acquire(ctx); ok {
		t.Fatal("a slot past the bound")
	}
	got := make(chan bool)
	go func() {
		_, ok := l.acquire(context.Background())
		got <- ok
	}()
	releases[0]()
	if !<-got {
		t.Error("no slot after a release")
	}
}

// TestIdleQueue: only a watched queue with nothing ready and nothing in flight (its
// in-flight count known) is idle: items in flight keep the probes, and so the reaper, at
// their interval.
func TestIdleQueue(t *testing.T) {
	for _, tc := range []struct {
		name    string
		c       queue.Counts
		watched bool
		want    bool
	}{
		{name: "empty and watched", watched: true, want: true},
		{name: "empty, the watch down", c: queue.Counts{}},
		{name: "items in flight", c: queue.Counts{InFlight: 1}, watched: true},
		{name: "in flight unknown (RabbitMQ without its management API)", c: queue.Counts{InFlightUnknown: true}, watched: true},
		{name: "items ready", c: queue.Counts{Ready: 1}, watched: true},
		{name: "only dead-lettered items", c: queue.Counts{DeadLettered: 3}, watched: true, want: true},
	} {
		if got := idleQueue(tc.c, tc.watched); got != tc.want {
			t.Errorf("%s: idleQueue = %v, want %v", tc.name, got, tc.want)
		}
	}
}
