package queue

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// The tests of the kinds open backends against real servers that TestMain starts on free
// ports.
var (
	authRedis    *servers.Server
	rabbitServer *servers.RabbitMQ
	// tlsRedis accepts only TLS, with a certificate of testCA, the default user's
	// redisPassword and the ACL user aclUser.
	tlsRedis *servers.Server
	testCA   *servers.CA
	// otherCA signed no server's certificate.
	otherCA *servers.CA
)

const (
	redisPassword = "s3cret-redis-pass"
	aclUser       = "alice"
	aclPassword   = "Al1ce-acl-pass"
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if authRedis, err = servers.StartRedis(redisPassword); err != nil {
		fmt.Fprintln(os.Stderr, "starting redis-server with a password:", err)
		return 1
	}
	defer authRedis.Close()
	if testCA, err = servers.NewCA("queuejob test CA"); err != nil {
		fmt.Fprintln(os.Stderr, "making a CA:", err)
		return 1
	}
	if otherCA, err = servers.NewCA("another CA"); err != nil {
		fmt.Fprintln(os.Stderr, "making a CA:", err)
		return 1
	}
	if tlsRedis, err = servers.StartRedisWith(servers.RedisOptions{TLS: testCA, Password: redisPassword,
		Users: []string{aclUser + " on >" + aclPassword + " ~* +@all"}}); err != nil {
		fmt.Fprintln(os.Stderr, "starting redis-server with TLS:", err)
		return 1
	}
	defer tlsRedis.Close()
	// One broker for all tests, with amqps and https listeners besides the plain ones.
	if rabbitServer, err = servers.StartRabbitMQWith(amqpReady, servers.RabbitMQOptions{TLS: testCA}); err != nil {
		fmt.Fprintln(os.Stderr, "starting rabbitmq-server:", err)
		return 1
	}
	defer rabbitServer.Close()
	return m.Run()
}

func amqpReady(url string) error {
	c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return err
	}
	return c.Close()
}

func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
