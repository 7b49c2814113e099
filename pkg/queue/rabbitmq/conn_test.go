package rabbitmq

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// publish declares a queue and publishes items to it with publisher confirms, so the
// broker has them all when it returns.
func publish(t testing.TB, queue string, items ...string) {
	t.Helper()
	servers.Publish(t, rabbitServer.URL(), queue, items...)
}

func newRabbit(t *testing.T, url, queue string) *Conn {
	t.Helper()
	r := New(Options{URL: url, Queue: queue})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestRabbitMQProbe(t *testing.T) {
	// The seed's job-wq-1: eight fruits in queue job1.
	publish(t, "job1", "apple", "banana", "cherry", "date", "fig", "grape", "lemon", "melon")
	r := newRabbit(t, rabbitServer.URL(), "job1")
	got, err := r.Probe(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(queue.Counts{Ready: 8, InFlightUnknown: true}, got); diff != "" {
		t.Errorf("Probe (-want +got):\n%s", diff)
	}

	t.Run("a message taken and not yet acknowledged is not ready", func(t *testing.T) {
		ch := servers.AMQPChannel(t, rabbitServer.URL())
		if _, ok, err := ch.Get("job1", false); !ok || err != nil {
			t.Fatalf("basic.get: %v %v", ok, err)
		}
		if got, err := r.Probe(ctx(t)); err != nil || got.Ready != 7 {
			t.Errorf("Probe = %+v, %v; want 7 ready", got, err)
		}
	})
}

func TestRabbitMQProbeErrors(t *testing.T) {
	good := rabbitServer.URL()
	wrongPass := strings.Replace(good, "guest:guest", "guest:wrong-pass-xyz", 1)
	cases := []struct {
		name, url, queue string
		timeout          time.Duration
		reason           string
	}{
		{name: "missing queue", url: good, queue: "no-such-queue", reason: queue.ReasonQueueNotFound},
		{name: "wrong password", url: wrongPass, queue: "job1", reason: queue.ReasonAuthFailed},
		{name: "nothing listening", url: "amqp://guest:guest@" + closedPort(t) + "/", queue: "job1", reason: queue.ReasonConnectionFailed},
		{name: "a broker that never answers", url: "amqp://guest:guest@" + silentServer(t) + "/", queue: "job1", timeout: time.Second, reason: queue.ReasonConnectionFailed},
		{name: "not an AMQP URL", url: "http://guest:guest@localhost/", queue: "job1", reason: queue.ReasonConnectionFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := New(Options{URL: tc.url, Queue: tc.queue, Timeout: tc.timeout})
			defer r.Close()
			start := time.Now()
			_, err := r.Probe(ctx(t))
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("Probe took %s: it must not hang", took)
			}
			var qe *queue.Error
			if !errors.As(err, &qe) || qe.Reason != tc.reason {
				t.Fatalf("Probe error = %v, want reason %s", err, tc.reason)
			}
			if strings.Contains(err.Error(), "wrong-pass-xyz") || strings.Contains(err.Error(), "guest:guest") {
				t.Errorf("error %q contains credentials", err)
			}
			t.Logf("error: %v", err)
		})
	}

	t.Run("the connection survives a missing queue", func(t *testing.T) {
		publish(t, "present")
		r := newRabbit(t, good, "missing-at-first")
		if _, err := r.Probe(ctx(t)); queue.ReasonOf(err) != queue.ReasonQueueNotFound {
			t.Fatalf("Probe = %v, want QueueNotFound", err)
		}
		publish(t, "missing-at-first", "x")
		if got, err := r.Probe(ctx(t)); err != nil || got.Ready != 1 {
			t.Fatalf("Probe after the queue appeared = %+v, %v", got, err)
		}
	})
}

func TestRabbitMQBrokerRestart(t *testing.T) {
	publish(t, "restart", "a", "b")
	r := newRabbit(t, rabbitServer.URL(), "restart")
	if got, err := r.Probe(ctx(t)); err != nil || got.Ready != 2 {
		t.Fatalf("Probe = %+v, %v", got, err)
	}
	rabbitServer.Stop()
	if _, err := r.Probe(ctx(t)); queue.ReasonOf(err) != queue.ReasonConnectionFailed {
		t.Fatalf("Probe with the broker down = %v, want ConnectionFailed", err)
	}
	if err := rabbitServer.Start(servers.AMQPReady); err != nil {
		t.Fatal(err)
	}
	// A broker killed with SIGKILL may lose a queue declared a moment before (its metadata
	// log need not be flushed), so the producer declares it again; what is tested is that
	// the probe's dead connection is replaced and counting resumes.
	publish(t, "restart", "c")
	got, err := r.Probe(ctx(t))
	if err != nil || got.Ready < 1 || got.Ready > 3 {
		t.Fatalf("Probe after the restart = %+v, %v; want 1 to 3 ready (1 if the broker lost the first two)", got, err)
	}
}

// leaks returns the first substring of secret, at least 4 bytes long, that msg contains.
func leaks(msg, secret string) string {
	for i := 0; i+4 <= len(secret); i++ {
		if strings.Contains(msg, secret[i:i+4]) {
			return secret[i : i+4]
		}
	}
	return ""
}

func TestRabbitMQMalformedURLLeaksNoPassword(t *testing.T) {
	down := closedPort(t)
	// Each URL is malformed (the message must say what to fix) except where valid is set:
	// Go accepts an unescaped '@' in a password, and amqp:///... means localhost.
	cases := []struct {
		name, url, password string
		valid               bool
	}{
		{name: "unescaped / in a base64 password", url: "amqp://app:Kx9v2Qw8/Lm3+Zp==@rabbitmq:5672/", password: "Kx9v2Qw8/Lm3+Zp=="},
		{name: "unescaped / before the broker address", url: "amqp://app:Kx9v2Qw8/Lm3+Zp==@" + down + "/", password: "Kx9v2Qw8/Lm3+Zp=="},
		{name: "unescaped #", url: "amqp://app:Hq7Zr#Rt5Ww9@" + down + "/", password: "Hq7Zr#Rt5Ww9"},
		{name: "unescaped ?", url: "amqp://app:Pq4Lm9?x=Zt8Vb@" + down + "/", password: "Pq4Lm9?x=Zt8Vb"},
		{name: "unescaped @", url: "amqp://app:Fo0b@r99Zq@" + down + "/", password: "Fo0b@r99Zq", valid: true},
		{name: "digits then / (parses as host:port)", url: "amqp://app:65000/Zq8LkWm@" + down + "/", password: "65000/Zq8LkWm"},
		{name: "bad port", url: "amqp://app:Zx81Qw77Lp@" + "127.0.0.1:56x2/", password: "Zx81Qw77Lp"},
		{name: "port out of range", url: "amqp://app:Zx81Qw77Lp@" + "127.0.0.1:99999999/", password: "Zx81Qw77Lp"},
		{name: "bad scheme", url: "amqq://app:Bs4Kq9Lz@" + down + "/", password: "Bs4Kq9Lz"},
		{name: "http scheme", url: "http://app:Bs4Kq9Lz@" + down + "/", password: "Bs4Kq9Lz"},
		{name: "space in the password", url: "amqp://app:Sp4ce Pw77Zq@" + down + "/", password: "Sp4ce Pw77Zq"},
		{name: "tab in the password", url: "amqp://app:Tb4b\tPw77Zq@" + down + "/", password: "Tb4b\tPw77Zq"},
		{name: "trailing newline", url: "amqp://app:Nl7Lq2Wx@" + down + "/\n", password: "Nl7Lq2Wx"},
		{name: "percent garbage", url: "amqp://app:Pc%zzWq12Lm@" + down + "/", password: "Pc%zzWq12Lm"},
		{name: "percent garbage in the host", url: "amqp://app:Hg5Tr8Qm@rab%zzbit:5672/", password: "Hg5Tr8Qm"},
		{name: "no host", url: "amqp://app:Nh3Lk9Qz@/", password: "Nh3Lk9Qz", valid: true},
		{name: "bad heartbeat parameter", url: "amqp://app:Hb6Vc2Xn@" + down + "/?heartbeat=Hb6Vc2Xn", password: "Hb6Vc2Xn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRabbit(t, tc.url, "job1")
			r.opts.Timeout = 5 * time.Second
			_, err := r.Probe(ctx(t))
			if err == nil {
				t.Fatal("Probe succeeded with a malformed URL")
			}
			if queue.ReasonOf(err) != queue.ReasonConnectionFailed {
				t.Errorf("reason = %s, want %s", queue.ReasonOf(err), queue.ReasonConnectionFailed)
			}
			if s := leaks(err.Error(), tc.password); s != "" {
				t.Errorf("error %q contains %q, part of the password", err, s)
			}
			if !tc.valid && !strings.Contains(err.Error(), "percent-encoded") {
				t.Errorf("error %q does not say what to fix", err)
			}
		})
	}
}

// A broker that completed the AMQP handshake and then stopped answering (SIGSTOP, a live
// process with its sockets open): the probe and Close must return within their bound, not
// after amqp091's heartbeat deadline, and the backend must reconnect once the broker is back.
func TestRabbitMQFrozenBroker(t *testing.T) {
	srv, err := servers.StartRabbitMQ(servers.AMQPReady)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	servers.Publish(t, srv.URL(), "frozen", "a")
	const timeout = 2 * time.Second
	const bound = 8 * time.Second // the timeout and generous slack for a loaded machine
	r := New(Options{URL: srv.URL(), Queue: "frozen", Timeout: timeout})
	t.Cleanup(func() { _ = r.Close() })
	closing := New(Options{URL: srv.URL(), Queue: "frozen", Timeout: timeout})
	for _, b := range []*Conn{r, closing} {
		if got, err := b.Probe(ctx(t)); err != nil || got.Ready != 1 {
			t.Fatalf("Probe before the freeze = %+v, %v", got, err)
		}
	}

	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Resume() }) // runs before srv.Close

	// Close and a probe at once, each timed on its own: one must not hide the other by
	// waiting out the heartbeat deadline that also ends the other's connection.
	closed := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		_ = closing.Close()
		closed <- time.Since(start)
	}()
	start := time.Now()
	_, err = r.Probe(context.Background())
	took := time.Since(start)
	t.Logf("Probe against the frozen broker returned after %s: %v", took, err)
	if took > bound {
		t.Errorf("Probe against the frozen broker took %s, want at most %s (timeout %s)", took, bound, timeout)
	}
	if queue.ReasonOf(err) != queue.ReasonConnectionFailed {
		t.Errorf("Probe against the frozen broker = %v, want reason %s", err, queue.ReasonConnectionFailed)
	}
	select {
	case took := <-closed:
		t.Logf("Close against the frozen broker returned after %s", took)
		if took > bound {
			t.Errorf("Close against the frozen broker took %s, want at most %s", took, bound)
		}
	case <-time.After(time.Minute):
		t.Errorf("Close against the frozen broker has not returned after a minute")
	}

	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := r.Probe(ctx(t))
		if err == nil && got.Ready == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Probe after the broker resumed = %+v, %v; want 1 ready", got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Probes whose timeout falls in the middle of connecting or counting: under -race, any
// unsynchronised access to the connection between the probe and its worker is reported.
func TestRabbitMQProbeTimeoutRace(t *testing.T) {
	publish(t, "race", "a")
	for i := range 60 {
		r := New(Options{URL: rabbitServer.URL(), Queue: "race", Timeout: time.Duration(1+i) * time.Millisecond})
		_, _ = r.Probe(ctx(t))
		_, _ = r.Probe(ctx(t))
		_ = r.Close()
	}
}

// probeUntil probes until ok accepts the counts, or fails the test after a minute: the
// management plugin's counts lag by up to its statistics interval.
func probeUntil(t *testing.T, r *Conn, what string, ok func(queue.Counts) bool) {
	t.Helper()
	servers.ProbeUntil(t, time.Minute, servers.ManagementStatsInterval/2,
		func() (queue.Counts, error) { return r.Probe(ctx(t)) }, ok, what)
}

func TestRabbitMQManagementCountsInFlight(t *testing.T) {
	publish(t, "held", "a", "b", "c", "d")
	ch := servers.AMQPChannel(t, rabbitServer.URL())
	var held []amqp.Delivery
	for range 3 {
		d, ok, err := ch.Get("held", false)
		if !ok || err != nil {
			t.Fatalf("basic.get: %v %v", ok, err)
		}
		held = append(held, d)
	}

	for name, mgmt := range map[string]string{
		"management URL with credentials":                rabbitServer.ManagementURL(),
		"management URL with the AMQP URL's credentials": servers.WithoutUserinfo(t, rabbitServer.ManagementURL()),
	} {
		t.Run(name, func(t *testing.T) {
			r := New(Options{URL: rabbitServer.URL(), Queue: "held", ManagementURL: mgmt})
			t.Cleanup(func() { _ = r.Close() })
			probeUntil(t, r, "1 ready, 3 in flight", func(c queue.Counts) bool {
				return c == queue.Counts{Ready: 1, InFlight: 3, Lag: ManagementLag}
			})
		})
	}

	r := newRabbitMgmt(t, rabbitServer.URL(), "held", rabbitServer.ManagementURL())
	for _, d := range held {
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	probeUntil(t, r, "1 ready, 0 in flight once the workers acknowledged", func(c queue.Counts) bool {
		return c == queue.Counts{Ready: 1, InFlight: 0, Lag: ManagementLag}
	})
}

func newRabbitMgmt(t *testing.T, amqpURL, queue, mgmt string) *Conn {
	t.Helper()
	r := New(Options{URL: amqpURL, Queue: queue, ManagementURL: mgmt})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestRabbitMQManagementErrors(t *testing.T) {
	publish(t, "mgmt-errors", "a")
	good := rabbitServer.ManagementURL()
	const wrongPass = "Wr0ngMgmtPw77"
	cases := []struct {
		name, mgmt, password string
		timeout              time.Duration
		reason, says         string
	}{
		{name: "wrong management password", mgmt: strings.Replace(good, "guest:guest", "guest:"+wrongPass, 1), password: wrongPass,
			reason: queue.ReasonAuthFailed, says: "managementURLSecretRef"},
		{name: "management API not listening", mgmt: "http://guest:Cl0sedPortPw@" + closedPort(t), password: "Cl0sedPortPw",
			reason: queue.ReasonConnectionFailed, says: "127.0.0.1:"},
		{name: "management API that never answers", mgmt: "http://guest:S1lentPw99@" + silentServer(t), password: "S1lentPw99",
			timeout: 2 * time.Second, reason: queue.ReasonConnectionFailed, says: "within 2s"},
		{name: "malformed management URL", mgmt: "http://guest:Mx9v2Qw8/Lm3+Zp==@" + rabbitServer.Addr(), password: "Mx9v2Qw8/Lm3+Zp==",
			reason: queue.ReasonConnectionFailed, says: "percent-encoded"},
		{name: "a password split at an unescaped '/' after digits that look like a port",
			mgmt: "http://monitor:20245/Spr1ng@" + rabbitServer.Addr(), password: "20245/Spr1ng",
			reason: queue.ReasonConnectionFailed, says: "percent-encoded"},
		{name: "the AMQP URL's credentials are not sent to another host",
			mgmt: "http://localhost:" + strconv.Itoa(rabbitServer.ManagementPort()), password: "guest",
			reason: queue.ReasonAuthFailed, says: "managementURLSecretRef"},
		{name: "management URL of another scheme", mgmt: "amqp://guest:Sc7eMePw@" + rabbitServer.Addr(), password: "Sc7eMePw",
			reason: queue.ReasonConnectionFailed, says: "http"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := New(Options{URL: rabbitServer.URL(), Queue: "mgmt-errors", ManagementURL: tc.mgmt, Timeout: tc.timeout})
			t.Cleanup(func() { _ = r.Close() })
			start := time.Now()
			got, err := r.Probe(ctx(t))
			if took := time.Since(start); took > 8*time.Second {
				t.Errorf("Probe took %s", took)
			}
			if err == nil {
				t.Fatalf("Probe = %+v, want an error: in-flight messages cannot be counted", got)
			}
			if queue.ReasonOf(err) != tc.reason {
				t.Errorf("Probe error = %v, want reason %s", err, tc.reason)
			}
			if s := leaks(err.Error(), tc.password); s != "" {
				t.Errorf("error %q contains %q, part of the password", err, s)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
		})
	}
}

func TestRabbitMQManagementMissingQueue(t *testing.T) {
	// The passive declare reports a missing queue before the management API is asked, so
	// the management API's own 404 is tested on its own.
	r := newRabbitMgmt(t, rabbitServer.URL(), "no-such-queue", rabbitServer.ManagementURL())
	if _, err := r.Probe(ctx(t)); queue.ReasonOf(err) != queue.ReasonQueueNotFound {
		t.Errorf("Probe = %v, want reason %s", err, queue.ReasonQueueNotFound)
	}
	if r.mgmt == nil {
		t.Fatal("no management API configured")
	}
	_, _, err := r.mgmt.counts(ctx(t), "/", "no-such-queue")
	if queue.ReasonOf(err) != queue.ReasonQueueNotFound {
		t.Errorf("management API count of a missing queue = %v, want reason %s", err, queue.ReasonQueueNotFound)
	}
	_, _, err = r.mgmt.counts(ctx(t), "no-such-vhost", "job1")
	if queue.ReasonOf(err) != queue.ReasonQueueNotFound {
		t.Errorf("management API count in a missing vhost = %v, want reason %s", err, queue.ReasonQueueNotFound)
	}
}

// TestRabbitMQProbeKeepsItsChannel: a probe is one round trip on a channel kept open
// (opening and closing one each time made it three, and 1 000 QueueJobs on one broker
// saw 0.7 s probes); the channel the broker closes over a missing queue is replaced.
func TestRabbitMQProbeKeepsItsChannel(t *testing.T) {
	publish(t, "kept", "a", "b")
	r := newRabbit(t, rabbitServer.URL(), "kept")
	probe := func(want int64) {
		t.Helper()
		got, err := r.Probe(ctx(t))
		if err != nil || got.Ready != want {
			t.Fatalf("Probe = %+v, %v; want %d ready", got, err, want)
		}
	}
	probe(2)
	r.mu.Lock()
	first := r.ch
	r.mu.Unlock()
	probe(2)
	r.mu.Lock()
	same := r.ch == first && first != nil && !first.IsClosed()
	r.mu.Unlock()
	if !same {
		t.Fatal("the second probe did not use the first probe's channel")
	}

	// The queue deleted: the broker closes the channel with 404; the probe says so,
	// and once the queue is back the next probe counts it on a new channel.
	ch := servers.AMQPChannel(t, rabbitServer.URL())
	if _, err := ch.QueueDelete("kept", false, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Probe(ctx(t)); queue.ReasonOf(err) != queue.ReasonQueueNotFound {
		t.Fatalf("Probe of a deleted queue: %v, want reason %s", err, queue.ReasonQueueNotFound)
	}
	publish(t, "kept", "c")
	probe(1)
	probe(1)
}

// A publish to a queue that does not exist is returned, and the publisher says so; a
// return routed elsewhere (of a message published before and not waited for) is not
// taken for the next message's.
func TestPublisherReturns(t *testing.T) {
	q := "publisher-returns"
	ch := servers.AMQPChannel(t, rabbitServer.URL())
	for _, name := range []string{q, q + ".missing"} {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(servers.AMQPChannel(t, rabbitServer.URL()), 0)
	if err != nil {
		t.Fatal(err)
	}
	msg := amqp.Publishing{Body: []byte("body-5c1e")}
	err = pub.PublishConfirmed(ctx(t), q+".missing", msg)
	if !errors.Is(err, ErrUnroutable) || queue.ReasonOf(err) != queue.ReasonQueueNotFound || strings.Contains(err.Error(), "body-5c1e") {
		t.Errorf("publish to a missing queue = %v; want ErrUnroutable (QueueNotFound) without the body", err)
	}
	// A message returned and not waited for, then one stored: the broker handles a
	// channel's publishes in order, so the first one's return is in before the second
	// one's confirm.
	if _, err := pub.Publish(ctx(t), q+".missing", msg); err != nil {
		t.Fatal(err)
	}
	dc, err := pub.Publish(ctx(t), q, msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Confirmed(ctx(t), q, dc); err != nil {
		t.Errorf("publish to %s = %v; want it stored", q, err)
	}
	if info, err := ch.QueueDeclarePassive(q, false, false, false, false, nil); err != nil || info.Messages != 1 {
		t.Errorf("%s holds %+v, %v; want 1 message", q, info, err)
	}
}

// TestRabbitMQProbeCountsDeadLettered: the probe counts <queue>.failed, 0 while it does
// not exist, without the broker's 404 over it costing the main count its channel.
func TestRabbitMQProbeCountsDeadLettered(t *testing.T) {
	publish(t, "dl", "a", "b")
	r := newRabbit(t, rabbitServer.URL(), "dl")
	want := func(c queue.Counts) {
		t.Helper()
		got, err := r.Probe(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c, got); diff != "" {
			t.Errorf("Probe (-want +got):\n%s", diff)
		}
	}
	want(queue.Counts{Ready: 2, InFlightUnknown: true})
	r.mu.Lock()
	first := r.ch
	r.mu.Unlock()
	want(queue.Counts{Ready: 2, InFlightUnknown: true})
	r.mu.Lock()
	kept := r.ch == first && first != nil && !first.IsClosed()
	r.mu.Unlock()
	if !kept {
		t.Error("the missing dead-letter queue cost the main count its channel")
	}

	publish(t, FailedQueue("dl"), "x", "y", "z")
	// While messages are ready, a dead-letter queue found missing is not looked for
	// again for a minute (each look is a channel error); a drained queue looks at once.
	want(queue.Counts{Ready: 2, InFlightUnknown: true})
	ch := servers.AMQPChannel(t, rabbitServer.URL())
	if _, err := ch.QueuePurge("dl", false); err != nil {
		t.Fatal(err)
	}
	want(queue.Counts{DeadLettered: 3, InFlightUnknown: true})
	publish(t, "dl", "a", "b")
	want(queue.Counts{Ready: 2, DeadLettered: 3, InFlightUnknown: true})
	// Once it exists, it is counted at every probe, ready messages or not.
	publish(t, FailedQueue("dl"), "w")
	want(queue.Counts{Ready: 2, DeadLettered: 4, InFlightUnknown: true})

	t.Run("with the management API", func(t *testing.T) {
		m := newRabbitMgmt(t, rabbitServer.URL(), "dl", rabbitServer.ManagementURL())
		probeUntil(t, m, "2 ready, 4 dead-lettered", func(c queue.Counts) bool {
			return c == queue.Counts{Ready: 2, DeadLettered: 4, Lag: ManagementLag}
		})
	})
	t.Run("with the management API and no dead-letter queue", func(t *testing.T) {
		publish(t, "dl-none", "a")
		m := newRabbitMgmt(t, rabbitServer.URL(), "dl-none", rabbitServer.ManagementURL())
		probeUntil(t, m, "1 ready, none dead-lettered", func(c queue.Counts) bool {
			return c == queue.Counts{Ready: 1, Lag: ManagementLag}
		})
	})
}
