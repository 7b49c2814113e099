package rabbitmq

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
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

// The same of a RabbitMQ probe: an AMQP peer's Connection.Close carries a reply text of
// its choosing.
func TestRabbitMQProbeEchoesNothingThePeerSent(t *testing.T) {
	cases := []struct {
		name   string
		start  func() (*servers.Impostor, error)
		reason string
	}{
		{name: "an SSH server", start: servers.SSHServer, reason: queue.ReasonConnectionFailed},
		{name: "a Connection.Close refusing access", start: func() (*servers.Impostor, error) {
			return servers.AMQPCloser(403, "ACCESS_REFUSED Banner secret")
		}, reason: queue.ReasonAuthFailed},
		{name: "a Connection.Close of another code", start: func() (*servers.Impostor, error) {
			return servers.AMQPCloser(541, "INTERNAL_ERROR Banner secret")
		}, reason: queue.ReasonConnectionFailed},
		{name: "an HTTP server", start: func() (*servers.Impostor, error) {
			return servers.HTTPServer("HTTP/1.1 599 Banner secret\r\nContent-Length: 6\r\n\r\nBanner")
		}, reason: queue.ReasonConnectionFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			peer := impostor(t, tc.start)
			r := New(Options{URL: "amqp://guest:guest@" + peer.Addr() + "/", Queue: "q", Timeout: 2 * time.Second})
			defer r.Close()
			_, err := r.Probe(ctx(t))
			checkEchoesNothing(t, err, tc.reason, peer.Addr())
		})
	}
}

// The management API's answers: a peer chose the HTTP status and its text; it is named by
// its class alone. A redirect is not followed: the management URL is where the probe goes,
// and nowhere else.
func TestRabbitMQManagementEchoesNothingThePeerSent(t *testing.T) {
	publish(t, "mgmt-impostor", "a")
	elsewhere := impostor(t, func() (*servers.Impostor, error) {
		return servers.HTTPServer("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	})
	cases := []struct {
		name, response, reason, says string
	}{
		{name: "a status of the peer's own", response: "HTTP/1.1 599 Banner secret\r\nContent-Length: 6\r\n\r\nBanner",
			reason: queue.ReasonConnectionFailed, says: "an unexpected HTTP status"},
		{name: "a 500 with a body", response: "HTTP/1.1 500 Banner secret\r\nContent-Type: application/json\r\nContent-Length: 38\r\n\r\n" +
			`{"error":"Banner","reason":"secret!!"}`, reason: queue.ReasonConnectionFailed, says: "an unexpected HTTP status"},
		{name: "a 401", response: "HTTP/1.1 401 Banner secret\r\nContent-Length: 6\r\n\r\nBanner",
			reason: queue.ReasonAuthFailed, says: "managementURLSecretRef"},
		{name: "a 404", response: "HTTP/1.1 404 Banner secret\r\nContent-Length: 6\r\n\r\nBanner",
			reason: queue.ReasonQueueNotFound, says: "spec.queue.rabbitmq.queue"},
		{name: "not JSON", response: "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nBanner secret",
			reason: queue.ReasonConnectionFailed, says: "not the management API"},
		{name: "a redirect", response: "HTTP/1.1 302 Found\r\nLocation: http://" + elsewhere.Addr() + "/api/queues/%2F/mgmt-impostor\r\nContent-Length: 0\r\n\r\n",
			reason: queue.ReasonConnectionFailed, says: "an unexpected HTTP status"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			peer := impostor(t, func() (*servers.Impostor, error) { return servers.HTTPServer(tc.response) })
			r := newRabbitMgmt(t, rabbitServer.URL(), "mgmt-impostor", "http://guest:guest@"+peer.Addr())
			_, err := r.Probe(ctx(t))
			checkEchoesNothing(t, err, tc.reason, peer.Addr())
			if err != nil && !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
			if n := elsewhere.Accepted(); n != 0 {
				t.Errorf("the probe followed a redirect: the server it pointed to got %d connections", n)
			}
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
	_, port, _ := net.SplitHostPort(addr)

	rb := New(Options{URL: fmt.Sprintf("amqps://guest:guest@localhost:%s/", port), Queue: "q",
		TLS: &tls.Config{RootCAs: roots}, Timeout: 2 * time.Second})
	defer rb.Close()
	_, err = rb.Probe(ctx(t))
	checkEchoesNothing(t, err, queue.ReasonTLSFailed, "localhost:"+port)
}
