package servers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

func clientTLS(t *testing.T, ca *CA) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.PEM()) {
		t.Fatal("the CA's PEM holds no certificate")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// A TLS redis-server accepts TLS clients that trust its CA, and nothing in plain TCP; an
// ACL user logs in with its own name and password.
func TestStartRedisTLS(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartRedisWith(RedisOptions{TLS: ca, Password: "default-pw", Users: []string{"alice on >alice-pw ~* +@all"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ping := func(o *redis.Options) error {
		o.Addr, o.DisableIdentity, o.MaxRetries = s.Addr(), true, -1
		c := redis.NewClient(o)
		defer c.Close()
		return c.Ping(ctx).Err()
	}
	if err := ping(&redis.Options{TLSConfig: clientTLS(t, ca), Username: "alice", Password: "alice-pw"}); err != nil {
		t.Errorf("TLS with the CA, as alice: %v", err)
	}
	if err := ping(&redis.Options{TLSConfig: clientTLS(t, ca), Password: "default-pw"}); err != nil {
		t.Errorf("TLS with the CA, as the default user: %v", err)
	}
	if err := ping(&redis.Options{TLSConfig: clientTLS(t, ca), Username: "alice", Password: "default-pw"}); err == nil {
		t.Error("alice logged in with the default user's password")
	}
	if err := ping(&redis.Options{TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}, Password: "default-pw"}); err == nil {
		t.Error("a client that trusts only the system's roots accepted the test CA's certificate")
	}
	if err := ping(&redis.Options{Password: "default-pw", DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second}); err == nil {
		t.Error("the TLS server answered plain TCP")
	}
}

// The broker starts with its management API, which answers the guest user, also over TLS
// (amqps, https), and Close leaves no process of it behind.
func TestStartRabbitMQ(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := StartRabbitMQWith(AMQPReady, RabbitMQOptions{TLS: ca})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rabbitmq-server with its management plugin started in %s", time.Since(start))
	defer r.Close()
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(r.mgmtPort)+"/api/overview", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("guest", "guest")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("management API: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("management API: GET /api/overview = %s", resp.Status)
	}

	c, err := amqp.DialConfig(r.TLSURL(), amqp.Config{TLSClientConfig: clientTLS(t, ca), Dial: amqp.DefaultDial(10 * time.Second)})
	if err != nil {
		t.Fatalf("amqps with the CA: %v", err)
	}
	_ = c.Close()
	req, err = http.NewRequest(http.MethodGet, "https://127.0.0.1:"+strconv.Itoa(r.mgmtTLSPort)+"/api/overview", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("guest", "guest")
	resp, err = (&http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(t, ca)}}).Do(req)
	if err != nil {
		t.Fatalf("management API over https: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("management API over https: GET /api/overview = %s", resp.Status)
	}

	node := "rabbit-" + strconv.Itoa(r.Port()) + "@localhost"
	r.Close()
	// pgrep exits 1 when no process matches. A process killed by Close may take a moment
	// to be gone from the process table (the broker's script waits for erl): a minute.
	for _, pattern := range []string{node, "epmd -port " + strconv.Itoa(r.epmd.Port())} {
		var out []byte
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			o, err := exec.Command("pgrep", "-af", pattern).Output()
			if err != nil {
				break // gone
			}
			if out = o; time.Now().After(deadline) {
				t.Errorf("processes left a minute after Close:\n%s", out)
				break
			}
		}
	}
}
