package servers

import (
	"context"
	"net/url"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// AMQPReady is the ready check of StartRabbitMQ: the broker at url accepts an AMQP
// connection.
func AMQPReady(url string) error {
	c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return err
	}
	return c.Close()
}

// Eventually polls f every 50ms until it returns nil, failing the test with f's last
// error after timeout.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// AMQPChannel opens a connection to the broker at url and a channel on it, for the test
// to declare, publish and inspect queues; the connection is closed after the test.
func AMQPChannel(t testing.TB, url string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// Publish declares a durable queue at url and publishes items to it, persistent, with
// publisher confirms, so the broker has them all when it returns.
func Publish(t testing.TB, url, queue string, items ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{Body: []byte(it), DeliveryMode: amqp.Persistent})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("publish not confirmed: %v", err)
		}
	}
}

// ProbeUntil calls probe every interval until it succeeds with a result that ok accepts,
// failing the test with the last result and want after timeout: for counts that lag, as
// the management API's do by up to ManagementStatsInterval.
func ProbeUntil[T any](t testing.TB, timeout, interval time.Duration, probe func() (T, error), ok func(T) bool, want string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := probe()
		if err == nil && ok(got) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Probe = %+v, %v; want %s", got, err, want)
		}
		time.Sleep(interval)
	}
}

// WithoutUserinfo removes the user and password from a URL.
func WithoutUserinfo(t testing.TB, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = nil
	return u.String()
}

// RedisClient is a plain client to the server, for a test to play producer and inspector;
// it is closed after the test.
func (s *Server) RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// RedisList is the contents of list key, head first.
func (s *Server) RedisList(t testing.TB, key string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := s.RedisClient(t).LRange(ctx, key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// RedisPush puts items into list key one by one at its head, so that rediswq workers,
// which take from the tail, take them in the order given.
func (s *Server) RedisPush(t testing.TB, key string, items ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := s.RedisClient(t)
	for _, it := range items {
		if err := c.LPush(ctx, key, it).Err(); err != nil {
			t.Fatal(err)
		}
	}
}
