package kube

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// wakes records a watch's wakes.
type wakes chan bool

func (w wakes) wake(reported bool) { w <- reported }

// next waits up to timeout for a wake and returns its reported flag.
func (w wakes) next(t *testing.T, timeout time.Duration, what string) bool {
	t.Helper()
	select {
	case r := <-w:
		return r
	case <-time.After(timeout):
		t.Fatalf("no wake within %s: %s", timeout, what)
	}
	return false
}

// none fails if a wake comes within window.
func (w wakes) none(t *testing.T, window time.Duration, what string) {
	t.Helper()
	select {
	case r := <-w:
		t.Fatalf("woken (reported %v): %s", r, what)
	case <-time.After(window):
	}
}

// A watched stream wakes its QueueJob once the watch is subscribed (reported: writes may
// have gone unheard), then at once after each publish to its subjects, and not after the
// watch stopped.
func TestWatchWakesOnPublish(t *testing.T) {
	stream := "watched"
	o := nats.Options{Servers: []string{natsServer.URL()}, Stream: stream, Consumer: "workers",
		User: natsServer.User(), Password: natsServer.Password()}
	a := nats.NewAdmin(o, 10*time.Second)
	defer func() { _ = a.Close() }()
	if err := a.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Declare(context.Background()); err != nil {
		t.Fatal(err)
	}
	ref := func(key string) *corev1.SecretKeySelector {
		return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nats"}, Key: key}
	}
	src := backends.Source{Spec: &qjv1.QueueSource{NATS: &qjv1.NATSQueue{URL: natsServer.URL(), Stream: stream, Consumer: "workers",
		UserSecretRef: ref("user"), PasswordSecretRef: ref("password")}},
		Secrets: map[string]string{"nats/user": natsServer.User(), "nats/password": natsServer.Password()}}
	w := NewWatcher(logr.Discard())
	defer w.Close()
	got := make(wakes, 100)
	stop, err := w.Watch(src, got.wake)
	if err != nil {
		t.Fatal(err)
	}
	if !got.next(t, 30*time.Second, "the watch's start") {
		t.Fatal("the first wake is not reported: writes before the watch started may have gone unheard")
	}
	nc := natsServer.Publisher(t)
	start := time.Now()
	if err := nc.Publish(stream, []byte("item")); err != nil {
		t.Fatal(err)
	}
	if got.next(t, 5*time.Second, "a publish to the stream's subject") {
		t.Error("a publish woke as reported")
	}
	t.Logf("woken %s after the publish", time.Since(start))
	// And once more nats.WatchSettle later, for a probe that came before JetStream stored it.
	if got.next(t, 5*time.Second, "the publish's second wake") {
		t.Error("a publish's second wake woke as reported")
	}
	if d := time.Since(start); d < nats.WatchSettle {
		t.Errorf("the second wake came %s after the publish, want at least %s", d, nats.WatchSettle)
	}
	if err := nc.Publish("elsewhere", []byte("x")); err != nil {
		t.Fatal(err)
	}
	got.none(t, 500*time.Millisecond, "a publish to another subject")

	stop()
	if err := nc.Publish(stream, []byte("item")); err != nil {
		t.Fatal(err)
	}
	got.none(t, time.Second, "a publish after the watch stopped")
}

// A watch whose server went away wakes reported; it connects again once the server is back, and wakes reported then (what was published
// meanwhile went unheard); publishes wake it as before.
func TestWatchSurvivesRestart(t *testing.T) {
	srv, err := servers.StartNATSWith(servers.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	o := nats.Options{Servers: []string{srv.URL()}, Stream: "restarted", Consumer: "workers"}
	a := nats.NewAdmin(o, 10*time.Second)
	if err := a.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Declare(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	w := NewWatcher(logr.Discard())
	defer w.Close()
	got := make(wakes, 100)
	src := backends.Source{Spec: &qjv1.QueueSource{NATS: &qjv1.NATSQueue{URL: srv.URL(), Stream: "restarted", Consumer: "workers"}}}
	if _, err := w.Watch(src, got.wake); err != nil {
		t.Fatal(err)
	}
	got.next(t, 30*time.Second, "the watch's start")
	// It cannot tell that it hears every message (subjects added later, sourced streams,
	// a denied subscription): never Active, so no idle NATS queue is probed less often.
	if w.Active(src) {
		t.Error("Active is true")
	}
	srv.Stop()
	// Its failure wakes, reported.
	if !got.next(t, 30*time.Second, "the watch's failure") {
		t.Error("the wake of the failed watch is not reported")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if !got.next(t, 30*time.Second, "the watch's restart") {
		t.Error("the wake after the restart is not reported")
	}
	if err := srv.Publisher(t).Publish("restarted", []byte("item")); err != nil {
		t.Fatal(err)
	}
	if got.next(t, 5*time.Second, "a publish after the restart") {
		t.Error("a publish woke as reported")
	}
}
