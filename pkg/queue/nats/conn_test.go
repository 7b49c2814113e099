package nats_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// options locate stream on the package's server, with its credentials.
func options(stream string) nats.Options {
	return nats.Options{Servers: []string{natsServer.URL()}, Stream: stream, Consumer: "workers",
		User: natsServer.User(), Password: natsServer.Password(), Timeout: 2 * time.Second}
}

// The probe's errors say what to fix, with the reason of the condition, and never quote
// what the peer sent.
func TestProbeErrors(t *testing.T) {
	closed, err := servers.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	silent, stop, err := servers.Silent()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ssh, err := servers.SSHServer()
	if err != nil {
		t.Fatal(err)
	}
	defer ssh.Close()
	for _, tc := range []struct {
		name     string
		o        nats.Options
		reason   string
		noAnswer bool
		says     string
	}{
		{name: "closed port", o: nats.Options{Servers: []string{fmt.Sprintf("nats://127.0.0.1:%d", closed[0])}, Stream: "s", Consumer: "c"},
			reason: queue.ReasonConnectionFailed, noAnswer: true, says: "connection refused"},
		{name: "silent server", o: nats.Options{Servers: []string{"nats://" + silent}, Stream: "s", Consumer: "c", Timeout: time.Second},
			reason: queue.ReasonConnectionFailed, noAnswer: true, says: "no answer in time"},
		{name: "an SSH server", o: nats.Options{Servers: []string{"nats://" + ssh.Addr()}, Stream: "s", Consumer: "c", Timeout: time.Second},
			reason: queue.ReasonConnectionFailed, says: "does not answer as a NATS server does"},
		{name: "credentials in the URL", o: nats.Options{Servers: []string{"nats://u:hunter22@127.0.0.1:4222"}, Stream: "s", Consumer: "c"},
			reason: queue.ReasonConnectionFailed, says: "must not carry credentials"},
		{name: "missing stream", o: options("no-such-stream"), reason: queue.ReasonQueueNotFound, says: "spec.queue.nats.stream"},
		{name: "a stream name with a dot", o: options("jobs.high"), reason: queue.ReasonWrongType, says: "not a valid JetStream name"},
		{name: "wrong password", o: func() nats.Options { o := options("s"); o.Password = "hunter22"; return o }(),
			reason: queue.ReasonAuthFailed, says: "passwordSecretRef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := nats.New(tc.o)
			defer func() { _ = c.Close() }()
			_, err := c.Probe(ctx(t))
			if queue.ReasonOf(err) != tc.reason || queue.NoAnswer(err) != tc.noAnswer || !strings.Contains(fmt.Sprint(err), tc.says) {
				t.Errorf("Probe = %v (reason %s, no answer %v); want reason %s, no answer %v, saying %q",
					err, queue.ReasonOf(err), queue.NoAnswer(err), tc.reason, tc.noAnswer, tc.says)
			}
			for _, leak := range []string{"Banner", "hunter22", "SSH", "nats:"} {
				if err != nil && strings.Contains(err.Error(), leak) {
					t.Errorf("Probe = %q: quotes %q", err, leak)
				}
			}
		})
	}
}

// Before any worker or qj enqueue created the consumer, the stream's messages are ready;
// once it exists, its counts are the consumer's.
func TestProbeWithoutConsumer(t *testing.T) {
	o := options("no-consumer-yet")
	a := nats.NewAdmin(o, 10*time.Second)
	defer func() { _ = a.Close() }()
	if err := a.Open(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := a.Declare(ctx(t)); err != nil {
		t.Fatal(err)
	}
	nc := natsServer.Publisher(t)
	for _, it := range []string{"a", "b"} {
		if err := nc.Publish(o.Stream, []byte(it)); err != nil {
			t.Fatal(err)
		}
	}
	c := nats.New(o)
	defer func() { _ = c.Close() }()
	servers.ProbeUntil(t, 30*time.Second, 50*time.Millisecond, func() (queue.Counts, error) { return c.Probe(ctx(t)) },
		func(got queue.Counts) bool { return got == queue.Counts{Ready: 2} }, "2 ready, the consumer missing")
}

// A TLS server: a tls:// URL with its CA connects; the system's roots, or a nats:// URL
// without TLS settings, fail with TLSFailed.
func TestProbeTLS(t *testing.T) {
	ca, err := servers.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := servers.StartNATSWith(servers.NATSOptions{TLS: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM())
	good := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, ServerName: "127.0.0.1"}
	for _, tc := range []struct {
		name   string
		url    string
		tls    *tls.Config
		reason string
	}{
		{name: "the CA", url: srv.URL(), tls: good, reason: queue.ReasonQueueNotFound},
		{name: "the system's roots", url: srv.URL(), reason: queue.ReasonTLSFailed},
		{name: "no TLS", url: "nats://" + srv.Addr(), reason: queue.ReasonTLSFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := nats.New(nats.Options{Servers: []string{tc.url}, Stream: "s", Consumer: "c", TLS: tc.tls, Timeout: 2 * time.Second})
			defer func() { _ = c.Close() }()
			if _, err := c.Probe(ctx(t)); queue.ReasonOf(err) != tc.reason {
				t.Errorf("Probe = %v, want reason %s", err, tc.reason)
			}
		})
	}
}

// A message delivered again after its AckWait passed is counted as redelivered
// (nats-server's num_redelivered: delivered more than once, not acknowledged since) while
// it is in flight, and no longer once acknowledged.
func TestProbeCountsRedelivered(t *testing.T) {
	o := options("redelivered")
	o.AckWait = time.Second
	enqueue(t, o, "a")
	c, err := nats.NewConsumer(ctx(t), o, queue.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if l, err := c.Take(ctx(t), 5*time.Second); err != nil || l == nil {
		t.Fatalf("Take = %v, %v", l, err)
	}
	p := nats.New(o)
	defer func() { _ = p.Close() }()
	if got, err := p.Probe(ctx(t)); err != nil || got != (queue.Counts{InFlight: 1}) {
		t.Fatalf("Probe of the first delivery = %+v, %v; want 1 in flight, none redelivered", got, err)
	}
	var again queue.Lease
	servers.Eventually(t, 30*time.Second, func() error {
		again, err = c.Take(ctx(t), 200*time.Millisecond)
		if err == nil && again == nil {
			err = fmt.Errorf("not delivered again yet")
		}
		return err
	})
	if again.Attempt() != 2 {
		t.Errorf("the redelivery's attempt = %d, want 2", again.Attempt())
	}
	if got, err := p.Probe(ctx(t)); err != nil || got != (queue.Counts{InFlight: 1, Redelivered: 1}) {
		t.Errorf("Probe of the redelivery = %+v, %v; want 1 in flight, 1 redelivered", got, err)
	}
	if err := again.Complete(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Probe(ctx(t)); err != nil || got != (queue.Counts{}) {
		t.Errorf("Probe after the redelivery was acknowledged = %+v, %v; want nothing in flight, none redelivered", got, err)
	}
}

// An NKey user logs in with its seed; another user's seed, and a .creds file that is not
// one, fail with AuthFailed, quoting neither seed.
func TestProbeNKey(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	srv, err := servers.StartNATSWith(servers.NATSOptions{NKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct {
		name   string
		seed   []byte
		creds  []byte
		reason string
	}{
		{name: "its seed", seed: seed, reason: queue.ReasonQueueNotFound}, // logged in; no stream
		{name: "another user's seed", seed: otherSeed, reason: queue.ReasonAuthFailed},
		{name: "a .creds file that is not one", creds: []byte("not a creds file " + string(otherSeed)), reason: queue.ReasonAuthFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := nats.New(nats.Options{Servers: []string{srv.URL()}, Stream: "s", Consumer: "c", NKeySeed: tc.seed, Creds: tc.creds})
			defer func() { _ = c.Close() }()
			_, err := c.Probe(ctx(t))
			if queue.ReasonOf(err) != tc.reason {
				t.Errorf("Probe = %v, want reason %s", err, tc.reason)
			}
			for _, s := range [][]byte{seed, otherSeed} {
				if err != nil && strings.Contains(err.Error(), string(s[:8])) {
					t.Errorf("Probe = %q: quotes a seed", err)
				}
			}
		})
	}
}
