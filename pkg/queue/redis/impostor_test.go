package redis

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// impostor starts a server that is not the queue a probe expects (see servers.Impostor).
func impostor(t *testing.T, start func() (*servers.Impostor, error)) *servers.Impostor {
	t.Helper()
	i, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(i.Close)
	return i
}

// peerWords are what only the impostors send (in any case): a message with one of them
// echoes the peer. " 599" is the status code of the HTTP impostors (a port follows ':').
var peerWords = []string{"banner", "ssh-2.0", " 599"}

// checkEchoesNothing checks that a probe failed with reason, naming the address it was
// given, and repeating nothing the peer sent.
func checkEchoesNothing(t *testing.T, err error, reason, addr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Probe succeeded against a server that is not the queue")
	}
	if queue.ReasonOf(err) != reason {
		t.Errorf("Probe error = %q (reason %s), want reason %s", err, queue.ReasonOf(err), reason)
	}
	msg := strings.ToLower(err.Error())
	for _, w := range peerWords {
		if strings.Contains(msg, w) {
			t.Errorf("error %q repeats %q, which the peer sent", err, w)
		}
	}
	if addr != "" && !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the address %s", err, addr)
	}
	t.Logf("error: %v", err)
}

// A probe pointed at something that is not a Redis server (an SSH server, a server that
// answers with error replies of its own making) says what failed in fixed words: nothing
// the peer sent, so that a probe is no banner grabber.
func TestRedisProbeEchoesNothingThePeerSent(t *testing.T) {
	cases := []struct {
		name   string
		start  func() (*servers.Impostor, error)
		reason string
	}{
		{name: "an SSH server", start: servers.SSHServer, reason: queue.ReasonConnectionFailed},
		{name: "an ERR reply", start: func() (*servers.Impostor, error) { return servers.RedisErrorServer("-ERR Banner secret\r\n") },
			reason: queue.ReasonConnectionFailed},
		{name: "a reply of the peer's own prefix", start: func() (*servers.Impostor, error) { return servers.RedisErrorServer("-Banner secret\r\n") },
			reason: queue.ReasonConnectionFailed},
		{name: "a WRONGPASS reply", start: func() (*servers.Impostor, error) { return servers.RedisErrorServer("-WRONGPASS Banner secret\r\n") },
			reason: queue.ReasonAuthFailed},
		{name: "a NOAUTH reply", start: func() (*servers.Impostor, error) { return servers.RedisErrorServer("-NOAUTH Banner secret\r\n") },
			reason: queue.ReasonAuthFailed},
		{name: "a NOPERM reply", start: func() (*servers.Impostor, error) { return servers.RedisErrorServer("-NOPERM Banner secret\r\n") },
			reason: queue.ReasonAuthFailed},
		{name: "a WRONGTYPE reply", start: func() (*servers.Impostor, error) { return servers.RedisErrorServer("-WRONGTYPE Banner secret\r\n") },
			reason: queue.ReasonWrongType},
		{name: "an HTTP server", start: func() (*servers.Impostor, error) {
			return servers.HTTPServer("HTTP/1.1 599 Banner secret\r\nContent-Length: 6\r\n\r\nBanner")
		}, reason: queue.ReasonConnectionFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			peer := impostor(t, tc.start)
			r := New(Options{Address: peer.Addr(), Key: "k", Timeout: 2 * time.Second})
			defer r.Close()
			_, err := r.Probe(ctx(t))
			checkEchoesNothing(t, err, tc.reason, peer.Addr())
			_, err = r.Reap(ctx(t), time.Now(), time.Second, nil)
			checkEchoesNothing(t, err, tc.reason, "")
		})
	}
}

// A TLS peer's certificate is the peer's too: the names it is valid for are not repeated.
func TestTLSFailureEchoesNothingThePeerSent(t *testing.T) {
	ca, err := servers.NewCA("impostor CA")
	if err != nil {
		t.Fatal(err)
	}
	files, err := ca.WriteServerCert(t.TempDir(), "banner.secret.example")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); _ = c.Close() }()
		}
	}()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM())
	addr := l.Addr().String()

	r := New(Options{Address: addr, Key: "k", TLS: &tls.Config{RootCAs: roots, ServerName: "localhost"}, Timeout: 2 * time.Second})
	defer r.Close()
	_, err = r.Probe(ctx(t))
	checkEchoesNothing(t, err, queue.ReasonTLSFailed, addr)
}

// The watch of a Redis server says why it is not active (the manager logs it) in the same
// fixed words: a server that passed the probe may still answer the watch's commands with
// replies of its own making.
func TestKeyWatchEchoesNothingThePeerSent(t *testing.T) {
	for _, line := range []string{"-ERR Banner secret\r\n", "-NOPERM Banner secret\r\n", "+Banner secret\r\n"} {
		t.Run(strings.TrimSpace(line), func(t *testing.T) {
			peer := impostor(t, func() (*servers.Impostor, error) { return servers.RedisErrorServer(line) })
			w := NewKeyWatch(Options{Address: peer.Addr(), Timeout: 2 * time.Second}, func(string, bool) {}, nil)
			defer w.Close()
			w.Add("k")
			var err error
			eventually(t, "the watch says why it is not active", func() bool {
				var ok bool
				ok, err = w.Active()
				return !ok && err != nil && peer.Accepted() > 0 && err.Error() != "not connected yet"
			})
			checkEchoesNothing(t, err, queue.ReasonOf(err), "")
		})
	}
}
