package controllers

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	rediskube "github.com/queuejob/queuejob-operator/pkg/queue/redis/kube"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// A server that did not answer a probe is tried again by one probe at a time, at doubling
// waits; the other QueueJobs' probes fail at once meanwhile, and are woken once it answers.
func TestServerGates(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	a, b, c := types.NamespacedName{Name: "a"}, types.NamespacedName{Name: "b"}, types.NamespacedName{Name: "c"}
	var g serverGates
	type step struct {
		name string
		at   time.Duration
		// enter: the QueueJob whose probe enters (want: whether it may); leave: the probe
		// that entered first and has not left ends so, and wake is whom to wake then.
		enter *types.NamespacedName
		want  bool
		leave *probeEnd
		wake  []types.NamespacedName
	}
	down, answered, skipped := ptr.To(serverDidNotAnswer), ptr.To(serverAnswered), ptr.To(probeSkipped)
	steps := []step{
		{name: "a healthy server lets every probe in", enter: &a, want: true},
		{name: "...at once", enter: &b, want: true},
		{name: "a probe finds it down", at: time.Second, leave: down},
		{name: "a probe turned away while the server is down", at: 1500 * time.Millisecond, enter: &c, want: false},
		{name: "the one that had entered finds it down too", at: 1500 * time.Millisecond, leave: down},
		{name: "before the retry time, turned away", at: 3 * time.Second, enter: &a, want: false},
		{name: "after 2s (the second failure in a row), one probe tries", at: 3600 * time.Millisecond, enter: &b, want: true},
		{name: "...and only one", at: 3700 * time.Millisecond, enter: &a, want: false},
		{name: "the trial finds it down: 4s now", at: 4 * time.Second, leave: down},
		{name: "3s later, still turned away", at: 7 * time.Second, enter: &b, want: false},
		{name: "4s later, a trial", at: 8 * time.Second, enter: &b, want: true},
		{name: "a trial that never reached the server...", at: 8 * time.Second, leave: skipped},
		{name: "...lets the next probe try", at: 8 * time.Second, enter: &b, want: true},
		{name: "it answers: the turned-away ones are woken, but the one just probed", at: 8 * time.Second, leave: answered, wake: []types.NamespacedName{a, c}},
		{name: "every probe enters again", at: 8 * time.Second, enter: &c, want: true},
		{name: "and leaves", at: 8 * time.Second, leave: answered},
	}
	var in []*gateTicket
	for _, st := range steps {
		at := now.Add(st.at)
		switch {
		case st.enter != nil:
			tk := g.enter("s", *st.enter, at)
			if got := tk != nil; got != st.want {
				t.Fatalf("%s: entered = %v, want %v", st.name, got, st.want)
			}
			if tk != nil {
				in = append(in, tk)
			}
		case st.leave != nil:
			wake := g.leave(in[0], at, *st.leave)
			in = in[1:]
			slices.SortFunc(wake, func(x, y types.NamespacedName) int { return strings.Compare(x.Name, y.Name) })
			if diff := cmp.Diff(st.wake, wake); diff != "" {
				t.Fatalf("%s: woken (-want +got):\n%s", st.name, diff)
			}
		}
	}
	if len(g.gates) != 0 {
		t.Errorf("%d gates kept for servers that answered and have no probe", len(g.gates))
	}
	// The waits stop doubling at maxServerBackoff.
	at := now
	for i := 0; i < 20; i++ {
		tk := g.enter("t", a, at)
		if tk == nil || (i > 0 && !tk.trial) {
			t.Fatalf("probe %d at the retry time: %+v, want a trial", i, tk)
		}
		g.leave(tk, at, serverDidNotAnswer)
		if i < 19 {
			at = g.gates["t"].retryAt
		}
	}
	if got := g.gates["t"].retryAt.Sub(at); got != maxServerBackoff {
		t.Errorf("retry after %s, want %s", got, maxServerBackoff)
	}
}

// At most probesPerServer probes run against a server at once; the next waits for a slot.
func TestServerGatesBoundProbesPerServer(t *testing.T) {
	var g serverGates
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var in []*gateTicket
	for i := 0; i < probesPerServer+1; i++ {
		tk := g.enter("s", types.NamespacedName{Name: "q"}, now)
		if tk == nil {
			t.Fatal("a healthy server turned a probe away")
		}
		in = append(in, tk)
	}
	for _, tk := range in[:probesPerServer] {
		if err := g.wait(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	if err := g.wait(short, in[probesPerServer]); err == nil {
		t.Fatalf("probe %d ran beside %d others", probesPerServer+1, probesPerServer)
	}
	g.leave(in[0], now, serverAnswered)
	if err := g.wait(ctx, in[probesPerServer]); err != nil {
		t.Fatalf("no slot after a probe left: %v", err)
	}
}

// A probe that waited for a slot while another found the server down does not go to
// the server: it is turned away, and woken once the server answers.
func TestServerGatesTurnAwayWaitersOnceDown(t *testing.T) {
	var g serverGates
	now := time.Now()
	ctx := context.Background()
	var in []*gateTicket
	for i := 0; i < probesPerServer+1; i++ {
		in = append(in, g.enter("s", types.NamespacedName{Name: fmt.Sprint(i)}, now))
	}
	for _, tk := range in[:probesPerServer] {
		if err := g.wait(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	waiter := in[probesPerServer]
	done := make(chan error, 1)
	go func() { done <- g.wait(ctx, waiter) }()
	g.leave(in[0], now, serverDidNotAnswer)
	if err := <-done; !errors.Is(err, errServerDown) {
		t.Fatalf("the waiting probe got %v, want errServerDown", err)
	}
	g.leave(waiter, now, probeSkipped)
	tk := g.enter("s", types.NamespacedName{Name: "x"}, now.Add(time.Hour))
	if tk == nil || !tk.trial {
		t.Fatalf("no trial after the retry time: %+v", tk)
	}
	if err := g.wait(ctx, tk); err != nil {
		t.Fatal(err)
	}
	wake := g.leave(tk, now.Add(time.Hour), serverAnswered)
	if !slices.Contains(wake, types.NamespacedName{Name: fmt.Sprint(probesPerServer)}) {
		t.Errorf("woken %v, want the turned-away waiter among them", wake)
	}
}

// Only a server that did not answer (connection refused, nothing back in time) counts as
// down; an answer that is an error of one QueueJob's own settings does not, so that one
// QueueJob cannot turn away the others on its server.
func TestEndOfProbesOfRealPeers(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := refused.Addr().String()
	_ = refused.Close()
	silent, stopSilent, err := servers.Silent()
	if err != nil {
		t.Fatal(err)
	}
	defer stopSilent()
	redisSrv, err := servers.StartRedis("")
	if err != nil {
		t.Fatal(err)
	}
	defer redisSrv.Close()
	cases := []struct {
		name string
		opts redis.Options
		want probeEnd
	}{
		{name: "connection refused", opts: redis.Options{Address: closedAddr, Key: "k"}, want: serverDidNotAnswer},
		{name: "nothing back in time", opts: redis.Options{Address: silent, Key: "k", Timeout: 300 * time.Millisecond}, want: serverDidNotAnswer},
		{name: "TLS to a server that never answers", opts: redis.Options{Address: silent, Key: "k", Timeout: 300 * time.Millisecond,
			TLS: &tls.Config{ServerName: "x"}}, want: serverDidNotAnswer},
		{name: "an error reply of one QueueJob's settings (a database out of range)", opts: redis.Options{Address: redisSrv.Addr(), Key: "k", DB: 200},
			want: serverAnswered},
		{name: "credentials refused", opts: redis.Options{Address: redisSrv.Addr(), Key: "k", Username: "nobody", Password: "x"},
			want: serverAnswered},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := redis.New(tc.opts)
			defer func() { _ = b.Close() }()
			_, err := b.Probe(context.Background())
			if err == nil {
				t.Fatal("the probe succeeded")
			}
			if got := endOf(err); got != tc.want {
				t.Errorf("endOf(%v) = %v, want %v", err, got, tc.want)
			}
		})
	}
}

// QueueJobs that reach one server with other TLS settings do not share its gate.
func TestServerOfHoldsTheTLSSettings(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "q"}
	plain := backends.Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6379", Key: "a"}}}
	other := backends.Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6379", Key: "b"}}}
	overTLS := backends.Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "redis:6379", Key: "a", TLS: &qjv1.TLSConfig{}}}}
	backend := &rediskube.Backend
	if serverOf(backend, plain, key) != serverOf(backend, other, key) {
		t.Error("two keys on one server get two gates")
	}
	if serverOf(backend, plain, key) == serverOf(backend, overTLS, key) {
		t.Error("plain and TLS QueueJobs on one address share a gate")
	}
	spelled := backends.Source{Spec: &qjv1.QueueSource{Redis: &qjv1.RedisQueue{Address: "REDIS.:6379", Key: "a"}}}
	if serverOf(backend, plain, key) != serverOf(backend, spelled, key) {
		t.Errorf("one server spelled two ways gets two gates: %q, %q", serverOf(backend, plain, key), serverOf(backend, spelled, key))
	}
}

// A backend that cannot say whether a source speaks TLS gives each QueueJob a gate of its
// own: a QueueJob whose TLS settings its server refuses must not turn away the others.
func TestServerOfWithoutTLSIsTheQueueJobs(t *testing.T) {
	backend := &backends.Backend{Name: "fake", Addresses: func(backends.Source) ([]queue.Address, error) {
		return []queue.Address{{HostPort: "queue:1234", Field: "spec.queue.fake.address"}}, nil
	}}
	src := backends.Source{Spec: &qjv1.QueueSource{}}
	a, b := types.NamespacedName{Namespace: "ns", Name: "a"}, types.NamespacedName{Namespace: "ns", Name: "b"}
	if serverOf(backend, src, a) == serverOf(backend, src, b) {
		t.Errorf("two QueueJobs of a backend that cannot tell their TLS settings share a gate: %q", serverOf(backend, src, a))
	}
	backend.TLS = func(backends.Source) (bool, string) { return false, "" }
	if serverOf(backend, src, a) != serverOf(backend, src, b) {
		t.Errorf("two QueueJobs on one server with the same TLS settings get two gates: %q, %q", serverOf(backend, src, a), serverOf(backend, src, b))
	}
}

// A server that was down and that no probe has tried for a while is forgotten when
// another server's gate is made.
func TestServerGatesForgetIdleServers(t *testing.T) {
	var g serverGates
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	q := types.NamespacedName{Name: "q"}
	g.leave(g.enter("gone", q, now), now, serverDidNotAnswer)
	g.leave(g.enter("other", q, now.Add(time.Minute)), now.Add(time.Minute), serverAnswered)
	if _, ok := g.gates["gone"]; !ok {
		t.Fatal("a server down a minute ago was forgotten")
	}
	g.leave(g.enter("other", q, now.Add(time.Hour)), now.Add(time.Hour), serverAnswered)
	if _, ok := g.gates["gone"]; ok {
		t.Error("a server down an hour ago, untried since, is still kept")
	}
}
